"""Re-drive through the store, on redis-server and the embedded store (README, "Re-drive").

A job filed ``notification_failed`` under a type's policy enters the ``redrive`` index; the
guarded ``redrive`` op redelivers its dead notification (the same delivery id, so the same
``webhook-id``) once per due offer, at most the policy's cap, never before its delay. Every
refusal writes nothing (the whole database compared before and after).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.filing import classify
from jobvisor.adapters.records import JobSpec, RedriveDue
from jobvisor.adapters.redrive import Redrive
from jobvisor.adapters.store import SyncStore
from tests.cli_support import jv, ok_json
from tests.store_fixtures import K, ManualClock, Target, snapshot, stream

HOOK = "http://hooks.example/jobs"
POLICY = Redrive(notification_failed=2, delay=60)
POLICIES = {"t": POLICY}


def dead_notification(store: SyncStore, job: str) -> str:
    """Send the job's due notification once and fail it for good: ``dead``; its delivery id."""
    [delivery] = store.take_deliveries("default", max_attempts=1)
    assert delivery.id.startswith(job)
    reply = store.delivery_outcome("default", delivery.id, delivery.token, "fail", max_attempts=1, status=503)
    assert reply.kind == "moved"
    return delivery.id


def completed_with_webhook(store: SyncStore, job_type: str = "t") -> str:
    job = store.submit(JobSpec(type=job_type, webhook_url=HOOK)).id
    [claimed] = store.claim("default", "w1")
    store.complete(job, claimed.token, {"ok": True})
    return job


def file_all(store: SyncStore, policies: dict[str, Redrive] | None = None) -> list[Any]:
    """An evaluator pass with the types' re-drive policies."""
    jobs = store.unfiled("default", 1000)
    now = int(store.store.executor.now() * 1000)
    return store.file_jobs([(j, classify(j, now_ms=now)) for j in jobs], wait=60,
                           redrive=POLICIES if policies is None else policies)


def redriven_events(raw: Any) -> list[tuple[str, str, str]]:
    return [(e["id"], e["kind"], e["count"]) for e in stream(raw) if e["type"] == "job.redriven"]


def test_a_dead_notification_is_redelivered_after_the_delay_at_most_the_cap(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    job = completed_with_webhook(sync_store)
    delivery = dead_notification(sync_store, job)
    [filed] = file_all(sync_store)
    assert filed.kind == "filed"
    assert sync_store.get_job(job).problem == "notification_failed"
    assert raw.zscore(K.redrive, job) == int(clock() * 1000) + 60_000
    due = RedriveDue(id=job, type="t", kind="notification_failed", epoch=0)
    # not before the delay: nothing due, and an offer anyway changes nothing
    listed = sync_store.redrives_due("default", POLICIES)
    assert listed.items == []
    assert listed.next_due == clock() + 60
    before = snapshot(raw)
    assert sync_store.redrive(due, POLICY).kind == "skipped"
    assert snapshot(raw) == before
    for n in (1, 2):
        clock.advance(60)
        assert sync_store.redrives_due("default", POLICIES).items == [due]
        reply = sync_store.redrive(due, POLICY)
        assert (reply.kind, reply.count, reply.delivery) == ("redriven", n, delivery)
        before = snapshot(raw)
        assert sync_store.redrive(due, POLICY).kind == "skipped"  # the second offer of the same re-drive
        assert snapshot(raw) == before
        # the same delivery (the same webhook-id) goes out again, with a fresh attempt budget
        assert dead_notification(sync_store, job) == delivery
    assert sync_store.get_job(job).redrives == {"notification_failed": 2}
    assert raw.zscore(K.redrive, job) is None  # the cap is reached: out of the index
    clock.advance(3600)
    assert sync_store.redrives_due("default", POLICIES).items == []
    before = snapshot(raw)
    assert sync_store.redrive(due, POLICY).kind == "skipped"  # cap: nothing written
    assert snapshot(raw) == before
    assert redriven_events(raw) == [(job, "notification_failed", "1"), (job, "notification_failed", "2")]
    assert sync_store.get_job(job).problem == "notification_failed"  # still filed so


def test_a_wrong_filing_or_no_policy_is_never_redriven(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    failed = sync_store.submit(JobSpec(type="t", max_retries=0, webhook_url=HOOK)).id
    [claimed] = sync_store.claim("default", "w1")
    sync_store.fail(failed, claimed.token, {"message": "boom"})
    dead_notification(sync_store, failed)
    other = completed_with_webhook(sync_store, "u")  # a type without a policy
    dead_notification(sync_store, other)
    fine = completed_with_webhook(sync_store)
    [delivery] = sync_store.take_deliveries("default", max_attempts=1)
    sync_store.delivery_outcome("default", delivery.id, delivery.token, "succeed", max_attempts=1, status=200)
    assert [r.kind for r in file_all(sync_store)] == ["filed"] * 3
    assert {sync_store.get_job(j).problem for j in (failed, other, fine)} == {
        "retries_exhausted", "notification_failed", "none"}
    assert raw.zcard(K.redrive) == 0
    clock.advance(3600)
    before = snapshot(raw)
    # another filing, another notification outcome, or t's policy offered for a job of type u
    for job in (failed, fine, other):
        due = RedriveDue(id=job, type="t", kind="notification_failed", epoch=0)
        assert sync_store.redrive(due, POLICY).kind == "skipped"
    # a stale read (the epoch it was filed at is not the one offered) changes nothing either
    stale = RedriveDue(id=other, type="u", kind="notification_failed", epoch=1)
    assert sync_store.redrive(stale, POLICY).kind == "skipped"
    assert snapshot(raw) == before


def test_a_delivered_redrive_leaves_the_index_and_one_on_its_way_waits(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    job = completed_with_webhook(sync_store)
    dead_notification(sync_store, job)
    file_all(sync_store, {"t": Redrive(notification_failed=3, delay=10)})
    policies = {"t": Redrive(notification_failed=3, delay=10)}
    clock.advance(10)
    [due] = sync_store.redrives_due("default", policies).items
    assert sync_store.redrive(due, policies["t"]).kind == "redriven"
    clock.advance(10)
    # the re-sent notification is pending: an offer changes nothing; it is not listed, but
    # looked at again `wait` later
    before = snapshot(raw)
    assert sync_store.redrive(due, policies["t"]).kind == "skipped"
    assert snapshot(raw) == before
    assert sync_store.redrives_due("default", policies, wait=30).items == []
    assert raw.zscore(K.redrive, job) == int(clock() * 1000) + 30_000
    [delivery] = sync_store.take_deliveries("default", max_attempts=1)
    sync_store.delivery_outcome("default", delivery.id, delivery.token, "succeed", max_attempts=1, status=200)
    clock.advance(30)
    before = snapshot(raw)
    assert sync_store.redrive(due, policies["t"]).kind == "skipped"  # delivered: nothing to re-send
    assert snapshot(raw) == before
    assert sync_store.redrives_due("default", policies).items == []
    assert raw.zscore(K.redrive, job) is None
    assert sync_store.get_job(job).redrives == {"notification_failed": 1}


def race(target: Target, clock: ManualClock, due: list[RedriveDue], policy: Redrive, daemons: int = 8) -> list[str]:
    """``daemons`` threads, each its own store, offer every due re-drive at once; the outcomes."""
    outcomes: list[str] = []
    barrier = threading.Barrier(daemons)

    def daemon() -> None:
        own = SyncStore(open_backend(target.url, memory=target.memory), clock=clock)
        try:
            barrier.wait()
            outcomes.extend(own.redrive(d, policy).kind for d in due)
        finally:
            own.close()

    threads = [threading.Thread(target=daemon) for _ in range(daemons)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def test_racing_offers_redrive_each_job_exactly_once(target: Target, clock: ManualClock) -> None:
    store = SyncStore(target.backend(), clock=clock)
    jobs = []
    for _ in range(10):
        jobs.append(completed_with_webhook(store))
        dead_notification(store, jobs[-1])
    assert Counter(r.kind for r in file_all(store)) == {"filed": 10}
    clock.advance(60)
    due = store.redrives_due("default", POLICIES).items
    assert len(due) == 10
    assert Counter(race(target, clock, due, POLICY)) == {"redriven": 10, "skipped": 70}
    assert Counter(job for job, _, _ in redriven_events(target.raw())) == {job: 1 for job in jobs}
    assert {store.get_job(j).redrives["notification_failed"] for j in jobs} == {1}


def test_status_shows_the_redrive_counts(redis_url: str, clock: ManualClock) -> None:
    store = SyncStore(open_backend(redis_url), clock=clock)
    try:
        job = completed_with_webhook(store)
        dead_notification(store, job)
        file_all(store)
        clock.advance(60)
        [due] = store.redrives_due("default", POLICIES).items
        assert store.redrive(due, POLICY).kind == "redriven"
    finally:
        store.close()
    status = ok_json(jv("status", job, "--json", "--redis", redis_url))
    assert (status["problem"], status["redrives"]) == ("notification_failed", {"notification_failed": 1})
    text = jv("status", job, "--redis", redis_url)
    assert text.returncode == 0, text.stderr
    assert "re-driven  notification_failed 1x" in text.stdout.splitlines()


# -- missing_output: the job runs again as a new job ------------------------------------------

RERUN = Redrive(missing_output=2, delay=60)
REQUIRED = {"t": ["total"]}


def completed_without(store: SyncStore, job_id: str | None = None) -> str:
    """Claim the queue's next job (or submit one) and complete it with no ``total``."""
    if job_id is None:
        job_id = store.submit(JobSpec(type="t", input={"n": 7}, priority=5, max_retries=4, phases=("a", "b"))).id
    [claimed] = store.claim("default", "w1")
    assert claimed.id == job_id
    for name in ("a", "b"):  # the re-run starts its phases afresh
        assert store.phase(job_id, claimed.token, name, "start").kind == "moved"
        assert store.phase(job_id, claimed.token, name, "complete", {"phase": name}).kind == "moved"
    store.complete(job_id, claimed.token, {"other": 1})
    return job_id


def file_incomplete(store: SyncStore) -> list[str]:
    jobs = store.unfiled("default", 1000, required=REQUIRED)
    now = int(store.store.executor.now() * 1000)
    replies = store.file_jobs([(j, classify(j, now_ms=now)) for j in jobs], wait=60, redrive={"t": RERUN})
    return [r.kind for r in replies]


def test_a_job_missing_an_output_is_run_again_as_a_new_job_a_chain_at_most_the_cap(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    chain = [completed_without(sync_store)]
    while True:
        assert file_incomplete(sync_store) == ["filed"]
        assert sync_store.get_job(chain[-1]).problem == "missing_output"
        clock.advance(59)
        assert sync_store.redrives_due("default", {"t": RERUN}).items == []  # not before the delay
        clock.advance(1)
        due = sync_store.redrives_due("default", {"t": RERUN}).items
        if len(chain) == 3:  # two re-runs: the cap
            assert due == []
            assert raw.zcard(K.redrive) == 0
            break
        assert due == [RedriveDue(id=chain[-1], type="t", kind="missing_output", epoch=0)]
        reply = sync_store.redrive(due[0], RERUN)
        assert (reply.kind, reply.count, reply.delivery) == ("redriven", len(chain), None)
        before = snapshot(raw)
        assert sync_store.redrive(due[0], RERUN).kind == "skipped"  # the second offer writes nothing
        clock.advance(60)
        assert sync_store.redrive(due[0], RERUN).kind == "skipped"  # nor one after the delay: run again once
        assert snapshot(raw) == before
        assert sync_store.get_job(reply.rerun).phases == {"a": "pending", "b": "pending"}
        chain.append(completed_without(sync_store, reply.rerun))
    views = [sync_store.get_job(j) for j in chain]
    assert [(v.state, v.rerun_of, v.rerun) for v in views] == [
        ("completed", None, chain[1]), ("completed", chain[0], chain[2]), ("completed", chain[1], None)]
    assert [v.redrives for v in views] == [{"missing_output": 1}, {"missing_output": 2}, {"missing_output": 2}]
    for view in views[1:]:  # the same type, input and settings; every phase from the start
        assert (view.type, view.input, view.priority, view.max_retries, view.attempts) == ("t", {"n": 7}, 5, 4, 1)
        assert list(view.phases) == ["a", "b"]
    assert redriven_events(raw) == [(chain[0], "missing_output", "1"), (chain[1], "missing_output", "2")]
    assert [e["rerun"] for e in stream(raw) if e["type"] == "job.redriven"] == chain[1:]


def test_racing_offers_run_each_incomplete_job_again_exactly_once(target: Target, clock: ManualClock) -> None:
    store = SyncStore(target.backend(), clock=clock)
    jobs = [completed_without(store) for _ in range(10)]
    assert file_incomplete(store) == ["filed"] * 10
    clock.advance(60)
    due = store.redrives_due("default", {"t": RERUN}).items
    assert len(due) == 10
    assert Counter(race(target, clock, due, RERUN)) == {"redriven": 10, "skipped": 70}
    reruns = [store.get_job(j).rerun for j in jobs]
    assert len(set(reruns)) == 10
    assert None not in reruns
    assert target.raw().zcard(K.queued_all) == 10  # ten re-runs, not eighty
