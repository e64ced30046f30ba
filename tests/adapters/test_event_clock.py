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
