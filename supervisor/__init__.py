"""jobvisor's trio runtime: the supervisor, its actors, and the command line."""
