"""The store's unfenced ``trigger`` op refuses every job trigger that needs a lease.

Operators and validators move jobs with ``trigger`` (no lease token): cancel, retry,
retry_from_start and the validation results. Every other trigger of the job machine belongs to
the worker holding the lease (or the watchdog, or the scheduler), and its unfenced form is
refused with nothing written, from a state where the table would move the job: without the
check, a client could complete a job another daemon is running.
"""

from __future__ import annotations

import pytest

from jobvisor.adapters.errors import Rejected
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.machines import JOB, JobState
from tests.store_fixtures import ManualClock, Target, snapshot

UNFENCED = frozenset({"cancel", "retry", "retry_from_start", "validation_passed", "validation_exhausted"})
FENCED = sorted(t.value for t in JOB.triggers if t.value not in UNFENCED)


def _job_in(store: SyncStore, state: JobState) -> str:
    """A job in ``state`` (queued, scheduled: due in 10 s, active, or waiting on a scheduled job)."""
    if state is JobState.WAITING:
        dependency = _job_in(store, JobState.SCHEDULED)
        return store.submit(JobSpec(type="t", depends_on=(dependency,))).id
    job = store.submit(JobSpec(type="t", delay=10.0 if state is JobState.SCHEDULED else 0.0)).id
    if state is JobState.ACTIVE:
        [claimed] = store.claim("default", "w1")
        assert claimed.id == job
    return job


def test_the_fenced_triggers_are_the_workers_watchdogs_and_schedulers() -> None:
    assert FENCED == ["claim", "complete", "dependency_failed", "deps_done", "fail", "lease_expired", "release",
                      "timeout", "wake"]


@pytest.mark.parametrize("trigger", FENCED)
def test_an_unfenced_trigger_that_needs_a_lease_is_refused_and_writes_nothing(
    target: Target, sync_store: SyncStore, clock: ManualClock, trigger: str
) -> None:
    state = next(s for s in (JobState.ACTIVE, JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING)
                 if s in JOB.sources_of(trigger))
    job = _job_in(sync_store, state)
    before = snapshot(target.raw())
    with pytest.raises(Rejected, match=f"trigger {trigger} needs a lease"):
        sync_store.trigger(job, trigger)
    assert snapshot(target.raw()) == before
    assert sync_store.get_job(job).state == state.value
