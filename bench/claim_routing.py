"""Claim throughput with mixed job types, against a real redis-server started here.

A queue holds N jobs of 4 types (round robin, priorities mixed); claims are made back to
back, ``n`` jobs per claim, each one ``FCALL`` of the Lua library exactly as the store
sends it (op ``claim`` naming the daemon's types). Scenarios:

* ``4 of 4``: the daemon serves every type (it claims all N);
* ``2 of 4``: it serves 2 of the 4 types (the queue holds 2N: it claims N, N stay queued);
* ``1 type``: every job of one type (the simplest queue).

With ``--baseline DIR`` (a checkout of an earlier version, outside this tree) that
version's library runs on a twin redis-server, and the two are measured in the same run
by the same code, one claim each in turn (who goes first alternates), so both see the
same load on this machine, however it changes. The earlier claim takes no types: it
claims every job in ``2 of 4`` too, which is what it costs on the same queue. Jobs claimed
per second, min / median / max of ``--runs`` runs; the CPU time each server's main thread
spent per claim call (INFO cpu, before and after its claims: the server's part, without
the client's), median of the runs; the ratio of the medians, and the ratio within each run
(this / base, paired: the steadier one on a machine others load), min / median / max.

Run: .venv/bin/python bench/claim_routing.py [--jobs N] [--runs R] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import DirectExecutor, Store  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

TYPES = ("resize", "thumb", "ocr", "mail")
SCENARIOS = (("4 of 4", TYPES, TYPES), ("2 of 4", TYPES, TYPES[:2]), ("1 type", TYPES[:1], TYPES[:1]))
BATCHES = (1, 16)
BLOCK = 1  # claims per version before the other version's turn
CAP = 100_000


def library(root: Path) -> tuple[str, str]:
    """The Lua library (source, function name) of the checkout at ``root``, as it builds it."""
    code = (f"import sys, json; sys.path.insert(0, {str(root)!r}); from adapters.scripts import LuaLibrary;"
            "lib = LuaLibrary(); print(json.dumps([lib.source, lib.function]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"building the library of {root} failed:\n{done.stderr}")
    source, function = json.loads(done.stdout)
    return source, function


class Version:
    """One library on its own queue of the shared server."""

    def __init__(self, client: redis.Redis, name: str, root: Path) -> None:
        self.client, self.name = client, name
        self.usec: list[float] = []
        source, self.function = library(root)
        client.execute_command("FUNCTION", "LOAD", "REPLACE", source)
        self.keys = Keys(f"v{name}")
        self.store = Store(DirectExecutor(None, time.time))  # type: ignore[arg-type]  # builds submit ops only

    def call(self, ops: list[dict[str, object]]) -> list[dict[str, object]]:
        reply = self.client.execute_command("FCALL", self.function, 1, self.keys.queued, self.keys.prefix,
                                            int(time.time() * 1000), json.dumps(ops), CAP)
        return json.loads(reply)

    def fill(self, jobs: int, present: tuple[str, ...]) -> None:
        ops = []
        for i in range(jobs):
            op = self.store._submit_op(JobSpec(queue=self.keys.queue, type=present[i % len(present)],
                                               priority=(i * 7) % 3, input={"i": i}))
            op["id"] = f"{self.keys.queue}.{i:026d}"
            ops.append(op)
        for i in range(0, jobs, 500):
            assert all(r["kind"] == "created" for r in self.call(ops[i:i + 500]))

    def claim(self, n: int, types: tuple[str, ...]) -> int:
        [reply] = self.call([{"op": "claim", "n": n, "worker": "bench", "lease_ms": 600_000,
                              "nonce": "bench", "types": sorted(types)}])
        return int(reply.get("n", 0))  # type: ignore[call-overload]


def server_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the server's main thread (where functions run) has used."""
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def one_run(versions: list[Version], jobs: int, scenario: int, n: int) -> dict[str, float]:
    """Jobs claimed/s per version, claims alternating in blocks until every version is done;
    each version's server CPU time per claim call is appended to its ``usec``."""
    _, present, served = SCENARIOS[scenario]
    # each version claims `jobs`: this one's queue holds as many again of the types it does not
    # serve, so the two alternate to the end (neither runs alone, caches warm, at the end)
    want = {v.name: jobs for v in versions}
    for v in versions:
        v.client.flushdb()
        v.fill(jobs * len(present) // len(served) if v.name == "this" else jobs, present)
    cpu = {v.name: server_cpu(v.client) for v in versions}
    elapsed = {v.name: 0.0 for v in versions}
    claimed = {v.name: 0 for v in versions}
    calls = {v.name: 0 for v in versions}
    live = list(versions)
    turn = 0
    while live:
        turn += 1
        for v in list(live if turn % 2 else reversed(live)):
            t0 = time.perf_counter()
            got = 0
            for _ in range(BLOCK):
                got = v.claim(n, served)
                calls[v.name] += 1
                claimed[v.name] += got
                if got == 0 or claimed[v.name] >= want[v.name]:
                    break
            elapsed[v.name] += time.perf_counter() - t0
            if claimed[v.name] >= want[v.name] or got == 0:
                live.remove(v)
                cpu[v.name] = server_cpu(v.client) - cpu[v.name]
    for v in versions:
        assert claimed[v.name] == want[v.name], (v.name, claimed[v.name], want[v.name])
        v.usec.append(cpu[v.name] * 1e6 / calls[v.name])
    return {v.name: claimed[v.name] / elapsed[v.name] for v in versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of an earlier version, to measure alongside")
    args = parser.parse_args()
    roots = {"this": HERE} | ({"base": args.baseline.resolve()} if args.baseline else {})
    with tempfile.TemporaryDirectory() as tmp:
        servers = {name: RedisServer(Path(tmp) / name, appendonly=False) for name in roots}
        versions: list[Version] = []
        try:
            for name, root in roots.items():
                (Path(tmp) / name).mkdir()
                servers[name].start()
                versions.append(Version(redis.Redis.from_url(servers[name].url), name, root))
            print(f"redis-server {versions[0].client.info('server')['redis_version']}, one per version; "
                  f"{args.jobs} jobs per scenario; {args.runs} runs; claims alternate {BLOCK} by {BLOCK}\n")
            head = f"{'jobs claimed/s':<15}{'n':>3}"
            for v in versions:
                head += f"{v.name + ' min / median / max':>34}{'cpu µs':>9}"
            print(head + ("  ratio of medians  paired min / median / max" if args.baseline else ""))
            for scenario, (label, _, _) in enumerate(SCENARIOS):
                for n in BATCHES:
                    rates: dict[str, list[float]] = {v.name: [] for v in versions}
                    for v in versions:
                        v.usec = []
                    for _ in range(args.runs):
                        for name, rate in one_run(versions, args.jobs, scenario, n).items():
                            rates[name].append(rate)
                    line = f"{label:<15}{n:>3}"
                    for v in versions:
                        xs = rates[v.name]
                        line += (f"{min(xs):>14,.0f} /{statistics.median(xs):>8,.0f} /{max(xs):>8,.0f}"
                                 f"{statistics.median(v.usec):>9.1f}")
                    if args.baseline:
                        ratio = statistics.median(rates["this"]) / statistics.median(rates["base"])
                        paired = [a / b for a, b in zip(rates["this"], rates["base"], strict=True)]
                        line += (f"{ratio:>17.2f}x{min(paired):>11.2f} /{statistics.median(paired):>7.2f} /"
                                 f"{max(paired):>5.2f}")
                    print(line, flush=True)
        finally:
            for v in versions:
                v.client.close()
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
