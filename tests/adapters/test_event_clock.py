"""One clock for events: every stream entry is stamped with the store server's ``TIME``
inside the Lua step, whatever the caller's clock says.

A client whose clock is an hour ahead submits; daemons whose clock is ten minutes behind
claim, run a phase and complete it; a registry event rides along. Read in stream order, the
stamps never go back, and each lies between two ``TIME`` readings taken around the steps.
Both backends: the session's redis-server and the embedded store.
"""

from __future__ import annotations

from typing import Any

from jobvisor.adapters.keys import REGISTRY
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import Target, target  # noqa: F401  (fixtures)


def _server_ms(raw: Any) -> int:
    seconds, micros = raw.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_events_are_stamped_by_the_server_clock_in_stream_order(target: Target) -> None:  # noqa: F811
    raw = target.raw()
    ahead, behind = _server_ms(raw) / 1000 + 3600.0, _server_ms(raw) / 1000 - 600.0
    client = SyncStore(target.backend(), clock=lambda: ahead)
    daemon = SyncStore(target.backend(), clock=lambda: behind)

    before = _server_ms(raw)
    job = client.submit(JobSpec(type="t", phases=("fetch",))).id
    [claimed] = daemon.claim("default", "w1")
    daemon.phase(job, claimed.token, "fetch", "start")
    daemon.phase(job, claimed.token, "fetch", "complete", {"n": 1})
    assert daemon.complete(job, claimed.token, {"ok": True}).kind == "moved"
    daemon.heartbeat("w1", {"host": "h"}, ttl=30.0, start=True)
    after = _server_ms(raw)

    events = daemon.events("default")
    assert [e.type for e in events] == ["job.submitted", "job.claim", "phase.start", "phase.complete",
                                        "job.completed"]
    in_queue = [int(round(e.at * 1000)) for e in events]
    assert in_queue == sorted(in_queue)  # the queue's stream, read in order, never goes back in time
    stamps = in_queue + [int(round(e.at * 1000)) for e in daemon.events(REGISTRY)]
    assert len(stamps) == 6
    assert all(before <= s <= after for s in stamps), (before, stamps, after)
    assert after - before < 1000
    # the caller's clock still stamps the job's own fields (deadlines are unchanged)
    view = daemon.get_job(job)
    assert view.created_at == ahead
    assert view.finished_at == behind


def test_an_event_stamp_is_the_server_clock_in_whole_ms_however_few_its_microseconds(
        monkeypatch: Any) -> None:
    """The stamp is TIME's seconds and the first 3 of its 6 microsecond digits, zeros included:
    the embedded store's TIME reads ``time.time``, set here to moments with few microseconds."""
    import time

    from jobvisor.adapters.backend import MemoryServers, open_backend

    store = SyncStore(open_backend("memory://clock", memory=MemoryServers()), clock=lambda: 1_700_000_000.0)
    stamps = []
    for micros in (5, 12_345, 999_999, 100_000):
        monkeypatch.setattr(time, "time", lambda micros=micros: 1_700_000_000 + micros / 1_000_000)
        store.submit(JobSpec(type="t"))
        monkeypatch.undo()
        stamps.append(round(store.events("default")[-1].at * 1000))
    assert stamps == [1_700_000_000_000, 1_700_000_000_012, 1_700_000_000_999, 1_700_000_000_100]


def test_each_move_of_a_job_appends_one_event_with_exactly_its_fields(target: Target) -> None:  # noqa: F811
    """A job's events name the move (from, to), the attempt it belongs to, and only what the
    move has besides: the reason a wait or an end gives, the dependency that released a job."""
    store = SyncStore(target.backend())
    first = store.submit(JobSpec(type="t", max_retries=1, backoff=0.0)).id
    [claimed] = store.claim("default", "w1")
    store.fail(first, claimed.token, {"type": "Boom", "message": "no"})
    store.wake("default")
    [again] = store.claim("default", "w1")
    after = store.submit(JobSpec(type="t", depends_on=(first,))).id
    store.complete(first, again.token, {"ok": True})
    seen = [(e.type, e.id, e.fields) for e in store.events("default")]
    assert seen == [
        ("job.submitted", first, {"to": "queued", "job_type": "t"}),
        ("job.claim", first, {"from": "queued", "to": "active", "attempt": "1"}),
        ("job.fail", first, {"from": "active", "to": "scheduled", "attempt": "1", "reason": "handler_error"}),
        ("job.wake", first, {"from": "scheduled", "to": "queued", "attempt": "1"}),
        ("job.claim", first, {"from": "queued", "to": "active", "attempt": "2"}),
        ("job.submitted", after, {"to": "waiting", "job_type": "t"}),
        ("job.completed", first, {"from": "active", "to": "completed", "attempt": "2"}),
        ("job.deps_done", after, {"from": "waiting", "to": "queued", "attempt": "0", "cause": first}),
    ]
