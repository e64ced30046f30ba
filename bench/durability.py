"""What ``durability=replica`` costs: each store round trip that writes waits for one replica.

A primary and its replica (redis-server processes started here, free loopback ports, temp
dirs), or with ``--cluster`` a 3-master Redis Cluster with one replica per master and the jobs
on 3 queues, one per master (each master's pipeline ends with its own ``WAIT``). Complete
transitions/s through the store actor, 1 and 100 concurrent callers, with the URL's default
durability and with ``?durability=replica``, alternated run by run, min / median / max of
RUNS runs.

Run: .venv/bin/python bench/durability.py [--cluster] [N] [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store import completions  # noqa: E402
from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import Store  # noqa: E402
from jobvisor.adapters.store_actor import StoreActor  # noqa: E402
from tests.adapters.test_cluster_store import queues_on_every_master  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


async def prepare(store: Store, n: int, queues: list[str]) -> list[tuple[str, str]]:
    """``n`` claimed jobs, spread over ``queues``."""
    claimed = []
    for i, queue in enumerate(queues):
        share = n // len(queues) + (1 if i < n % len(queues) else 0)
        await store.submit_many([JobSpec(type="noop", queue=queue) for _ in range(share)])
        mine: list[object] = []
        while len(mine) < share:
            mine += await store.claim(queue, "bench", n=min(256, share - len(mine)), lease=600)
        claimed += mine
    return [(c.id, c.token) for c in claimed]  # type: ignore[attr-defined]


async def rate(url: str, flush: Callable[[], None], n: int, callers: int, queues: list[str]) -> float:
    flush()
    actor = StoreActor(open_backend(url), time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor)
        jobs = await prepare(store, n, queues)
        result = await completions(store, jobs, callers)
        actor.close()
    return result


async def measure(url: str, flush: Callable[[], None], n: int, runs: int, queues: list[str]) -> None:
    print(f"complete transitions/s through the store actor, N={n}, {runs} runs (min / median / max)")
    for callers in (1, 100):
        found: dict[str, list[float]] = {"primary only": [], "durability=replica": []}
        for _ in range(runs):
            found["primary only"].append(await rate(url, flush, n, callers, queues))
            found["durability=replica"].append(await rate(url + "?durability=replica", flush, n, callers, queues))
        for label, values in found.items():
            print(f"  {callers:>3} caller(s), {label:<20}{min(values):>9,.0f}"
                  f"{statistics.median(values):>9,.0f}{max(values):>9,.0f}")


async def single(n: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        primary = RedisServer(Path(tmp) / "primary", appendonly=False)
        primary.start()
        replica = RedisServer(Path(tmp) / "replica", appendonly=False,
                              extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
        replica.start()
        client = redis.Redis(host="127.0.0.1", port=primary.port)
        try:
            client.execute_command("WAIT", 1, 10_000)
            await measure(primary.url, client.flushall, n, runs, ["default"])
        finally:
            client.close()
            replica.stop()
            primary.stop()


async def cluster(n: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nodes = RedisCluster(Path(tmp) / "cluster", replicas=1)
        try:
            nodes.start()
            print("a 3-master Cluster, 1 replica per master, jobs on 3 queues (one per master)")
            await measure(nodes.url, nodes.flush, n, runs, queues_on_every_master(nodes))
        finally:
            nodes.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--cluster"]
    main = cluster if "--cluster" in sys.argv[1:] else single
    trio.run(main, int(args[0]) if args else 5000, int(args[1]) if len(args) > 1 else 3)
