"""One daemon's CPU per job on the hot path: claim, run a no-op handler, report it complete.

Against a redis-server started here (no AOF), for each run: one ``jobvisor run`` daemon
(64 slots, ``bench.noop_app:app``) starts with its queue paused and N no-op jobs are
submitted in bulk; once the daemon is idle, the queue is resumed and the run lasts until
every job is finished (result stored). Printed: jobs/s over that window and the daemon
process's CPU time per job (user + system, ``/proc/<pid>/stat``), min/median/max over the
runs. The daemon's start-up and the submits are outside the window.

``--tree DIR`` (repeatable) runs the daemon from another checkout (its own ``.venv``), and
the runs alternate between the trees, so two versions are compared on a noisy machine in
the same conditions. ``--profile`` runs the daemon under cProfile instead and prints the
Python function calls per job: a run with N jobs less a run with none (start-up, idle and
shutdown cancel out).

Run: .venv/bin/python bench/daemon_cpu.py [N] [--runs R] [--tree DIR ...] [--profile]
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import cpu_seconds, stop  # noqa: E402
from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import SyncStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SETTLE = 1.0
"""Seconds the daemon is left idle after it is ready, so its start-up is over."""


def start_daemon(tree: Path, url: str, profile: Path | None = None) -> subprocess.Popen[bytes]:
    python = tree / ".venv" / "bin" / "python"
    cmd = [str(python if python.exists() else sys.executable)]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "jobvisor", "run", "--redis", url, "--app", "bench.noop_app:app",
            "--concurrency", "64", "--worker-id", "cpu-bench", "--log-level", "warning"]
    return subprocess.Popen(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})


def one_run(tree: Path, url: str, n: int, profile: Path | None = None) -> tuple[float, float]:
    """(jobs/s, daemon CPU seconds per job) of one run; with ``profile``, the daemon's
    cProfile statistics are written there."""
    store = SyncStore(open_backend(url))
    client = store.backend.client
    client.flushall()
    store.pause("default")
    for i in range(0, n, 500):
        store.submit_many([JobSpec(type="noop", max_retries=0) for _ in range(min(500, n - i))])
    proc = start_daemon(tree, url, profile)
    try:
        end = time.monotonic() + 30
        while not client.hexists("jv:types", "noop"):
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.05)
        time.sleep(SETTLE)
        finished = Keys("default").finished
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        store.resume("default")
        while client.zcard(finished) < n:
            time.sleep(0.005)
        t1, cpu1 = time.perf_counter(), cpu_seconds(proc.pid)
    finally:
        stop([proc])
        store.close()
    return n / (t1 - t0), (cpu1 - cpu0) / max(n, 1)


def calls_in(path: Path) -> int:
    return int(pstats.Stats(str(path)).total_calls)  # type: ignore[attr-defined]


def summary(values: list[float], fmt: str) -> str:
    return "min {} / median {} / max {}".format(*(format(v, fmt) for v in
                                                  (min(values), statistics.median(values), max(values))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=5000, help="jobs per run (default 5000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tree (default 3)")
    parser.add_argument("--tree", type=Path, action="append", help="a checkout to run the daemon from "
                        "(repeatable; default: this one)")
    parser.add_argument("--profile", action="store_true", help="count function calls per job (cProfile)")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            if args.profile:
                for tree in trees:
                    empty, full = Path(tmp) / "empty.prof", Path(tmp) / "full.prof"
                    one_run(tree, server.url, 0, empty)
                    one_run(tree, server.url, args.n, full)
                    per_job = (calls_in(full) - calls_in(empty)) / args.n
                    print(f"{tree}: {per_job:,.0f} function calls per job (cProfile, N={args.n})")
                return
            rates: dict[Path, list[float]] = {t: [] for t in trees}
            cpus: dict[Path, list[float]] = {t: [] for t in trees}
            print(f"N={args.n} no-op jobs per run, one daemon (64 slots), {args.runs} run(s) per tree")
            for _ in range(args.runs):
                for tree in trees:
                    rate, cpu = one_run(tree, server.url, args.n)
                    rates[tree].append(rate)
                    cpus[tree].append(cpu * 1e6)
                    print(f"  {tree}: {rate:,.0f} jobs/s, {cpu * 1e6:,.0f} µs CPU per job", flush=True)
            for tree in trees:
                print(f"{tree}:\n  jobs/s        {summary(rates[tree], ',.0f')}\n"
                      f"  CPU µs / job  {summary(cpus[tree], ',.0f')}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
