"""The validation ops and the outbox reads, through Redis (real and embedded).

``validations_due`` takes ``validating`` jobs whose next check is due, each under a
check token; ``validation_outcome`` records one check, fenced by that token:
passed is the ``validation_passed`` transition, a failed check with checks left
reschedules (one ``job.validation_check`` event), the last failed check is
``validation_exhausted``. Every check is kept (``vck:<epoch>:<n>``), across operator
retries. Anything that does not apply writes nothing: compared as whole-database dumps.
"""

from __future__ import annotations

import json
from typing import Any

from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import K, ManualClock, Target, diff_keys, index_membership, snapshot, stream

Q = "default"
HOOK = "http://hooks.example/jobs"


def validating_job(s: SyncStore, *, type_: str = "report", notify: bool = True, **kw: Any) -> str:
    """A job driven to ``validating`` through submit, claim and complete."""
    kw.setdefault("has_validator", True)
    job = s.submit(JobSpec(type=type_, input={"n": 1}, notify=notify, webhook_url=HOOK if notify else None,
                           **kw)).id
    [claimed] = s.claim(Q, "w1")
    assert s.complete(job, claimed.token, {"rows": 3}).to == "validating"
    return job


def test_a_backlog_of_other_types_never_starves_the_checks_a_daemon_can_do(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    backlog = [validating_job(s, type_="elsewhere") for _ in range(200)]  # their daemon is down
    clock.advance(1)
    mine = validating_job(s, type_="report")  # due after all of them
    due = s.validations_due(Q, ["report"], n=16, lease=11)
    assert [t.id for t in due.items] == [mine]
    assert due.next_due == int(clock() * 1000 + 11_000) / 1000
    raw = target.raw()
    assert all(raw.zscore(K.validating, j) <= int(clock() * 1000) for j in backlog)  # left as they were


def test_only_due_checks_of_known_types_or_with_their_own_url_are_taken(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    mine = validating_job(s, type_="report")
    other = validating_job(s, type_="elsewhere")
    by_url = validating_job(s, type_="elsewhere", validator_url="http://truth.example/jobs/{job_id}")
    due = s.validations_due(Q, ["report"], n=10, lease=11)
    assert sorted(t.id for t in due.items) == sorted([mine, by_url])
    taken = {t.id: t for t in due.items}
    assert taken[by_url].validator_url == "http://truth.example/jobs/{job_id}"
    assert all(t.check == 1 and t.epoch == 0 and t.token for t in due.items)
    raw = target.raw()
    # the taken ones wait out their check lease; the one nobody here can check is still due
    now_ms = int(clock() * 1000)
    assert raw.zscore(K.validating, mine) == raw.zscore(K.validating, by_url) == now_ms + 11_000
    assert raw.zscore(K.validating, other) <= now_ms
    # what this daemon cannot check is another daemon's to do: the next look is when a check
    # it took comes due again (its lease end), not at once
    assert due.next_due == (now_ms + 11_000) / 1000
    before = snapshot(raw)
    assert s.validations_due(Q, ["report"], n=10).items == []  # held by their check leases
    assert snapshot(raw) == before
    clock.advance(12)  # the checker died: the lease ran out, the job is taken again
    again = s.validations_due(Q, ["report"], n=10)
    assert sorted(t.id for t in again.items) == sorted([mine, by_url])
    assert all(t.check == 1 for t in again.items)  # the lost check was never recorded


def test_a_failed_check_is_recorded_and_the_next_one_scheduled(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    raw = target.raw()
    job = validating_job(s)
    [task] = s.validations_due(Q, ["report"]).items
    before = snapshot(raw)
    retry_at = clock() + 2
    r = s.validation_outcome(job, task.token, ok=False, status="processing", reason="status is processing",
                             max_attempts=5, retry_at=retry_at)
    after = snapshot(raw)
    assert (r.kind, r.n, r.state) == ("checked", 1, "validating")
    assert diff_keys(before, after) == {K.job(job), K.validating, K.events}
    assert raw.zscore(K.validating, job) == int(retry_at * 1000)
    h = after[K.job(job)][1]
    assert (h["state"], h["val_checks"], h["val_token"]) == ("validating", "1", "")
    assert json.loads(h["vck:0:1"]) == {"n": 1, "epoch": 0, "at": int(clock() * 1000), "ok": False,
                                        "status": "processing", "reason": "status is processing"}
    assert "validation_status" not in h  # written only with its transition
    [event] = stream(raw)[len(before[K.events][1]):]
    assert (event["type"], event["id"], event["check"], event["status"]) == (
        "job.validation_check", job, "1", "processing")
    # not due before retry_at; due after
    assert s.validations_due(Q, ["report"]).items == []
    clock.advance(2)
    [second] = s.validations_due(Q, ["report"]).items
    assert (second.check, second.token != task.token) == (2, True)


def test_a_passed_check_completes_the_job_and_writes_its_outbox_row(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    raw = target.raw()
    job = validating_job(s)
    for n in (1, 2):
        [task] = s.validations_due(Q, ["report"]).items
        if n == 1:
            s.validation_outcome(job, task.token, ok=False, status="processing", reason="no", retry_at=clock())
        else:
            r = s.validation_outcome(job, task.token, ok=True, status="completed", retry_at=clock())
    assert (r.kind, r.from_, r.to, r.trigger) == ("moved", "validating", "completed", "validation_passed")
    view = s.get_job(job)
    assert (view.state, view.validation_status, view.reason) == ("completed", "completed", None)
    assert [(c.n, c.ok, c.status) for c in view.validation_checks] == [(1, False, "processing"), (2, True, "completed")]
    assert index_membership(raw, job) == ["finished"]
    [delivery] = s.take_deliveries(Q)
    body = json.loads(delivery.snapshot)
    assert (delivery.event, body["state"], body["validation_status"], body["result"]) == (
        "job.completed", "completed", "completed", {"rows": 3})
    assert body["finished_at_ms"] == int(clock() * 1000)
    job_events = [e["type"] for e in stream(raw) if e["id"] == job and e["type"].startswith("job.")]
    assert job_events[-2:] == ["job.validation_check", "job.completed"]


def test_the_last_failed_check_is_validation_failed_with_the_last_status_seen(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    job = validating_job(s)
    statuses = ["processing", "", ""]  # then the source of truth stopped answering
    for n, status in enumerate(statuses, start=1):
        [task] = s.validations_due(Q, ["report"]).items
        error = {"type": "ValidationFailed", "message": "gave up"} if n == 3 else None
        r = s.validation_outcome(job, task.token, ok=False, status=status, reason=f"reason {n}",
                                 max_attempts=3, retry_at=clock(), error=error)
    assert (r.kind, r.to, r.trigger) == ("moved", "validation_failed", "validation_exhausted")
    view = s.get_job(job)
    assert (view.state, view.reason, view.validation_status) == ("validation_failed", "validation_failed", "processing")
    assert view.error == {"type": "ValidationFailed", "message": "gave up"}
    assert [c.reason for c in view.validation_checks] == ["reason 1", "reason 2", "reason 3"]
    assert [d.event for d in s.take_deliveries(Q)] == ["job.validation_failed"]
    events = [e["type"] for e in stream(target.raw()) if e["id"] == job]
    assert "job.completed" not in events
    assert events.count("job.validation_failed") == 1


def test_check_outcomes_that_do_not_apply_write_nothing(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    raw = target.raw()
    job = validating_job(s)
    [first] = s.validations_due(Q, ["report"], lease=1).items
    clock.advance(2)
    [second] = s.validations_due(Q, ["report"]).items  # the first checker's lease ran out
    before = snapshot(raw)
    for ok in (True, False):  # the first checker's late verdict is fenced out
        r = s.validation_outcome(job, first.token, ok=ok, status="completed", retry_at=clock())
        assert (r.kind, r.state) == ("stale", "validating")
        assert s.release_validation(job, first.token).kind == "stale"
    assert snapshot(raw) == before
    assert s.cancel(job).to == "cancelled"
    before = snapshot(raw)
    r = s.validation_outcome(job, second.token, ok=True, status="completed", retry_at=clock())
    assert (r.kind, r.state) == ("absorbed", "cancelled")
    assert s.validations_due(Q, ["report"]).items == []
    assert snapshot(raw) == before
    missing = "default.01J00000000000000000000000"
    assert s.validation_outcome(missing, "x.1", ok=True, retry_at=clock()).kind == "not_found"


def test_a_released_check_is_due_again_at_once_and_records_nothing(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    raw = target.raw()
    job = validating_job(s)
    [task] = s.validations_due(Q, ["report"], lease=30).items
    r = s.release_validation(job, task.token)
    assert (r.kind, r.state) == ("released", "validating")
    assert raw.zscore(K.validating, job) == int(clock() * 1000)
    assert s.get_job(job).validation_checks == []
    [again] = s.validations_due(Q, ["report"]).items
    assert again.check == 1


def test_an_operator_retry_validates_again_and_keeps_the_earlier_checks(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    job = validating_job(s)
    [task] = s.validations_due(Q, ["report"]).items
    s.validation_outcome(job, task.token, ok=False, status="processing", reason="r", max_attempts=1, retry_at=clock())
    assert s.get_job(job).state == "validation_failed"
    r = s.retry(job)
    assert (r.from_, r.to) == ("validation_failed", "validating")
    [task] = s.validations_due(Q, ["report"]).items
    assert (task.check, task.epoch) == (1, 1)
    s.validation_outcome(job, task.token, ok=True, status="completed", retry_at=clock())
    view = s.get_job(job)
    assert view.state == "completed"
    assert view.attempts == 1  # the handler did not run again
    assert [(c.epoch, c.n, c.ok) for c in view.validation_checks] == [(0, 1, False), (1, 1, True)]
    deliveries = {d.event: d for d in s.take_deliveries(Q)}
    assert sorted(deliveries) == ["job.completed", "job.validation_failed"]
    assert s.job_deliveries(job, view.epoch)[0].event == "job.validation_failed"


def test_a_deleted_job_leaves_the_validating_index(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    s = sync_store
    raw = target.raw()
    job = validating_job(s)
    raw.delete(K.job(job))  # stands in for retention, which deletes job hashes
    assert s.validations_due(Q, ["report"]).items == []
    assert raw.zscore(K.validating, job) is None


def test_outbox_due_says_when_the_next_delivery_falls_due(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    s = sync_store
    job = s.submit(JobSpec(type="report", webhook_url=HOOK)).id
    s.cancel(job)
    empty = s.outbox_due(Q, n=0)
    assert (empty.items, empty.next_due) == ([], clock())
    due = s.outbox_due(Q, lease=9)
    assert [d.id for d in due.items] == [f"{job}~job.cancelled~0"]
    assert due.next_due == clock() + 9  # the send lease's end
    [d] = due.items
    s.delivery_outcome(Q, d.id, d.token, "fail", max_attempts=3, retry_at=clock() + 4, status=503, error="HTTP 503")
    assert s.outbox_due(Q).next_due == clock() + 4
    [view] = s.job_deliveries(job, 0)
    assert (view.state, view.attempts, view.last_status, view.last_error, view.url) == (
        "retry_wait", 1, 503, "HTTP 503", HOOK)
