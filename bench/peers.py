"""jobvisor beside dramatiq on one redis-server, measured the same way, runs interleaved.

Method (each library's idiomatic use, product defaults):
1. one at a time, N no-op jobs are submitted from one client (jobvisor: ``Client.submit``;
   dramatiq: ``actor.send``), no worker running;
2. then W worker processes start on the full queue (jobvisor: ``jobvisor run`` with its
   default slots; dramatiq: ``dramatiq -p 1`` per process, default threads) and run it dry.
For each phase, exact counters of the server (bench/redis_stats.py): commands, round trips
(requests read), time inside scripts, server CPU, and memory per queued and per finished job.
Throughput is jobs/s from the first job finished to the last (worker start-up left out),
found by polling the queue's size every 10 ms (those polls are taken out of the counters).
Contenders run in turn, round after round, so a noisy moment hits them all.

Needs the bench extra (``pip install -e '.[bench]'``).
Run: .venv/bin/python bench/peers.py [N] [ROUNDS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.redis_stats import Cost, Counters  # noqa: E402
from bench.throughput import stop  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclass
class Contender:
    name: str
    submit: Callable[[str, int], None]  # (url, n): submit n jobs one at a time
    workers: Callable[[str, int], list[subprocess.Popen[bytes]]]  # (url, count)
    remaining: Callable[[redis.Redis, int], int]  # (client, n): jobs not finished yet (one command)
    poll: str  # the command remaining() sends


def jobvisor_submit(url: str, n: int) -> None:
    from bench.noop_app import app
    from jobvisor import Client

    with Client(url, app=app) as client:
        for _ in range(n):
            client.submit("noop")


def jobvisor_workers(url: str, count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(
        [sys.executable, "-m", "jobvisor", "run", "--redis", url, "--app", "bench.noop_app:app",
         "--worker-id", f"bench-{i}", "--log-level", "warning"], cwd=ROOT, env=ENV)
        for i in range(count)]


def jobvisor_remaining(client: redis.Redis, n: int) -> int:
    return n - int(client.zcard("jv:{default}:finished"))


def dramatiq_submit(url: str, n: int) -> None:
    os.environ["BENCH_REDIS_URL"] = url
    from bench.dramatiq_app import noop

    for _ in range(n):
        noop.send()


def dramatiq_workers(url: str, count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "bench.dramatiq_app", "-p", "1", "--skip-logging"],
        cwd=ROOT, env={**ENV, "BENCH_REDIS_URL": url}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)]


def dramatiq_remaining(client: redis.Redis, n: int) -> int:
    return int(client.hlen("dramatiq:default.msgs"))


@dataclass
class Run:
    submit: Cost
    process: Cost
    queued_memory: int
    finished_memory: int
    submits_per_s: float
    jobs_per_s: float


def measure(contender: Contender, url: str, n: int, workers: int) -> Run:
    client = redis.Redis.from_url(url)
    counters = Counters(client)
    client.flushall()
    counters.counted("flushall")
    base = counters.snapshot()
    mark = counters.mark()
    t0 = time.perf_counter()
    contender.submit(url, n)
    submit_s = time.perf_counter() - t0
    queued = counters.snapshot()
    submit = counters.cost(base, queued, mark)
    mark = counters.mark()
    procs = contender.workers(url, workers)
    try:
        first = last = None
        deadline = time.monotonic() + 600
        while True:
            left = contender.remaining(client, n)
            counters.counted(contender.poll)
            now = time.perf_counter()
            if first is None and left < n:
                first = now
            if left == 0:
                last = now
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{contender.name}: {left} of {n} jobs left after 600 s")
            time.sleep(0.01)
        done = counters.snapshot()
    finally:
        stop(procs)
    process = counters.cost(queued, done, mark)
    assert first is not None
    assert last is not None
    return Run(submit, process, queued.memory - base.memory, done.memory - base.memory,
               n / submit_s, (n - 1) / max(last - first, 1e-6))


CONTENDERS = {
    "jobvisor": Contender("jobvisor", jobvisor_submit, jobvisor_workers, jobvisor_remaining, "zcard"),
    "dramatiq": Contender("dramatiq", dramatiq_submit, dramatiq_workers, dramatiq_remaining, "hlen"),
}


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    return "/".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    results: dict[tuple[str, int], list[Run]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            version = redis.Redis.from_url(server.url).info("server")["redis_version"]
            print(f"redis-server {version}; N={n} no-op jobs; {rounds} rounds, interleaved; min/median/max\n")
            for _ in range(rounds):
                for workers in (1, 2):
                    for name, contender in CONTENDERS.items():
                        results.setdefault((name, workers), []).append(measure(contender, server.url, n, workers))
        finally:
            server.stop()
    report(results, n)


def report(results: dict[tuple[str, int], list[Run]], n: int) -> None:
    print(f"{'':<14}{'jobs/s':>22}{'submits/s':>20}")
    for (name, workers), runs in results.items():
        print(f"{name + f' x{workers}':<14}{spread([r.jobs_per_s for r in runs]):>22}"
              f"{spread([r.submits_per_s for r in runs]):>20}")
    print("\nper job (median of runs)   submit: commands  reads  script us  cpu us | process: commands  reads"
          "  script us  cpu us | memory queued  finished")
    for (name, workers), runs in results.items():
        if workers != 1:
            continue
        s = [r.submit.per(n) for r in runs]
        p = [r.process.per(n) for r in runs]

        def med(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(row[key] for row in rows)

        print(f"{name:<27}{med(s, 'commands'):>18.1f}{med(s, 'reads'):>7.2f}{med(s, 'script_us'):>11.1f}"
              f"{med(s, 'cpu_us'):>8.0f} |{med(p, 'commands'):>18.1f}{med(p, 'reads'):>7.2f}"
              f"{med(p, 'script_us'):>11.1f}{med(p, 'cpu_us'):>8.0f} |"
              f"{statistics.median(r.queued_memory / n for r in runs):>14,.0f}"
              f"{statistics.median(r.finished_memory / n for r in runs):>10,.0f}")


if __name__ == "__main__":
    main()
