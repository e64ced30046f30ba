"""The ``jobvisor`` command line.

Exit codes (SPEC.md, "Interfaces"): 0 success, 2 bad input (one clear line,
nothing written), 3 not found, 1 any other failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from machines import MACHINES, to_mermaid

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_FOUND = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"jobvisor: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobvisor", description="Job supervisor with guarded state machines.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    diagram = sub.add_parser("diagram", help="print a machine as a Mermaid state diagram")
    diagram.add_argument("machine", choices=sorted(MACHINES))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "diagram":
        print(to_mermaid(MACHINES[args.machine]))
        return EXIT_OK
    return EXIT_FAILURE  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
