"""Redis weather, in the small: which errors are transient, how an outage is logged, that the
supervisor never spends its restart budget on one, and the outage-accounting rule of the Lua.

* Classification: every Redis error reply, as the trio-native connection sees it (code first)
  and as redis-py raises it (its own exception classes), maps to one of ours, hand-typed below.
* :class:`~supervisor.outage.StoreOutage`: one WARNING when lost, one INFO when back, under
  ``MockClock``.
* :class:`~supervisor.supervise.Supervisor`: a child ending on :class:`StoreUnavailable` 50
  times with an intensity of 2 is restarted every time and the supervisor does not give up.
* The rule (README, "Redis outages"), on both backends with a manual clock: after a gap in
  the watchdogs' sweeps, every lease (and every daemon's heartbeat) gets one full lease from
  the store's return, once per renewal; without a gap nothing is re-armed.
"""

from __future__ import annotations

import logging

import pytest
import redis
import trio
import trio.testing

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import (
    StoreError,
    StoreLoading,
    StoreOutOfMemory,
    StoreUnavailable,
    transient_reply,
)
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.supervisor.outage import StoreOutage
from jobvisor.supervisor.supervise import ChildSpec, Policy, Supervisor, SupervisorGaveUp, store_outage
from tests.store_fixtures import K, ManualClock, Target, stream

URL = "redis://127.0.0.1:6379/0"

# -- classification ----------------------------------------------------------------------------

# (error reply, our class, condition): hand-typed from Redis's replies.
TRANSIENT = [
    ("LOADING Redis is loading the dataset in memory", StoreLoading, "loading"),
    ("OOM command not allowed when used memory > 'maxmemory'.", StoreOutOfMemory, "out of memory"),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
     StoreUnavailable, "busy running a script"),
    ("TRYAGAIN Multiple keys request during rehashing of slot", StoreUnavailable, "resharding"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
     StoreUnavailable, "failover"),
    ("READONLY You can't write against a read only replica.", StoreUnavailable, "failover"),
    ("CLUSTERDOWN The cluster is down", StoreUnavailable, "cluster down"),
    ("NOREPLICAS Not enough good replicas to write.", StoreUnavailable, "not enough replicas"),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
     StoreUnavailable, "persistence failing"),
    ("ERR max number of clients reached", StoreUnavailable, "too many clients"),
]
PERMANENT = [
    "NOPERM User jv has no permissions to run the 'fcall' command",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR Error running script (call to f_1234): @user_script:12: attempt to index a nil value",
    "ERR Function not found",
    "WRONGPASS invalid username-password pair or user is disabled.",
    "NOAUTH Authentication required.",
    "ERR unknown command 'FCALL'",
    "",
]


@pytest.mark.parametrize(("reply", "kind", "condition"), TRANSIENT, ids=[t[0].split()[0] for t in TRANSIENT])
def test_a_transient_reply_is_store_unavailable_naming_its_condition(
    reply: str, kind: type[StoreUnavailable], condition: str
) -> None:
    error = transient_reply(URL, reply)
    assert type(error) is kind
    assert isinstance(error, StoreUnavailable)
    assert error.condition == condition
    assert condition in str(error)
    assert "\n" not in str(error)
    assert type(error.again()) is kind
    assert error.again().condition == condition


@pytest.mark.parametrize("reply", PERMANENT, ids=[p.split(" ")[0] or "empty" for p in PERMANENT])
def test_a_permanent_reply_is_not_transient(reply: str) -> None:
    assert transient_reply(URL, reply) is None


# redis-py's own classes drop the code from the message; the backend puts it back.
REDIS_PY = [
    (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), StoreLoading),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), StoreOutOfMemory),
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), StoreUnavailable),
    (redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"), StoreUnavailable),
    (redis.exceptions.MasterDownError("Link with MASTER is down"), StoreUnavailable),
    (redis.exceptions.ClusterDownError("The cluster is down"), StoreUnavailable),
    (redis.exceptions.ResponseError("BUSY Redis is busy running a script."), StoreUnavailable),
    (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
     StoreUnavailable),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), StoreUnavailable),
    (redis.exceptions.NoPermissionError("User jv has no permissions"), StoreError),
    (redis.exceptions.AuthenticationError("invalid username-password pair"), StoreError),
    (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
     StoreError),
]


@pytest.mark.parametrize(("exc", "kind"), REDIS_PY,
                         ids=[type(e).__name__ + str(i) for i, (e, _) in enumerate(REDIS_PY)])
def test_the_backend_maps_redis_py_errors_to_ours(exc: Exception, kind: type[StoreError]) -> None:
    backend = open_backend(URL)
    try:
        mapped = backend._mapped(exc)
    finally:
        backend.close()
    assert type(mapped) is kind, mapped
    if kind is StoreError:
        assert not isinstance(mapped, StoreUnavailable)


# -- the outage logger -----------------------------------------------------------------------------


async def test_an_outage_is_logged_once_when_lost_and_once_when_back(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("jobvisor.test")
    outage = StoreOutage("scheduler", log, min_backoff=0.05, max_backoff=2.0)
    caplog.set_level(logging.INFO, logger="jobvisor.test")
    outage.reached()  # nothing to say while nothing was lost
    delays = []
    for _ in range(40):  # forty failed retries, 60 s of virtual time
        delays.append(outage.failed(StoreLoading(URL, "LOADING Redis is loading the dataset in memory")))
        await trio.sleep(delays[-1])
    outage.reached()
    outage.reached()
    assert delays[:6] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    assert set(delays[6:]) == {2.0}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "jobvisor.test"]
    assert len(lines) == 2, lines
    assert lines[0][0] == "WARNING"
    assert "scheduler: lost the store" in lines[0][1]
    assert "loading" in lines[0][1]
    assert lines[1] == ("INFO", f"scheduler: the store is back after {sum(delays):.1f}s")
    assert not outage.down
    assert outage.failed(StoreUnavailable(URL)) == 0.05


# -- the supervisor ----------------------------------------------------------------------------------


async def test_store_outages_never_spend_the_restart_budget(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0
    serving = trio.Event()

    async def child(stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs <= 50:
            if runs % 2:
                raise StoreLoading(URL, "LOADING")
            raise ExceptionGroup("nursery", [StoreUnavailable(URL, "refused"), StoreOutOfMemory(URL, "OOM")])
        serving.set()
        await stop.wait()

    supervisor = Supervisor([ChildSpec("c", child)], Policy(intensity=2, period=1000.0, backoff=0.01, max_backoff=0.5))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        with trio.fail_after(100):
            await serving.wait()
        await supervisor.shutdown()
    assert runs == 51
    assert supervisor.restarts == {"c": 0}


async def test_a_real_crash_still_counts(autojump_clock: trio.testing.MockClock) -> None:
    async def child(stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raise ExceptionGroup("nursery", [StoreUnavailable(URL), StoreError("WRONGTYPE")])

    supervisor = Supervisor([ChildSpec("c", child)], Policy(intensity=2, period=1000.0, backoff=0.01))
    gave_up = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
    except* SupervisorGaveUp as group:
        gave_up = list(group.exceptions)
    assert len(gave_up) == 1
    assert supervisor.restarts == {"c": 2}


def test_store_outage_tells_an_outage_from_a_crash() -> None:
    loading = StoreLoading(URL, "LOADING")
    assert store_outage(loading) is loading
    assert store_outage(ExceptionGroup("g", [ExceptionGroup("h", [loading])])) is loading
    assert store_outage(ExceptionGroup("g", [loading, ValueError()])) is None
    assert store_outage(StoreError("x")) is None
    assert store_outage(None) is None


# -- the outage-accounting rule (both backends) ------------------------------------------------------

LEASE = 2.0
GAP = 0.5


def _active(sync_store: SyncStore, n: int) -> list[str]:
    for i in range(n):
        sync_store.submit(JobSpec(type="t", input=i))
    return [c.id for c in sync_store.claim("default", "w1", n=n, lease=LEASE)]


def test_a_store_outage_re_arms_every_lease_once(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    ids = _active(sync_store, 3)
    assert sync_store.expired("default", gap=GAP, lease=LEASE) == []  # first sweep: stamps
    clock.advance(0.4)
    assert sync_store.expired("default", gap=GAP, lease=LEASE) == []
    clock.advance(10.0)  # nobody swept for 10 s: Redis was away
    back = clock()
    assert sync_store.expired("default", gap=GAP, lease=LEASE) == []  # re-armed, not expired
    raw = target.raw()
    for i in ids:
        assert float(raw.zscore(K.active, i)) == pytest.approx(back * 1000 + LEASE * 1000)
        assert int(raw.hget(K.job(i), "lease_deadline")) == int(back * 1000 + LEASE * 1000)
    outages = [e for e in _events(raw) if e["type"] == "store.outage"]
    assert [(e["id"], e["rearmed"]) for e in outages] == [("default", "3")]
    # the holder renews one job; the others' holder is really gone
    renewed = sync_store.renew(ids[0], _token(raw, ids[0]), LEASE)
    assert renewed.kind == "renewed"
    for _ in range(8):  # swept every 0.3 s for a lease: no gap
        clock.advance(0.3)
        sync_store.expired("default", gap=GAP, lease=LEASE)
    clock.advance(10.0)  # a second outage
    expired = sync_store.expired("default", gap=GAP, lease=LEASE)
    # only the renewed one is re-armed again: a lease is re-armed once between two renewals
    assert sorted(j.id for j in expired) == sorted(ids[1:])
    assert [e["rearmed"] for e in _events(raw) if e["type"] == "store.outage"] == ["3", "1"]


def test_without_a_gap_leases_expire_on_time(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    ids = _active(sync_store, 2)
    for _ in range(int(LEASE / 0.25) + 2):
        sync_store.expired("default", gap=GAP, lease=LEASE)
        clock.advance(0.25)
    assert sorted(j.id for j in sync_store.expired("default", gap=GAP, lease=LEASE)) == sorted(ids)
    assert not [e for e in _events(target.raw()) if e["type"] == "store.outage"]


def test_a_store_outage_does_not_declare_daemons_lost(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    sync_store.heartbeat("d1", {"host": "h"}, ttl=LEASE, start=True)
    sync_store.heartbeat("d2", {"host": "h"}, ttl=LEASE, start=True)
    assert sync_store.declare_lost_workers(gap=GAP, lease=LEASE) == []
    clock.advance(30.0)  # the store was away
    assert sync_store.declare_lost_workers(gap=GAP, lease=LEASE) == []
    lost = []
    for _ in range(int(LEASE / 0.25) + 2):  # d1 is back and beats; d2 really died meanwhile
        sync_store.heartbeat("d1", {"host": "h"}, ttl=LEASE)
        clock.advance(0.25)
        lost = sync_store.declare_lost_workers(gap=GAP, lease=LEASE)
        if lost:
            break
    assert [w.id for w in lost] == ["d2"]
    assert {w.id for w in sync_store.workers()} == {"d1"}


def _events(raw: object) -> list[dict[str, str]]:
    return stream(raw)


def _token(raw: object, job_id: str) -> str:
    value = raw.hget(K.job(job_id), "lease_token")  # type: ignore[attr-defined]
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_a_daemon_that_cannot_publish_its_types_still_stops_on_a_signal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis answers PING but refuses writes (out of memory, a read-only replica): the daemon
    waits to publish its job types, and a shutdown still ends it at once."""
    from jobvisor import App, run_daemon
    from jobvisor.adapters.backend import MemoryServers
    from jobvisor.adapters.store import Store
    from jobvisor.supervisor.config import load_config

    attempts = 0

    async def refuse(self: Store, types: object) -> None:
        nonlocal attempts
        attempts += 1
        raise StoreOutOfMemory(URL, "OOM command not allowed", condition="out of memory")

    monkeypatch.setattr(Store, "register_types", refuse)
    app = App()

    @app.handler("t")
    async def t(ctx: object) -> None:
        return None

    shutdown = trio.Event()
    config = load_config({"redis": "memory://publish-types", "worker_id": "w"}, environ={})
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_daemon(config, app, memory=MemoryServers(), shutdown=shutdown,
                                                  handle_signals=False))
            while attempts < 2:  # noqa: ASYNC110 - the daemon's own retries, nothing to await
                await trio.sleep(0.01)
            shutdown.set()
    assert attempts >= 2
