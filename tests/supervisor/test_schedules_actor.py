"""The schedule actor over the embedded store called inline, under trio's MockClock (autojump):
it sleeps until the next tick and fires it (several actors: each tick once), follows the time
zone across DST (a skipped local time does not fire, a repeated one fires once), and the
missed-tick policies when no daemon ran (catch-up capped, skip within the grace); an app's
declared schedules are added at start and a restart writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from functools import partial
from typing import Any

import trio
import trio.testing

from jobvisor import App
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Moved
from jobvisor.adapters.schedules import ScheduleSpec
from jobvisor.adapters.store import DirectExecutor, Store
from jobvisor.supervisor.config import load_config
from jobvisor.supervisor.deps import Deps, TrioWallClock
from jobvisor.supervisor.hub import Hub
from jobvisor.supervisor.metrics import Metrics
from jobvisor.supervisor.schedules import run_schedules
from tests.hygiene_support import Timeline

PARIS_SPRING = datetime(2026, 3, 27, 12, 0, tzinfo=timezone.utc).timestamp()  # 2026-03-29 02:00 -> 03:00
PARIS_AUTUMN = datetime(2026, 10, 24, 12, 0, tzinfo=timezone.utc).timestamp()  # 2026-10-25 03:00 -> 02:00


class World:
    def __init__(self, epoch: float, app: App | None = None) -> None:
        # a long safety poll: the actor wakes for ticks, not for the poll (and days of virtual
        # time stay few iterations)
        self.config = load_config({"redis": "memory://schedules", "worker_id": "t", "idle_poll": 3600},
                                  environ={})
        self.clock = TrioWallClock(epoch=epoch)
        self.timeline = Timeline()
        self.backend = open_backend(self.config.redis, memory=MemoryServers())
        self.store = Store(DirectExecutor(self.backend, self.clock), observers=[self.timeline])
        self.app = app or App()

    def deps(self) -> Deps:
        return Deps(store=self.store, app=self.app, config=self.config, hub=Hub(), metrics=Metrics(),
                    clock=self.clock)

    @asynccontextmanager
    async def daemons(self, n: int = 1) -> AsyncIterator[None]:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                await nursery.start(partial(run_schedules, self.deps(), stop))
            try:
                yield
            finally:
                stop.set()


def utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%m-%d %H:%M:%S")


def moved_at(world: World, trigger: str = "fire") -> list[str]:
    """When (UTC, the daemons' clock) each schedule move by ``trigger`` happened."""
    now_epoch, now_trio = world.clock(), trio.current_time()
    return [utc(now_epoch - (now_trio - at)) for at, r in world.timeline.seen
            if isinstance(r, Moved) and r.machine == "schedule" and r.trigger == trigger]


def jobs(world: World) -> list[Any]:
    return [r for _, r in world.timeline.seen if isinstance(r, Moved) and r.trigger == "fire"]


async def add(world: World, **fields: Any) -> None:
    fields.setdefault("name", "s")
    fields.setdefault("job", JobSpec(type="t"))
    await world.store.add_schedule(ScheduleSpec(**fields))


async def test_each_tick_fires_once_at_its_time_however_many_daemons(
        autojump_clock: trio.testing.MockClock) -> None:
    world = World(epoch=1_750_000_000.0)
    await add(world, every=60)
    async with world.daemons(3):
        await trio.sleep(10 * 60 + 1)
    assert moved_at(world) == [utc(1_750_000_020.0 + 60 * i) for i in range(10)]
    assert len({r.job for r in jobs(world)}) == 10
    assert (await world.store.queue_counts("default"))["queued"] == 10


async def test_a_local_time_skipped_by_dst_does_not_fire(autojump_clock: trio.testing.MockClock) -> None:
    world = World(epoch=PARIS_SPRING)
    await add(world, cron="30 2 * * *", tz="Europe/Paris")
    async with world.daemons(2):
        await trio.sleep(4 * 86400)
    # 02:30 Paris on the 28th (CET), none on the 29th (02:30 does not exist), then CEST
    assert moved_at(world) == ["03-28 01:30:00", "03-30 00:30:00", "03-31 00:30:00"]


async def test_a_local_time_repeated_by_dst_fires_once(autojump_clock: trio.testing.MockClock) -> None:
    world = World(epoch=PARIS_AUTUMN)
    await add(world, cron="30 2 * * *", tz="Europe/Paris")
    async with world.daemons(2):
        await trio.sleep(2 * 86400)
    assert moved_at(world) == ["10-25 00:30:00", "10-26 01:30:00"]


async def test_catch_up_fires_at_most_the_cap_of_missed_ticks(autojump_clock: trio.testing.MockClock) -> None:
    world = World(epoch=1_750_000_000.0)
    await add(world, every=60, missed="catch_up", catch_up_max=3)
    await trio.sleep(10 * 60 + 30)  # no daemon runs: 10 ticks missed
    async with world.daemons(2):
        await trio.sleep(60)
    at = moved_at(world)
    assert at == [utc(1_750_000_630.0)] * 3 + [utc(1_750_000_680.0)]
    view = await world.store.get_schedule("s")
    assert view.fired == 4
    assert view.last_tick == 1_750_000_680.0
    assert moved_at(world, "skip") == []


async def test_skip_fires_the_latest_missed_tick_only_within_the_grace(
        autojump_clock: trio.testing.MockClock) -> None:
    world = World(epoch=1_750_000_000.0)
    await add(world, every=600, grace=60)  # ticks at ...1_750_000_200, 800, 1400
    await trio.sleep(1000)  # no daemon: the tick of 1_750_000_800 is 200 s old when one starts
    async with world.daemons():
        await trio.sleep(500)
    assert moved_at(world, "skip") == [utc(1_750_001_000.0)]
    assert moved_at(world) == [utc(1_750_001_400.0)]
    world2 = World(epoch=1_750_000_000.0)
    await add(world2, every=600, grace=300)  # the same, with a grace that covers it: fired late
    await trio.sleep(1000)
    async with world2.daemons():
        await trio.sleep(1)
    assert len(moved_at(world2)) == 1
    assert moved_at(world2, "skip") == []


async def test_declared_schedules_are_added_at_start_and_a_restart_writes_nothing(
        autojump_clock: trio.testing.MockClock) -> None:
    app = App()

    @app.schedule("every-minute", every=60, input={"k": 1})
    @app.handler("t", max_retries=7)
    async def handler(ctx: Any) -> None:
        return None

    world = World(epoch=1_750_000_000.0, app=app)
    async with world.daemons():
        await trio.sleep(61)
    view = await world.store.get_schedule("every-minute")
    assert (view.state, view.job_type, view.fired) == ("active", "t", 1)
    job = await world.store.get_job(jobs(world)[0].job)
    assert (job.input, job.max_retries) == ({"k": 1}, 7)
    before = len(world.timeline.seen)
    async with world.daemons(2):  # a restart, twice over: the declaration is the stored one
        await trio.sleep(1)
    assert world.timeline.seen[before:] == []  # no op ran: nothing written
