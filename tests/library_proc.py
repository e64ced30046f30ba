"""One client process for tests/test_library.py (run with the venv's interpreter).

Usage: ``python -m tests.library_proc <url> <ready> <start> <cli args...>``. Imports the
CLI first (the slow part), pushes to the ready list once Redis answers, BLPOPs the start
list (so every process loads the library at the same moment, no sleeps), then runs
``jobvisor <cli args...>`` in this interpreter and prints, after the command's own output,
``function <name>``: the Lua function name this process computed from its library text.
Exits with the command's exit code.
"""

from __future__ import annotations

import sys

import redis

from jobvisor.adapters.scripts import LuaLibrary
from jobvisor.supervisor.cli import main as cli_main


def main(url: str, ready: str, start: str, argv: list[str]) -> int:
    client = redis.Redis.from_url(url, socket_timeout=120)  # longer than the BLPOP below
    client.rpush(ready, "1")
    if client.blpop([start], timeout=60) is None:
        raise SystemExit("start signal never came")
    client.close()
    code = cli_main(argv)
    print(f"function {LuaLibrary().function}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
