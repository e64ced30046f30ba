"""What ``durability=replica`` costs: each store round trip that writes waits for one replica.

A primary and its replica (redis-server processes started here, free loopback ports, temp
dirs). Complete transitions/s through the store actor, 1 and 100 concurrent callers, with the
URL's default durability and with ``?durability=replica``, alternated run by run, min / median
/ max of RUNS runs.

Run: .venv/bin/python bench/durability.py [N] [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import redis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store import completions, prepare  # noqa: E402
from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.store import Store  # noqa: E402
from jobvisor.adapters.store_actor import StoreActor  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


async def rate(url: str, client: redis.Redis, n: int, callers: int) -> float:
    import time

    client.flushall()
    actor = StoreActor(open_backend(url), time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor)
        jobs = await prepare(store, n)
        result = await completions(store, jobs, callers)
        actor.close()
    return result


async def main(n: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        primary = RedisServer(Path(tmp) / "primary", appendonly=False)
        primary.start()
        replica = RedisServer(Path(tmp) / "replica", appendonly=False,
                              extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
        replica.start()
        client = redis.Redis(host="127.0.0.1", port=primary.port)
        try:
            client.execute_command("WAIT", 1, 10_000)
            print(f"complete transitions/s through the store actor, N={n}, {runs} runs (min / median / max)")
            for callers in (1, 100):
                found: dict[str, list[float]] = {"primary only": [], "durability=replica": []}
                for _ in range(runs):
                    found["primary only"].append(await rate(primary.url, client, n, callers))
                    found["durability=replica"].append(await rate(primary.url + "?durability=replica", client, n,
                                                                  callers))
                for label, values in found.items():
                    print(f"  {callers:>3} caller(s), {label:<20}{min(values):>9,.0f}"
                          f"{statistics.median(values):>9,.0f}{max(values):>9,.0f}")
        finally:
            client.close()
            replica.stop()
            primary.stop()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 5000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
