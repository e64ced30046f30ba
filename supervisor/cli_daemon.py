"""The commands that run the trio runtime: ``jobvisor run`` (the daemon) and ``jobvisor demo``.

Only these import trio and the daemon, and only when they run. Errors come out of trio
nurseries wrapped in exception groups; :func:`innermost` finds ours so that each ends as one
line and its exit code (2 bad input, 1 anything else, such as an actor that keeps crashing).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from functools import partial
from pathlib import Path

from jobvisor.adapters.errors import BadInput, JobvisorError, redact

from .cli_commands import load_app
from .cli_parser import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, CliExit, bad
from .config import SETTINGS, load_config
from .logsetup import configure_logging

__all__ = ["cmd_demo", "cmd_run", "innermost"]


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from .app import App
    from .daemon import run_daemon
    from .supervise import SupervisorGaveUp
    from .web.command import run_daemon_with_web, run_settings

    config = load_config({s.name: getattr(args, s.name) for s in SETTINGS if s.flag is not None})
    web = run_settings(args, config.redis)
    configure_logging(config.log_level, config.log_format)
    app = load_app(config.app) if config.app else App()
    # Everything loaded so far (modules, the app) lives as long as the process: out of the
    # collector's way, so a full collection scans only what the running daemon made since.
    gc.collect()
    gc.freeze()
    try:
        if web is None:
            trio.run(partial(run_daemon, config, app, on_stuck=_exit_stuck))
        else:
            trio.run(partial(run_daemon_with_web, web, config, app, on_stuck=_exit_stuck))
    except BaseException as exc:  # noqa: BLE001 - nurseries wrap errors in groups: find ours
        found = innermost(exc, (SupervisorGaveUp, JobvisorError))
        if found is None:
            raise
        if isinstance(found, BadInput):
            raise found from None
        raise CliExit(EXIT_FAILURE, str(found)) from None
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    # The demo ships with the source checkout (examples/demo), found by name like --app.
    sys.path.insert(0, str(Path.cwd()))
    try:
        demo_main = importlib.import_module("examples.demo").main
    except ModuleNotFoundError as exc:
        if exc.name not in ("examples", "examples.demo"):
            raise
        bad("demo: the demo ships with the source checkout: run `bash scripts/demo.sh` in a clone of jobvisor")
    if args.redis is not None and not args.redis.startswith(("redis://", "rediss://", "unix://")):
        bad(f"redis: {redact(args.redis)!r} is not a Redis URL (redis://host:port/db)")
    try:
        return int(demo_main(args.redis, args.json))
    except BaseException as exc:  # noqa: BLE001 - nurseries wrap errors in groups: find ours
        found = innermost(exc, (JobvisorError,))
        if found is None:
            raise
        raise CliExit(EXIT_BAD_INPUT if isinstance(found, BadInput) else EXIT_FAILURE, str(found)) from None


def _exit_stuck(ending: BaseException | None) -> None:
    """Handlers blocked in threads that cannot be interrupted would keep the process alive:
    everything else is cleaned up by now, so end it here, with the exit code it would have had."""
    from .supervise import SupervisorGaveUp

    code = EXIT_OK
    if ending is not None:
        found = innermost(ending, (SupervisorGaveUp, JobvisorError))
        code = EXIT_BAD_INPUT if isinstance(found, BadInput) else EXIT_FAILURE
        print(f"jobvisor: {found if found is not None else repr(ending)}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def innermost(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` inside ``exc``, however deep the exception groups go."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = innermost(inner, kinds)
            if found is not None:
                return found
    return None
