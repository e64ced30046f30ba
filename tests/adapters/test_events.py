"""The event reader the CLI's ``events`` goes through: a job's history and the stream
position it was read to, then following from there (new events of known queues, and queues
that appear later from their first event); an unknown or deleted id is NotFound naming it."""

from __future__ import annotations

import pytest

from jobvisor.adapters.errors import BadInput, NotFound
from jobvisor.adapters.events import START, EventFeed
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.store import SyncStore


def test_history_is_the_last_events_of_one_job_and_where_they_were_read_to(sync_store: SyncStore) -> None:
    a = sync_store.submit(JobSpec(type="echo")).id
    b = sync_store.submit(JobSpec(type="echo")).id
    sync_store.cancel(a)
    sync_store.retry(a)
    feed = EventFeed(sync_store)
    events, position = feed.history("default", a, 2)
    assert [(e.id, e.type) for e in events] == [(a, "job.cancelled"), (a, "job.retry")]
    everything, latest = feed.history("default", None, 1000)
    assert [e.id for e in everything] == [a, b, a, a]
    assert position == latest == everything[-1].stream_id
    assert feed.history("empty", None, 10) == ([], START)


def test_follow_yields_what_comes_after_the_history_then_new_queues_from_their_start(
        sync_store: SyncStore) -> None:
    first = sync_store.submit(JobSpec(type="echo")).id
    feed = EventFeed(sync_store)
    _, position = feed.history("default", None, 10)
    following = feed.follow({"default": position}, discover=True, block=0.05)
    second = sync_store.submit(JobSpec(type="echo")).id
    other = sync_store.submit(JobSpec(type="echo", queue="other")).id
    got = [next(following) for _ in range(2)]
    assert sorted((e.queue, e.id, e.type) for e in got) == [
        ("default", second, "job.submitted"), ("other", other, "job.submitted")]
    assert first not in {e.id for e in got}  # the history is not repeated
    sync_store.cancel(second)
    e = next(following)
    assert (e.queue, e.id, e.type) == ("default", second, "job.cancelled")
    following.close()


def test_the_subject_is_a_job_or_a_batch_else_not_found_naming_it(sync_store: SyncStore) -> None:
    feed = EventFeed(sync_store)
    job = sync_store.submit(JobSpec(type="echo")).id
    batch = sync_store.create_batch(BatchSpec(queue="other")).id
    assert (feed.subject(job), feed.subject(batch)) == ("default", "other")
    unknown = "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"
    with pytest.raises(NotFound, match=rf"^job {unknown} not found \(no job or batch has this id\)$"):
        feed.subject(unknown)
    with pytest.raises(BadInput, match="^job: 'nodot' is not a jobvisor id"):
        feed.subject("nodot")
