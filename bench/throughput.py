"""End-to-end figures against a real redis-server started here.

* jobs/s: N no-op jobs submitted in bulk, run by 1 and by 2 daemon processes
  (``jobvisor run``), from the first submit to the last job finished (results stored);
* pickup latency at a light load (50 jobs/s): submit to handler start, p50 and p99;
* idle daemon CPU: one ``jobvisor run`` with default settings left idle, its CPU time
  (``/proc/<pid>/stat``, user + system) over the window as a share of one core.

Run: .venv/bin/python bench/throughput.py [N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import SyncStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def start_daemons(url: str, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(count):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "jobvisor", "run", "--redis", url, "--app", "bench.noop_app:app",
             "--concurrency", str(concurrency), "--worker-id", f"bench-{i}", "--log-level", "warning"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        ))
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_ready(store: SyncStore, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not store.backend.client.hexists("jv:types", "noop"):
        if time.monotonic() > end:
            raise RuntimeError("daemon did not start")
        time.sleep(0.05)


def throughput(url: str, n: int, daemons: int) -> float:
    store = SyncStore(open_backend(url))
    client = store.backend.client
    client.flushall()
    procs = start_daemons(url, daemons, 64)
    try:
        wait_ready(store)
        finished = Keys("default").finished
        t0 = time.perf_counter()
        for i in range(0, n, 500):
            store.submit_many([JobSpec(type="noop", max_retries=0) for _ in range(min(500, n - i))])
        while client.zcard(finished) < n:
            time.sleep(0.005)
        return n / (time.perf_counter() - t0)
    finally:
        stop(procs)
        store.close()


def pickup(url: str, jobs: int = 500, rate: float = 50.0) -> tuple[float, float]:
    store = SyncStore(open_backend(url))
    store.backend.client.flushall()
    procs = start_daemons(url, 1, 16)
    try:
        wait_ready(store)
        sent: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(jobs):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t = time.time()
            sent[store.submit(JobSpec(type="stamp", max_retries=0)).id] = t
        latencies = []
        for job_id, t in sent.items():
            for _ in range(400):
                view = store.get_job(job_id)
                if view.state == "completed":
                    latencies.append((view.result - t) * 1000)
                    break
                time.sleep(0.01)
        latencies.sort()
        return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    finally:
        stop(procs)
        store.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of the whole line
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def idle_cpu(url: str, window: float = 5.0, settle: float = 1.0) -> float:
    """Percent of one core an idle daemon uses over ``window`` seconds."""
    store = SyncStore(open_backend(url))
    store.backend.client.flushall()
    [proc] = start_daemons(url, 1, 16)
    try:
        wait_ready(store)
        time.sleep(settle)  # let start-up (imports, first connections) finish
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(window)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        return (cpu1 - cpu0) / (t1 - t0) * 100
    finally:
        stop([proc])
        store.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            print(f"N={n} no-op jobs, results stored, one local redis-server\n")
            for daemons in (1, 2):
                rate = throughput(server.url, n, daemons)
                print(f"{daemons} daemon(s), 64 slots each: {rate:,.0f} jobs/s end to end")
            p50, p99 = pickup(server.url)
            print(f"\npickup latency at 50 jobs/s (submit -> handler start): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            if os.path.exists("/proc/self/stat"):
                print(f"\nidle daemon CPU (default settings, 5 s window): {idle_cpu(server.url):.2f}% of one core")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
