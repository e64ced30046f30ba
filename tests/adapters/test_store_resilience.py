"""The store when things go wrong: Redis restarts, callers are cancelled, Redis is not there.

Real Redis runs on the wall clock; every wait is for an event (a count of acknowledged ops
reached, a round trip begun) under ``trio.fail_after``. The restart test owns its own
``redis-server`` (in ``tmp_path``), so the session's server is never disturbed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import BadInput, StoreOutOfMemory, StoreUnavailable
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_actor import StoreActor
from tests.redis_server import RedisServer, free_port
from tests.store_fixtures import Target, index_membership, stream


class Progress:
    """Counters that wake whoever waits for them to reach a value."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._changed = trio.Event()

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()


# ---------------------------------------------------------------------------------------------
# (a) Redis restarts under a running actor
# ---------------------------------------------------------------------------------------------


async def test_a_redis_restart_loses_nothing_acknowledged_and_doubles_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    url, q = server.url, "restart"
    actor = StoreActor(open_backend(url, timeout=2.0), time.time, min_backoff=0.01, max_backoff=0.1)
    store = Store(actor)
    acked: list[tuple[str, str]] = []  # (job, event type) for every op that returned
    outage_errors: list[Exception] = []
    progress = Progress()
    phase = {"down": False}

    async def worker(name: str) -> None:
        n = 0
        while True:
            n += 1
            try:
                r = await store.submit(JobSpec(type="t", queue=q, input={"w": name, "n": n}))
                acked.append((r.id, "job.submitted"))
                for c in await store.claim(q, name, lease=600):
                    acked.append((c.id, "job.claim"))
                    done = await store.complete(c.id, c.token, {"by": name})
                    assert done.kind == "moved", done
                    acked.append((c.id, "job.completed"))
                    progress.add("completed")
            except StoreUnavailable as exc:
                if not phase["down"]:
                    raise
                outage_errors.append(exc)
                progress.add("errors")
                await trio.sleep(0.005)  # a client's backoff, not a synchronisation

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(actor.run)
                async with trio.open_nursery() as workers:
                    for i in range(4):
                        workers.start_soon(worker, f"w{i}")
                    await progress.until(lambda: progress.counts["completed"] >= 40)
                    phase["down"] = True
                    await trio.to_thread.run_sync(server.kill)
                    await progress.until(lambda: progress.counts["errors"] >= 20)
                    with pytest.raises(StoreUnavailable) as caught:
                        await store.queue_counts(q)
                    assert url in str(caught.value)
                    await trio.to_thread.run_sync(server.start)
                    target_count = progress.counts["completed"] + 40
                    await progress.until(lambda: progress.counts["completed"] >= target_count)
                    workers.cancel_scope.cancel()
                actor.close()
        # read what the server kept (AOF) after one more restart, every writer stopped
        server.restart()
        for exc in outage_errors:
            assert isinstance(exc, StoreUnavailable), exc
            assert url in str(exc), exc
        raw = redis.Redis.from_url(url)
        events = Counter((e["id"], e["type"]) for e in stream(raw, q))
        doubled = {k: n for k, n in events.items() if n != 1}
        assert doubled == {}, [e for e in stream(raw, q) if any(e["id"] == job for job, _ in doubled)]
        missing = [a for a in acked if events[a] != 1]
        assert missing == []
        assert len(acked) == len(set(acked))
        keys = Keys(q)
        for job, kind in acked:
            if kind == "job.completed":
                assert raw.hget(keys.job(job), "state") == b"completed"
                assert index_membership(raw, job, q) == ["finished"]
        raw.close()
    finally:
        server.stop()


async def test_a_redis_that_lost_the_library_gets_it_loaded_again(tmp_path: Path) -> None:
    """A Redis without persistence restarts empty: no data, no functions. The next call
    finds "Function not found", loads the library once and runs just that call again."""
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        backend = open_backend(server.url)
        actor = StoreActor(backend, time.time, min_backoff=0.01, max_backoff=0.01)
        store = Store(actor)
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await store.submit(JobSpec(type="t"))
            await trio.to_thread.run_sync(server.restart)
            raw = redis.Redis.from_url(server.url)
            assert raw.function_list() == []
            with trio.fail_after(5):
                while True:  # a dead pooled connection may cost one StoreUnavailable first
                    try:
                        again = await store.submit(JobSpec(type="t"))
                        break
                    except StoreUnavailable as exc:
                        unavailable = str(exc)
                        await trio.sleep(0.01)  # the actor's backoff window
                    assert server.url in unavailable
            assert again.kind == "created"
            libraries = [dict(zip(lib[::2], lib[1::2], strict=True)) for lib in raw.function_list()]
            assert [lib[b"library_name"] for lib in libraries] == [backend.library.name.encode()]
            stats = raw.info("commandstats")
            assert stats["cmdstat_function|load"]["calls"] == 1
            assert (stats["cmdstat_fcall"]["calls"], stats["cmdstat_fcall"]["failed_calls"]) == (2, 1)
            assert [(e["type"], e["id"]) for e in stream(raw)] == [("job.submitted", again.id)]
            actor.close()
        raw.close()
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# (b) callers cancelled while their request is in flight
# ---------------------------------------------------------------------------------------------


def check_claims_consistent(raw: Any, q: str, jobs: list[str], claimed: int) -> None:
    keys = Keys(q)
    states = Counter()
    for job in jobs:
        h = {k.decode(): v.decode() for k, v in raw.hgetall(keys.job(job)).items()}
        states[h["state"]] += 1
        if h["state"] == "active":
            assert index_membership(raw, job, q) == ["active"]
            assert h["lease_token"]
            assert int(h["lease_deadline"]) > 0
            assert raw.zscore(keys.active, job) == int(h["lease_deadline"])
            assert h["attempts"] == "1"
            assert "att:1" in h
        else:
            assert h["state"] == "queued"
            assert index_membership(raw, job, q) == ["queued"]
            assert h["attempts"] == "0"
            assert not h.get("lease_token")
    assert states == Counter({"active": claimed, "queued": len(jobs) - claimed}) - Counter()
    claims = Counter(e["id"] for e in stream(raw, q) if e["type"] == "job.claim")
    assert sum(claims.values()) == claimed
    assert set(claims.values()) <= {1}


async def test_a_caller_cancelled_before_sending_sends_nothing(target: Target, trio_store: Store) -> None:
    q = "cancel-early"
    raw = target.raw()
    jobs = [r.id for r in await trio_store.submit_many([JobSpec(type="t", queue=q) for _ in range(10)])]
    for _ in range(20):
        with trio.move_on_after(0):
            await trio_store.claim(q, "w")
            raise AssertionError("the claim returned under an expired deadline")
    check_claims_consistent(raw, q, jobs, 0)
    assert len(await trio_store.claim(q, "w", n=10)) == 10
    check_claims_consistent(raw, q, jobs, 10)


async def test_callers_cancelled_mid_flight_leave_the_actor_serving(target: Target) -> None:
    """The callers' scope is cancelled from inside the round trip that carries their
    requests (from inside the actor's round trip): none of them gets an answer, every
    request still runs whole, and the actor goes on serving with a healthy connection."""
    q = "cancel-inflight"
    raw = target.raw()
    backend = target.backend()
    # one serving loop, so that a later request is served after the held one
    actor = StoreActor(backend, time.time, concurrency=1)
    store = Store(actor)
    real_run, real_run_async = backend.run, backend.run_async
    armed: list[Callable[[], None]] = []

    def run_cancelling_callers(calls: Any, now_ms: int) -> Any:
        if armed:
            armed.pop()()
        return real_run(calls, now_ms)

    async def run_async_cancelling_callers(connection: Any, calls: Any, now_ms: int) -> Any:
        if armed:
            armed.pop()()
        return await real_run_async(connection, calls, now_ms)

    backend.run = run_cancelling_callers  # type: ignore[method-assign]
    backend.run_async = run_async_cancelling_callers  # type: ignore[method-assign]
    all_jobs: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        for round_ in range(10):
            jobs = [r.id for r in await store.submit_many([JobSpec(type="t", queue=q) for _ in range(5)])]
            all_jobs += jobs
            answered = []

            async def caller() -> None:
                answered.append(await store.claim(q, f"w{round_}"))

            with trio.fail_after(10):
                async with trio.open_nursery() as callers:
                    armed.append(callers.cancel_scope.cancel)
                    for _ in jobs:
                        callers.start_soon(caller)
            assert armed == []  # the cancel came from inside a round trip
            assert answered == []  # and no caller got its answer
            # the requests still ran, whole: every job claimed exactly once, under a lease
            assert (await store.queue_counts(q))["queued"] == 0
            check_claims_consistent(raw, q, all_jobs, len(all_jobs))
            # and the connection answers each caller with its own answer
            views = [await store.get_job(j) for j in jobs]
            assert [v.id for v in views] == jobs
        assert actor.statistics().failures == 0
        r = await store.submit(JobSpec(type="t", queue=q))
        [c] = await store.claim(q, "after")
        assert c.id == r.id
        assert (await store.complete(c.id, c.token)).to == "completed"
        actor.close()


# ---------------------------------------------------------------------------------------------
# (c) nothing listening
# ---------------------------------------------------------------------------------------------


def test_an_unreachable_url_is_store_unavailable_naming_it_quickly() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = SyncStore(open_backend(url))
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.submit(JobSpec(type="t"))
    assert time.monotonic() - start < 2.0
    assert caught.value.url == url
    assert str(caught.value).startswith(f"Redis is unavailable at {url}")
    with pytest.raises(StoreUnavailable, match=url):
        store.get_job("default.X")
    store.close()


async def test_an_unreachable_url_through_the_actor_fails_fast_naming_it() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    actor = StoreActor(open_backend(url), time.time, min_backoff=0.5)
    store = Store(actor)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            for _ in range(3):  # the first probes, the others fail at once in the backoff window
                with pytest.raises(StoreUnavailable) as caught:
                    await store.claim("default", "w")
                assert caught.value.url == url
                assert url in str(caught.value)
            assert actor.statistics().failures == 1
            actor.close()


def test_a_url_that_is_not_redis_is_bad_input_naming_it() -> None:
    with pytest.raises(BadInput, match="'http://127.0.0.1:1/0'"):
        open_backend("http://127.0.0.1:1/0")


def _depth(exc: BaseException) -> int:
    n, tb = 0, exc.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


async def test_each_caller_in_the_backoff_window_gets_its_own_error() -> None:
    """During an outage every caller gets a StoreUnavailable. Raising one shared instance
    in every caller makes its traceback grow with each raise (about five frames per failed
    call, never released while the window lasts) and interleaves the callers' frames."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    actor = StoreActor(open_backend(url), time.time, min_backoff=5.0)
    store = Store(actor)
    errors: list[StoreUnavailable] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            for _ in range(50):
                try:
                    await store.claim("default", "w")
                except StoreUnavailable as exc:
                    errors.append(exc)
            actor.close()
    assert len(errors) == 50
    assert all(url in str(e) for e in errors)
    assert len({id(e) for e in errors}) == 50
    assert _depth(errors[-1]) == _depth(errors[1])


def test_store_unavailable_does_not_print_the_password_of_the_url() -> None:
    """The error names the URL (SPEC: "Redis unreachable, naming the URL"), and it ends up in
    logs and on the terminal: the password in ``redis://:secret@host`` must not."""
    port = free_port()
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    store = SyncStore(open_backend(url))
    with pytest.raises(StoreUnavailable) as caught:
        store.submit(JobSpec(type="t"))
    assert f"127.0.0.1:{port}/0" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    store.close()


async def test_under_oom_reads_go_on_while_scripts_wait_out_the_window(tmp_path: Path) -> None:
    """A full Redis refuses writes but still answers reads: after a refused script, the actor's
    backoff window fails the next scripts at once, not the reads (a reader that writes nothing
    sees no outage, so it never logs one)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        actor = StoreActor(open_backend(server.url), time.time, min_backoff=30.0)
        store = Store(actor)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(actor.run)
                await store.submit(JobSpec(type="t"))  # the library is loaded, one job queued
                redis.Redis(port=server.port).config_set("maxmemory", 1)  # full: writes refused
                with pytest.raises(StoreOutOfMemory):
                    await store.submit(JobSpec(type="t"))
                # in the window: a read of plain commands (the schedules actor's poll) is answered
                assert await store.due_schedules("default", time.time()) == ([], None)
                with pytest.raises(StoreOutOfMemory):
                    await store.claim("default", "w")  # a script: failed at once
                assert actor.statistics().failures == 1
                actor.close()
    finally:
        server.stop()
