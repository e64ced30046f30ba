"""The validator actor in a whole daemon, on the embedded store, under trio's MockClock.

Python validators (no sockets), so virtual time is safe: check spacing, time limits
and attempt counts are exact. The HTTP validator against real loopback servers is in
``tests/test_http_scenarios.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from jobvisor import App, ValidationResult
from jobvisor.adapters.backend import MemoryServers
from jobvisor.adapters.records import JobSpec, JobView
from tests.harness import ended, running_daemon


def _spec(app: App, type_: str, **extra: Any) -> JobSpec:
    h = app.handlers[type_]
    return JobSpec(type=type_, max_retries=h.max_retries, has_validator=h.has_validator, **extra)


class SourceOfTruth:
    """A Python validator that says ``processing`` for the first ``busy`` checks."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.checks: list[float] = []

    async def __call__(self, job: JobView) -> ValidationResult:
        self.checks.append(trio.current_time())
        if len(self.checks) <= self.busy:
            return ValidationResult(ok=False, status="processing", reason="not synced yet")
        return ValidationResult(ok=True, status="completed")


def _app(validator: Any, runs: list[float] | None = None) -> App:
    app = App()

    @app.handler("sync", max_retries=0)
    async def sync(ctx: Any) -> dict[str, int]:
        if runs is not None:
            runs.append(trio.current_time())
        return {"rows": 7}

    app.validator("sync")(validator)
    return app


@pytest.mark.parametrize("busy", [0, 1, 3])
async def test_a_job_completes_only_once_the_source_of_truth_agrees(
    autojump_clock: trio.testing.MockClock, busy: int
) -> None:
    truth = SourceOfTruth(busy)
    runs: list[float] = []
    app = _app(truth, runs)
    async with running_daemon(app, validation_interval=2.0, validation_jitter=0.1) as (daemon, watcher):
        job = (await daemon.store.submit(_spec(app, "sync", notify=True))).id
        await watcher.until(ended(watcher, job))
        view = await daemon.store.get_job(job)
        events = [e for e in await daemon.store.events("default") if e.id == job]
        [delivery] = await daemon.store.take_deliveries("default")
    assert view.state == "completed"
    assert view.validation_status == "completed"
    assert len(truth.checks) == busy + 1
    assert [c.ok for c in view.validation_checks] == [False] * busy + [True]
    assert truth.checks[0] - runs[0] == pytest.approx(0.0, abs=0.01)  # the first check is at once
    for gap in (b - a for a, b in zip(truth.checks, truth.checks[1:], strict=False)):
        assert 1.8 - 1e-6 <= gap <= 2.2 + 0.01, gap
    types = [e.type for e in events]
    assert types.count("job.validation_check") == busy
    assert types.count("job.completed") == 1
    assert types[-1] == "job.completed"
    assert delivery.event == "job.completed"
    assert '"state":"completed"' in delivery.snapshot
    assert '"validation_status":"completed"' in delivery.snapshot


async def test_a_source_of_truth_that_never_agrees_ends_in_validation_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    truth = SourceOfTruth(busy=10**6)
    app = _app(truth)
    async with running_daemon(app) as (daemon, watcher):  # defaults: 5 checks, 2 s apart
        job = (await daemon.store.submit(_spec(app, "sync", notify=True))).id
        t0 = trio.current_time()
        await watcher.until(ended(watcher, job))
        elapsed = trio.current_time() - t0
        view = await daemon.store.get_job(job)
        events = [e.type for e in await daemon.store.events("default") if e.id == job]
        deliveries = await daemon.store.take_deliveries("default")
    assert len(truth.checks) == 5
    assert 4 * 1.8 - 0.01 <= elapsed <= 4 * 2.2 + 0.1
    assert (view.state, view.reason, view.validation_status) == ("validation_failed", "validation_failed", "processing")
    assert view.error["type"] == "ValidationFailed"
    assert "5 checks" in view.error["message"]
    assert "job.completed" not in events
    assert [d.event for d in deliveries] == ["job.validation_failed"]


async def test_every_kind_of_failed_check_costs_one_attempt_with_its_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []

    async def flaky(job: JobView) -> Any:
        calls.append(trio.current_time())
        match len(calls):
            case 1:
                raise ConnectionError("source of truth is down")
            case 2:
                return "yes"
            case 3:
                await trio.sleep_forever()
            case 4:
                return False
        return True

    app = _app(flaky)
    async with running_daemon(app, validation_timeout=3.0, validation_interval=1.0, validation_jitter=0.0) as (
        daemon, watcher
    ):
        job = (await daemon.store.submit(_spec(app, "sync"))).id
        await watcher.until(ended(watcher, job))
        view = await daemon.store.get_job(job)
    assert view.state == "completed"
    assert [(c.n, c.ok, c.reason) for c in view.validation_checks] == [
        (1, False, "validator raised ConnectionError: source of truth is down"),
        (2, False, "validator returned str, not a ValidationResult"),
        (3, False, "no verdict within 3s"),
        (4, False, "validator returned False"),
        (5, True, ""),
    ]
    # the hanging check cost exactly its time limit, then the usual interval
    assert calls[3] - calls[2] == pytest.approx(3.0 + 1.0, abs=0.01)


async def test_validation_never_holds_a_worker_slot(autojump_clock: trio.testing.MockClock) -> None:
    async def hangs(job: JobView) -> ValidationResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    app = _app(hangs)

    @app.handler("plain", max_retries=0)
    async def plain(ctx: Any) -> str:
        return "done"

    async with running_daemon(app, concurrency=1, validation_timeout=30.0) as (daemon, watcher):
        slow = (await daemon.store.submit(_spec(app, "sync"))).id
        await watcher.until(lambda: any(r.id == slow and r.to == "validating" for r in watcher.moves))
        quick = (await daemon.store.submit(_spec(app, "plain"))).id
        await watcher.until(ended(watcher, quick))
        assert (await daemon.store.get_job(slow)).state == "validating"
        assert (await daemon.store.get_job(quick)).state == "completed"
        await daemon.store.cancel(slow)


async def test_an_operator_retry_runs_validation_again_not_the_handler(autojump_clock: trio.testing.MockClock) -> None:
    truth = SourceOfTruth(busy=5)
    runs: list[float] = []
    app = _app(truth, runs)
    async with running_daemon(app, validation_attempts=5) as (daemon, watcher):
        job = (await daemon.store.submit(_spec(app, "sync"))).id
        await watcher.until(ended(watcher, job))
        assert (await daemon.store.get_job(job)).state == "validation_failed"
        mark = len(watcher.replies)
        assert (await daemon.store.retry(job)).to == "validating"
        await watcher.until(ended(watcher, job, mark))
        view = await daemon.store.get_job(job)
    assert view.state == "completed"
    assert len(runs) == 1
    assert view.attempts == 1
    assert [(c.epoch, c.ok) for c in view.validation_checks] == [(0, False)] * 5 + [(1, True)]


async def test_a_job_cancelled_mid_check_stays_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    inside = trio.Event()
    release = trio.Event()

    async def slow_yes(job: JobView) -> bool:
        inside.set()
        await release.wait()
        return True

    app = _app(slow_yes)
    async with running_daemon(app, validation_timeout=60.0) as (daemon, watcher):
        job = (await daemon.store.submit(_spec(app, "sync", notify=True))).id
        await inside.wait()
        assert (await daemon.store.cancel(job)).to == "cancelled"
        release.set()
        await watcher.until(lambda: any(r.kind == "absorbed" and r.id == job for r in watcher.replies))
        view = await daemon.store.get_job(job)
        events = [e.type for e in await daemon.store.events("default") if e.id == job]
    assert view.state == "cancelled"
    assert view.validation_checks == []
    assert "job.completed" not in events
    assert events.count("job.cancelled") == 1


async def test_shutdown_gives_a_check_back_and_the_next_daemon_makes_it(autojump_clock: trio.testing.MockClock) -> None:
    inside = trio.Event()

    async def hangs(job: JobView) -> bool:
        inside.set()
        await trio.sleep_forever()
        return False

    memory = MemoryServers()
    first = _app(hangs)
    async with running_daemon(first, memory=memory, validation_timeout=600.0) as (daemon, watcher):
        job = (await daemon.store.submit(_spec(first, "sync"))).id
        await inside.wait()
        t0 = trio.current_time()
    assert trio.current_time() - t0 < 1.0  # not the check's 600 s limit
    assert any(r.kind == "released" and r.id == job for r in watcher.replies)
    truth = SourceOfTruth(busy=0)
    async with running_daemon(_app(truth), memory=memory) as (daemon, watcher):
        await watcher.until(lambda: any(r.id == job and r.to == "completed" for r in watcher.moves))
        view = await daemon.store.get_job(job)
    assert [(c.n, c.ok) for c in view.validation_checks] == [(1, True)]
