"""Member completions/s through one large batch, against a real redis-server started here.

A batch member's terminal transition does more than a plain job's: in the same script it moves
the batch's counters, records activity (the stuck timer), emits ``batch.progress`` every K
completions and tries the guarded finalize. Prints, for N jobs (default 10,000):

* through the store actor, 100 concurrent callers completing claimed jobs: plain jobs, the
  members of one N-member batch (progress every 100, webhook rows written), and the same while
  three batch monitors sweep that batch's queue in a loop (three daemons, sweeping flat out);
* end to end: one daemon process (64 slots, no-op handler) runs N plain jobs, then the N members
  of one batch; from the first submit to the last job (or the batch) finished.

Each batch run is checked: the batch ends ``completed`` with one ``batch.completed``, one
``batch.finalize`` and N/100 ``batch.progress`` events.

Run: .venv/bin/python bench/batches.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis
import trio
import trio.lowlevel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import start_daemons, stop, wait_ready  # noqa: E402
from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.records import BatchSpec, JobSpec  # noqa: E402
from jobvisor.adapters.store import Store, SyncStore  # noqa: E402
from jobvisor.adapters.store_actor import StoreActor  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

Q = "default"
EVERY = 100
CALLERS = 100
HOOK = "http://hooks.example/bench"


def check_batch(client: redis.Redis, batch: str, n: int) -> None:
    events = Counter(f[b"type"].decode() for _, f in client.xrange(Keys(Q).events)
                     if f[b"id"].decode() == batch)
    state = client.hget(Keys(Q).batch(batch), "state")
    assert state == b"completed", state
    assert (events["batch.completed"], events["batch.finalize"], events["batch.progress"]) == (1, 1, n // EVERY), events


async def store_rate(url: str, client: redis.Redis, n: int, *, batch: bool, sweepers: int = 0) -> float:
    """Complete N claimed jobs with CALLERS concurrent tasks; returns completions/s."""
    client.flushall()
    actor = StoreActor(open_backend(url), time.time)
    store = Store(actor)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        batch_id = None
        if batch:
            batch_id = (await store.create_batch(BatchSpec(expected=n, progress_every=EVERY, stuck_after=600,
                                                           webhook_url=HOOK))).id
        for i in range(0, n, 1000):
            await store.submit_many([JobSpec(type="noop", batch=batch_id, max_retries=0)
                                     for _ in range(min(1000, n - i))])
        claimed = []
        while len(claimed) < n:
            claimed += await store.claim(Q, "bench", n=min(1000, n - len(claimed)), lease=600)
        jobs = iter(claimed)
        done = trio.Event()

        async def caller() -> None:
            for job in jobs:
                reply = await store.complete(job.id, job.token)
                assert reply.to == "completed", reply

        async def sweeper() -> None:
            cursor = 0
            while not done.is_set():
                reply = await store.sweep_batches(Q, ready_from=cursor)
                cursor = reply.cursor or 0
                await trio.lowlevel.checkpoint()

        t0 = time.perf_counter()
        async with trio.open_nursery() as inner:
            for _ in range(sweepers):
                inner.start_soon(sweeper)
            async with trio.open_nursery() as callers:
                for _ in range(CALLERS):
                    callers.start_soon(caller)
            elapsed = time.perf_counter() - t0
            done.set()
        actor.close()
    if batch_id is not None:
        check_batch(client, batch_id, n)
    return n / elapsed


def end_to_end(url: str, n: int, *, batch: bool) -> float:
    store = SyncStore(open_backend(url))
    client = store.backend.client
    client.flushall()
    procs = start_daemons(url, 1, 64)
    try:
        wait_ready(store)
        batch_id = None
        if batch:
            batch_id = store.create_batch(BatchSpec(expected=n, progress_every=EVERY, stuck_after=600,
                                                    webhook_url=HOOK)).id
        finished = Keys(Q).finished
        t0 = time.perf_counter()
        for i in range(0, n, 500):
            store.submit_many([JobSpec(type="noop", batch=batch_id, max_retries=0)
                               for _ in range(min(500, n - i))])
        if batch_id is None:
            while client.zcard(finished) < n:
                time.sleep(0.005)
        else:
            key = Keys(Q).batch(batch_id)
            while client.hget(key, "state") != b"completed":
                time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        if batch_id is not None:
            check_batch(client, batch_id, n)
        return n / elapsed
    finally:
        stop(procs)
        store.close()


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            print(f"redis-server {client.info('server')['redis_version']} on {server.url}; N={n}, "
                  f"progress every {EVERY}, webhook rows written\n")
            plain = await store_rate(server.url, client, n, batch=False)
            member = await store_rate(server.url, client, n, batch=True)
            swept = await store_rate(server.url, client, n, batch=True, sweepers=3)
            rows = [("plain jobs", plain), (f"members of one {n:,}-member batch", member),
                    ("the same, 3 monitors sweeping", swept)]
            print(f"  {'store actor, ' + str(CALLERS) + ' callers':<40}{'completions/s':>14}{'vs plain':>10}")
            for label, rate in rows:
                print(f"  {label:<40}{rate:>14,.0f}{rate / plain:>9.2f}x")
            e_plain = end_to_end(server.url, n, batch=False)
            e_member = end_to_end(server.url, n, batch=True)
            print(f"\n  {'end to end, 1 daemon, 64 slots, no-op':<40}{'completions/s':>14}{'vs plain':>10}")
            for label, rate in (("plain jobs", e_plain), (f"members of one {n:,}-member batch", e_member)):
                print(f"  {label:<40}{rate:>14,.0f}{rate / e_plain:>9.2f}x")
        finally:
            client.close()
            server.stop()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
