"""The hygiene actors (evaluator, retention) over the embedded store called inline, with a timeline of replies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing

from jobvisor import App
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Reply
from jobvisor.adapters.store import DirectExecutor, Store
from jobvisor.supervisor.config import load_config
from jobvisor.supervisor.deps import Deps, TrioWallClock
from jobvisor.supervisor.evaluator import run_evaluator
from jobvisor.supervisor.hub import Hub
from jobvisor.supervisor.metrics import Metrics
from jobvisor.supervisor.retention import run_retention
from tests.harness import Watcher

DAY = 86400.0
HOOK = "http://hooks.example/jobs"


class Timeline:
    """Every store reply with the virtual time it came back at."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Reply]] = []

    def __call__(self, replies: Any) -> None:
        now = trio.current_time()
        self.seen.extend((now, r) for r in replies)

    def times(self, kind: str) -> dict[str, float]:
        """id -> when a reply of ``kind`` for it came back (``purged`` lists its jobs)."""
        out: dict[str, float] = {}
        for at, r in self.seen:
            if kind == "purged" and r.kind == "purged":
                out.update({j.id: at for j in r.jobs})
            elif r.kind == kind and getattr(r, "id", ""):
                out.setdefault(r.id, at)
        return out


@asynccontextmanager
async def actors(app: App | None = None, *, run: tuple[Callable[..., Any], ...] = (run_evaluator, run_retention),
                 **settings: Any) -> AsyncIterator[tuple[Deps, Watcher, Timeline]]:
    config = load_config({"redis": "memory://hygiene", "worker_id": "t", **settings}, environ={})
    clock = TrioWallClock(epoch=1_750_000_000.0)
    watcher, timeline = Watcher(), Timeline()
    backend = open_backend(config.redis, memory=MemoryServers())
    store = Store(DirectExecutor(backend, clock), observers=[watcher, timeline])
    metrics = Metrics()
    deps = Deps(store=store, app=app or App(), config=config, hub=Hub(), metrics=metrics, clock=clock)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for actor in run:
            await nursery.start(partial(actor, deps, stop))
        try:
            yield deps, watcher, timeline
        finally:
            stop.set()
    backend.close()


async def finish(deps: Deps, outcome: str, **spec: Any) -> str:
    store = deps.store
    spec.setdefault("max_retries", 0)
    result = spec.pop("result", {"ok": True})
    job = (await store.submit(JobSpec(type=spec.pop("type", "t"), **spec))).id
    if outcome == "cancelled":
        await store.cancel(job)
        return job
    [claimed] = await store.claim("default", "w1")
    if outcome == "completed":
        await store.complete(job, claimed.token, result)
    elif outcome == "failed":
        await store.fail(job, claimed.token, {"message": "boom"})
    elif outcome == "timed_out":
        await store.report(job, claimed.token, "timeout", error={"message": "slow"})
    assert (await store.get_job(job)).state == outcome
    return job


async def until(watcher: Watcher, condition: Callable[[], Any]) -> None:
    """Wait for ``condition`` with a virtual-time bound far beyond any interval here."""
    await watcher.until(condition, timeout=60 * DAY)


def filed(timeline: Timeline, *jobs: str) -> Callable[[], bool]:
    return lambda: set(jobs) <= set(timeline.times("filed"))
