"""The watchdog's and the registry's guarded steps, through Redis (real and embedded).

* ``inspect``: a watchdog takes an expired lease in hand to ask the external service;
  while it holds it, no other watchdog sees the job, a decision without its nonce is
  skipped, and the worker (if it was only late) still wins with a renewal or a report.
* ``expire``: the decision (``lease_expired``, ``complete``, ``timeout``, ``extend``),
  its cause on the one event it writes; ``extend`` never reaches past the attempt's timeout.
* the registry: a daemon heartbeats; past its deadline it is declared lost by exactly
  one sweep, however many race; a heartbeat after that makes it live again.

Races are run as trio tasks through one store actor (merged into pipelines) and, on the
real Redis, as independent clients in threads; each round asserts exact counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import trio

from jobvisor.adapters.keys import REGISTRY, RegistryKeys
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.machines import JOB
from tests.store_fixtures import K, ManualClock, Target, diff_keys, snapshot, stream

# Every store-target test here runs on a 3-master Redis Cluster too (tests/redis_cluster.py).
pytestmark = pytest.mark.cluster

Q = "default"
TERMINAL = frozenset(JOB.notifications.values())


def expired_job(store: SyncStore, clock: ManualClock, **spec: Any) -> tuple[str, str]:
    """A job whose worker claimed it (lease 5 s) and vanished; the lease has run out."""
    job = store.submit(JobSpec(type="t", **{"timeout": 60.0, "max_retries": 2, **spec})).id
    [claimed] = store.claim(Q, "ghost", lease=5)
    clock.advance(6)
    return job, claimed.token


def job_events(raw: Any, job: str, queue: str = Q) -> list[dict[str, str]]:
    return [e for e in stream(raw, queue) if e["id"] == job]


# -- inspect and expire ----------------------------------------------------------------------------


def test_an_inspection_hides_the_job_and_only_its_own_decision_counts(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    job, token = expired_job(sync_store, clock)
    [seen] = sync_store.expired(Q)
    assert (seen.id, seen.token, seen.worker, seen.attempt, seen.timeout_ms) == (job, token, "ghost", 1, 60_000)
    assert seen.attempt_deadline == seen.started_at / 1000 + 60

    before = snapshot(raw)
    r = sync_store.inspect(job, token, hold=3, inspector="w1/a")
    assert (r.kind, r.lease_deadline) == ("inspecting", int(clock() * 1000) + 3000)
    # the job hash gets the nonce, the active index the hold; no event
    assert diff_keys(before, snapshot(raw)) == {K.job(job), K.active}
    assert sync_store.expired(Q) == []

    held = snapshot(raw)
    assert sync_store.inspect(job, token, hold=3, inspector="w2/b").kind == "skipped"
    assert sync_store.expire(job, token, "lease_expired").kind == "skipped"  # no nonce while held
    assert sync_store.expire(job, token, "lease_expired", inspector="w2/b").kind == "skipped"
    assert sync_store.expire(job, "other.1", "lease_expired", inspector="w1/a").kind == "skipped"
    assert snapshot(raw) == held

    r = sync_store.expire(job, token, "lease_expired", inspector="w1/a", cause="service_failed",
                          error={"type": "WorkerLost", "cause": "service_failed"})
    assert (r.kind, r.to) == ("moved", "scheduled")
    [event] = [e for e in job_events(raw, job) if e["type"] == "job.lease_expired"]
    assert (event["reason"], event["cause"], event["from"], event["to"]) == (
        "worker_lost", "service_failed", "active", "scheduled")
    view = sync_store.get_job(job)
    assert "inspector" not in view.raw
    assert view.retry_count == 1
    assert view.reason == "worker_lost"
    [attempt] = view.attempt_records
    assert (attempt.outcome, attempt.by, attempt.error["cause"]) == ("worker_lost", "watchdog", "service_failed")


def test_after_the_hold_another_watchdog_takes_over_and_the_first_decision_is_skipped(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    job, token = expired_job(sync_store, clock)
    assert sync_store.inspect(job, token, hold=3, inspector="first").kind == "inspecting"
    clock.advance(3.001)  # the first inspector died with its daemon
    [seen] = sync_store.expired(Q)
    assert sync_store.inspect(job, seen.token, hold=3, inspector="second").kind == "inspecting"
    before = snapshot(raw)
    assert sync_store.expire(job, token, "complete", result={"late": 1}, inspector="first").kind == "skipped"
    assert snapshot(raw) == before
    r = sync_store.expire(job, token, "complete", result={"by": "service"}, inspector="second",
                          cause="service_completed")
    assert (r.kind, r.to) == ("moved", "completed")
    assert sync_store.get_job(job).result == {"by": "service"}
    assert [e["type"] for e in job_events(raw, job) if e["type"] in TERMINAL] == ["job.completed"]
    assert [e.get("cause") for e in job_events(raw, job) if e["type"] == "job.completed"] == ["service_completed"]


def test_a_worker_that_was_only_late_wins_over_an_inspection(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    # it renews during the inspection: the decision is skipped, the job stays its
    job, token = expired_job(sync_store, clock)
    assert sync_store.inspect(job, token, hold=10, inspector="w").kind == "inspecting"
    assert sync_store.renew(job, token, 5).kind == "renewed"
    assert sync_store.expire(job, token, "lease_expired", inspector="w").kind == "skipped"
    clock.advance(6)
    assert [e.id for e in sync_store.expired(Q)] == [job]  # expired again: back in sight at once

    # it reports during the inspection: the report wins, the decision is skipped
    other, other_token = expired_job(sync_store, clock)
    assert sync_store.inspect(other, other_token, hold=10, inspector="w").kind == "inspecting"
    assert sync_store.complete(other, other_token, {"by": "worker"}).to == "completed"
    before = snapshot(raw)
    # terminal: the table's outcome for a late decision is absorbed
    assert sync_store.expire(other, other_token, "complete", result={"by": "service"}, inspector="w").kind == "absorbed"
    assert snapshot(raw) == before
    assert sync_store.get_job(other).result == {"by": "worker"}


def test_extend_never_reaches_past_the_attempts_timeout(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    job, token = expired_job(sync_store, clock, timeout=10.0)  # started 6 s ago
    started = sync_store.get_job(job).attempt_records[0].started_at
    assert sync_store.inspect(job, token, hold=2, inspector="w").kind == "inspecting"
    r = sync_store.expire(job, token, "extend", lease=30, inspector="w", reason="service_running")
    assert (r.kind, r.lease_deadline) == ("extended", int((started + 10) * 1000))
    assert raw.zscore(K.active, job) == int((started + 10) * 1000)
    assert job_events(raw, job)[-1]["type"] == "job.lease_extended"
    assert job_events(raw, job)[-1]["reason"] == "service_running"
    clock.advance(4)
    [seen] = sync_store.expired(Q)
    r = sync_store.expire(job, seen.token, "timeout", cause="service_running_past_timeout")
    assert (r.kind, r.to) == ("moved", "scheduled")
    view = sync_store.get_job(job)
    assert (view.reason, view.attempt_records[0].outcome) == ("timed_out", "timed_out")


def test_a_service_completion_goes_through_validation_when_the_type_has_a_validator(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    job, token = expired_job(sync_store, clock, has_validator=True)
    assert sync_store.inspect(job, token, hold=2, inspector="w").kind == "inspecting"
    r = sync_store.expire(job, token, "complete", result={"by": "service"}, inspector="w", cause="service_completed")
    assert (r.kind, r.to) == ("moved", "validating")
    assert sync_store.get_job(job).result == {"by": "service"}


def test_expired_pages_past_the_jobs_left_for_later(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    ids = [sync_store.submit(JobSpec(type="t")).id for _ in range(5)]
    sync_store.claim(Q, "ghost", n=5, lease=5)
    clock.advance(6)
    assert [e.id for e in sync_store.expired(Q, n=2)] == ids[:2]
    assert [e.id for e in sync_store.expired(Q, n=2, offset=2)] == ids[2:4]
    assert [e.id for e in sync_store.expired(Q, n=2, offset=4)] == ids[4:]


async def test_fifty_watchdogs_race_on_one_expired_lease(target: Target, trio_store: Store) -> None:
    """Half inspect then decide, half decide at once: one decision, one event, every round."""
    raw = target.raw()
    for round_ in range(20):
        job = (await trio_store.submit(JobSpec(type="t", queue="wd", max_retries=1))).id
        [claimed] = await trio_store.claim("wd", "ghost", lease=0.001)
        await trio.sleep(0.005)
        outcomes: list[str] = []

        async def watchdog(i: int) -> None:
            if i % 2:
                nonce = f"w{i}"
                if (await trio_store.inspect(job, claimed.token, hold=30, inspector=nonce)).kind != "inspecting":
                    outcomes.append("skipped-inspect")
                    return
                r = await trio_store.expire(job, claimed.token, "lease_expired", inspector=nonce,
                                            cause="service_failed")
            else:
                r = await trio_store.expire(job, claimed.token, "lease_expired", cause="no_status_query")
            outcomes.append("won" if r.moved else r.kind)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(watchdog, i)
        counts = Counter(outcomes)
        assert counts["won"] == 1, (round_, counts)
        assert counts["won"] + counts["skipped"] + counts["skipped-inspect"] == 50
        decisions = [e for e in job_events(raw, job, "wd") if e["type"] == "job.lease_expired"]
        assert len(decisions) == 1, (round_, decisions)
        view = await trio_store.get_job(job)
        assert (view.state, view.retry_count) == ("scheduled", 1)


# -- the registry ------------------------------------------------------------------------------------


def registry_events(raw: Any) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in raw.xrange(RegistryKeys.events)]


def test_a_daemon_registers_heartbeats_is_declared_lost_once_and_returns(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    slots = '[{"slot":1,"job":"default.X","type":"t","attempt":1,"since":1.5}]'
    fields = {"host": "h", "pid": "7", "queues": "default,other", "concurrency": "4", "slots": slots}
    assert sync_store.heartbeat("d1", fields, ttl=3, start=True).kind == "registered"
    assert sync_store.heartbeat("d2", {**fields, "slots": "[]"}, ttl=3, start=True).kind == "registered"
    [d1, d2] = sync_store.workers()
    assert (d1.id, d1.state, d1.queues, d1.concurrency, d1.pid, d1.late) == (
        "d1", "live", ["default", "other"], 4, 7, False)
    assert [(s.slot, s.job, s.attempt) for s in d1.slots] == [(1, "default.X", 1)]
    assert d2.slots == []
    assert sync_store.declare_lost_workers() == []

    clock.advance(2)
    assert sync_store.heartbeat("d2", {"slots": "[]"}, ttl=3).kind == "alive"
    clock.advance(1.5)  # d1 is past its deadline, d2 is not
    assert [w.late for w in sync_store.workers()] == [True, False]
    [lost] = sync_store.declare_lost_workers()
    assert (lost.id, lost.slots) == ("d1", slots)
    before = snapshot(raw)
    assert sync_store.declare_lost_workers() == []  # once
    assert snapshot(raw) == before
    assert [w.id for w in sync_store.workers()] == ["d2"]
    gone = {w.id: w for w in sync_store.workers(include_gone=True)}
    assert gone["d1"].state == "lost"
    assert gone["d1"].gone_at == clock()

    # it was only paused: its next heartbeat makes it live again
    r = sync_store.heartbeat("d1", {"slots": "[]"}, ttl=3)
    assert (r.kind, r.state) == ("returned", "lost")
    assert sorted(w.id for w in sync_store.workers()) == ["d1", "d2"]
    # a graceful stop is never declared lost
    assert sync_store.worker_stopped("d2").kind == "stopped"
    assert sync_store.worker_stopped("d2").kind == "skipped"
    clock.advance(10)
    assert [w.id for w in sync_store.declare_lost_workers()] == ["d1"]
    assert [(e["type"], e["id"]) for e in registry_events(raw)] == [
        ("worker.started", "d1"), ("worker.started", "d2"), ("worker.lost", "d1"),
        ("worker.returned", "d1"), ("worker.stopped", "d2"), ("worker.lost", "d1")]
    assert raw.pttl(RegistryKeys.daemon("d1")) > 0  # records expire on their own
    assert [e.type for e in sync_store.events(REGISTRY)][:2] == ["worker.started", "worker.started"]


async def test_fifty_sweeps_race_to_declare_one_daemon_lost(target: Target, trio_store: Store) -> None:
    raw = target.raw()
    for round_ in range(20):
        name = f"d{round_}"
        await trio_store.heartbeat(name, {"slots": "[]"}, ttl=0.001, start=True)
        await trio.sleep(0.005)
        found: list[str] = []

        async def sweep() -> None:
            found.extend(w.id for w in await trio_store.declare_lost_workers())

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(sweep)
        assert found == [name], (round_, found)
        lost = [e for e in registry_events(raw) if e["type"] == "worker.lost" and e["id"] == name]
        assert len(lost) == 1


def test_fifty_clients_in_threads_declare_a_daemon_lost_once(redis_url: str, clock: ManualClock) -> None:
    """Independent connections, released together by one barrier, on the real Redis."""
    from jobvisor.adapters.backend import open_backend

    clients = [SyncStore(open_backend(redis_url)) for _ in range(50)]
    try:
        for round_ in range(10):
            name = f"t{round_}"
            clients[0].heartbeat(name, {"slots": "[]"}, ttl=0.001, start=True)
            threading.Event().wait(0.005)  # let the deadline pass (another process's clock)
            barrier = threading.Barrier(len(clients))

            def sweep(client: SyncStore) -> list[str]:
                barrier.wait()
                return [w.id for w in client.declare_lost_workers()]

            with ThreadPoolExecutor(len(clients)) as pool:
                found = [x for xs in pool.map(sweep, clients) for x in xs]
            assert found == [name], (round_, found)
        events = clients[0].events(REGISTRY)
        assert Counter(e.id for e in events if e.type == "worker.lost") == {f"t{i}": 1 for i in range(10)}
    finally:
        for c in clients:
            c.close()
