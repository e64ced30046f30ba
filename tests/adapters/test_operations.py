"""The operator's steps of :mod:`adapters.operations` on both backends (real redis-server and
the embedded store): listing across queues with a stable cursor while jobs are added, bulk
retry (exactly one new epoch per failed job, counted in events; a dry run writes nothing),
queue pause (no claim, submits still queue) and resume (a wake), bulk redelivery of dead
deliveries (same ids), and the idempotency key's lifetime per submit."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest

from jobvisor.adapters.errors import BadInput, NotFound
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.listing import search_jobs
from jobvisor.adapters.operations import (
    drive,
    parse_since,
    pause_queue,
    queue_paused,
    redeliver_dead,
    resume_queue,
    retry_matching,
)
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import ManualClock, Target, snapshot, stream


def failed_jobs(store: SyncStore, clock: ManualClock, n: int, *, job_type: str = "echo", queue: str = "default",
                webhook_url: str | None = None) -> list[str]:
    """``n`` jobs of ``job_type`` that failed their one attempt."""
    ids = [store.submit(JobSpec(type=job_type, queue=queue, max_retries=0, webhook_url=webhook_url)).id
           for _ in range(n)]
    clock.advance(1)
    claimed = store.claim(queue, "w1", n=n, types=[job_type])
    assert len(claimed) == n
    for job in claimed:
        assert store.fail(job.id, job.token, {"type": "Boom", "message": "no"}).to == "failed"
    return ids


def every_page(store: SyncStore, *, limit: int, between: Any = None, **filters: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = drive(search_jobs(store.store, cursor=cursor, limit=limit, **filters))
        pages.append([j.id for j in page.jobs])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        if between is not None:
            between()


def test_paging_across_queues_lists_every_job_once_while_jobs_are_added(
        sync_store: SyncStore, clock: ManualClock) -> None:
    before: list[str] = []
    for i in range(23):
        before.append(sync_store.submit(JobSpec(type="echo" if i % 3 else "resize", queue=("a", "b", "c")[i % 3])).id)
        clock.advance(0.01)
    added: list[str] = []

    def submit_more() -> None:  # between pages: new jobs in every queue, some of higher priority
        for queue in ("a", "b", "c"):
            added.append(sync_store.submit(JobSpec(type="echo", queue=queue, priority=len(added) % 3)).id)
            clock.advance(0.01)

    pages = every_page(sync_store, limit=4, between=submit_more)
    listed = [i for page in pages for i in page]
    assert all(len(page) <= 4 for page in pages)
    assert len(listed) == len(set(listed))  # no job twice
    assert set(before) <= set(listed)  # none of those there at the start skipped
    assert set(listed) <= set(before) | set(added)


def test_filters_narrow_the_listing(sync_store: SyncStore, clock: ManualClock) -> None:
    old = failed_jobs(sync_store, clock, 3, job_type="resize")
    clock.advance(3600)
    since = clock()
    new = failed_jobs(sync_store, clock, 2, job_type="resize") + failed_jobs(sync_store, clock, 2)
    queued = sync_store.submit(JobSpec(type="resize")).id
    everything = sum(every_page(sync_store, limit=3), [])
    assert sorted(everything) == sorted([*old, *new, queued])
    assert sorted(sum(every_page(sync_store, limit=2, state="failed", job_type="resize"), [])) == sorted(
        [*old, *new[:2]])
    assert sorted(sum(every_page(sync_store, limit=2, state="failed", created_after=since), [])) == sorted(new)
    assert sum(every_page(sync_store, limit=2, queues=["other"]), []) == []


@pytest.mark.parametrize(("filters", "field"), [
    ({"state": "stuck"}, "state"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
    ({"queues": ["bad name"]}, "queue"), ({"cursor": "garbage!"}, "cursor"),
    ({"cursor": "WyJhIiwiYm9ndXMiXQ"}, "cursor"),
])
def test_bad_listing_filters_name_the_parameter(sync_store: SyncStore, filters: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInput, match=f"^{field}: "):
        drive(search_jobs(sync_store.store, **filters))


def test_bulk_retry_of_50_failed_jobs_makes_exactly_50_new_epochs(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    failed = failed_jobs(sync_store, clock, 50)
    completed = sync_store.submit(JobSpec(type="echo")).id
    [job] = sync_store.claim("default", "w1")
    sync_store.complete(completed, job.token, {"ok": True})
    raw = target.raw()
    before = snapshot(raw)
    dry = drive(retry_matching(sync_store.store, state="failed", dry_run=True))
    assert (dry.matched, dry.done, sorted(dry.ids)) == (50, 0, sorted(failed))
    assert snapshot(raw) == before  # the dry run wrote nothing
    result = drive(retry_matching(sync_store.store, state="failed"))
    assert (result.matched, result.done, result.skipped) == (50, 50, {})
    retried = Counter(e["id"] for e in stream(raw) if e["type"] == "job.retry")
    assert retried == Counter({i: 1 for i in failed})  # one retry event per failed job, none for the completed
    assert {sync_store.get_job(i).epoch for i in failed} == {1}
    assert {sync_store.get_job(i).state for i in failed} == {"queued"}
    assert sync_store.get_job(completed).epoch == 0
    again = drive(retry_matching(sync_store.store, state="failed"))
    assert (again.matched, again.done) == (0, 0)


def test_a_job_that_moved_after_it_was_listed_is_absorbed_not_retried(sync_store: SyncStore,
                                                                      clock: ManualClock) -> None:
    [job_id] = failed_jobs(sync_store, clock, 1)
    assert sync_store.retry(job_id).moved
    [job] = sync_store.claim("default", "w2")
    sync_store.complete(job_id, job.token, {"ok": True})
    # `completed` absorbs the operator's retry: the guarded trigger writes nothing
    assert sync_store.retry(job_id).kind == "absorbed"
    with pytest.raises(BadInput, match="^state: 'completed' cannot be retried"):
        drive(retry_matching(sync_store.store, state="completed"))


def test_pause_stops_claims_but_not_submits_and_resume_wakes(target: Target, sync_store: SyncStore) -> None:
    first = sync_store.submit(JobSpec(type="echo")).id
    assert drive(pause_queue(sync_store.store, "default")).to == "paused"
    raw = target.raw()
    before = snapshot(raw)
    assert drive(pause_queue(sync_store.store, "default")).kind == "absorbed"
    assert sync_store.claim("default", "w1", n=10) == []
    assert sync_store.claim("default", "w1", n=10, types=["echo"]) == []
    assert snapshot(raw) == before  # an absorbed pause and refused claims write nothing
    second = sync_store.submit(JobSpec(type="echo")).id
    assert {sync_store.get_job(i).state for i in (first, second)} == {"queued"}
    assert drive(queue_paused(sync_store.store, "default")).paused is True
    assert drive(pause_queue(sync_store.store, "default")).kind == "absorbed"
    pubsub = raw.pubsub()
    pubsub.subscribe(Keys("default").wake_channel)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    assert drive(resume_queue(sync_store.store, "default")).to == "running"
    message = pubsub.get_message(timeout=1)
    assert message is not None
    assert message["type"] == "message"  # idle workers are woken
    pubsub.close()
    assert drive(resume_queue(sync_store.store, "default")).kind == "absorbed"
    assert sorted(j.id for j in sync_store.claim("default", "w1", n=10)) == sorted([first, second])
    assert [e["type"] for e in stream(raw) if e["type"].startswith("queue.")] == ["queue.paused", "queue.resumed"]


def test_pause_refuses_a_bad_or_unknown_queue(sync_store: SyncStore) -> None:
    with pytest.raises(BadInput, match="^queue: "):
        drive(pause_queue(sync_store.store, "no such queue"))
    with pytest.raises(NotFound, match="queue 'never' not found"):
        drive(pause_queue(sync_store.store, "never"))


def test_redeliver_dead_re_sends_each_dead_delivery_of_the_filter_once(
        sync_store: SyncStore, clock: ManualClock) -> None:
    dead_ids = []
    jobs = failed_jobs(sync_store, clock, 3, webhook_url="https://hooks.example/in")
    alive = failed_jobs(sync_store, clock, 1, job_type="resize", webhook_url="https://hooks.example/in")
    for d in sync_store.take_deliveries("default", n=10, max_attempts=1):
        if d.object in jobs[:2]:
            reply = sync_store.delivery_outcome("default", d.id, d.token, "reject", max_attempts=1, status=410)
            assert reply.to == "dead"
            dead_ids.append(d.id)
        else:
            sync_store.delivery_outcome("default", d.id, d.token, "release", max_attempts=1)
    dry = drive(redeliver_dead(sync_store.store, job_type="echo", dry_run=True))
    assert (dry.matched, dry.done, sorted(dry.ids)) == (2, 0, sorted(dead_ids))
    assert drive(redeliver_dead(sync_store.store, job_type="resize")).matched == 0
    assert alive
    result = drive(redeliver_dead(sync_store.store, queues=["default"]))
    assert (result.matched, result.done) == (2, 2)
    again = sync_store.take_deliveries("default", n=10, max_attempts=5)
    assert sorted(d.id for d in again if d.object in jobs[:2]) == sorted(dead_ids)  # the same webhook-ids
    assert drive(redeliver_dead(sync_store.store)).matched == 0
    one = drive(redeliver_dead(sync_store.store, job_id=jobs[2]))
    assert (one.matched, one.done) == (0, 0)


def test_the_idempotency_key_lives_as_long_as_the_submit_asks(target: Target, sync_store: SyncStore) -> None:
    raw = target.raw()
    keys = Keys("default")
    sync_store.submit(JobSpec(type="echo", idempotency_key="short", idempotency_ttl=5))
    sync_store.submit(JobSpec(type="echo", idempotency_key="default"))
    assert 4000 < raw.pttl(keys.idem("short")) <= 5000
    assert 86_399_000 < raw.pttl(keys.idem("default")) <= 86_400_000


@pytest.mark.parametrize(("options", "message"), [
    ({"idempotency_ttl": 10}, "idempotency_ttl: needs an idempotency_key"),
    ({"idempotency_key": "k", "idempotency_ttl": 0.5}, r"`float` >= 1.0 - at `\$.idempotency_ttl`"),
    ({"idempotency_key": "k", "idempotency_ttl": 31 * 86400}, r"<= 2592000.0 - at `\$.idempotency_ttl`"),
])
def test_a_bad_idempotency_lifetime_is_refused(options: dict[str, Any], message: str) -> None:
    from jobvisor.adapters.records import decode_spec

    with pytest.raises(BadInput, match=message):
        decode_spec(JobSpec, {"type": "echo", **options})


def test_since_reads_durations_times_and_epoch_seconds() -> None:
    now = 1_750_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("2h", now) == now - 7200
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("1.5m", now) == now - 90
    assert parse_since("2025-01-01T00:00:00Z") == 1735689600.0
    assert parse_since("2025-01-01T01:00:00+01:00") == 1735689600.0
    assert parse_since("2025-01-01") == 1735689600.0
    assert parse_since("1735689600") == 1735689600.0
    assert parse_since(datetime(2025, 1, 1, tzinfo=timezone.utc)) == 1735689600.0
    assert parse_since(None) is None
    for bad in ("yesterday", "-5", "nan", "1e12", "5 minutes"):
        with pytest.raises(BadInput, match="^since: "):
            parse_since(bad)
