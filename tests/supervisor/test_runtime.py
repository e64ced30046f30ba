"""The daemon in process, on the embedded store, under trio's MockClock.

Virtual time makes retries, backoffs and timeouts exact and instant: the
clock only jumps when every task waits. No threads or sockets are involved
(the embedded store is called inline), so autojump is safe here.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from jobvisor import App
from jobvisor.adapters.records import JobSpec
from tests.harness import TERMINAL, ended, running_daemon


def _spec(type_: str, app: App, **extra: Any) -> JobSpec:
    h = app.handlers[type_]
    return JobSpec(type=type_, phases=h.phases, timeout=h.timeout, max_retries=h.max_retries,
                   backoff=h.backoff, backoff_max=h.backoff_max, **extra)


async def test_retries_back_off_and_stop_at_max_retries(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    starts: list[float] = []

    @app.handler("boom", max_retries=3, backoff=2.0, backoff_max=100.0)
    async def boom(ctx: Any) -> None:
        starts.append(trio.current_time())
        raise ValueError(f"attempt {ctx.attempt}")

    async with running_daemon(app) as (daemon, watcher):
        job = await daemon.store.submit(_spec("boom", app))
        await watcher.until(ended(watcher, job.id))
        view = await daemon.store.get_job(job.id)
    assert view.state == "failed"
    assert view.retry_count == 3 == view.max_retries
    assert [a.outcome for a in view.attempt_records] == ["failed"] * 4
    assert view.error["message"] == "attempt 4"
    assert view.input is None
    # exponential backoff with equal jitter: the n-th retry waits within [b*2^(n-1)/2, b*2^(n-1)]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        full = 2.0 * 2 ** (n - 1)
        assert full / 2 - 0.01 <= gap <= full + 1.0, (n, gap)


async def test_timeout_cancels_the_handler_and_ends_timed_out(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    cancelled = []

    @app.handler("sleepy", timeout=5.0, max_retries=1, backoff=0.5)
    async def sleepy(ctx: Any) -> None:
        try:
            await trio.sleep(3600)
        except trio.Cancelled:
            cancelled.append(trio.current_time())
            raise

    async with running_daemon(app) as (daemon, watcher):
        t0 = trio.current_time()
        job = await daemon.store.submit(_spec("sleepy", app))
        await watcher.until(ended(watcher, job.id))
        view = await daemon.store.get_job(job.id)
    assert view.state == "timed_out"
    assert [a.outcome for a in view.attempt_records] == ["timed_out", "timed_out"]
    assert len(cancelled) == 2
    assert cancelled[0] - t0 == pytest.approx(5.0, abs=0.1)
    assert view.retry_count == 1


async def test_a_retry_resumes_at_the_first_unfinished_phase(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    runs: dict[str, int] = {"a": 0, "b": 0, "c": 0}

    @app.handler("phased", phases=["a", "b", "c"], max_retries=2, backoff=1.0)
    async def phased(ctx: Any) -> Any:
        async def step(name: str) -> str:
            runs[name] += 1
            if name == "b" and ctx.attempt == 1:
                raise RuntimeError("b breaks once")
            return f"{name}@{ctx.attempt}"

        return [await ctx.phase(p, step, p) for p in ("a", "b", "c")]

    async with running_daemon(app) as (daemon, watcher):
        job = await daemon.store.submit(_spec("phased", app))
        await watcher.until(ended(watcher, job.id))
        view = await daemon.store.get_job(job.id)
    assert view.state == "completed"
    assert runs == {"a": 1, "b": 2, "c": 1}
    assert view.result == ["a@1", "b@2", "c@2"]
    assert view.phases == {"a": "completed", "b": "completed", "c": "completed"}
    first, second = view.attempt_records
    assert first.interrupted_phase == "b"
    assert first.outcome == "failed"
    assert second.resumed_at_phase == "b"
    assert second.outcome == "succeeded"
    # a completed job shows no error; the failed attempt keeps its own
    assert view.error is None
    assert first.error["message"] == "b breaks once"
    assert second.error is None


async def test_retry_from_start_runs_every_phase_again(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    runs = {"a": 0, "b": 0}

    @app.handler("twice", phases=["a", "b"], max_retries=0)
    async def twice(ctx: Any) -> Any:
        async def step(name: str) -> str:
            runs[name] += 1
            if name == "b" and ctx.attempt == 1:
                raise RuntimeError("no")
            return name

        return [await ctx.phase(p, step, p) for p in ("a", "b")]

    async with running_daemon(app) as (daemon, watcher):
        job = await daemon.store.submit(_spec("twice", app))
        await watcher.until(ended(watcher, job.id))
        assert (await daemon.store.get_job(job.id)).state == "failed"
        mark = len(watcher.replies)
        reply = await daemon.store.retry(job.id, from_start=True)
        assert reply.to == "queued"
        await watcher.until(ended(watcher, job.id, after=mark))
        view = await daemon.store.get_job(job.id)
    assert view.state == "completed"
    assert runs == {"a": 2, "b": 2}
    assert view.retry_count == 0


async def test_cancel_queued_scheduled_and_running(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    started = trio.Event()
    was_cancelled = trio.Event()

    @app.handler("long", phases=["one", "two"], timeout=3600)
    async def long(ctx: Any) -> None:
        async def forever() -> None:
            started.set()
            try:
                await trio.sleep(3600)
            except trio.Cancelled:
                was_cancelled.set()
                raise

        await ctx.phase("one", forever)

    async with running_daemon(app, concurrency=1) as (daemon, watcher):
        running = await daemon.store.submit(_spec("long", app))
        await started.wait()
        queued = await daemon.store.submit(_spec("long", app))
        scheduled = await daemon.store.submit(_spec("long", app, delay=600))
        for job in (queued, scheduled, running):
            reply = await daemon.store.cancel(job.id)
            assert reply.to == "cancelled", reply
        await was_cancelled.wait()
        again = await daemon.store.cancel(running.id)
        events = await daemon.store.events("default")
        views = [await daemon.store.get_job(j.id) for j in (queued, scheduled, running)]
    assert again.kind == "absorbed"
    for view in views:
        assert view.state == "cancelled"
        assert set(view.phases.values()) == {"cancelled"}
    cancels = [e for e in events if e.type == "job.cancelled"]
    assert sorted(e.id for e in cancels) == sorted(j.id for j in (queued, scheduled, running))
    assert views[2].attempt_records[0].outcome == "cancelled"


async def test_cancel_racing_completion_ends_in_exactly_one_terminal_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    gate = trio.Event()
    inside = trio.Event()

    @app.handler("quick", timeout=60)
    async def quick(ctx: Any) -> str:
        inside.set()
        await gate.wait()
        return "done"

    async with running_daemon(app) as (daemon, watcher):
        for _ in range(10):
            inside = trio.Event()
            gate = trio.Event()
            job = await daemon.store.submit(_spec("quick", app))
            await inside.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(daemon.store.cancel, job.id)
                gate.set()
            await watcher.until(ended(watcher, job.id))
            events = [e for e in await daemon.store.events("default") if e.id == job.id]
            terminal = [e for e in events if e.fields.get("to") in TERMINAL]
            assert len(terminal) == 1, terminal
            assert (await daemon.store.get_job(job.id)).state == terminal[0].fields["to"]


async def test_an_unencodable_result_fails_the_attempt_and_an_unknown_type_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A job of a type this daemon has no handler for is never claimed by it: it stays
    queued, no attempt spent, for a daemon that has the handler (rolling deploys)."""
    app = App()

    @app.handler("weird", max_retries=0)
    async def weird(ctx: Any) -> Any:
        return {"a": object()}

    @app.handler("fine", max_retries=0)
    async def fine(ctx: Any) -> str:
        return "ok"

    async with running_daemon(app) as (daemon, watcher):
        stray = await daemon.store.submit(JobSpec(type="nobody-handles-this", max_retries=0))
        bad = await daemon.store.submit(_spec("weird", app))
        await watcher.until(ended(watcher, bad.id))
        good = await daemon.store.submit(_spec("fine", app))
        await watcher.until(ended(watcher, good.id))
        views = [await daemon.store.get_job(j.id) for j in (bad, stray, good)]
    assert views[0].state == "failed"
    assert views[0].error["type"] == "UnencodableResult"
    assert (views[1].state, views[1].attempts, views[1].retry_count, views[1].error) == ("queued", 0, 0, None)
    assert views[2].state == "completed"
    assert views[2].result == "ok"


async def test_shutdown_releases_interrupted_jobs_naming_the_phase(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    in_second = trio.Event()

    @app.handler("stubborn", phases=["first", "second"], timeout=3600, max_retries=0)
    async def stubborn(ctx: Any) -> None:
        async def quick() -> int:
            return 1

        async def slow() -> None:
            in_second.set()
            await trio.sleep(3600)

        await ctx.phase("first", quick)
        await ctx.phase("second", slow)

    async with running_daemon(app, grace=2.0) as (daemon, watcher):
        job = await daemon.store.submit(_spec("stubborn", app))
        await in_second.wait()
        t0 = trio.current_time()
    # leaving the block shut the daemon down: grace, then release
    assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.5)
    released = [r for r in watcher.moves if r.id == job.id and r.trigger == "release"]
    assert len(released) == 1
    assert released[0].to == "queued"
    assert released[0].interrupted_phase == "second"
