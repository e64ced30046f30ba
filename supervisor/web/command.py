"""``jobvisor web``: its flags, and the run until SIGINT or SIGTERM; and ``jobvisor run
--web-port``, the daemon serving the same application over its own store actor.

This module imports nothing of the web stack at import time (the CLI builds its parser from
here for every command); :func:`run_web` imports the server when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

__all__ = ["add_parser", "add_run_flags", "run_settings", "run_daemon_with_web", "run_web"]

log = logging.getLogger("jobvisor.web")


def add_parser(sub: Any) -> None:
    """Register ``web`` on the CLI's subparsers."""
    web = sub.add_parser("web", help="serve the HTTP API (/api/v1) and the dashboard (/)")
    web.add_argument("--redis", default=None, help="Redis URL (default $JOBVISOR_REDIS)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other "
                                                          "needs tokens)")
    web.add_argument("--port", default="8080", help="port (default 8080; 0 picks a free one)")
    web.add_argument("--app", default=None, help="module:attr of an App, for job type defaults without a daemon")
    web.add_argument("--tokens-file", dest="tokens_file", default=None,
                     help="file of role:token lines (also $JOBVISOR_WEB_TOKENS, $JOBVISOR_WEB_TOKENS_FILE)")
    web.add_argument("--cors-origin", dest="cors_origins", action="append", default=None,
                     help="an origin allowed to call the API from a browser (repeatable; default: none)")
    web.add_argument("--log-level", dest="log_level", default="INFO")


def add_run_flags(run: Any) -> None:
    """``jobvisor run``'s flags for serving the API and the dashboard from the daemon."""
    run.add_argument("--web-port", dest="web_port", default=None,
                     help="also serve the HTTP API and the dashboard on this port (0 picks a free one; default off)")
    run.add_argument("--web-host", dest="web_host", default="127.0.0.1",
                     help="address for --web-port (default 127.0.0.1; any other needs tokens from "
                          "$JOBVISOR_WEB_TOKENS or $JOBVISOR_WEB_TOKENS_FILE)")


def run_settings(args: argparse.Namespace, redis: str) -> Any:
    """The web settings of ``jobvisor run --web-port`` (``None`` without it); bad ones raise
    ``BadInput`` naming the setting, before anything runs."""
    if args.web_port is None:
        return None
    from jobvisor.adapters.errors import BadInput

    from .settings import WebSettings

    if redis.startswith("memory://"):
        raise BadInput("web-port: the web server follows events on redis-server; memory:// has none")
    return WebSettings.load(redis=redis, host=args.web_host, port=args.web_port, app=None, tokens_file=None,
                            cors_origins=None)


async def run_daemon_with_web(settings: Any, config: Any, app: Any, **daemon_options: Any) -> None:
    """:func:`~jobvisor.supervisor.daemon.run_daemon`, and the web application served by the
    daemon's store actor (its requests batched with the daemon's own) until the daemon shuts down."""
    import trio

    from jobvisor.adapters.errors import JobvisorError

    from ..client import submitter_policy
    from ..daemon import run_daemon
    from .server import serve_state
    from .state import WebState

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        try:
            daemon = await nursery.start(partial(run_daemon, config, app, shutdown=shutdown, **daemon_options))
        except RuntimeError:
            if shutdown.is_set():  # it ended before it started: a signal while it waited for Redis
                return
            raise
        state = WebState(store=daemon.store, backend=daemon.backend, settings=settings,
                         destinations=submitter_policy(), app=app)
        try:
            bound = await nursery.start(partial(serve_state, state, shutdown=daemon.shutdown))
        except BaseException as exc:  # noqa: BLE001 - hypercorn's nursery wraps the bind error in a group
            found = _innermost_os_error(exc)
            if found is None:
                raise
            daemon.shutdown.set()
            raise JobvisorError(f"web: cannot listen on {settings.host}:{settings.port}: {found}") from None
        log.info("API and dashboard on %s", ", ".join(bound))


def run_web(args: argparse.Namespace, *, redis: str, load_app: Callable[[str], Any]) -> int:
    """Serve until a signal; returns the exit code. Bad settings raise ``BadInput`` first."""
    import trio

    from jobvisor.adapters.errors import BadInput, JobvisorError
    from jobvisor.adapters.redaction import install_log_redaction

    from .settings import WebSettings

    level = str(args.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise BadInput(f"log-level: {args.log_level!r} is not one of debug, info, warning, error, critical")
    if redis.startswith("memory://"):
        raise BadInput("redis: the web server reads a shared Redis; memory:// lives inside one process")
    settings = WebSettings.load(redis=redis, host=args.host, port=args.port, app=args.app,
                                tokens_file=args.tokens_file, cors_origins=args.cors_origins)
    app = load_app(args.app) if args.app else None
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction(logging.getLogger())
    from .server import serve

    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, shutdown)
            bound = await nursery.start(partial(serve, settings, app, shutdown=shutdown))
            print(f"jobvisor web: serving on {', '.join(bound)}", flush=True)
            await shutdown.wait()
            await trio.lowlevel.checkpoint()
        print("jobvisor web: stopped", flush=True)

    try:
        trio.run(main)
    except BaseException as exc:  # noqa: BLE001 - a nursery wraps the bind error in a group
        found = _innermost_os_error(exc)
        if found is None:
            raise
        raise JobvisorError(f"web: cannot listen on {settings.host}:{settings.port}: {found}") from None
    sys.stdout.flush()
    return 0


async def _signals(shutdown: Any) -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            shutdown.set()
            return


def _innermost_os_error(exc: BaseException) -> BaseException | None:
    from ..cli_daemon import innermost  # imported when an error is read: the parser stays light

    return innermost(exc, (OSError,))
