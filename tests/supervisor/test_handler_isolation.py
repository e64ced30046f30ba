"""Whatever a handler does, only its own attempt is affected (SPEC.md, "Production weather").

Daemons in process, on the real clock: plain functions run in a worker thread, process-
isolated handlers in a child process that a timeout or cancel kills, and a table of
hostile outcomes (exceptions that cannot be printed, huge messages, exception groups,
``SystemExit``, results that cannot be stored) each fails its own attempt with the reason
recorded while a job running beside it on the same daemon completes in one attempt. Waits
are event driven (``Watcher``) and bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import trio

from jobvisor import App
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.store import DirectExecutor, Store
from jobvisor.supervisor.app import SyncJobContext
from tests.harness import ended, running_daemon, spec
from tests.isolation_app import app as isolation_app
from tests.isolation_app import pid_key, runs_key

FAST = {"idle_poll": 0.2, "watchdog_interval": 0.2}


def memory() -> str:
    return f"memory://{uuid.uuid4().hex}"


# -- registration ----------------------------------------------------------------------------------


def test_a_plain_function_is_registered_to_run_in_a_thread_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    with caplog.at_level(logging.INFO, logger="jobvisor.app"):
        @app.handler("plain")
        def plain(ctx: Any) -> None:
            return None

    assert app.handlers["plain"].isolation == "thread"
    lines = [r.getMessage() for r in caplog.records if r.name == "jobvisor.app"]
    assert len(lines) == 1
    assert "'plain'" in lines[0]
    assert "thread" in lines[0]


async def _async_fn(ctx: Any) -> None:
    return None


def _plain_fn(ctx: Any) -> None:
    return None


@pytest.mark.parametrize(("fn", "options", "says"), [
    (_plain_fn, {"isolation": "loop"}, "needs an async def"),
    (_async_fn, {"isolation": "thread"}, "needs a plain def"),
    (_async_fn, {"isolation": "process"}, "needs a plain def"),
    (lambda ctx: None, {"isolation": "process"}, "module level"),
    (_plain_fn, {"isolation": "process", "phases": ["a"]}, "cannot record phases"),
    (_plain_fn, {"isolation": "fork"}, "isolation is one of"),
])
def test_a_handler_that_cannot_run_where_it_asks_is_refused_at_registration(
        fn: Any, options: dict[str, Any], says: str) -> None:
    app = App()
    with pytest.raises(ValueError, match=says):
        app.handler("t", **options)(fn)
    assert "t" not in app.handlers


# -- plain functions in a thread ---------------------------------------------------------------------


async def test_a_sync_handler_runs_in_a_thread_while_the_loop_keeps_serving() -> None:
    app = App()
    release = threading.Event()
    seen_threads: list[int] = []

    @app.handler("sync_wait", max_retries=0, timeout=30)
    def sync_wait(ctx: SyncJobContext) -> dict[str, Any]:
        seen_threads.append(threading.get_ident())
        assert release.wait(10)
        return {"input": ctx.input, "attempt": ctx.attempt}

    @app.handler("quick", max_retries=0)
    async def quick(ctx: Any) -> str:
        return "quick"

    async with running_daemon(app, redis=memory(), concurrency=4, **FAST) as (daemon, watcher):
        slow = await daemon.store.submit(spec(app, "sync_wait", input={"n": 1}))
        with trio.fail_after(10):
            await watcher.until(lambda: seen_threads)
        fast = await daemon.store.submit(spec(app, "quick"))
        await watcher.until(ended(watcher, fast.id), timeout=10)  # the loop serves meanwhile
        release.set()
        done = await watcher.until(ended(watcher, slow.id), timeout=10)
        assert done.to == "completed"
        job = await daemon.store.get_job(slow.id)
        assert job.result == {"input": {"n": 1}, "attempt": 1}
        assert seen_threads[0] != threading.get_ident()


async def test_a_sync_handler_past_its_timeout_is_told_then_abandoned_and_its_slot_is_reused() -> None:
    app = App()
    release = threading.Event()
    told: list[bool] = []

    @app.handler("stuck", max_retries=0, timeout=0.5)
    def stuck(ctx: SyncJobContext) -> str:
        release.wait(30)  # ignores ctx.cancelled: only the abandon bound frees its slot
        told.append(ctx.cancelled)
        return "too late"

    @app.handler("polite", max_retries=0, timeout=0.5)
    def polite(ctx: SyncJobContext) -> str:
        while not ctx.cancelled:
            time.sleep(0.01)
        return "stopped when told"

    @app.handler("quick", max_retries=0)
    async def quick(ctx: Any) -> str:
        return "quick"

    async with running_daemon(app, redis=memory(), concurrency=1, abandon_after=0.5, **FAST) as (daemon, watcher):
        try:
            job = await daemon.store.submit(spec(app, "stuck"))
            done = await watcher.until(ended(watcher, job.id), timeout=10)
            assert done.to == "timed_out"
            error = (await daemon.store.get_job(job.id)).error
            assert error["type"] == "Timeout"
            assert error["abandoned"] is True
            assert daemon.pool.handlers_live == 1  # the thread still runs, without its slot
            after = await daemon.store.submit(spec(app, "quick"))  # the one slot is free again
            assert (await watcher.until(ended(watcher, after.id), timeout=10)).to == "completed"

            job = await daemon.store.submit(spec(app, "polite"))
            assert (await watcher.until(ended(watcher, job.id), timeout=10)).to == "timed_out"
            assert "abandoned" not in (await daemon.store.get_job(job.id)).error
        finally:
            release.set()
        with trio.fail_after(10):
            await daemon.pool.wait_handlers_returned()
        assert told == [True]
        assert (await daemon.store.get_job(done.id)).state == "timed_out"  # "too late" was discarded


async def test_a_sync_handler_that_stops_when_told_at_shutdown_is_released_not_failed_or_completed() -> None:
    """Told to stop by a shutdown, a thread handler returns early (or its next ``ctx`` call
    raises ``Interrupted``): what it returned then does not count; the job goes back to the
    queue, as an async handler's would."""
    app = App()
    started: list[str] = []

    @app.handler("returns_when_told", max_retries=0, phases=["step"], timeout=30)
    def returns_when_told(ctx: SyncJobContext) -> str:
        started.append(ctx.job_id)
        while not ctx.cancelled:
            time.sleep(0.01)
        return "partial"

    @app.handler("calls_ctx_when_told", max_retries=0, phases=["step"], timeout=30)
    def calls_ctx_when_told(ctx: SyncJobContext) -> str:
        started.append(ctx.job_id)
        while not ctx.cancelled:
            time.sleep(0.01)
        return str(ctx.phase("step", lambda: "never"))  # raises Interrupted

    url = memory()
    servers = MemoryServers()
    async with running_daemon(app, redis=url, memory=servers, grace=0.2, **FAST) as (daemon, watcher):
        jobs = [(await daemon.store.submit(spec(app, t))).id for t in ("returns_when_told", "calls_ctx_when_told")]
        with trio.fail_after(10):
            while len(started) < 2:  # noqa: ASYNC110 - threads of this daemon; nothing to await
                await trio.sleep(0.01)
    store = Store(DirectExecutor(open_backend(url, memory=servers)))
    for job_id in jobs:
        view = await store.get_job(job_id)
        assert view.state == "queued", (job_id, view.state, view.error)
        assert view.attempt_records[0].outcome == "interrupted"


def test_an_object_with_an_async_call_is_registered_as_an_async_handler() -> None:
    class Handler:
        async def __call__(self, ctx: Any) -> str:
            return "ok"

    app = App()
    app.handler("callable")(Handler())
    assert app.handlers["callable"].isolation == "loop"


async def test_sync_phase_functions_run_in_threads_and_a_retry_resumes_at_the_unfinished_phase() -> None:
    app = App()
    runs: dict[str, int] = {"fetch": 0, "render": 0, "async_fetch": 0}

    def fetch(what: str) -> str:
        runs["fetch"] += 1
        return f"fetched {what}"

    def render(data: str, attempt: int) -> str:
        runs["render"] += 1
        if attempt == 1:
            raise RuntimeError("render broke on the first attempt")
        return data.upper()

    @app.handler("sync_phased", phases=["fetch", "render"], max_retries=1, backoff=0.05)
    def sync_phased(ctx: SyncJobContext) -> dict[str, str]:
        data = ctx.phase("fetch", fetch, ctx.input["what"])
        return {"out": ctx.phase("render", render, data, ctx.attempt)}

    @app.handler("async_with_sync_phase", phases=["fetch"], max_retries=0)
    async def async_with_sync_phase(ctx: Any) -> str:
        def blocking_fetch() -> str:
            runs["async_fetch"] += 1
            time.sleep(0.05)  # would hold the loop if it ran there
            return "fetched in a thread"

        result: str = await ctx.phase("fetch", blocking_fetch)
        return result

    async with running_daemon(app, redis=memory(), **FAST) as (daemon, watcher):
        job = await daemon.store.submit(spec(app, "sync_phased", input={"what": "page"}))
        assert (await watcher.until(ended(watcher, job.id), timeout=10)).to == "completed"
        view = await daemon.store.get_job(job.id)
        assert view.result == {"out": "FETCHED PAGE"}
        assert view.attempts == 2
        assert runs["fetch"] == 1
        assert runs["render"] == 2
        assert view.phases == {"fetch": "completed", "render": "completed"}
        assert view.attempt_records[0].error["message"] == "render broke on the first attempt"

        other = await daemon.store.submit(spec(app, "async_with_sync_phase"))
        assert (await watcher.until(ended(watcher, other.id), timeout=10)).to == "completed"
        assert (await daemon.store.get_job(other.id)).result == "fetched in a thread"
        assert runs["async_fetch"] == 1


# -- process isolation ----------------------------------------------------------------------------------


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def counted(redis_url: str) -> Iterator[redis.Redis]:
    """Where the handlers of ``isolation_app`` count their runs (and child pids): they are given
    the fixture's Redis URL in their input."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def test_a_process_isolated_cpu_loop_past_its_timeout_is_killed(redis_url: str, counted: redis.Redis) -> None:
    async with running_daemon(isolation_app, redis=redis_url, **FAST) as (daemon, watcher):
        job = await daemon.store.submit(spec(isolation_app, "cpu_spin", input={"redis": redis_url}))
        with trio.fail_after(30):
            while counted.get(pid_key(job.id)) is None:  # noqa: ASYNC110 - another process's write
                await trio.sleep(0.02)
        pid = int(counted.get(pid_key(job.id)))
        done = await watcher.until(ended(watcher, job.id), timeout=30)
        assert done.to == "timed_out"
        view = await daemon.store.get_job(job.id)
        assert view.error["type"] == "Timeout"
        assert "abandoned" not in view.error
        assert _pid_gone(pid)
        assert int(counted.get(runs_key(job.id))) == 1


async def test_a_child_that_exits_fails_its_attempt_with_the_exit_code_and_the_next_job_runs(
        redis_url: str, counted: redis.Redis) -> None:
    async with running_daemon(isolation_app, redis=redis_url, **FAST) as (daemon, watcher):
        job = await daemon.store.submit(spec(isolation_app, "exits", input={"redis": redis_url}))
        assert (await watcher.until(ended(watcher, job.id), timeout=30)).to == "failed"
        error = (await daemon.store.get_job(job.id)).error
        assert error["type"] == "HandlerCrashed"
        assert error["exitcode"] == 3
        assert "exited with code 3" in error["message"]
        again = await daemon.store.submit(spec(isolation_app, "process_echo", input={"redis": redis_url}))
        assert (await watcher.until(ended(watcher, again.id), timeout=30)).to == "completed"
        result = (await daemon.store.get_job(again.id)).result
        assert result["echo"] == {"redis": redis_url}
        assert result["pid"] != os.getpid()


async def test_cancelling_a_running_process_isolated_job_kills_its_child_within_a_second(
        redis_url: str, counted: redis.Redis) -> None:
    async with running_daemon(isolation_app, redis=redis_url, **FAST) as (daemon, watcher):
        job = await daemon.store.submit(spec(isolation_app, "cpu_spin", timeout=120, input={"redis": redis_url}))
        with trio.fail_after(30):
            while counted.get(pid_key(job.id)) is None:  # noqa: ASYNC110 - another process's write
                await trio.sleep(0.02)
        pid = int(counted.get(pid_key(job.id)))
        assert not _pid_gone(pid)
        await daemon.store.cancel(job.id)
        cancelled_at = trio.current_time()
        with trio.fail_after(1.0):
            while not _pid_gone(pid):  # noqa: ASYNC110 - the kernel's doing, no event to await
                await trio.sleep(0.01)
        killed_in = trio.current_time() - cancelled_at
        assert killed_in < 1.0
        assert (await daemon.store.get_job(job.id)).state == "cancelled"


# -- poison: whatever a handler raises or returns --------------------------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ raised")


def _deep(n: int) -> Any:
    value: Any = []
    for _ in range(n):
        value = [value]
    return value


def _raise(exc: BaseException) -> Any:
    raise exc


POISON: dict[str, tuple[Any, str, str]] = {
    # name: (what the handler does, error type recorded, text in the recorded message)
    "a __str__ that raises": (lambda: _raise(_Unprintable()), "_Unprintable", "could not be rendered"),
    "a 10 MB message": (lambda: _raise(ValueError("x" * 10_000_000)), "ValueError", "more characters"),
    "nested exception groups": (
        lambda: _raise(ExceptionGroup("outer", [ValueError("a"), ExceptionGroup("inner", [KeyError("b")])])),
        "ExceptionGroup", "ValueError: a"),
    "KeyboardInterrupt": (lambda: _raise(KeyboardInterrupt("from the handler")), "KeyboardInterrupt",
                          "from the handler"),
    "SystemExit": (lambda: _raise(SystemExit(3)), "SystemExit", "3"),
    "a group holding a KeyboardInterrupt": (
        lambda: _raise(BaseExceptionGroup("g", [KeyboardInterrupt(), ValueError("v")])),
        "BaseExceptionGroup", "KeyboardInterrupt"),
    "a result nested 5,000 deep": (lambda: _deep(5000), "UnencodableResult", "nested too deeply"),
    "a result with an unencodable object": (lambda: {"x": object()}, "UnencodableResult", "cannot be encoded"),
    "a 100 MB result": (lambda: "x" * 100_000_000, "UnencodableResult", "over the limit"),
}


@pytest.mark.parametrize("isolation", ["loop", "thread"])
@pytest.mark.parametrize("case", list(POISON))
async def test_a_poisoned_outcome_fails_only_its_own_attempt(case: str, isolation: str) -> None:
    behave, error_type, says = POISON[case]
    app = App()
    running = trio.Event()

    if isolation == "loop":
        @app.handler("poison", max_retries=0)
        async def poison(ctx: Any) -> Any:
            await running.wait()
            return behave()
    else:
        token = trio.lowlevel.current_trio_token()

        @app.handler("poison", max_retries=0)
        def poison(ctx: Any) -> Any:
            trio.from_thread.run(running.wait, trio_token=token)
            return behave()

    @app.handler("neighbour", max_retries=0)
    async def neighbour(ctx: Any) -> str:
        running.set()
        await trio.sleep(0.2)  # still running while the poisoned attempt ends
        return "fine"

    async with running_daemon(app, redis=memory(), concurrency=2, **FAST) as (daemon, watcher):
        bad = await daemon.store.submit(spec(app, "poison"))
        good = await daemon.store.submit(spec(app, "neighbour"))
        assert (await watcher.until(ended(watcher, bad.id), timeout=30)).to == "failed"
        assert (await watcher.until(ended(watcher, good.id), timeout=30)).to == "completed"
        view = await daemon.store.get_job(bad.id)
        assert view.error["type"].rsplit(".", 1)[-1] == error_type
        assert says in view.error["message"]
        assert len(view.error["message"]) <= 4000
        neighbour_view = await daemon.store.get_job(good.id)
        assert neighbour_view.attempts == 1
        assert neighbour_view.result == "fine"
        restarts = daemon.deps.metrics.registry.get_sample_value("jobvisor_actor_restarts_total",
                                                                 {"actor": "workers"})
        assert not restarts  # the worker actor never crashed
        assert not daemon.pool.running


async def test_the_event_loop_stall_of_a_blocking_handler_is_one_warning_naming_it_and_a_lag_sample(
        caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.handler("blocks", max_retries=0)
    async def blocks(ctx: Any) -> str:
        time.sleep(1.0)  # noqa: ASYNC251 - the point of the test
        return "done"

    with caplog.at_level(logging.WARNING, logger="jobvisor.loop"):
        async with running_daemon(app, redis=memory(), loop_lag_warning=0.4, **FAST) as (daemon, watcher):
            job = await daemon.store.submit(spec(app, "blocks"))
            assert (await watcher.until(ended(watcher, job.id), timeout=30)).to == "completed"
            with trio.fail_after(5):
                while daemon.pool.monitor.stalls == 0:  # noqa: ASYNC110 - the monitor's next look
                    await trio.sleep(0.05)
            lag_sum = daemon.deps.metrics.registry.get_sample_value("jobvisor_event_loop_lag_seconds_sum")
    # One warning names the handler (a loaded machine may add short stalls of its own, naming none).
    warnings = [r.getMessage() for r in caplog.records if r.name == "jobvisor.loop" and job.id in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "(type blocks)" in warnings[0]
    assert lag_sum is not None
    assert lag_sum >= 1.0


# -- claims whose answer is lost -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_jobs_leased_by_a_claim_whose_answer_was_lost_are_run_once_not_stranded(
        backend: str, request: pytest.FixtureRequest) -> None:
    """Redis leased the jobs, then the answer was lost (the connection dropped under it):
    the pool looks the claim up by its nonce and runs each job once, in its first attempt,
    instead of leaving it leased to nobody until the watchdog counts a lost worker."""
    from jobvisor.adapters.errors import StoreUnavailable

    url = request.getfixturevalue("redis_url") if backend == "redis" else memory()
    app = App()
    ran: list[tuple[str, int]] = []

    @app.handler("once", max_retries=0)
    async def once(ctx: Any) -> int:
        ran.append((ctx.job_id, ctx.attempt))
        return ctx.attempt

    async with running_daemon(app, redis=url, lease=30, **FAST) as (daemon, watcher):
        real_claim = daemon.store.claim_next  # what the worker pool calls
        lost: list[int] = []
        patched = trio.Event()  # the pool's claims go through the wrapper from here on

        async def claim_and_lose_the_answer(*args: Any, **kwargs: Any) -> Any:
            patched.set()
            leased = await real_claim(*args, **kwargs)
            if leased[0] and not lost:
                lost.append(len(leased[0]))
                raise StoreUnavailable(url, "connection reset while reading the reply")
            return leased

        daemon.store.claim_next = claim_and_lose_the_answer  # type: ignore[method-assign]
        # a claim the pool sent before the wrapper was in place may still be on its way (the store
        # serves round trips concurrently) and could take the jobs: submit once none can be
        with trio.fail_after(10):
            await patched.wait()
        jobs = [r.id for r in await daemon.store.submit_many([spec(app, "once") for _ in range(5)])]
        for job_id in jobs:
            assert (await watcher.until(ended(watcher, job_id), timeout=20)).to == "completed"
        views = [await daemon.store.get_job(j) for j in jobs]
    assert len(lost) == 1
    assert lost[0] >= 1
    assert sorted(ran) == sorted((j, 1) for j in jobs)  # each ran once, in its first attempt
    assert all(v.attempts == 1 and v.retry_count == 0 for v in views)


async def test_reclaim_finds_exactly_the_jobs_of_one_claim_still_held_under_its_tokens() -> None:
    from jobvisor.adapters.backend import MemoryServers, open_backend
    from jobvisor.adapters.store import DirectExecutor, Store

    store = Store(DirectExecutor(open_backend(memory(), memory=MemoryServers())))
    app = App()

    @app.handler("t")
    async def t(ctx: Any) -> None:
        return None

    await store.submit_many([spec(app, "t") for _ in range(5)])
    first = await store.claim("default", "w1", n=2, lease=30, nonce="n1")
    second = await store.claim("default", "w1", n=2, lease=30, nonce="n2")
    assert [j.token for j in first] == ["n1.1", "n1.1"]
    again = await store.reclaim("default", "w1", "n1")
    assert sorted((j.id, j.token, j.attempt) for j in again) == sorted((j.id, j.token, j.attempt) for j in first)
    assert again[0].input == first[0].input
    assert await store.reclaim("default", "w2", "n1") == []  # another worker's nonce: nothing
    await store.report(first[0].id, first[0].token, "complete", result=None)
    assert [j.id for j in await store.reclaim("default", "w1", "n1")] == [first[1].id]  # finished: gone
    assert {j.id for j in await store.reclaim("default", "w1", "n2")} == {j.id for j in second}
