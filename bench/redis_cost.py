"""What each store op costs redis-server, per call and per job, alone and batched.

For submit, claim and complete, N jobs go through the op one at a time (one job per call)
and batched (100 jobs per call: ``submit_many``; ``claim(n=100)``; 100 concurrent completes,
which the store actor merges into one script call per round trip). From the server's exact
counters (bench/redis_stats.py), per op and mode:
* script us per call and per job (time inside FCALL, from INFO commandstats);
* Redis commands and round trips (requests read) per job;
* server CPU us per job;
then the whole lifecycle (submit + claim + complete, one at a time), and the memory per
queued job and per finished job (a small result stored).

Run: .venv/bin/python bench/redis_cost.py [N] [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.redis_stats import Cost, Counters  # noqa: E402
from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import Store, SyncStore  # noqa: E402
from jobvisor.adapters.store_actor import StoreActor  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

BATCH = 100
RESULT = {"ok": True}


def spec() -> JobSpec:
    return JobSpec(type="noop", max_retries=0)


async def phase(counters: Counters, work: Callable[[], Awaitable[Any]]) -> Cost:
    before = counters.snapshot()
    mark = counters.mark()
    t0 = time.perf_counter()
    await work()
    cost = counters.cost(before, counters.snapshot(), mark)
    cost.seconds = time.perf_counter() - t0
    return cost


async def one_round(url: str, n: int) -> dict[str, Cost]:
    client = redis.Redis.from_url(url)
    counters = Counters(client)
    sync = SyncStore(open_backend(url))
    actor = StoreActor(open_backend(url), time.time)
    store = Store(actor)
    costs: dict[str, Cost] = {}
    claimed: list[Any] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            client.flushall()
            counters.counted("flushall")
            await store.submit(spec())  # loads the library
            (warm,) = await store.claim("default", "bench", n=1, lease=600)
            await store.complete(warm.id, warm.token, RESULT)
            empty = counters.snapshot()

            async def submit_single() -> None:
                for _ in range(n):
                    sync.submit(spec())

            async def submit_batched() -> None:
                for _ in range(0, n, BATCH):
                    sync.submit_many([spec() for _ in range(BATCH)])

            async def claim_single() -> None:
                for _ in range(n):
                    claimed.extend(sync.claim("default", "bench", n=1, lease=600))

            async def claim_batched() -> None:
                for _ in range(0, n, BATCH):
                    claimed.extend(sync.claim("default", "bench", n=BATCH, lease=600))

            async def complete_single() -> None:
                for job in claimed:
                    sync.complete(job.id, job.token, RESULT)
                claimed.clear()

            async def complete_batched() -> None:
                it = iter(list(claimed))
                claimed.clear()

                async def caller() -> None:
                    for job in it:
                        await store.complete(job.id, job.token, RESULT)

                async with trio.open_nursery() as callers:
                    for _ in range(BATCH):
                        callers.start_soon(caller)

            costs["submit 1"] = await phase(counters, submit_single)
            queued = counters.snapshot()
            costs["claim 1"] = await phase(counters, claim_single)
            costs["complete 1"] = await phase(counters, complete_single)
            finished = counters.snapshot()
            costs["submit 100"] = await phase(counters, submit_batched)
            costs["claim 100"] = await phase(counters, claim_batched)
            costs["complete 100"] = await phase(counters, complete_batched)
            costs["memory"] = Cost({}, {}, 0.0, 0, queued.memory - empty.memory)
            costs["memory finished"] = Cost({}, {}, 0.0, 0, finished.memory - empty.memory)
            actor.close()
    finally:
        sync.close()
        client.close()
    return costs


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            version = redis.Redis.from_url(server.url).info("server")["redis_version"]
            runs = [trio.run(one_round, server.url, n) for _ in range(rounds)]
        finally:
            server.stop()
    print(f"redis-server {version}; N={n} jobs per op; {rounds} rounds; median (min-max)\n")

    def med(name: str, key: str) -> str:
        values = [run[name].per(n)[key] for run in runs]
        digits = 2 if key == "reads" else 1
        return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    def per_call(name: str) -> str:
        values = [run[name].per(n)["script_us"] / max(run[name].per(n)["script_calls"], 1e-9) for run in runs]
        return f"{statistics.median(values):.1f}"

    print(f"{'op':<14}{'script us/call':>16}{'script us/job':>22}{'commands/job':>20}{'reads/job':>20}"
          f"{'cpu us/job':>22}")
    for name in ("submit 1", "submit 100", "claim 1", "claim 100", "complete 1", "complete 100"):
        print(f"{name:<14}{per_call(name):>16}{med(name, 'script_us'):>22}{med(name, 'commands'):>20}"
              f"{med(name, 'reads'):>20}{med(name, 'cpu_us'):>22}")
    lifecycle = [sum(run[op].per(n)["script_us"] for op in ("submit 1", "claim 1", "complete 1")) for run in runs]
    cpu = [sum(run[op].per(n)["cpu_us"] for op in ("submit 1", "claim 1", "complete 1")) for run in runs]
    print(f"\nlifecycle, one at a time: script {statistics.median(lifecycle):.0f} us/job "
          f"({min(lifecycle):.0f}-{max(lifecycle):.0f}), server CPU {statistics.median(cpu):.0f} us/job")
    queued = [run["memory"].memory / n for run in runs]
    finished = [run["memory finished"].memory / n for run in runs]
    print(f"memory per queued job {statistics.median(queued):,.0f} B, per finished job (result {RESULT}) "
          f"{statistics.median(finished):,.0f} B")


if __name__ == "__main__":
    main()
