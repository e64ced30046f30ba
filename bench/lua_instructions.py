"""Instructions redis-server executes per job for each store op: this checkout's Lua library
beside other revisions', counted by valgrind's callgrind.

Timings on a shared machine wander by 10% or more from run to run; an instruction count does
not: the same library, ops and redis-server give the same count, whatever else the machine is
doing, to within what the server's own timers add to a phase (its cron runs 10 times a second
and a phase under valgrind lasts seconds): each side runs ROUNDS times (3) and the least count
of each phase is printed. So a cut of a few percent in the Lua is measured exactly, and each
revision runs alone.

For each side, a redis-server under callgrind (an empty one, no persistence) loads the side's
library, then N jobs go through submit, claim and complete, one job per call and 5 per call
(as the store actor merges concurrent callers), each phase pipelined from one client. The
counters are zeroed before a phase and dumped after it: instructions per job, everything the
server did for the phase (reading the calls, the scripts, writing the replies). Printed in
thousands, per op and mode, and the lifecycle (a submit alone, a claim and a complete of 5).

Needs valgrind (Debian's package). ``--redis-server PATH`` runs another build, e.g. one made
from the same release's source with symbols, so that ``callgrind_annotate`` on the kept dumps
(``--keep DIR``) names the Lua interpreter's functions.

Run: .venv/bin/python bench/lua_instructions.py [N] [REV...] [--rounds R] [--redis-server PATH] [--keep DIR]
     e.g. bench/lua_instructions.py 300 HEAD~3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobvisor.adapters import ops  # noqa: E402
from jobvisor.adapters.calls import OpsCall  # noqa: E402
from jobvisor.adapters.scripts import LUA_FILES, LuaLibrary, lua_tables  # noqa: E402
from tests.redis_server import free_port  # noqa: E402

PER = 5
QUEUE = "bench"


def library(rev: str | None) -> str:
    """A library text named `jv`, its function `jvf`: this checkout's, or revision ``rev``'s Lua
    files under this checkout's machine tables."""
    if rev is None:
        lib = LuaLibrary()
        return lib.source.replace(f"name={lib.name}", "name=jv").replace(f"'{lib.function}'", "'jvf'")
    body = "".join(
        f"-- {name}\n" + subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:adapters/lua/{name}"],
                                        capture_output=True, text=True, check=True).stdout
        for name in LUA_FILES)
    head = "#!lua name=jv\nlocal FUNCTION_NAME = 'jvf'\n"
    return head + lua_tables() + body + "redis.register_function(FUNCTION_NAME, run)\n"


def submit(i: int) -> ops.Submit:
    return ops.Submit(id=f"{QUEUE}.{i:08d}", type="noop", input="null", priority=0, max_retries=3,
                      timeout_ms=300_000, backoff_ms=1_000, backoff_max_ms=300_000)


class Server:
    """A redis-server under callgrind; ``phase`` counts the instructions of one pipelined phase."""

    def __init__(self, binary: str, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.%p",
             binary, "--port", str(self.port), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        self.dumps = 0
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server under valgrind did not start") from None
                time.sleep(0.1)

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True)

    def phase(self, calls: list[OpsCall]) -> tuple[int, list[Any]]:
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command("FCALL", "jvf", 1, f"jv:{{{QUEUE}}}:queued", f"jv:{{{QUEUE}}}:",
                                 int(time.time() * 1000), call.ops, 100_000)
        self.control("-z")
        replies = pipe.execute()
        self.dumps += 1
        self.control("-d", f"phase{self.dumps}")
        dump = self.tmp / f"callgrind.{self.proc.pid}.{self.dumps}"
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]), replies
        raise RuntimeError(f"no totals in {dump}")

    def stop(self) -> None:
        with contextlib.suppress(redis.ConnectionError):
            self.client.execute_command("SHUTDOWN", "NOSAVE")
        self.proc.wait()


def batches(items: list[Any], size: int, make: Callable[[list[Any]], OpsCall]) -> list[OpsCall]:
    return [make(items[i:i + size]) for i in range(0, len(items), size)]


def measure(source: str, n: int, binary: str, keep: Path | None, side: str) -> dict[str, float]:
    """Thousands of instructions per job, per op and mode."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(binary, Path(tmp))
        try:
            server.client.execute_command("FUNCTION", "LOAD", "REPLACE", source)
            out: dict[str, float] = {}

            def count(name: str, calls: list[OpsCall]) -> list[Any]:
                total, replies = server.phase(calls)
                out[name] = total / n / 1000
                return replies

            def of(batch: list[ops.Op[Any]]) -> OpsCall:
                return OpsCall.of(QUEUE, batch)

            count("submit x1", batches([submit(i) for i in range(n)], 1, of))
            count(f"submit x{PER}", batches([submit(n + i) for i in range(n)], PER, of))
            leases: list[tuple[str, str]] = []
            for name, size in (("claim x1", 1), (f"claim x{PER}", PER)):
                claims = [ops.Claim(n=size, worker="bench", lease_ms=3_600_000, nonce=f"{name[-1]}{i}")
                          for i in range(0, n, size)]
                for reply in count(name, batches(claims, 1, of)):
                    leases += [(j["id"], j["token"]) for j in json.loads(reply)[0]["jobs"]]
            if len(leases) != 2 * n:
                raise RuntimeError(f"{side}: claimed {len(leases)} of {2 * n} jobs")
            reports = [ops.Report(id=i, token=t, trigger="complete", jitter=1.0, result="null") for i, t in leases]
            count("complete x1", batches(reports[:n], 1, of))
            count(f"complete x{PER}", batches(reports[n:], PER, of))
        finally:
            server.stop()
        if keep is not None:
            for dump in Path(tmp).glob("callgrind.*"):
                shutil.copy(dump, keep / f"{side.replace('/', '_')}.{dump.name}")
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=300, help="jobs per phase")
    parser.add_argument("revs", nargs="*", help="revisions to count beside this checkout")
    parser.add_argument("--redis-server", default="redis-server", help="the redis-server binary")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side; the least count is kept")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps into this folder")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    sides: dict[str, str] = {"this": library(None)} | {rev: library(rev) for rev in args.revs}
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for side, source in sides.items():
            got = measure(source, args.n, args.redis_server, args.keep, side)
            best = results.setdefault(side, got)
            for name, value in got.items():
                best[name] = min(best[name], value)
    print(f"thousands of instructions per job in redis-server, N={args.n}, least of {args.rounds} runs")
    width = max(len(s) for s in sides) + 2
    print(f"{'':14}" + "".join(f"{side:>{width}}" for side in sides))
    for name in results["this"]:
        print(f"{name:14}" + "".join(f"{results[side][name]:>{width}.1f}" for side in sides))
    life = {side: r["submit x1"] + r[f"claim x{PER}"] + r[f"complete x{PER}"] for side, r in results.items()}
    print(f"{'lifecycle':14}" + "".join(f"{life[side]:>{width}.1f}" for side in sides)
          + f"   (submit x1 + claim x{PER} + complete x{PER})")


if __name__ == "__main__":
    main()
