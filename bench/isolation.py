"""What handler isolation costs per job, and how fast a process-isolated timeout kills.

* no-op jobs/s for each isolation, one ``jobvisor run`` daemon with default settings
  (16 slots) against a real redis-server started here: ``noop`` (``async def``, on the
  loop), ``noop_thread`` (plain ``def``, in a worker thread), ``noop_process``
  (``isolation="process"``, in a child process). N jobs submitted in bulk, from the first
  submit to the last job finished; the three are interleaved run by run, in one run of
  this script, so the machine's state weighs on each alike. min / median / max of R runs.
* kill latency: a process-isolated CPU loop with a 1 s timeout, from its timeout to its
  child's pid being gone, measured in process (``tests/isolation_app.py``'s ``cpu_spin``).

Run: .venv/bin/python bench/isolation.py [N] [R]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import start_daemons, stop  # noqa: E402
from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import SyncStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

TYPES = ("noop", "noop_thread", "noop_process")


def wait_types(store: SyncStore, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not all(store.backend.client.hexists("jv:types", t) for t in TYPES):
        if time.monotonic() > end:
            raise RuntimeError("daemon did not start")
        time.sleep(0.05)


def jobs_per_second(store: SyncStore, type_: str, n: int) -> float:
    client = store.backend.client
    finished = Keys("default").finished
    client.delete(finished)
    t0 = time.perf_counter()
    for i in range(0, n, 500):
        store.submit_many([JobSpec(type=type_, max_retries=0) for _ in range(min(500, n - i))])
    deadline = time.monotonic() + 300
    while client.zcard(finished) < n:
        if time.monotonic() > deadline:
            states = {s: client.zcard(f"jv:{{default}}:{s}") for s in ("queued", "active", "due", "finished")}
            raise RuntimeError(f"{type_}: {client.zcard(finished)} of {n} finished after 300 s: {states}")
        time.sleep(0.005)
    return n / (time.perf_counter() - t0)


def kill_latency(url: str, runs: int) -> list[float]:
    """Seconds from a process-isolated job's timeout to its child being gone."""
    import redis
    import trio

    from tests.harness import running_daemon, spec
    from tests.isolation_app import app, pid_key

    async def one() -> float:
        client = redis.Redis.from_url(url)
        async with running_daemon(app, redis=url, idle_poll=0.2) as (daemon, watcher):
            job = await daemon.store.submit(spec(app, "cpu_spin", timeout=1.0, input={"redis": url}))
            while client.get(pid_key(job.id)) is None:  # noqa: ASYNC110 - another process's write
                await trio.sleep(0.005)
            pid = int(client.get(pid_key(job.id)))
            view = await daemon.store.get_job(job.id)
            deadline = view.attempt_records[0].started_at + 1.0  # epoch seconds
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await trio.sleep(0.001)
            gone = time.time()
        client.close()
        return gone - deadline

    return [trio.run(one) for _ in range(runs)]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            store = SyncStore(open_backend(server.url))
            store.backend.client.flushall()
            [proc] = start_daemons(server.url, 1, 16)
            figures: dict[str, list[float]] = {t: [] for t in TYPES}
            try:
                wait_types(store)
                jobs_per_second(store, "noop_process", 50)  # warm: the fork server and its children
                for _ in range(runs):
                    for t in TYPES:
                        figures[t].append(jobs_per_second(store, t, n))
                        print(f"  {t}: {figures[t][-1]:,.0f} jobs/s", flush=True)
            finally:
                stop([proc])
                store.close()
            print(f"N={n} no-op jobs per run, {runs} runs, 1 daemon, 16 slots, one local redis-server\n")
            for t in TYPES:
                xs = figures[t]
                print(f"{t:>13}: min {min(xs):,.0f}  median {statistics.median(xs):,.0f}  max {max(xs):,.0f} jobs/s")
            kills = kill_latency(server.url, runs)
            print(f"\nprocess-isolated timeout to child gone: min {min(kills) * 1000:.0f} ms  median "
                  f"{statistics.median(kills) * 1000:.0f} ms  max {max(kills) * 1000:.0f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
