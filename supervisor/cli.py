"""The ``jobvisor`` command line: parse, run one command, turn its outcome into an exit code.

The rooms of the command line, each with one job:

* :mod:`supervisor.cli_parser`: the grammar and the exit codes (``run``'s flags generated
  from :data:`supervisor.config.SETTINGS`);
* :mod:`supervisor.cli_input`: what is read before anything is done (argv, URL, job input);
* :mod:`supervisor.cli_commands`: the data commands, over the synchronous store;
* :mod:`supervisor.cli_ops`: the operator's commands over many jobs (``jobs``, ``retry``,
  ``queue pause|resume``, ``redeliver``), through :mod:`adapters.operations`;
* :mod:`supervisor.cli_schedules`: ``schedule add|list|pause|resume|remove``;
* :mod:`supervisor.cli_flows`: ``flow`` and ``chain`` (several jobs in one step);
* :mod:`supervisor.cli_events`: ``events`` and ``events --follow`` (through
  :class:`adapters.events.EventFeed`);
* :mod:`supervisor.cli_render`: text and ``--json`` output;
* :mod:`supervisor.cli_daemon`: ``run`` and ``demo``; :mod:`supervisor.cli_web`: ``web``
  (the commands that import trio).

A command's module is imported when that command runs, so ``jobvisor status`` never imports
the daemon. Exit codes (SPEC.md, "Interfaces"): 0 success, 2 bad input (one clear line,
nothing written), 3 not found, 1 any other failure (Redis unreachable, an actor that keeps
crashing).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jobvisor.adapters.errors import BadInput, JobvisorError, NotFound, Rejected
from jobvisor.adapters.redaction import redact_text

from .cli_input import check_decodable
from .cli_parser import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, CliExit, build_parser

__all__ = ["COMMANDS", "build_parser", "main", "run"]

COMMANDS: dict[str, str] = {
    "run": "cli_daemon", "demo": "cli_daemon", "events": "cli_events", "web": "cli_web",
    **dict.fromkeys(("submit", "status", "cancel", "queues", "report", "workers", "batch",
                     "diagram", "webhooks"), "cli_commands"),
    **dict.fromkeys(("jobs", "retry", "queue", "redeliver"), "cli_ops"),
    "schedule": "cli_schedules", "flow": "cli_flows", "chain": "cli_flows",
}
"""Each command's module (``cmd_<command>`` in it), imported when the command runs."""


def command(name: str) -> Callable[[Any], int]:
    """The function that runs command ``name``."""
    module = importlib.import_module(f"{__package__}.{COMMANDS[name]}")
    function: Callable[[Any], int] = getattr(module, f"cmd_{name}")
    return function


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_decodable(args)
        return command(args.command)(args)
    except CliExit as exc:
        _refuse(exc)
        return exc.code
    except (BadInput, Rejected) as exc:
        _refuse(exc)
        return EXIT_BAD_INPUT
    except NotFound as exc:
        _refuse(exc)
        return EXIT_NOT_FOUND
    except JobvisorError as exc:
        _refuse(exc)
        return EXIT_FAILURE


def _refuse(exc: Exception) -> None:
    """The one stderr line of a refusal: a newline inside the message (an echoed value, a
    server's reply) is shown escaped, never as a second line."""
    text = redact_text(str(exc)).replace("\r", "\\r").replace("\n", "\\n")
    print(f"jobvisor: {text}", file=sys.stderr)


def run() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `jobvisor events --follow | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
