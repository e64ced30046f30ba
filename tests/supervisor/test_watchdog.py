"""The watchdog, the registry and abandoned handlers in process, under trio's MockClock.

A worker that died is played by a *ghost*: a client that claims jobs (and records their
service job ids) straight through the store before the daemon starts, then never renews.
The daemon's watchdog finds the expired leases and decides. Virtual time makes every
bound exact: the lease runs out, the watchdog sweeps every second, a hanging status query
is given up at exactly its timeout. No threads or sockets are involved (the embedded store
is called inline), so autojump is safe here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import trio

from jobvisor import App, ServiceStatus, StatusAnswer
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.keys import REGISTRY
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Reply
from jobvisor.adapters.store import SyncStore
from jobvisor.machines import JOB
from jobvisor.supervisor.watchdog import Cause, Decision, decide
from tests.harness import TERMINAL, running_daemon

URL = "memory://test"
TERMINAL_EVENTS = frozenset(JOB.notifications.values())


def spec_of(app: App, type_: str, **extra: Any) -> JobSpec:
    h = app.handlers[type_]
    return JobSpec(type=type_, phases=h.phases, timeout=h.timeout, max_retries=h.max_retries,
                   backoff=h.backoff, backoff_max=h.backoff_max, has_validator=h.has_validator, **extra)


def ghost(memory: MemoryServers, app: App, type_: str, *, n: int = 1, lease: float = 5.0,
          service: Callable[[str], str] | None = None, **extra: Any) -> list[str]:
    """``n`` jobs claimed by a worker that then vanished (with service job ids, if given)."""
    with SyncStore(open_backend(URL, memory=memory)) as store:
        ids = [store.submit(spec_of(app, type_, **extra)).id for _ in range(n)]
        for job in store.claim("default", "ghost", n=n, lease=lease):
            if service is not None:
                assert store.record_service_job_id(job.id, job.token, service(job.id)).kind == "recorded"
    return ids


class Timeline:
    """Every store reply with the virtual time it came back at."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, Reply]] = []

    def __call__(self, replies: Any) -> None:
        now = trio.current_time()
        self.seen.extend((now, r) for r in replies)

    def decisions(self, job: str) -> list[tuple[float, Reply]]:
        """The watchdog's steps on the ghost's attempt: extensions, then the one that ended it."""
        out = []
        for t, r in self.seen:
            if getattr(r, "id", None) != job:
                continue
            if r.kind == "extended":
                out.append((t, r))
            elif r.kind == "moved" and r.from_ == "active" and r.trigger in ("lease_expired", "complete", "timeout"):
                out.append((t, r))
                break
        return out


async def job_events(daemon: Any, job: str, queue: str = "default") -> list[Any]:
    return [e for e in await daemon.store.events(queue) if e.id == job]


async def ended(daemon: Any, watcher: Any, job: str) -> Any:
    await watcher.until(lambda: any(r.id == job and r.to in TERMINAL for r in watcher.moves))
    return await daemon.store.get_job(job)


# -- the decision table ----------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "deadline", "expected"), [
    (StatusAnswer(status=ServiceStatus.COMPLETED, result={"x": 1}), 100.0,
     Decision("complete", Cause.SERVICE_COMPLETED, result={"x": 1})),
    (StatusAnswer(status=ServiceStatus.RUNNING), 100.0, Decision("extend", Cause.SERVICE_RUNNING, lease=5.0)),
    (StatusAnswer(status=ServiceStatus.RUNNING), 12.0, Decision("extend", Cause.SERVICE_RUNNING, lease=2.0)),
    (StatusAnswer(status=ServiceStatus.RUNNING), None, Decision("extend", Cause.SERVICE_RUNNING, lease=5.0)),
    (StatusAnswer(status=ServiceStatus.RUNNING), 10.0, Decision("timeout", Cause.SERVICE_RUNNING_PAST_TIMEOUT)),
    (StatusAnswer(status=ServiceStatus.FAILED), 100.0, Decision("lease_expired", Cause.SERVICE_FAILED)),
    (StatusAnswer(status=ServiceStatus.UNKNOWN), 100.0, Decision("lease_expired", Cause.SERVICE_UNKNOWN)),
    (Cause.STATUS_QUERY_TIMEOUT, 100.0, Decision("lease_expired", Cause.STATUS_QUERY_TIMEOUT)),
    (Cause.STATUS_QUERY_FAILED, 100.0, Decision("lease_expired", Cause.STATUS_QUERY_FAILED)),
    (Cause.NO_STATUS_QUERY, 100.0, Decision("lease_expired", Cause.NO_STATUS_QUERY)),
], ids=str)
def test_decide(answer: Any, deadline: float | None, expected: Decision) -> None:
    assert decide(answer, now=10.0, attempt_deadline=deadline, lease=5.0) == expected


# -- status queries ------------------------------------------------------------------------------------


def external_app(answers: dict[str, Any], asked: Counter[str], runs: Counter[str], **options: Any) -> App:
    app = App()

    @app.handler("external", timeout=options.get("timeout", 60), max_retries=options.get("max_retries", 2),
                 backoff=0.5)
    async def external(ctx: Any) -> Any:
        runs[ctx.job_id] += 1
        return {"by": "handler", "attempt": ctx.attempt}

    @app.status_query("external")
    async def query(service_job_id: str) -> Any:
        asked[service_job_id] += 1
        answer = answers[service_job_id]
        return await answer() if callable(answer) else answer

    return app


SETTINGS = {"lease": 5.0, "watchdog_interval": 1.0, "status_query_timeout": 2.0}


async def test_completed_there_completes_here_with_the_services_result_and_no_rerun(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory, asked, runs = MemoryServers(), Counter[str](), Counter[str]()
    app = external_app({"svc-1": StatusAnswer(status=ServiceStatus.COMPLETED, result={"by": "service"})}, asked, runs)
    [job] = ghost(memory, app, "external", service=lambda _: "svc-1")
    timeline = Timeline()
    async with running_daemon(app, memory=memory, **SETTINGS) as (daemon, watcher):
        daemon.store.observers.append(timeline)
        view = await ended(daemon, watcher, job)
        history = await job_events(daemon, job)
    assert (view.state, view.result, view.retry_count) == ("completed", {"by": "service"}, 0)
    assert runs[job] == 0
    assert asked["svc-1"] == 1
    [attempt] = view.attempt_records
    assert (attempt.outcome, attempt.by, attempt.worker, attempt.service_job_id) == (
        "succeeded", "watchdog", "ghost", "svc-1")
    [(at, decision)] = timeline.decisions(job)
    assert 5.0 <= at <= 6.1  # the lease ran out at 5 s; the watchdog sweeps every second
    terminal = [e for e in history if e.type in TERMINAL_EVENTS]
    assert [(e.type, e.fields["cause"]) for e in terminal] == [("job.completed", "service_completed")]


async def test_completed_there_goes_through_validation_when_the_type_has_a_validator(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory, asked, runs = MemoryServers(), Counter[str](), Counter[str]()
    app = external_app({"svc-1": StatusAnswer(status=ServiceStatus.COMPLETED, result={"by": "service"})}, asked, runs)

    @app.validator("external")
    async def never_called_here(job: Any) -> Any:  # the validator actor is not this test's subject
        raise AssertionError("not reached")

    [job] = ghost(memory, app, "external", service=lambda _: "svc-1")
    async with running_daemon(app, memory=memory, **SETTINGS) as (daemon, watcher):
        await watcher.until(lambda: any(r.id == job and r.to == "validating" for r in watcher.moves))
        view = await daemon.store.get_job(job)
    assert (view.state, view.result, runs[job]) == ("validating", {"by": "service"}, 0)


async def test_running_there_extends_the_lease_up_to_the_jobs_timeout_then_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory, asked, runs = MemoryServers(), Counter[str](), Counter[str]()
    app = external_app({"svc-1": StatusAnswer(status=ServiceStatus.RUNNING)}, asked, runs, timeout=18, max_retries=1)
    [job] = ghost(memory, app, "external", service=lambda _: "svc-1")
    timeline = Timeline()
    t0 = trio.current_time()
    async with running_daemon(app, memory=memory, **SETTINGS) as (daemon, watcher):
        daemon.store.observers.append(timeline)
        view = await ended(daemon, watcher, job)
        history = await job_events(daemon, job)
    decisions = timeline.decisions(job)
    kinds = [r.kind if r.kind == "extended" else r.trigger for _, r in decisions]
    # 18 s of timeout, 5 s leases: expiries at ~5, ~10(+1), ~15(+2) extend; then past 18 s: timeout
    assert kinds == ["extended", "extended", "extended", "timeout"], kinds
    extensions = [r.lease_deadline / 1000 for _, r in decisions if r.kind == "extended"]
    started = view.attempt_records[0].started_at
    assert extensions[-1] == pytest.approx(started + 18, abs=0.01)  # the last one stops at the timeout
    timed_out_at = decisions[-1][0] - t0
    assert 18 <= timed_out_at <= 18 + 1.5
    assert [e.fields.get("reason") for e in history if e.type == "job.lease_extended"] == ["service_running"] * 3
    # the retry ran the handler (the service never finished)
    assert (view.state, view.result, runs[job]) == ("completed", {"by": "handler", "attempt": 2}, 1)
    first = view.attempt_records[0]
    assert (first.outcome, first.by, first.error["cause"]) == ("timed_out", "watchdog", "service_running_past_timeout")


async def hang() -> Any:
    await trio.sleep_forever()


async def boom() -> Any:
    raise ConnectionError("the service is down")


async def not_an_answer() -> Any:
    return {"status": "completed"}


@pytest.mark.parametrize(("answer", "cause"), [
    (StatusAnswer(status=ServiceStatus.FAILED), "service_failed"),
    (StatusAnswer(status=ServiceStatus.UNKNOWN), "service_unknown"),
    (boom, "status_query_failed"),
    (hang, "status_query_timeout"),
    (not_an_answer, "status_query_failed"),
    (StatusAnswer(status="exploded"), "status_query_failed"),  # type: ignore[arg-type]
    (StatusAnswer(status=ServiceStatus.COMPLETED, result=object()), "status_query_failed"),  # unencodable
], ids=["failed", "unknown", "raises", "hangs", "not-an-answer", "bad-status", "unencodable-result"])
async def test_anything_but_completed_or_running_is_a_retry_decided_within_the_bound(
    autojump_clock: trio.testing.MockClock, answer: Any, cause: str,
) -> None:
    memory, asked, runs = MemoryServers(), Counter[str](), Counter[str]()
    app = external_app({"svc-1": answer}, asked, runs)
    [job] = ghost(memory, app, "external", service=lambda _: "svc-1")
    timeline = Timeline()
    t0 = trio.current_time()
    async with running_daemon(app, memory=memory, **SETTINGS) as (daemon, watcher):
        daemon.store.observers.append(timeline)
        view = await ended(daemon, watcher, job)
        history = await job_events(daemon, job)
    [(at, decision)] = timeline.decisions(job)
    assert (decision.trigger, decision.to) == ("lease_expired", "scheduled")
    # lease 5 s, then at most one sweep interval, then at most the query's 2 s bound
    assert 5.0 <= at - t0 <= 5.0 + 1.1 + 2.0 + 0.1
    if cause == "status_query_timeout":
        inspected = next(t for t, r in timeline.seen if r.kind == "inspecting" and r.id == job)
        assert at - inspected == pytest.approx(2.0, abs=0.01)
    [expired] = [e for e in history if e.type == "job.lease_expired"]
    assert (expired.fields["cause"], expired.fields["reason"]) == (cause, "worker_lost")
    first, second = view.attempt_records
    assert (first.outcome, first.by, first.error["cause"]) == ("worker_lost", "watchdog", cause)
    assert (second.outcome, view.state, runs[job]) == ("succeeded", "completed", 1)


async def test_out_of_retries_a_lost_job_fails_with_reason_worker_lost(autojump_clock: trio.testing.MockClock) -> None:
    memory, asked, runs = MemoryServers(), Counter[str](), Counter[str]()
    app = external_app({"svc-1": StatusAnswer(status=ServiceStatus.FAILED)}, asked, runs, max_retries=0)
    [job] = ghost(memory, app, "external", service=lambda _: "svc-1")
    [plain] = ghost(memory, app, "external")  # no service job id: no query
    async with running_daemon(app, memory=memory, **SETTINGS) as (daemon, watcher):
        views = [await ended(daemon, watcher, j) for j in (job, plain)]
        histories = [await job_events(daemon, j) for j in (job, plain)]
    for view, history, cause in zip(views, histories, ("service_failed", "no_service_job_id"), strict=True):
        assert (view.state, view.reason, view.retry_count, view.max_retries) == ("failed", "worker_lost", 0, 0)
        assert [(e.type, e.fields["cause"]) for e in history if e.type in TERMINAL_EVENTS] == [("job.failed", cause)]
    assert runs == Counter()


async def test_queries_are_bounded_in_concurrency_and_never_stall_jobs_that_need_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory, runs = MemoryServers(), Counter[str]()
    app = App()
    in_flight, peak = [0], [0]

    @app.handler("slow-service", max_retries=1, backoff=100)
    async def handler(ctx: Any) -> None:
        runs[ctx.job_id] += 1

    @app.status_query("slow-service")
    async def query(service_job_id: str) -> StatusAnswer:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        try:
            await trio.sleep_forever()
        finally:
            in_flight[0] -= 1
        raise AssertionError("unreachable")

    queried = ghost(memory, app, "slow-service", n=6, service=lambda j: f"svc-{j}")
    plain = ghost(memory, app, "slow-service", n=3)
    timeline = Timeline()
    t0 = trio.current_time()
    async with running_daemon(app, memory=memory, status_query_concurrency=2, **SETTINGS) as (daemon, watcher):
        daemon.store.observers.append(timeline)
        await watcher.until(lambda: all(timeline.decisions(j) for j in queried + plain))
    assert peak[0] == 2
    first_sweep = min(t for j in plain for t, _ in timeline.decisions(j))
    assert all(t == first_sweep for j in plain for t, _ in timeline.decisions(j))
    assert first_sweep - t0 <= 6.1  # at once, while the first two queries hang
    done = sorted(t - t0 for j in queried for t, _ in timeline.decisions(j))
    assert len(done) == 6
    assert done[-1] <= 6.1 + 3 * (2.0 + 1.1)
    for j in queried:
        [(_, r)] = timeline.decisions(j)
        assert r.trigger == "lease_expired"


async def test_two_daemons_watchdogs_race_on_the_same_expired_leases(autojump_clock: trio.testing.MockClock) -> None:
    memory, asked, runs = MemoryServers(), Counter[str](), Counter[str]()

    async def later() -> StatusAnswer:
        await trio.sleep(0.5)
        return StatusAnswer(status=ServiceStatus.COMPLETED, result={"by": "service"})

    answers: dict[str, Any] = {}
    app = external_app(answers, asked, runs)
    queried = ghost(memory, app, "external", n=10, service=lambda j: f"svc-{j}")
    answers.update({f"svc-{j}": later for j in queried})
    plain = ghost(memory, app, "external", n=10)
    settings = {**SETTINGS, "watchdog_interval": 0.05}
    async with (
        running_daemon(app, memory=memory, worker_id="one", **settings) as (one, w1),
        running_daemon(app, memory=memory, worker_id="two", **settings) as (two, w2),
    ):
        for j in queried + plain:
            await w1.until(lambda j=j: any(r.id == j and r.to in TERMINAL for r in w1.moves + w2.moves))
        history = await one.store.events("default")
    decisions = Counter((e.id, e.type) for e in history if e.type in ("job.lease_expired", "job.completed"))
    for j in queried:
        assert decisions[(j, "job.completed")] == 1
        assert decisions[(j, "job.lease_expired")] == 0
        assert asked[f"svc-{j}"] == 1  # one inspection, one query
    for j in plain:
        assert decisions[(j, "job.lease_expired")] == 1
        assert decisions[(j, "job.completed")] == 1  # the retry
    assert sum(runs[j] for j in queried) == 0
    assert all(runs[j] == 1 for j in plain)


# -- abandoned handlers -------------------------------------------------------------------------------


async def test_a_handler_that_ignores_cancellation_is_abandoned_and_its_slot_reused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    returned: list[float] = []

    @app.handler("deaf", timeout=5, max_retries=1, backoff=0.1)
    async def deaf(ctx: Any) -> dict[str, int]:
        if ctx.attempt == 1:
            with trio.CancelScope(shield=True):  # ignores its cancellation, like blocking code in a thread
                await trio.sleep(100)
            returned.append(trio.current_time())
        return {"attempt": ctx.attempt}

    @app.handler("quick", timeout=5)
    async def quick(ctx: Any) -> str:
        return "quick"

    timeline = Timeline()
    async with running_daemon(app, concurrency=1, abandon_after=2.0) as (daemon, watcher):
        daemon.store.observers.append(timeline)
        t0 = trio.current_time()
        job = (await daemon.store.submit(spec_of(app, "deaf"))).id
        await watcher.until(lambda: any(r.id == job and r.trigger == "timeout" for r in watcher.moves))
        assert daemon.pool.handlers_live == 1
        assert len(daemon.pool.abandoned) == 1
        other = (await daemon.store.submit(spec_of(app, "quick"))).id
        view = await ended(daemon, watcher, job)
        assert (await daemon.store.get_job(other)).state == "completed"
        assert not returned  # the abandoned handler still sleeps; the slot served two attempts
        await trio.sleep(100)
        assert len(returned) == 1
        assert daemon.pool.handlers_live == 0
        assert not daemon.pool.abandoned
        stale = [r for r in watcher.replies if r.kind == "stale"]
    [(at, _)] = [(t, r) for t, r in timeline.seen if r.kind == "moved" and r.id == job and r.trigger == "timeout"]
    assert at - t0 == pytest.approx(5.0 + 2.0, abs=0.01)
    first, second = view.attempt_records
    assert first.outcome == "timed_out"
    assert first.error["abandoned"] is True
    assert "abandoned" in first.error["message"]
    assert (second.outcome, view.state, view.result) == ("succeeded", "completed", {"attempt": 2})
    assert stale == []  # the abandoned outcome is discarded, never reported


# -- the registry ------------------------------------------------------------------------------------------


async def test_daemons_register_with_their_jobs_and_a_silent_one_is_declared_lost_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryServers()
    app = App()
    release = trio.Event()

    @app.handler("wait", timeout=3600)
    async def wait(ctx: Any) -> None:
        await release.wait()

    with SyncStore(open_backend(URL, memory=memory)) as ghost_store:
        ghost_store.heartbeat("silent", {"slots": "[]", "queues": "default"}, ttl=3, start=True)
    settings = {"lease": 6.0, "watchdog_interval": 0.5}
    async with (
        running_daemon(app, memory=memory, worker_id="one", concurrency=3, **settings) as (one, _),
        running_daemon(app, memory=memory, worker_id="two", **settings),
    ):
        job = (await one.store.submit(spec_of(app, "wait"))).id
        await trio.sleep(10)  # several heartbeats (every 2 s) and sweeps (every 0.5 s)
        live = {w.id: w for w in await one.store.workers()}
        gone = {w.id: w for w in await one.store.workers(include_gone=True)}
        release.set()
    assert set(live) == {"one", "two"}
    holder = live["one"] if live["one"].slots else live["two"]
    assert [(s.job, s.slot, s.attempt) for s in holder.slots] == [(job, 1, 1)]
    assert holder.concurrency in (3, 16)
    assert holder.queues == ["default"]
    assert gone["silent"].state == "lost"
    with SyncStore(open_backend(URL, memory=memory)) as reader:
        history = [(e.type, e.id) for e in reader.events(REGISTRY)]
    assert Counter(history) == Counter({
        ("worker.started", "silent"): 1, ("worker.lost", "silent"): 1,
        ("worker.started", "one"): 1, ("worker.started", "two"): 1,
        ("worker.stopped", "two"): 1, ("worker.stopped", "one"): 1,
    })
