"""``jobvisor web``: the JSON API under ``/api/v1``, Server-Sent Events and the dashboard.

Imported lazily by the CLI: nothing here is loaded by the other commands. ``server.serve``
runs it under trio; ``server.create_app`` is the ASGI application.
"""
