"""The evaluator on the real redis-server: every category and problem from a real scenario,
each job filed exactly once with two daemons' evaluators racing, and what ``jobvisor status``
and ``jobvisor report`` show.

The daemons run in process on the real clock with short intervals; every wait is on the
store's replies, bounded by ``fail_after``. The webhook deliverer, the validator and the
batch monitor are other actors: where a scenario needs one, the test performs its store
step itself (take a delivery and record the receiver's 410; validation exhausted; the
stuck sweep), exactly as that actor would.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import trio

from jobvisor import App
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import BatchSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.supervisor.client import build_spec
from tests.cli_support import jv, ok_json
from tests.harness import running_daemon
from tests.store_fixtures import stream

FAST = dict(evaluator_interval=0.02, watchdog_interval=0.05, idle_poll=0.05)
HOOK = "https://hooks.example/jobs"  # never called: the test settles the delivery itself


def scenario_app() -> App:
    app = App()

    @app.handler("echo", required_outputs=["echo"], max_retries=0)
    async def echo(ctx: Any) -> Any:
        return {"echo": ctx.input}

    @app.handler("thumb", required_outputs=["url"], max_retries=0)
    async def thumb(ctx: Any) -> Any:
        return {"width": 320}  # forgets the url it promised

    @app.handler("blank", max_retries=0)
    async def blank(ctx: Any) -> Any:
        return None

    @app.handler("checked", max_retries=0)
    async def checked(ctx: Any) -> Any:
        return {"status": "done"}

    @app.validator("checked")
    async def never_confirmed(job: Any) -> Any:  # the validator actor is not part of this test
        raise AssertionError("not called")

    @app.handler("slow", timeout=0.2, max_retries=0)
    async def slow(ctx: Any) -> Any:
        await trio.sleep(30)

    @app.handler("boom", max_retries=1, backoff=0.01)
    async def boom(ctx: Any) -> Any:
        raise ValueError(f"attempt {ctx.attempt} broke")

    @app.handler("lost", max_retries=0)
    async def lost(ctx: Any) -> Any:
        raise AssertionError("claimed by a worker that died; never run here")

    @app.handler("later", max_retries=0)
    async def later(ctx: Any) -> Any:
        raise AssertionError("scheduled an hour ahead; never run here")

    return app


def _types(app: App) -> dict[str, dict[str, Any]]:
    return {t: h.describe() for t, h in app.handlers.items()}


async def test_every_category_and_problem_from_a_real_scenario(redis_url: str) -> None:
    app = scenario_app()
    types = _types(app)
    expected: dict[str, tuple[str, str]] = {}
    with SyncStore(open_backend(redis_url)) as setup:
        # A worker that claimed a job and died before the daemon below started.
        lost = setup.submit(build_spec(types, "lost", None)).id
        [claimed] = setup.claim("default", "dead-worker", lease=0.3)
        assert claimed.id == lost
        expected[lost] = ("filed", "worker_lost")
        # A batch the batch monitor gives up on as stuck; its leftover member is cleared out.
        batch = setup.create_batch(BatchSpec(stuck_after=1)).id
        member = setup.submit(build_spec(types, "later", None, delay=3600, batch=batch)).id
        with SyncStore(open_backend(redis_url), clock=lambda: time.time() + 60) as monitor:
            [swept] = monitor.sweep_batches("default").batches
            assert (swept.to, setup.get_batch(batch).reason) == ("failed", "stuck")
        setup.cancel(member)
        expected[member] = ("filed", "stuck")
        plain = setup.submit(build_spec(types, "later", None, delay=3600)).id
        setup.cancel(plain)
        expected[plain] = ("filed", "cancelled")

    async with running_daemon(app, redis=redis_url, **FAST) as (daemon, watcher):
        store = daemon.store

        async def submit(type_: str, input: Any = None, **options: Any) -> str:
            return (await store.submit(build_spec(types, type_, input, **options))).id

        def state_is(job: str, *states: str) -> Any:
            return lambda: any(r.id == job and (r.to in states) for r in watcher.moves)

        expected[await submit("echo", {"n": 1})] = ("complete", "none")
        expected[await submit("thumb")] = ("incomplete", "missing_output")
        expected[await submit("blank")] = ("incomplete", "missing_output")
        expected[await submit("slow")] = ("filed", "timed_out")
        expected[await submit("boom")] = ("filed", "retries_exhausted")
        notified = await submit("echo", {"n": 2}, webhook_url=HOOK)
        expected[notified] = ("filed", "notification_failed")
        checked = await submit("checked")
        expected[checked] = ("filed", "validation_failed")

        await watcher.until(state_is(checked, "validating"), timeout=30)
        assert (await store.trigger(checked, "validation_exhausted", status="processing")).to == "validation_failed"
        await watcher.until(state_is(notified, "completed"), timeout=30)
        # the webhook deliverer's step: the receiver answered 410 Gone, so the delivery is dead
        [delivery] = await store.take_deliveries("default", max_attempts=5)
        assert (await store.delivery_outcome("default", delivery.id, delivery.token, "reject",
                                             max_attempts=5, status=410)).to == "dead"

        # Jobs set up before the daemon may be filed by its first evaluator pass, before the
        # watcher was attached: those are read from the store; later filings from the replies.
        already = {job for job in expected if (await store.get_job(job)).category is not None}
        await watcher.until(lambda: set(expected) <= already | {r.id for r in watcher.replies if r.kind == "filed"},
                            timeout=30)
        found = {job: (v.category, v.problem) for job in expected for v in [await store.get_job(job)]}
        sample = daemon.deps.metrics.registry.get_sample_value
        gauges = {(c, p): sample("jobvisor_filed_jobs", {"queue": "default", "category": c, "problem": p})
                  for c, p in expected.values()}
    assert found == expected
    assert {p for _, p in expected.values()} == {
        "none", "missing_output", "notification_failed", "validation_failed", "timed_out",
        "retries_exhausted", "worker_lost", "stuck", "cancelled"}
    assert gauges == {pair: float(n) for pair, n in Counter(expected.values()).items()}

    raw_events = stream(open_backend(redis_url).client)
    assert Counter(e["id"] for e in raw_events if e["type"] == "job.filed") == dict.fromkeys(expected, 1)

    report = ok_json(jv("report", "--json", "--redis", redis_url))
    assert report["filed"] == len(expected)
    assert report["unfiled"] == 0
    assert report["categories"] == {"complete": 1, "incomplete": 2, "filed": 7}
    assert report["problems"] == {"none": 1, "missing_output": 2, "notification_failed": 1, "validation_failed": 1,
                                  "timed_out": 1, "retries_exhausted": 1, "worker_lost": 1, "stuck": 1,
                                  "cancelled": 1}
    text = jv("report", "--redis", redis_url)
    assert text.returncode == 0
    assert any(line.split() == ["incomplete", "missing_output", "2"] for line in text.stdout.splitlines())
    assert any(line.split() == ["filed", "(all)", "7"] for line in text.stdout.splitlines())


async def test_each_job_is_filed_exactly_once_with_two_daemons_evaluating(redis_url: str) -> None:
    app = scenario_app()
    types = _types(app)
    rounds, per_round = 3, 60
    async with running_daemon(app, redis=redis_url, worker_id="a", **FAST) as (first, seen_a), \
            running_daemon(app, redis=redis_url, worker_id="b", **FAST) as (second, seen_b):
        filed = Counter[str]()
        for r in range(rounds):
            jobs = []
            for n in range(per_round):
                kind = ("echo", "boom", "thumb")[n % 3]
                jobs.append((await first.store.submit(build_spec(types, kind, {"r": r, "n": n}))).id)
            for job in jobs[::7]:
                await second.store.cancel(job)  # some are cancelled before or while they run

            def all_filed(jobs: list[str] = jobs) -> bool:
                done = {x.id for x in seen_a.replies + seen_b.replies if x.kind == "filed"}
                return set(jobs) <= done

            await seen_a.until(all_filed, timeout=60)
            for replies in (seen_a.replies, seen_b.replies):
                filed.update(x.id for x in replies if x.kind == "filed")
            seen_a.replies.clear()
            seen_b.replies.clear()
        counts, waiting = await first.store.filing_counts("default")
    raw_events = stream(open_backend(redis_url).client)
    events = Counter(e["id"] for e in raw_events if e["type"] == "job.filed")
    assert len(events) == rounds * per_round
    assert set(events.values()) == {1}
    assert filed == events
    assert sum(counts.values()) == rounds * per_round
    assert waiting == 0


def test_status_shows_every_attempt_and_the_filing(redis_url: str) -> None:
    app = scenario_app()

    async def run() -> str:
        async with running_daemon(app, redis=redis_url, **FAST) as (daemon, watcher):
            job = (await daemon.store.submit(build_spec(_types(app), "boom", {"keep": "me"}))).id
            await watcher.until(lambda: any(r.kind == "filed" and r.id == job for r in watcher.replies),
                                timeout=30)
        return job

    job = trio.run(run)
    status = ok_json(jv("status", job, "--json", "--redis", redis_url))
    assert (status["category"], status["problem"]) == ("filed", "retries_exhausted")
    assert status["input"] == {"keep": "me"}
    attempts = status["attempt_records"]
    assert [(a["n"], a["outcome"], a["worker"], a["error"]["message"]) for a in attempts] == [
        (1, "failed", "test-worker", "attempt 1 broke"), (2, "failed", "test-worker", "attempt 2 broke")]
    assert all(a["started_at"] <= a["finished_at"] for a in attempts)
    text = jv("status", job, "--redis", redis_url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "filed      filed / retries_exhausted" in "\n".join(lines)
    attempt_lines = [line for line in lines if line.startswith("attempt ")]
    assert [line.split()[:5] for line in attempt_lines] == [
        ["attempt", "1", "failed", "worker", "test-worker"], ["attempt", "2", "failed", "worker", "test-worker"]]
    assert sum("ValueError: attempt 1 broke" in line for line in lines) == 1  # attempt 1's
    assert sum("ValueError: attempt 2 broke" in line for line in lines) == 2  # the job's and attempt 2's
