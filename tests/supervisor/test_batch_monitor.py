"""The batch monitor in the daemon, on the embedded store, under trio's MockClock.

Virtual time makes the stuck sweep exact: a batch with no member activity for its
stuck-after time is finalized at that very instant, by whichever daemon's monitor gets
there first, exactly once. No threads or sockets are involved (the embedded store is
called inline), so autojump is safe here.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import trio

from jobvisor import App
from jobvisor.adapters.backend import MemoryServers
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.supervisor.config import load_config
from tests.harness import Watcher, running_daemon

FAR = 10**6  # a member submitted with this delay stays scheduled for the whole test
HOOK = "http://hooks.example/batches"


def _raw(memory: MemoryServers, name: str = "test") -> Any:
    """Reads the embedded store the daemons share (one test also writes, and says so)."""
    return fakeredis.FakeRedis(server=memory.get(name), decode_responses=True)


def _finalized_by_monitor(watcher: Watcher, batch_id: str) -> Any:
    """The first sweep reply in which a monitor moved ``batch_id``, with the time it came."""

    def found() -> Any:
        for r in watcher.replies:
            if r.kind == "swept":
                for moved in r.batches:
                    if moved.id == batch_id:
                        return moved
        return None

    return found


def _batch_events(raw: Any, batch_id: str, queue: str = "default") -> list[str]:
    return [f["type"] for _, f in raw.xrange(Keys(queue).events) if f["id"] == batch_id]


def _outbox_rows(raw: Any, batch_id: str, queue: str = "default") -> list[str]:
    prefix = Keys(queue).delivery("")
    return sorted(k[len(prefix):] for k in raw.scan_iter(match=prefix + batch_id + "~*"))


async def test_a_stuck_batch_fails_stuck_after_its_last_member_activity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryServers()
    async with running_daemon(App(), memory=memory) as (daemon, watcher):
        store = daemon.store
        t0 = trio.current_time()
        b = (await store.create_batch(BatchSpec(expected=3, threshold=50, stuck_after=30.25, webhook_url=HOOK))).id
        members = [(await store.submit(JobSpec(type="far", batch=b, delay=FAR))).id for _ in range(3)]
        await trio.sleep(20)
        assert (await store.get_batch(b)).state == "running"  # its 3 expected members are in
        await store.cancel(members[0])  # member activity at t0+20: stuck from t0+50.25, not t0+30.25
        moved = await watcher.until(_finalized_by_monitor(watcher, b))
        at = trio.current_time() - t0
        view = await store.get_batch(b)
    assert at == pytest.approx(50.25, abs=0.01)
    assert (moved.from_, moved.to) == ("running", "failed")
    assert (view.state, view.reason, view.cancelled, view.completed) == ("failed", "stuck", 1, 0)
    raw = _raw(memory)
    assert _batch_events(raw, b) == ["batch.created", "batch.close", "batch.finalize", "batch.failed"]
    assert _outbox_rows(raw, b) == [f"{b}~batch.failed~0"]


async def test_a_stuck_batch_over_its_threshold_completes_partially(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()

    @app.handler("quick")
    async def quick(ctx: Any) -> str:
        return "done"

    memory = MemoryServers()
    async with running_daemon(app, memory=memory) as (daemon, watcher):
        store = daemon.store
        # no expected total and never closed: the size is unknown, so only the stuck sweep ends it
        b = (await store.create_batch(BatchSpec(threshold=50, stuck_after=10.5, webhook_url=HOOK))).id
        done = (await store.submit(JobSpec(type="quick", batch=b))).id
        await store.submit(JobSpec(type="quick", batch=b, delay=FAR))
        await watcher.until(lambda: any(r.id == done and r.to == "completed" for r in watcher.moves))
        t_done = trio.current_time()
        moved = await watcher.until(_finalized_by_monitor(watcher, b))
        at = trio.current_time() - t_done
        view = await store.get_batch(b)
    assert at == pytest.approx(10.5, abs=0.01)
    assert moved.to == "completed_partial"
    assert (view.state, view.reason, view.completed, view.members) == ("completed_partial", None, 1, 2)
    raw = _raw(memory)
    assert _batch_events(raw, b) == ["batch.created", "batch.finalize", "batch.completed"]
    assert _outbox_rows(raw, b) == [f"{b}~batch.completed~0"]


async def test_three_daemons_monitors_sweep_one_stuck_batch_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Their sweeps come due at the same virtual instant: one finalize, the others find nothing."""
    memory = MemoryServers()
    async with (
        running_daemon(App(), memory=memory, worker_id="a") as (a, wa),
        running_daemon(App(), memory=memory, worker_id="b") as (b_daemon, wb),
        running_daemon(App(), memory=memory, worker_id="c") as (c, wc),
    ):
        batches = []
        for _ in range(20):
            r = await a.store.create_batch(BatchSpec(expected=1, stuck_after=5, webhook_url=HOOK))
            await a.store.submit(JobSpec(type="far", batch=r.id, delay=FAR))
            batches.append(r.id)
        await trio.sleep(7)
        views = [await c.store.get_batch(b) for b in batches]
        sweeps = [r for w in (wa, wb, wc) for r in w.replies if r.kind == "swept"]
    assert {(v.state, v.reason) for v in views} == {("failed", "stuck")}
    movers = [m.id for r in sweeps for m in r.batches]
    assert sorted(movers) == sorted(batches)  # each batch moved by exactly one sweep
    raw = _raw(memory)
    for b in batches:
        assert _batch_events(raw, b) == ["batch.created", "batch.close", "batch.finalize", "batch.failed"]
        assert _outbox_rows(raw, b) == [f"{b}~batch.failed~0"]


async def test_the_ready_pass_finalizes_a_batch_left_ready_one_page_per_sweep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The safety net. Every member transition finalizes its batch in its own step, so the
    test makes batches ready behind the store's back, with a raw write of the counter (as if
    a member's step had stopped between its counter and its finalize). The monitor, sweeping
    two batches a time, finalizes all five, each once, within three sweeps."""
    memory = MemoryServers()
    async with running_daemon(App(), memory=memory, batch_interval=2.0, batch_sweep_size=2) as (daemon, watcher):
        store = daemon.store
        raw = _raw(memory)
        batches = []
        for _ in range(5):
            b = (await store.create_batch(BatchSpec(expected=1, webhook_url=HOOK))).id
            await store.submit(JobSpec(type="far", batch=b, delay=FAR))
            batches.append(b)
        await trio.sleep(0.5)
        assert {(await store.get_batch(b)).state for b in batches} == {"running"}  # its one member is in
        t0 = trio.current_time()
        for b in batches:
            raw.hset(Keys("default").batch(b), "completed", 1)  # the raw write described above
        for b in batches:
            await watcher.until(_finalized_by_monitor(watcher, b))
        took = trio.current_time() - t0
        views = [await store.get_batch(b) for b in batches]
    assert {(v.state, v.completed) for v in views} == {("completed", 1)}
    assert took <= 3 * 2.0 + 0.01
    for b in batches:
        assert _batch_events(raw, b) == ["batch.created", "batch.close", "batch.finalize", "batch.completed"]
        assert _outbox_rows(raw, b) == [f"{b}~batch.completed~0"]


def test_batch_monitor_settings_come_from_flags_then_environment() -> None:
    config = load_config({"batch_interval": "0.25"}, environ={"JOBVISOR_BATCH_INTERVAL": "9",
                                                              "JOBVISOR_BATCH_SWEEP_SIZE": "7"})
    assert (config.batch_interval, config.batch_sweep_size) == (0.25, 7)
    defaults = load_config({}, environ={})
    assert (defaults.batch_interval, defaults.batch_sweep_size) == (1.0, 100)
