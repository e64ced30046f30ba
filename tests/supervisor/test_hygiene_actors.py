"""The evaluator and retention actors in virtual time, over the embedded store called inline.

No threads, sockets or real Redis: the store runs fakeredis inline through a
DirectExecutor, so trio's MockClock (autojump) can skip days at once and the
assertions can name exact virtual times. Jobs are finished through the same
store ops a worker uses, at chosen virtual times.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from jobvisor import App
from jobvisor.supervisor.evaluator import run_evaluator
from tests.hygiene_support import DAY, HOOK, actors, filed, finish, until


async def test_the_evaluator_files_at_start_and_then_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    async with actors(run=(run_evaluator,), evaluator_interval=600) as (deps, watcher, timeline):
        t0 = trio.current_time()
        first = await finish(deps, "completed")  # just after the pass the actor made at start
        await trio.sleep(10)
        second = await finish(deps, "failed")
        await until(watcher, filed(timeline, first, second))
        times = timeline.times("filed")
        assert times[first] - t0 == 600
        assert times[second] - t0 == 600
        third = await finish(deps, "cancelled")
        await until(watcher, filed(timeline, third))
        assert timeline.times("filed")[third] - t0 == 1200
        views = [await deps.store.get_job(j) for j in (first, second, third)]
    assert [(v.category, v.problem) for v in views] == [
        ("complete", "none"), ("filed", "retries_exhausted"), ("filed", "cancelled")]
    assert [v.filed_at for v in views] == [1_750_000_600.0, 1_750_000_600.0, 1_750_001_200.0]


async def test_a_completed_job_is_filed_once_its_webhook_settles(autojump_clock: trio.testing.MockClock) -> None:
    async with actors(run=(run_evaluator,), evaluator_interval=600) as (deps, watcher, timeline):
        t0 = trio.current_time()
        dead = await finish(deps, "completed", webhook_url=HOOK)
        delivered = await finish(deps, "completed", webhook_url=HOOK)
        silent = await finish(deps, "completed", webhook_url=HOOK)
        await until(watcher, lambda: len([r for _, r in timeline.seen if r.kind == "deferred"]) == 3)
        assert trio.current_time() - t0 == 600
        for delivery in await deps.store.take_deliveries("default", max_attempts=1):
            if delivery.object == dead:
                await deps.store.delivery_outcome("default", delivery.id, delivery.token, "reject",
                                                  max_attempts=1, status=410)
            elif delivery.object == delivered:
                await deps.store.delivery_outcome("default", delivery.id, delivery.token, "succeed",
                                                  max_attempts=1, status=200)
            else:
                await deps.store.delivery_outcome("default", delivery.id, delivery.token, "release",
                                                  max_attempts=1)
        await until(watcher, filed(timeline, dead, delivered))
        assert timeline.times("filed")[dead] - t0 == 1200
        await until(watcher, filed(timeline, silent))  # never settles: filed a day after it finished
        assert timeline.times("filed")[silent] - t0 == 86400
        problems = [(await deps.store.get_job(j)).problem for j in (dead, delivered, silent)]
    assert problems == ["notification_failed", "none", "notification_failed"]


async def test_required_outputs_come_from_the_app_and_from_published_types(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()

    @app.handler("thumb", required_outputs=["url"])
    async def thumb(ctx: Any) -> Any:
        return None

    async with actors(app, run=(run_evaluator,), evaluator_interval=60) as (deps, watcher, timeline):
        await deps.store.register_types({"doc": {"queue": "default", "required_outputs": ["pages"]}})
        jobs = {
            "thumb-ok": await finish(deps, "completed", type="thumb", result={"url": "u"}),
            "thumb-missing": await finish(deps, "completed", type="thumb", result={"width": 3}),
            "doc-missing": await finish(deps, "completed", type="doc", result={"url": "u"}),
            "other-empty": await finish(deps, "completed", type="other", result=[]),
            "other-ok": await finish(deps, "completed", type="other", result=0),
        }
        await until(watcher, filed(timeline, *jobs.values()))
        found = {name: (await deps.store.get_job(j)).category for name, j in jobs.items()}
    assert found == {"thumb-ok": "complete", "thumb-missing": "incomplete", "doc-missing": "incomplete",
                     "other-empty": "incomplete", "other-ok": "complete"}


async def test_retention_deletes_what_is_due_and_nothing_else(autojump_clock: trio.testing.MockClock) -> None:
    async with actors(evaluator_interval=600, retention_interval=3600) as (deps, watcher, timeline):
        t0 = trio.current_time()
        finished = {}
        for outcome in ("completed", "failed", "cancelled", "timed_out"):
            finished[await finish(deps, outcome, idempotency_key=f"k-{outcome}")] = trio.current_time()
        await trio.sleep(3 * DAY)
        late = await finish(deps, "completed")
        finished[late] = trio.current_time()
        await trio.sleep(7 * DAY - 1)  # the late job is one second short of its 7 days
        deleted = timeline.times("purged")
        first = next(iter(finished))
        assert set(deleted) == {first}
        await until(watcher, lambda: late in timeline.times("purged"))
        await trio.sleep(30 * DAY - (trio.current_time() - t0) - 1)
        assert set(timeline.times("purged")) == {first, late}
        await until(watcher, lambda: set(timeline.times("purged")) == set(finished))
        deleted = timeline.times("purged")
        counts = await deps.store.filing_counts("default")
    for job, at in finished.items():
        retention = 7 * DAY if job in (first, late) else 30 * DAY
        age = deleted[job] - at
        assert retention <= age <= retention + 3600 + 600, (job, age - retention)
    assert counts == ({}, 0)
    events = [e for e in await deps.store.events("default") if e.type == "job.deleted"]
    assert sorted(e.id for e in events) == sorted(finished)
    raw = deps.store.executor.backend.client  # type: ignore[attr-defined]
    assert [k for k in raw.keys("*job:*") + raw.keys("*idem:*")] == []


async def test_retention_deletes_in_bounded_batches(autojump_clock: trio.testing.MockClock) -> None:
    async with actors(evaluator_interval=60, retention_interval=600, retention_batch=4,
                      retention_completed=3600) as (deps, watcher, timeline):
        jobs = {await finish(deps, "completed") for _ in range(10)}
        await until(watcher, lambda: set(timeline.times("purged")) == jobs)
        passes = [(at, r.n) for at, r in timeline.seen if r.kind == "purged" and r.n]
    assert [n for _, n in passes] == [4, 4, 2]
    assert len({at for at, _ in passes}) == 1  # one pass, three store calls


async def test_memory_stays_bounded_under_a_steady_load(autojump_clock: trio.testing.MockClock) -> None:
    """Twelve days of 5 jobs every 2 hours, with retention of 2 days (completed) and 4 days (failed)."""
    settings = dict(evaluator_interval=600, retention_interval=1800, retention_completed=2 * DAY,
                    retention_failed=4 * DAY)
    stored_per_day = []
    async with actors(**settings) as (deps, watcher, timeline):
        raw = deps.store.executor.backend.client  # type: ignore[attr-defined]
        for step in range(12 * 12):
            for n in range(5):
                await finish(deps, "failed" if n == 0 else "completed")
            await trio.sleep(7200)
            if step % 12 == 11:
                stored_per_day.append((len(raw.keys("*job:*")), raw.dbsize(), raw.zcard("jv:{default}:finished")))
    jobs = [s[0] for s in stored_per_day]
    # completed: 4 per 2 h kept 2 days = 96; failed: 1 per 2 h kept 4 days = 48; plus one pass of slack
    assert all(j <= 96 + 48 + 5 for j in jobs), jobs
    assert jobs[-1] >= 96 + 48 - 5, jobs
    assert max(jobs[5:]) - min(jobs[5:]) <= 5, jobs
    assert len({keys - stored for stored, keys, _ in stored_per_day}) == 1, stored_per_day  # no other growth
    assert all(finished == stored for stored, _, finished in stored_per_day), stored_per_day


async def test_the_filing_gauges_follow_the_store(autojump_clock: trio.testing.MockClock) -> None:
    async with actors(evaluator_interval=600, retention_interval=600, retention_failed=3600) as (
        deps, watcher, timeline
    ):
        done = await finish(deps, "completed")
        failed = await finish(deps, "failed")
        await until(watcher, filed(timeline, done, failed))
        sample = deps.metrics.registry.get_sample_value
        assert sample("jobvisor_filed_jobs", {"queue": "default", "category": "complete", "problem": "none"}) == 1
        assert sample("jobvisor_filed_jobs", {"queue": "default", "category": "filed",
                                              "problem": "retries_exhausted"}) == 1
        assert sample("jobvisor_filed_jobs", {"queue": "default", "category": "filed", "problem": "stuck"}) == 0
        assert sample("jobvisor_unfiled_jobs", {"queue": "default"}) == 0
        await until(watcher, lambda: failed in timeline.times("purged"))
        assert sample("jobvisor_filed_jobs", {"queue": "default", "category": "filed",
                                              "problem": "retries_exhausted"}) == 0
        assert sample("jobvisor_jobs_deleted_total", {"queue": "default", "state": "failed"}) == 1
