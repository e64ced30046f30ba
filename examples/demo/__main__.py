"""``python -m examples.demo [--json] [--redis URL]``: the same as ``jobvisor demo``."""

from __future__ import annotations

import sys

from jobvisor.supervisor.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
