"""jobvisor's trio runtime: the supervisor, its actors, and the command line.

The public API is re-exported by the top-level package (``from jobvisor import App, Client``);
this package's ``__init__`` imports nothing, so the CLI's light commands stay light.
"""
