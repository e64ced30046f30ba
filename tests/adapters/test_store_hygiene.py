"""Payload hygiene, attempt records, filing and retention through the store, on both backends.

Every test drives real store ops (submit, claim, phase, report, trigger, deliveries) on the
session's redis-server and on the embedded store, with a clock the test moves; what was
written is read back with a plain client. ``MEMORY USAGE`` exists only on redis-server.
"""

from __future__ import annotations

import base64
import random
import threading
from collections import Counter
from typing import Any

import pytest

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.filing import Problem
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.replies import PurgedJob
from jobvisor.adapters.sanitize import OMITTED, Sanitizer
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import K, ManualClock, Target, diff_keys, snapshot, stream

RNG = random.Random(88)
DAY = 86400.0
HOOK = "http://hooks.example/jobs"
IMAGE = "data:image/png;base64," + base64.b64encode(RNG.randbytes(3_750_000)).decode()  # 5 MB
RETENTION = {"completed": 7 * DAY, "failed": 30 * DAY, "cancelled": 30 * DAY, "timed_out": 30 * DAY,
             "validation_failed": 30 * DAY}


def finish(store: SyncStore, outcome: str, **spec: Any) -> str:
    """A job driven to ``outcome`` through the ops a worker and an operator use."""
    spec.setdefault("max_retries", 0)
    job = store.submit(JobSpec(type="t", **spec)).id
    if outcome == "cancelled":
        store.cancel(job)
        return job
    [claimed] = store.claim(spec.get("queue", "default"), "w1")
    if outcome == "completed":
        store.complete(job, claimed.token, {"ok": True})
    elif outcome == "failed":
        store.fail(job, claimed.token, {"message": "boom"})
    elif outcome == "timed_out":
        store.report(job, claimed.token, "timeout", error={"message": "slow"})
    else:
        raise AssertionError(outcome)
    assert store.get_job(job).state == outcome
    return job


def file_all(store: SyncStore, queue: str = "default", *, leave: frozenset[str] = frozenset()) -> list[Any]:
    """What an evaluator pass does: read the candidates, classify, file (all but ``leave``)."""
    from jobvisor.adapters.filing import classify

    jobs = [j for j in store.unfiled(queue, 1000) if j.id not in leave]
    now = int(store.store.executor.now() * 1000)
    return store.file_jobs([(j, classify(j, now_ms=now)) for j in jobs], wait=60)


def events_of(raw: Any, kind: str) -> Counter[str]:
    return Counter(e["id"] for e in stream(raw) if e["type"] == kind)


# -- sanitizing --------------------------------------------------------------------------------


def test_a_5mb_image_in_a_result_is_stored_as_a_descriptor(target: Target, clock: ManualClock) -> None:
    raw = target.raw()
    sizes = {}
    for name, sanitizer in (("sanitized", Sanitizer()), ("raw", None)):
        store = SyncStore(target.backend(), clock=clock, sanitizer=sanitizer)
        job = store.submit(JobSpec(type="render", phases=("draw",))).id
        [claimed] = store.claim("default", "w1")
        store.phase(job, claimed.token, "draw", "start")
        store.phase(job, claimed.token, "draw", "complete", {"preview": IMAGE})
        store.complete(job, claimed.token, {"image": IMAGE, "width": 1024})
        view = store.get_job(job)
        if name == "sanitized":
            descriptor = view.result["image"]
            assert descriptor[OMITTED] == "base64"
            assert descriptor["size"] == len(IMAGE)
            assert view.result["width"] == 1024
            assert view.attempt_records[0].result == view.result
            assert view.phase_results["draw"]["preview"] == descriptor
            assert view.attempt_records[0].phase_results["draw"]["preview"] == descriptor
        else:
            assert view.result["image"] == IMAGE
        sizes[name] = (raw.memory_usage(K.job(job), samples=0) if target.kind == "redis"
                       else sum(len(v) for v in raw.hgetall(K.job(job)).values()))
    assert sizes["sanitized"] < 4096, sizes
    assert sizes["raw"] > 3 * len(IMAGE), sizes  # the result (its attempt's too), the phase result twice


def test_errors_and_service_ids_are_sanitized_but_input_is_stored_byte_for_byte(
    target: Target, sync_store: SyncStore
) -> None:
    raw = target.raw()
    payload = {"upload": IMAGE[:5000], "note": "x" * 100_000}
    job = sync_store.submit(JobSpec(type="t", input=payload, max_retries=1)).id
    stored_input = raw.hget(K.job(job), "input")
    assert len(stored_input) > 100_000
    [claimed] = sync_store.claim("default", "w1")
    sync_store.record_service_job_id(job, claimed.token, "svc-" + "y" * 200_000)
    sync_store.fail(job, claimed.token, {"type": "HTTPError", "body": IMAGE})
    view = sync_store.get_job(job)
    assert view.error["body"][OMITTED] == "base64"
    assert view.error["type"] == "HTTPError"
    assert view.attempt_records[0].error == view.error
    assert len(view.service_job_id or "") == 64 * 1024
    assert "truncated" in (view.service_job_id or "")
    assert raw.hget(K.job(job), "input") == stored_input
    assert view.input == payload


# -- attempt records -----------------------------------------------------------------------------


def test_every_attempt_keeps_its_own_record(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    job = sync_store.submit(JobSpec(type="t", input={"n": 1}, phases=("a", "b"), max_retries=2,
                                    backoff=1)).id
    input_bytes = raw.hget(K.job(job), "input")
    for attempt in (1, 2, 3):
        [claimed] = sync_store.claim("default", f"w{attempt}")
        assert claimed.attempt == attempt
        if attempt == 1:
            sync_store.phase(job, claimed.token, "a", "start")
            sync_store.phase(job, claimed.token, "a", "complete", {"a": 1})
        sync_store.record_service_job_id(job, claimed.token, f"svc-{attempt}")
        sync_store.phase(job, claimed.token, "b", "start")
        clock.advance(2)
        if attempt < 3:
            sync_store.fail(job, claimed.token, {"message": f"b broke on {attempt}"})
            clock.advance(10)
            sync_store.wake("default")
        else:
            sync_store.phase(job, claimed.token, "b", "complete", {"b": 3})
            sync_store.complete(job, claimed.token, {"done": True})
        assert raw.hget(K.job(job), "input") == input_bytes
    view = sync_store.get_job(job)
    first, second, third = view.attempt_records
    assert [a.n for a in view.attempt_records] == [1, 2, 3]
    assert [a.worker for a in view.attempt_records] == ["w1", "w2", "w3"]
    assert [a.outcome for a in view.attempt_records] == ["failed", "failed", "succeeded"]
    assert [a.error and a.error["message"] for a in view.attempt_records] == ["b broke on 1", "b broke on 2", None]
    assert [a.service_job_id for a in view.attempt_records] == ["svc-1", "svc-2", "svc-3"]
    assert [a.interrupted_phase for a in view.attempt_records] == ["b", "b", None]
    assert [a.resumed_at_phase for a in view.attempt_records] == ["a", "b", "b"]
    assert first.phase_results == {"a": {"a": 1}}
    assert second.phase_results == {}
    assert third.phase_results == {"b": {"b": 3}}
    assert third.result == {"done": True}
    assert first.started_at < first.finished_at < second.started_at < second.finished_at < third.started_at
    assert view.input == {"n": 1}


def test_a_retry_from_start_does_not_overwrite_the_earlier_attempts_phase_results(
    sync_store: SyncStore, clock: ManualClock
) -> None:
    job = sync_store.submit(JobSpec(type="t", phases=("a",), max_retries=0)).id
    for n in (1, 2):
        [claimed] = sync_store.claim("default", "w")
        sync_store.phase(job, claimed.token, "a", "start")
        sync_store.phase(job, claimed.token, "a", "complete", f"a@{n}")
        sync_store.fail(job, claimed.token, {"message": f"fail {n}"})
        if n == 1:
            assert sync_store.retry(job, from_start=True).to == "queued"
    view = sync_store.get_job(job)
    assert view.phase_results == {"a": "a@2"}
    assert [a.phase_results for a in view.attempt_records] == [{"a": "a@1"}, {"a": "a@2"}]


# -- filing ----------------------------------------------------------------------------------------


def test_filing_is_guarded_once_per_outcome(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    job = finish(sync_store, "failed")
    [candidate] = sync_store.unfiled("default")
    assert (candidate.state, candidate.reason, candidate.epoch) == ("failed", "handler_error", 0)
    assert sync_store.file_job(candidate, Problem.RETRIES_EXHAUSTED).kind == "filed"
    before = snapshot(raw)
    assert sync_store.file_job(candidate, Problem.RETRIES_EXHAUSTED).kind == "absorbed"
    assert sync_store.unfiled("default") == []
    assert snapshot(raw) == before
    view = sync_store.get_job(job)
    assert (view.category, view.problem) == ("filed", "retries_exhausted")
    assert sync_store.filing_counts("default") == ({("filed", "retries_exhausted"): 1}, 0)
    # an operator retry: a new outcome, filed again, the old one un-counted; a stale read is skipped
    sync_store.retry(job)
    assert sync_store.file_job(candidate, Problem.RETRIES_EXHAUSTED).kind == "skipped"
    [claimed] = sync_store.claim("default", "w2")
    sync_store.complete(job, claimed.token, {"ok": 1})
    [again] = sync_store.unfiled("default")
    assert again.epoch == 1
    assert again.state == "completed"
    assert sync_store.file_job(candidate, Problem.RETRIES_EXHAUSTED).kind == "skipped"
    assert sync_store.file_job(again, Problem.NONE).kind == "filed"
    assert sync_store.filing_counts("default") == ({("complete", "none"): 1}, 0)
    assert events_of(raw, "job.filed") == {job: 2}
    assert raw.zscore(K.retain("failed"), job) is None
    assert raw.zscore(K.retain("completed"), job) == int(clock() * 1000)


def test_a_completed_job_waits_for_its_webhook_to_settle(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    job = finish(sync_store, "completed", webhook_url=HOOK)
    [candidate] = sync_store.unfiled("default")
    assert candidate.notification == "pending"
    [deferred] = file_all(sync_store)
    assert deferred.kind == "deferred"
    assert sync_store.unfiled("default") == []  # not before the wait is over
    clock.advance(60)
    [delivery] = sync_store.take_deliveries("default", max_attempts=1)
    sync_store.delivery_outcome("default", delivery.id, delivery.token, "fail", max_attempts=1, status=503)
    [filed] = file_all(sync_store)
    assert filed.kind == "filed"
    assert (sync_store.get_job(job).category, sync_store.get_job(job).problem) == ("filed", "notification_failed")
    assert events_of(raw, "job.filed") == {job: 1}


def test_required_outputs_are_checked_in_the_stored_result(sync_store: SyncStore) -> None:
    results = {"full": {"url": "u", "pages": 3}, "partial": {"url": "u", "pages": None},
               "empty": {}, "none": None, "list": [1], "bare": "ok"}
    ids = {}
    for name, result in results.items():
        ids[name] = sync_store.submit(JobSpec(type="doc")).id
        [claimed] = sync_store.claim("default", "w")
        sync_store.complete(ids[name], claimed.token, result)
    found = {j.id: j for j in sync_store.unfiled("default", required={"doc": ["url", "pages"]})}
    assert {name: (found[i].result_empty, found[i].missing) for name, i in ids.items()} == {
        "full": (False, []), "partial": (False, ["pages"]), "empty": (True, ["url", "pages"]),
        "none": (True, ["url", "pages"]), "list": (False, ["url", "pages"]), "bare": (False, ["url", "pages"]),
    }


def test_threads_racing_to_file_file_each_job_once(target: Target, clock: ManualClock) -> None:
    store = SyncStore(target.backend(), clock=clock)
    jobs = [finish(store, outcome) for outcome in ("completed", "failed", "cancelled", "timed_out") * 10]
    candidates = store.unfiled("default", 1000)
    assert len(candidates) == len(jobs)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def evaluator() -> None:
        own = SyncStore(open_backend(target.url, memory=target.memory), clock=clock)
        try:
            barrier.wait()
            from jobvisor.adapters.filing import classify

            replies = own.file_jobs([(j, classify(j, now_ms=0)) for j in candidates])
            outcomes.extend(r.kind for r in replies)
        finally:
            own.close()

    threads = [threading.Thread(target=evaluator) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert Counter(outcomes) == {"filed": len(jobs), "absorbed": 7 * len(jobs)}
    assert events_of(target.raw(), "job.filed") == {job: 1 for job in jobs}


# -- retention -------------------------------------------------------------------------------------


def cutoffs(clock: ManualClock) -> dict[str, float]:
    return {state: clock() - seconds for state, seconds in RETENTION.items()}


def test_purge_deletes_what_is_due_and_nothing_else(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    raw = target.raw()
    batch = sync_store.create_batch(BatchSpec()).id
    old_done = finish(sync_store, "completed", idempotency_key="order-1", batch=batch, webhook_url=HOOK)
    old_failed = finish(sync_store, "failed")
    old_cancelled = finish(sync_store, "cancelled")
    never_filed = frozenset({finish(sync_store, "cancelled")})
    [delivery] = sync_store.take_deliveries("default")
    sync_store.delivery_outcome("default", delivery.id, delivery.token, "succeed", max_attempts=5, status=200)
    filed = file_all(sync_store, leave=never_filed)
    assert [r.kind for r in filed] == ["filed", "filed", "filed"]
    clock.advance(7 * DAY - 1)
    new_done = finish(sync_store, "completed")
    file_all(sync_store, leave=never_filed)
    before = snapshot(raw)
    assert sync_store.purge("default", cutoffs(clock)).n == 0
    assert snapshot(raw) == before
    clock.advance(1)
    reply = sync_store.purge("default", cutoffs(clock))
    assert (reply.n, reply.jobs) == (1, (PurgedJob(id=old_done, state="completed"),))
    after = snapshot(raw)
    assert K.job(old_done) not in after
    assert K.idem("order-1") not in after
    assert K.delivery(delivery.id) not in after
    assert old_done not in raw.smembers(K.batch(batch) + ":members")  # type: ignore[operator]
    assert diff_keys(before, after) == {K.job(old_done), K.idem("order-1"), K.delivery(delivery.id), K.finished,
                                        K.retain("completed"), K.filing, K.events, K.batch(batch) + ":members"}
    assert events_of(raw, "job.deleted") == {old_done: 1}
    assert sync_store.filing_counts("default")[0] == {("complete", "none"): 1, ("filed", "retries_exhausted"): 1,
                                                     ("filed", "cancelled"): 1}
    clock.advance(23 * DAY - 1)
    assert sync_store.purge("default", cutoffs(clock)).jobs == (PurgedJob(id=new_done, state="completed"),)
    assert sync_store.get_job(old_failed).state == "failed"
    clock.advance(1)
    assert {j.id for j in sync_store.purge("default", cutoffs(clock)).jobs} == {old_failed, old_cancelled}
    [kept] = never_filed
    assert sync_store.get_job(kept).state == "cancelled"  # 30 days old, but never filed: kept
    assert events_of(raw, "job.deleted") == {old_done: 1, new_done: 1, old_failed: 1, old_cancelled: 1}
    assert sync_store.filing_counts("default") == ({}, 1)


def test_a_delivery_on_its_way_keeps_its_snapshot_when_its_job_is_deleted(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    job = finish(sync_store, "failed", webhook_url=HOOK)
    file_all(sync_store)
    clock.advance(31 * DAY)
    assert sync_store.purge("default", cutoffs(clock)).n == 1
    [delivery] = sync_store.take_deliveries("default")
    assert delivery.object == job
    assert '"state":"failed"' in delivery.snapshot
    reply = sync_store.delivery_outcome("default", delivery.id, delivery.token, "succeed", max_attempts=5, status=200)
    assert reply.to == "delivered"
    assert not raw.exists(K.job(job))


def test_purge_works_in_bounded_batches(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    jobs = {finish(sync_store, "completed") for _ in range(23)}
    file_all(sync_store)
    clock.advance(8 * DAY)
    sizes = []
    while True:
        reply = sync_store.purge("default", cutoffs(clock), 5)
        sizes.append(reply.n)
        if reply.n < 5:
            break
    assert sizes == [5, 5, 5, 5, 3, 0][: len(sizes)]
    assert sum(sizes) == 23
    assert events_of(target.raw(), "job.deleted") == dict.fromkeys(jobs, 1)


def test_a_job_retried_after_filing_is_kept_by_its_new_finish_time(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    job = finish(sync_store, "failed")
    file_all(sync_store)
    clock.advance(29 * DAY)
    sync_store.retry(job)
    [claimed] = sync_store.claim("default", "w")
    sync_store.complete(job, claimed.token, {"ok": 1})
    file_all(sync_store)
    clock.advance(2 * DAY)  # 31 days after the failure, 2 after the completion
    assert sync_store.purge("default", cutoffs(clock)).n == 0
    assert sync_store.get_job(job).state == "completed"
    clock.advance(5 * DAY)
    assert sync_store.purge("default", cutoffs(clock)).jobs == (PurgedJob(id=job, state="completed"),)


@pytest.mark.parametrize("retention", [0.0, -1.0])
def test_nothing_unfiled_or_just_finished_is_deleted_even_with_zero_retention(
    target: Target, sync_store: SyncStore, clock: ManualClock, retention: float
) -> None:
    job = finish(sync_store, "completed")
    raw = target.raw()
    before = snapshot(raw)
    assert sync_store.purge("default", {"completed": clock() - retention}).n == 0
    assert snapshot(raw) == before
    file_all(sync_store)
    purged = sync_store.purge("default", {"completed": clock() - retention})
    assert purged.jobs == (PurgedJob(id=job, state="completed"),)
