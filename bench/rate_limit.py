"""Rate limits: what they cost the claim, and how closely daemons keep to them, against a real
redis-server started here.

Claim throughput: a queue holds N jobs of one type, claimed one per claim (``n=1``, the usual
claim: one slot came free), back to back, each one ``FCALL`` of the Lua library as the store
sends it. The caller's clock (the script's ``NOW``) is moved one interval per claim, so a limited
claim always finds its job may start: what is measured is the claim's own work. Scenarios:

* ``no limit``: the queue has no ``rates`` (the claim reads one empty hash);
* ``other type limited``: ``rates`` limits a type that has no queued job (the usual routes);
* ``limited``: the type is limited (the limited claim: the limit read, the job taken, charged);
* ``keyed``: limited per input field, every job its own key (the input decoded in the claim);
* ``held back``: the limited type's next start is in the future: claims that take nothing.

Jobs (or, held back, claims) per second, and the CPU time the server's main thread spent per
claim (INFO cpu: the server's part, without the client's), min / median / max of ``--rounds``
rounds.

Accuracy: 2 ``jobvisor run`` daemons (concurrency 8, idle poll 5 s) run ``bench/rate_app.py``'s
types, 10/s, 100/s and 5/s per customer (4 customers: 20/s in all), with every job queued
before they start; observed rate = (jobs - 1) / (last start - first start), from the attempts'
``started_at`` (summed over the keys of a keyed type); the most starts in any 1-second window;
the closest two starts of one limit.

Run: .venv/bin/python bench/rate_limit.py [--jobs N] [--rounds R] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import redis

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from jobvisor import Client  # noqa: E402
from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.rates import parse_rate, wire  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.scripts import LuaLibrary  # noqa: E402
from jobvisor.adapters.store import DirectExecutor, Store, SyncStore  # noqa: E402
from tests.daemon_process import daemon, wait_until  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

CAP = 100_000
INTERVAL_MS = 1.0  # the limited scenarios' limit: 1000/s, the clock moved 1 ms per claim
SCENARIOS = ("no limit", "other type limited", "limited", "keyed", "held back")


class Queue:
    def __init__(self, client: redis.Redis) -> None:
        lib = LuaLibrary()
        client.execute_command("FUNCTION", "LOAD", "REPLACE", lib.source)
        self.client, self.function, self.keys = client, lib.function, Keys("bench")
        self.store = Store(DirectExecutor(None, time.time))  # type: ignore[arg-type]  # builds submit ops only
        self.now = time.time() * 1000

    def call(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reply = self.client.execute_command("FCALL", self.function, 1, self.keys.queued, self.keys.prefix,
                                            int(self.now), json.dumps(ops), CAP)
        return list(json.loads(reply))

    def fill(self, jobs: int, keyed: bool) -> None:
        ops = []
        for i in range(jobs):
            spec = JobSpec(queue="bench", type="send", input={"customer": f"c{i}" if keyed else "c", "i": i})
            ops.append(msgspec.to_builtins(self.store._submit_op(spec)))
        for i in range(0, jobs, 500):
            assert all(r["kind"] == "created" for r in self.call(ops[i:i + 500]))

    def limit(self, job_type: str, spec: str, field: str | None = None) -> None:
        self.call([{"op": "rate_limits", "limits": [[job_type, wire(parse_rate(spec), field)]]}])

    def claim(self) -> dict[str, Any]:
        [reply] = self.call([{"op": "claim", "n": 1, "worker": "bench", "lease_ms": 600_000,
                              "nonce": "bench", "types": ["send"]}])
        return reply


def server_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the server's main thread (where functions run) has used."""
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def one_round(q: Queue, scenario: str, jobs: int) -> tuple[float, float]:
    """Claims per second, and the server's CPU µs per claim."""
    q.client.flushdb()
    q.fill(jobs, keyed=scenario == "keyed")
    if scenario == "other type limited":
        q.limit("other", "1000/s")
    elif scenario in ("limited", "held back"):
        q.limit("send", "1000/s")
    elif scenario == "keyed":
        q.limit("send", "1000/s", "customer")
    if scenario == "held back":
        assert q.claim().get("n") == 1  # the first start: every claim after it is held back
    cpu, t0 = server_cpu(q.client), time.perf_counter()
    for _ in range(jobs):
        if scenario == "held back":
            reply = q.claim()
            assert reply.get("n") == 0
            assert reply.get("next_at") is not None
        else:
            q.now += INTERVAL_MS
            assert q.claim().get("n") == 1
    elapsed = time.perf_counter() - t0
    return jobs / elapsed, (server_cpu(q.client) - cpu) * 1e6 / jobs


def throughput(url: str, jobs: int, rounds: int) -> None:
    q = Queue(redis.Redis.from_url(url))
    print(f"claim throughput: {jobs} jobs of one type, n=1 per claim, {rounds} rounds")
    print(f"{'scenario':<22}{'claims/s min / median / max':>32}{'server cpu µs/claim min / median / max':>42}")
    for scenario in SCENARIOS:
        runs = [one_round(q, scenario, jobs) for _ in range(rounds)]
        xs, us = [r[0] for r in runs], [r[1] for r in runs]
        print(f"{scenario:<22}{min(xs):>14,.0f} /{statistics.median(xs):>8,.0f} /{max(xs):>8,.0f}"
              f"{min(us):>24.1f} /{statistics.median(us):>7.1f} /{max(us):>7.1f}", flush=True)
    q.client.flushdb()
    q.client.close()


def accuracy(url: str, tmp: Path) -> None:
    from bench.rate_app import app

    plan = [("r10", 10.0, 60, None), ("r100", 100.0, 400, None), ("keyed", 5.0, 80, 4)]
    ids: dict[str, list[str]] = {}
    with Client(url, app=app) as client:
        for job_type, _, n, keys in plan:
            ids[job_type] = [client.submit(job_type, {"customer": f"c{i % keys}" if keys else "c"})
                             for i in range(n)]
    total = sum(n for _, _, n, _ in plan)

    def finished() -> bool:
        with SyncStore(open_backend(url)) as store:
            return store.queue_counts("default")["finished"] >= total

    with daemon(url, tmp, "d0", app="bench.rate_app:app", extra=("--concurrency", "8", "--idle-poll", "5")) as d0, \
            daemon(url, tmp, "d1", app="bench.rate_app:app", extra=("--concurrency", "8", "--idle-poll", "5")):
        wait_until(finished, timeout=120, what="every job", alive=d0)
    print("\naccuracy: 2 daemons, every job queued before they start")
    print(f"{'type':<8}{'configured':>12}{'jobs':>6}{'observed/s':>12}{'max in 1 s':>12}{'closest gap':>13}"
          f"{'retries':>9}")
    with SyncStore(open_backend(url)) as store:
        for job_type, rate, n, keys in plan:
            views = [store.get_job(i) for i in ids[job_type]]
            groups: dict[str, list[float]] = {}
            for v in views:
                key = v.input["customer"] if keys else ""
                groups.setdefault(key, []).append(v.attempt_records[0].started_at)
            starts = sorted(t for g in groups.values() for t in g)
            observed = sum((len(g) - 1) / (max(g) - min(g)) for g in groups.values())
            window = max(Counter(math.floor(t) for t in starts).values())
            gap = min(b - a for g in groups.values() for a, b in zip(sorted(g), sorted(g)[1:], strict=False))
            retries = sum(v.retry_count for v in views)
            configured = f"{rate:g}/s" + (f" x {keys}" if keys else "")
            print(f"{job_type:<8}{configured:>12}{n:>6}{observed:>12.2f}{window:>12}{gap * 1000:>10.1f} ms"
                  f"{retries:>9}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-accuracy", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        (Path(tmp) / "redis").mkdir()
        server.start()
        try:
            print(f"redis-server {redis.Redis.from_url(server.url).info('server')['redis_version']}\n")
            throughput(server.url, args.jobs, args.rounds)
            if not args.no_accuracy:
                redis.Redis.from_url(server.url).flushall()
                accuracy(server.url, Path(tmp))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
