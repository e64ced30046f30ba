"""The store's guarded transitions, pair by pair, through Redis (real and embedded).

Theory of operation
-------------------
The tables below are written by hand from SPEC.md; nothing is read from
``machines/``. Each row puts a real object into a state by driving it there
through store ops (submit, claim, report, trigger, wake...; never by writing
a state by hand), takes a type-aware dump of the whole database, fires the
trigger through the op that carries it, dumps again, and compares.

What a trigger looks like through the store depends on the op that carries it:

* ``claim`` and ``wake`` pick from an index (queued, due): a job that is not
  in it is ``unseen`` by the op; nothing is written.
* ``complete``, ``fail``, ``timeout``, ``release`` are worker reports, fenced
  by the lease token. On a terminal job they are ``absorbed`` (nothing
  written); on a non-terminal job without that lease (queued, scheduled,
  validating: the lease was dropped when the attempt ended) they are
  ``stale``: exactly one ``job.stale_report`` event and nothing else.
* ``lease_expired`` is the watchdog's ``expire`` with the token it saw run
  out: ``absorbed`` on a terminal job (the table's outcome); any other job
  not holding that token is ``skipped`` (the watchdog lost the race), nothing
  written.
* ``cancel``, ``retry``, ``retry_from_start``, ``validation_passed`` and
  ``validation_exhausted`` are unfenced triggers: ``moved``, ``absorbed``
  (terminal) or ``invalid`` (no row from a live state), nothing written
  unless moved.
* ``deps_done`` and ``dependency_failed`` are fired only by a dependency's
  finish, in its own step: the unfenced ``trigger`` op refuses them
  (``rejected``, nothing written) in every state, and ``DEPENDENCY_TABLE``
  below drives them the way they happen, pair by pair.

A moved row writes exactly: the job hash, the job's index (it sits in exactly
one of queued/due/active/validating/finished), one event on the stream (the
notification type for a notifying destination, else ``job.<trigger>``) and,
iff the destination notifies and the job was submitted with ``notify``, one
outbox row keyed ``<job>~<event type>~<epoch>``, and for a terminal destination the
``unfiled`` entry the evaluator files it from. No other key changes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from jobvisor.adapters.errors import BadInput, NotFound, Rejected
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.replies import Reply
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import (
    K,
    ManualClock,
    Target,
    delivery_ids,
    diff_keys,
    index_membership,
    job_ids,
    snapshot,
    stream,
)

# Every store-target test here runs on a 3-master Redis Cluster too (tests/redis_cluster.py).
pytestmark = pytest.mark.cluster

Q = "default"
HOOK = "http://hooks.example/jobs"
INDEX_OF = {"waiting": "waiting", "queued": "queued", "scheduled": "due", "active": "active",
            "validating": "validating", "completed": "finished", "failed": "finished", "cancelled": "finished",
            "timed_out": "finished", "validation_failed": "finished"}
NOTIFY = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled",
          "timed_out": "job.timed_out", "validation_failed": "job.validation_failed"}
INDEX_KEYS = {K.queued_of("report"), K.queued_types, K.queued_all, K.due, K.active, K.validating, K.finished,
              K.waiting}

# ---------------------------------------------------------------------------------------------
# The job table, by hand. 10 states x 14 triggers (SPEC.md's eleven, `release`, the
# shutdown decision, and the two that end `waiting`), guarded pairs once per guard outcome.
# A `waiting` job waits on one dependency that is scheduled far ahead (never due here).
#   variant   "-"                 the default active job: max_retries=1 (retries left), no validator
#             retries_left        retry_count 0 < max_retries 1
#             no_retries_left     retry_count 1 == max_retries 1 (one failed attempt behind it)
#             validator / no_validator   the job type has a validator or not
#   expected  "-> X"  moved to X; or absorbed | invalid | stale | skipped | unseen (see docstring)
# ---------------------------------------------------------------------------------------------

JOB_TABLE = """
waiting            claim                 -                unseen
waiting            wake                  -                unseen
waiting            complete              -                stale
waiting            fail                  -                stale
waiting            timeout               -                stale
waiting            lease_expired         -                skipped
waiting            release               -                stale
waiting            cancel                -                -> cancelled
waiting            validation_passed     -                invalid
waiting            validation_exhausted  -                invalid
waiting            retry                 -                invalid
waiting            retry_from_start      -                invalid
waiting            deps_done             -                rejected
waiting            dependency_failed     -                rejected
queued             claim                 -                -> active
queued             wake                  -                unseen
queued             complete              -                stale
queued             fail                  -                stale
queued             timeout               -                stale
queued             lease_expired         -                skipped
queued             release               -                stale
queued             cancel                -                -> cancelled
queued             validation_passed     -                invalid
queued             validation_exhausted  -                invalid
queued             retry                 -                invalid
queued             retry_from_start      -                invalid
queued             deps_done             -                rejected
queued             dependency_failed     -                rejected

scheduled          claim                 -                unseen
scheduled          wake                  -                -> queued
scheduled          complete              -                stale
scheduled          fail                  -                stale
scheduled          timeout               -                stale
scheduled          lease_expired         -                skipped
scheduled          release               -                stale
scheduled          cancel                -                -> cancelled
scheduled          validation_passed     -                invalid
scheduled          validation_exhausted  -                invalid
scheduled          retry                 -                invalid
scheduled          retry_from_start      -                invalid
scheduled          deps_done             -                rejected
scheduled          dependency_failed     -                rejected

active             claim                 -                unseen
active             wake                  -                unseen
active             complete              validator        -> validating
active             complete              no_validator     -> completed
active             fail                  retries_left     -> scheduled
active             fail                  no_retries_left  -> failed
active             timeout               retries_left     -> scheduled
active             timeout               no_retries_left  -> timed_out
active             lease_expired         retries_left     -> scheduled
active             lease_expired         no_retries_left  -> failed
active             release               -                -> queued
active             cancel                -                -> cancelled
active             validation_passed     -                invalid
active             validation_exhausted  -                invalid
active             retry                 -                invalid
active             retry_from_start      -                invalid
active             deps_done             -                rejected
active             dependency_failed     -                rejected

validating         claim                 -                unseen
validating         wake                  -                unseen
validating         complete              -                stale
validating         fail                  -                stale
validating         timeout               -                stale
validating         lease_expired         -                skipped
validating         release               -                stale
validating         cancel                -                -> cancelled
validating         validation_passed     -                -> completed
validating         validation_exhausted  -                -> validation_failed
validating         retry                 -                invalid
validating         retry_from_start      -                invalid
validating         deps_done             -                rejected
validating         dependency_failed     -                rejected

completed          claim                 -                unseen
completed          wake                  -                unseen
completed          complete              -                absorbed
completed          fail                  -                absorbed
completed          timeout               -                absorbed
completed          lease_expired         -                absorbed
completed          release               -                absorbed
completed          cancel                -                absorbed
completed          validation_passed     -                absorbed
completed          validation_exhausted  -                absorbed
completed          retry                 -                absorbed
completed          retry_from_start      -                absorbed
completed          deps_done             -                rejected
completed          dependency_failed     -                rejected

failed             claim                 -                unseen
failed             wake                  -                unseen
failed             complete              -                absorbed
failed             fail                  -                absorbed
failed             timeout               -                absorbed
failed             lease_expired         -                absorbed
failed             release               -                absorbed
failed             cancel                -                absorbed
failed             validation_passed     -                absorbed
failed             validation_exhausted  -                absorbed
failed             retry                 -                -> queued
failed             retry_from_start      -                -> queued
failed             deps_done             -                rejected
failed             dependency_failed     -                rejected

cancelled          claim                 -                unseen
cancelled          wake                  -                unseen
cancelled          complete              -                absorbed
cancelled          fail                  -                absorbed
cancelled          timeout               -                absorbed
cancelled          lease_expired         -                absorbed
cancelled          release               -                absorbed
cancelled          cancel                -                absorbed
cancelled          validation_passed     -                absorbed
cancelled          validation_exhausted  -                absorbed
cancelled          retry                 -                -> queued
cancelled          retry_from_start      -                -> queued
cancelled          deps_done             -                rejected
cancelled          dependency_failed     -                rejected

timed_out          claim                 -                unseen
timed_out          wake                  -                unseen
timed_out          complete              -                absorbed
timed_out          fail                  -                absorbed
timed_out          timeout               -                absorbed
timed_out          lease_expired         -                absorbed
timed_out          release               -                absorbed
timed_out          cancel                -                absorbed
timed_out          validation_passed     -                absorbed
timed_out          validation_exhausted  -                absorbed
timed_out          retry                 -                -> queued
timed_out          retry_from_start      -                -> queued
timed_out          deps_done             -                rejected
timed_out          dependency_failed     -                rejected

validation_failed  claim                 -                unseen
validation_failed  wake                  -                unseen
validation_failed  complete              -                absorbed
validation_failed  fail                  -                absorbed
validation_failed  timeout               -                absorbed
validation_failed  lease_expired         -                absorbed
validation_failed  release               -                absorbed
validation_failed  cancel                -                absorbed
validation_failed  validation_passed     -                absorbed
validation_failed  validation_exhausted  -                absorbed
validation_failed  retry                 -                -> validating
validation_failed  retry_from_start      -                -> queued
validation_failed  deps_done             -                rejected
validation_failed  dependency_failed     -                rejected
"""

# Fields of the job hash after a moved row, by hand (besides state, checked for every row).
JOB_FIELDS_AFTER: dict[tuple[str, str, str], dict[str, str]] = {
    ("waiting", "cancel", "-"): {"reason": "cancelled", "deps_left": "1"},
    ("queued", "claim", "-"): {"attempts": "1", "lease_worker": "w2"},
    ("scheduled", "wake", "-"): {"retry_count": "1", "attempts": "1"},
    ("queued", "cancel", "-"): {"reason": "cancelled"},
    ("scheduled", "cancel", "-"): {"reason": "cancelled"},
    ("active", "complete", "validator"): {"val_checks": "0", "lease_token": "", "result": '{"ok":true}'},
    ("active", "complete", "no_validator"): {"reason": "", "lease_token": "", "result": '{"ok":true}'},
    ("active", "fail", "retries_left"): {"retry_count": "1", "reason": "handler_error", "lease_token": ""},
    ("active", "fail", "no_retries_left"): {"retry_count": "1", "reason": "handler_error", "lease_token": ""},
    ("active", "timeout", "retries_left"): {"retry_count": "1", "reason": "timed_out"},
    ("active", "timeout", "no_retries_left"): {"retry_count": "1", "reason": "timed_out"},
    ("active", "lease_expired", "retries_left"): {"retry_count": "1", "reason": "worker_lost"},
    ("active", "lease_expired", "no_retries_left"): {"retry_count": "1", "reason": "worker_lost"},
    ("active", "release", "-"): {"retry_count": "0", "lease_token": "", "attempts": "1"},
    ("active", "cancel", "-"): {"reason": "cancelled", "lease_token": ""},
    ("validating", "cancel", "-"): {"reason": "cancelled"},
    ("validating", "validation_passed", "-"): {"reason": ""},
    ("validating", "validation_exhausted", "-"): {"reason": "validation_failed"},
    ("failed", "retry", "-"): {"retry_count": "0", "epoch": "1", "finished_at": "", "reason": ""},
    ("failed", "retry_from_start", "-"): {"retry_count": "0", "epoch": "1"},
    ("cancelled", "retry", "-"): {"retry_count": "0", "epoch": "1"},
    ("cancelled", "retry_from_start", "-"): {"retry_count": "0", "epoch": "1"},
    ("timed_out", "retry", "-"): {"retry_count": "0", "epoch": "1"},
    ("timed_out", "retry_from_start", "-"): {"retry_count": "0", "epoch": "1"},
    ("validation_failed", "retry", "-"): {"epoch": "1", "val_checks": "0"},
    ("validation_failed", "retry_from_start", "-"): {"retry_count": "0", "epoch": "1"},
}


@dataclass(frozen=True)
class TRow:
    state: str
    trigger: str
    variant: str
    expected: str

    @property
    def dest(self) -> str | None:
        return self.expected[3:] if self.expected.startswith("-> ") else None

    def __str__(self) -> str:
        v = "" if self.variant == "-" else f"[{self.variant}]"
        return f"{self.state}{v}-{self.trigger}"


def _parse(table: str) -> list[TRow]:
    rows = []
    for line in table.strip().splitlines():
        if not line.strip():
            continue
        state, trigger, variant, *rest = line.split()
        rows.append(TRow(state, trigger, variant, " ".join(rest)))
    return rows


JOB_ROWS = _parse(JOB_TABLE)


def test_the_job_table_names_every_pair_once() -> None:
    states = ["waiting", "queued", "scheduled", "active", "validating", "completed", "failed", "cancelled",
              "timed_out", "validation_failed"]
    triggers = ["claim", "wake", "complete", "fail", "timeout", "lease_expired", "release", "cancel",
                "validation_passed", "validation_exhausted", "retry", "retry_from_start", "deps_done",
                "dependency_failed"]
    pairs = {(r.state, r.trigger) for r in JOB_ROWS}
    assert pairs == {(s, t) for s in states for t in triggers}
    assert len(JOB_ROWS) == 10 * 14 + 4  # four guarded pairs have two rows


# ---------------------------------------------------------------------------------------------
# Driving a job into a state through store ops
# ---------------------------------------------------------------------------------------------


def job_spec(notify: bool = False, **kw: Any) -> JobSpec:
    kw.setdefault("max_retries", 1)
    return JobSpec(type="report", input={"n": 1}, notify=notify,
                   webhook_url=HOOK if notify else None, **kw)


class Driver:
    """Store ops with the checks that they did what the setup needs."""

    def __init__(self, store: SyncStore, clock: ManualClock) -> None:
        self.s = store
        self.clock = clock

    def submit(self, spec: JobSpec) -> str:
        r = self.s.submit(spec)
        assert r.kind == "created", r
        return r.id

    def claim(self, job_id: str, worker: str = "w1", lease: float = 30.0) -> str:
        claimed = self.s.claim(Q, worker, lease=lease)
        assert [c.id for c in claimed] == [job_id]
        return claimed[0].token

    def report(self, job_id: str, token: str, trigger: str, to: str, **kw: Any) -> Reply:
        r = self.s.report(job_id, token, trigger, **kw)
        assert (r.kind, r.to) == ("moved", to), r
        return r

    def trigger(self, job_id: str, trigger: str, to: str) -> Reply:
        r = self.s.trigger(job_id, trigger)
        assert (r.kind, r.to) == ("moved", to), r
        return r

    def wake(self, n: int = 1) -> None:
        self.clock.advance(600)
        assert self.s.wake(Q).n == n

    def state(self, job_id: str) -> str:
        return self.s.get_job(job_id).state


def reach(d: Driver, state: str, variant: str, notify: bool,
          new: Callable[[JobSpec], str] | None = None) -> tuple[str, str | None]:
    """A job in ``state`` (guard ``variant``), and the last lease token it was claimed with.
    ``new`` makes the queued job every path starts from (by default: a plain submit)."""
    make = new or d.submit
    token: str | None = None
    if state == "waiting":
        dep = d.submit(JobSpec(type="dep", delay=FAR))
        job = d.submit(job_spec(notify, depends_on=(dep,)))
    elif state == "queued":
        job = make(job_spec(notify))
    elif state == "scheduled":
        job = make(job_spec(notify))
        token = d.claim(job)
        d.report(job, token, "fail", "scheduled", error="first")
    elif state == "active" and variant == "no_retries_left":
        job = make(job_spec(notify))
        old = d.claim(job)
        d.report(job, old, "fail", "scheduled", error="first")
        d.wake()
        token = d.claim(job)
    elif state == "active":
        job = make(job_spec(notify, has_validator=variant == "validator"))
        token = d.claim(job)
    elif state == "validating":
        job = make(job_spec(notify, has_validator=True))
        token = d.claim(job)
        d.report(job, token, "complete", "validating", result={"v": 1})
    elif state == "completed":
        job = make(job_spec(notify))
        token = d.claim(job)
        d.report(job, token, "complete", "completed", result={"v": 1})
    elif state == "failed":
        job = make(job_spec(notify, max_retries=0))
        token = d.claim(job)
        d.report(job, token, "fail", "failed", error="boom")
    elif state == "cancelled":
        job = make(job_spec(notify))
        token = d.claim(job)
        d.trigger(job, "cancel", "cancelled")
    elif state == "timed_out":
        job = make(job_spec(notify, max_retries=0))
        token = d.claim(job)
        d.report(job, token, "timeout", "timed_out")
    elif state == "validation_failed":
        job = make(job_spec(notify, has_validator=True))
        token = d.claim(job)
        d.report(job, token, "complete", "validating", result={"v": 1})
        d.trigger(job, "validation_exhausted", "validation_failed")
    else:  # pragma: no cover
        raise AssertionError(state)
    assert d.state(job) == state
    return job, token


FAR = 10**6  # seconds: a dependency this far ahead is never due in a test


def fire(d: Driver, job: str, token: str | None, trigger: str) -> Any:
    s = d.s
    if trigger in ("deps_done", "dependency_failed"):
        with pytest.raises(Rejected, match=f"^trigger {trigger} needs a lease$"):
            s.trigger(job, trigger)
        return "rejected"
    presented = token or "never.1"
    if trigger == "claim":
        return s.claim(Q, "w2", lease=30.0)
    if trigger == "wake":
        return s.wake(Q)
    if trigger == "complete":
        return s.report(job, presented, "complete", result={"ok": True})
    if trigger == "fail":
        return s.report(job, presented, "fail", error={"message": "boom"})
    if trigger in ("timeout", "release"):
        return s.report(job, presented, trigger)
    if trigger == "lease_expired":
        return s.expire(job, presented)
    return s.trigger(job, trigger)


def indexes(raw: Any, job: str) -> list[str]:
    """The job indexes holding ``job``, ``waiting`` included."""
    return sorted([*index_membership(raw, job), *(["waiting"] if raw.zscore(K.waiting, job) is not None else [])])


def assert_one_index(raw: Any, job: str, state: str) -> None:
    assert indexes(raw, job) == [INDEX_OF[state]]


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "silent"])
@pytest.mark.parametrize("row", JOB_ROWS, ids=str)
def test_job_pair(target: Target, sync_store: SyncStore, clock: ManualClock, row: TRow, notify: bool) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job, token = reach(d, row.state, row.variant, notify)
    assert_one_index(raw, job, row.state)
    clock.advance(1000)  # every lease, backoff and due time has run out
    if row.trigger == "lease_expired" and row.state == "active":
        seen = sync_store.expired(Q)  # the watchdog observes the token that ran out
        assert [(e.id, e.token) for e in seen] == [(job, token)]
    before = snapshot(raw)
    reply = fire(d, job, token, row.trigger)
    after = snapshot(raw)
    jkey = K.job(job)

    if row.dest is None:
        match row.expected, row.trigger:
            case "unseen", "claim":
                assert reply == []
            case "unseen", "wake":
                assert (reply.kind, reply.n) == ("woken", 0)
            case "rejected", _:
                assert reply == "rejected"
            case "stale" | "absorbed" | "invalid" | "skipped", _:
                assert (reply.kind, reply.state) == (row.expected, row.state)
            case _:  # pragma: no cover
                raise AssertionError(row)
        if row.expected == "stale":
            assert diff_keys(before, after) == {K.events}
            new = after[K.events][1][len(before[K.events][1]):]
            assert len(new) == 1
            fields = new[0][1]
            assert (fields["type"], fields["id"], fields["op"], fields["state"]) == (
                "job.stale_report", job, row.trigger, row.state)
            assert fields["token"] == (token or "never.1")
            assert after[K.events][1][: len(before[K.events][1])] == before[K.events][1]
        else:
            assert after == before, f"{row}: {row.expected} wrote {diff_keys(before, after)}"
        assert sync_store.get_job(job).state == row.state
        assert_one_index(raw, job, row.state)
        return

    # moved
    dest = row.dest
    if row.trigger == "claim":
        assert [c.id for c in reply] == [job]
        assert reply[0].attempt == 1
        assert reply[0].token
        assert reply[0].token != token
    elif row.trigger == "wake":
        assert (reply.kind, reply.n) == ("woken", 1)
    else:
        assert (reply.kind, reply.from_, reply.to, reply.id) == ("moved", row.state, dest, job)
    h = after[jkey][1]
    assert h["state"] == dest
    for field, value in JOB_FIELDS_AFTER.get((row.state, row.trigger, row.variant), {}).items():
        assert h.get(field, "") == value, (field, h.get(field))
    assert_one_index(raw, job, dest)
    if dest == "active":
        assert raw.zscore(K.active, job) == int(h["lease_deadline"]) == int(clock() * 1000) + 30_000
        assert h["lease_token"] == reply[0].token
    if dest in NOTIFY:
        assert h["finished_at"] == str(int(clock() * 1000))
        assert raw.zscore(K.finished, job) == int(clock() * 1000)
        assert raw.zscore(K.unfiled, job) == int(clock() * 1000)  # for the evaluator to file
    else:
        assert h.get("finished_at", "") == ""
    # exactly one event, the right one
    old, new = before[K.events][1], after[K.events][1]
    assert new[: len(old)] == old
    assert len(new) == len(old) + 1
    fields = new[-1][1]
    kind = NOTIFY.get(dest, f"job.{row.trigger}")
    assert (fields["type"], fields["id"], fields["from"], fields["to"]) == (kind, job, row.state, dest)
    # the outbox row iff the destination notifies and the job asked for notifications
    epoch = h["epoch"]
    did = f"{job}~{kind}~{epoch}"
    new_rows = delivery_ids_of(after) - delivery_ids_of(before)
    if dest in NOTIFY and notify:
        assert new_rows == {did}
        row_hash = after[K.delivery(did)][1]
        assert (row_hash["state"], row_hash["event"], row_hash["object"], row_hash["epoch"],
                row_hash["url"], row_hash["attempts"]) == ("pending", kind, job, epoch, HOOK, "0")
        body = json.loads(row_hash["snapshot"])
        assert (body["id"], body["state"]) == (job, dest)
        assert body["finished_at_ms"] == int(clock() * 1000)
        if dest == "completed":
            assert body["result"] == ({"ok": True} if row.trigger == "complete" else {"v": 1})
        assert dict(after[K.outbox][1])[did] == int(clock() * 1000)
        outbox_added = {did}
    else:
        assert new_rows == set()
        outbox_added = set()
    added = {m for m, _ in after.get(K.outbox, ("", []))[1]} - {m for m, _ in before.get(K.outbox, ("", []))[1]}
    assert added == outbox_added
    allowed = {jkey, K.events} | INDEX_KEYS | ({K.outbox, K.delivery(did)} if outbox_added else set())
    allowed |= {K.unfiled} if dest in NOTIFY else set()
    assert diff_keys(before, after) <= allowed, diff_keys(before, after) - allowed


def delivery_ids_of(snap: dict[str, Any]) -> set[str]:
    prefix = K.delivery("")
    return {k[len(prefix):] for k in snap if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# deps_done and dependency_failed, fired the one way they happen: a dependency finishes. The job
# waits on one dependency (scheduled far ahead), with the policy that makes a cancelled
# dependency fire the row's trigger (continue: deps_done; fail: dependency_failed). Its other
# states are reached by cancel and retry, then the paths above: it is still in the dependency's
# `dependents` there, and must be left untouched when the dependency is cancelled.
#   expected   "-> X"  the job moved to X, in the dependency's step; untouched: not one write
# ---------------------------------------------------------------------------------------------

DEPENDENCY_TABLE = """
waiting            deps_done          continue  -> queued
waiting            dependency_failed  fail      -> failed
queued             deps_done          continue  untouched
queued             dependency_failed  fail      untouched
scheduled          deps_done          continue  untouched
scheduled          dependency_failed  fail      untouched
active             deps_done          continue  untouched
active             dependency_failed  fail      untouched
validating         deps_done          continue  untouched
validating         dependency_failed  fail      untouched
completed          deps_done          continue  untouched
completed          dependency_failed  fail      untouched
failed             deps_done          continue  untouched
failed             dependency_failed  fail      untouched
cancelled          deps_done          continue  untouched
cancelled          dependency_failed  fail      untouched
timed_out          deps_done          continue  untouched
timed_out          dependency_failed  fail      untouched
validation_failed  deps_done          continue  untouched
validation_failed  dependency_failed  fail      untouched
"""
DEPENDENCY_ROWS = _parse(DEPENDENCY_TABLE)
DEPENDENCY_FIELDS_AFTER = {
    "queued": {"deps_left": "0", "reason": "", "finished_at": ""},
    "failed": {"deps_left": "0", "reason": "dependency_failed"},
}


def test_the_dependency_table_names_every_state_once_per_trigger() -> None:
    pairs = [(r.state, r.trigger) for r in DEPENDENCY_ROWS]
    assert sorted(pairs) == sorted((s, t) for s in INDEX_OF for t in ("deps_done", "dependency_failed"))


def reach_dependent(d: Driver, state: str, notify: bool, policy: str) -> tuple[str, str]:
    """A job in ``state`` that is a dependent of a live dependency, and that dependency."""
    dep = d.submit(JobSpec(type="dep", delay=FAR))

    def new(spec: JobSpec) -> str:
        job = d.submit(msgspec.structs.replace(spec, depends_on=(dep,), on_dependency_failure=policy))
        d.trigger(job, "cancel", "cancelled")
        d.trigger(job, "retry", "queued")
        return job

    if state == "waiting":
        job = d.submit(job_spec(notify, depends_on=(dep,), on_dependency_failure=policy))
    else:
        job, _ = reach(d, state, "-", notify, new)
    assert d.s.get_job(dep).state == "scheduled"
    return job, dep


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "silent"])
@pytest.mark.parametrize("row", DEPENDENCY_ROWS, ids=str)
def test_dependency_pair(target: Target, sync_store: SyncStore, clock: ManualClock, row: TRow, notify: bool) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job, dep = reach_dependent(d, row.state, notify, row.variant)
    assert raw.smembers(K.dependents(dep)) == {job.encode()}
    clock.advance(1000)
    before = snapshot(raw)
    reply = sync_store.cancel(dep)
    after = snapshot(raw)
    assert (reply.kind, reply.id, reply.from_, reply.to) == ("moved", dep, "scheduled", "cancelled")
    assert K.dependents(dep) not in after  # released once: a retry of the dependency releases nobody
    old, new = before[K.events][1], after[K.events][1]
    assert new[: len(old)] == old
    fields = [f for _, f in new[len(old):]]
    assert (fields[0]["type"], fields[0]["id"]) == ("job.cancelled", dep)
    dep_keys = {K.job(dep), K.due, K.finished, K.unfiled, K.events, K.dependents(dep)}
    jkey = K.job(job)
    if row.dest is None:
        assert len(fields) == 1
        assert after[jkey] == before[jkey]
        assert_one_index(raw, job, row.state)
        assert diff_keys(before, after) <= dep_keys
        return
    dest = row.dest
    assert reply.effects[-1] == ("wake_workers" if dest == "queued" else "release_dependents")
    h = after[jkey][1]
    assert h["state"] == dest
    for name, value in DEPENDENCY_FIELDS_AFTER[dest].items():
        assert h.get(name, "") == value, (name, h.get(name))
    assert_one_index(raw, job, dest)
    kind = NOTIFY.get(dest, f"job.{row.trigger}")
    assert len(fields) == 2
    assert (fields[1]["type"], fields[1]["id"], fields[1]["from"], fields[1]["to"], fields[1]["cause"]) == (
        kind, job, "waiting", dest, dep)
    did = f"{job}~{kind}~0"
    added = delivery_ids_of(after) - delivery_ids_of(before)
    assert added == ({did} if notify and dest in NOTIFY else set())
    job_keys = {jkey, K.waiting} | INDEX_KEYS | ({K.unfiled} if dest in NOTIFY else set())
    job_keys |= {K.outbox, K.delivery(did)} if added else set()
    assert diff_keys(before, after) <= dep_keys | job_keys


# ---------------------------------------------------------------------------------------------
# Fencing
# ---------------------------------------------------------------------------------------------


def test_a_wrong_token_on_an_active_job_writes_one_stale_report_and_nothing_else(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True))
    token = d.claim(job)
    for _op, call in [
        ("complete", lambda: sync_store.complete(job, token + "x", {"late": True})),
        ("fail", lambda: sync_store.fail(job, "", "boom")),
        ("renew", lambda: sync_store.renew(job, "zz.1", 60)),
        ("service_id", lambda: sync_store.record_service_job_id(job, "zz.1", "svc-1")),
        ("timeout", lambda: sync_store.report(job, "zz.1", "timeout")),
        ("phase.start", lambda: sync_store.phase(job, "zz.1", "a", "start")),
    ]:
        before = snapshot(raw)
        reply = call()
        after = snapshot(raw)
        assert reply.kind == "stale"
        assert diff_keys(before, after) == {K.events}
        new = after[K.events][1][len(before[K.events][1]):]
        assert [(f["type"], f["id"], f["state"], f["current"]) for _, f in new] == [
            ("job.stale_report", job, "active", token)]
    # the real holder still completes
    d.report(job, token, "complete", "completed")


def test_a_report_after_takeover_is_fenced_out_then_absorbed_once_terminal(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True, max_retries=2))
    old = d.claim(job, "paused-worker", lease=1.0)
    clock.advance(2)
    [seen] = sync_store.expired(Q)
    assert sync_store.expire(job, seen.token).to == "scheduled"
    d.wake()
    new = d.claim(job, "w2")
    assert new != old
    # the paused worker comes back: each late report is one stale_report, nothing else
    for trigger in ("complete", "fail"):
        before = snapshot(raw)
        r = sync_store.report(job, old, trigger, result={"late": 1} if trigger == "complete" else None)
        after = snapshot(raw)
        assert (r.kind, r.state) == ("stale", "active")
        assert diff_keys(before, after) == {K.events}
        [(_, f)] = after[K.events][1][len(before[K.events][1]):]
        assert (f["type"], f["op"], f["token"], f["current"]) == ("job.stale_report", trigger, old, new)
    assert sync_store.get_job(job).result is None
    # a second watchdog that saw the old token lose the race: skipped, nothing written
    before = snapshot(raw)
    assert sync_store.expire(job, old).kind == "skipped"
    assert snapshot(raw) == before
    d.report(job, new, "complete", "completed", result={"r": 2})
    before = snapshot(raw)
    for token in (old, new, ""):
        assert sync_store.report(job, token, "complete", result={"again": 1}).kind == "absorbed"
        assert sync_store.renew(job, token, 30).kind == "absorbed"
    assert snapshot(raw) == before
    view = sync_store.get_job(job)
    assert view.result == {"r": 2}
    assert [(a.n, a.worker, a.outcome, a.by) for a in view.attempt_records] == [
        (1, "paused-worker", "worker_lost", "watchdog"), (2, "w2", "succeeded", "worker")]


# ---------------------------------------------------------------------------------------------
# Outbox epochs
# ---------------------------------------------------------------------------------------------


def test_each_operator_retry_opens_a_new_outbox_epoch(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True, max_retries=0))
    t1 = d.claim(job)
    d.report(job, t1, "fail", "failed", error="one")
    assert delivery_ids(raw) == {f"{job}~job.failed~0"}
    # the same terminal transition again in the same epoch: absorbed, no second row
    before = snapshot(raw)
    assert sync_store.report(job, t1, "fail", error="again").kind == "absorbed"
    assert snapshot(raw) == before
    d.trigger(job, "retry", "queued")
    t2 = d.claim(job)
    d.report(job, t2, "fail", "failed", error="two")
    assert delivery_ids(raw) == {f"{job}~job.failed~0", f"{job}~job.failed~1"}
    assert sorted(m.decode() for m in raw.zrange(K.outbox, 0, -1)) == sorted(delivery_ids(raw))
    assert raw.hget(K.delivery(f"{job}~job.failed~1"), "epoch") == b"1"
    snap0 = json.loads(raw.hget(K.delivery(f"{job}~job.failed~0"), "snapshot"))
    snap1 = json.loads(raw.hget(K.delivery(f"{job}~job.failed~1"), "snapshot"))
    assert (snap0["error"], snap1["error"]) == ("one", "two")
    # validation_failed -> retry -> validating -> completed: new epoch for the completion too
    job2 = d.submit(job_spec(True, has_validator=True))
    t = d.claim(job2)
    d.report(job2, t, "complete", "validating", result={"x": 1})
    d.trigger(job2, "validation_exhausted", "validation_failed")
    d.trigger(job2, "retry", "validating")
    d.trigger(job2, "validation_passed", "completed")
    assert {i for i in delivery_ids(raw) if i.startswith(job2)} == {
        f"{job2}~job.validation_failed~0", f"{job2}~job.completed~1"}
    types = [(e["type"], e.get("to")) for e in stream(raw) if e["id"] == job2]
    assert types == [("job.submitted", "queued"), ("job.claim", "active"), ("job.complete", "validating"),
                     ("job.validation_failed", "validation_failed"), ("job.retry", "validating"),
                     ("job.completed", "completed")]


def test_a_duplicate_outbox_insert_is_a_no_op(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    """No sequence of ops produces the same (job, event type, epoch) twice, so the duplicate
    is simulated: a row for the key already exists (a raw write, the only one in these
    tests) when the transition that would insert it runs. The row is left as it was."""
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True))
    token = d.claim(job)
    did = f"{job}~job.completed~0"
    raw.hset(K.delivery(did), mapping={"state": "delivered", "attempts": "1", "event": "job.completed",
                                       "object": job, "epoch": "0", "snapshot": "{}"})
    before = raw.hgetall(K.delivery(did))
    d.report(job, token, "complete", "completed")
    assert raw.hgetall(K.delivery(did)) == before
    assert raw.zcard(K.outbox) == 0
    assert [e["type"] for e in stream(raw) if e["id"] == job].count("job.completed") == 1


# ---------------------------------------------------------------------------------------------
# Submit
# ---------------------------------------------------------------------------------------------


def test_idempotent_submit_returns_the_same_job_and_writes_nothing(
    target: Target, sync_store: SyncStore
) -> None:
    raw = target.raw()
    first = sync_store.submit(job_spec(idempotency_key="order-42"))
    assert first.kind == "created"
    before = snapshot(raw)
    again = sync_store.submit(JobSpec(type="report", input={"other": True}, idempotency_key="order-42"))
    assert (again.kind, again.id) == ("exists", first.id)
    assert snapshot(raw) == before
    assert job_ids(raw) == {first.id}
    assert [(e["type"], e["id"]) for e in stream(raw)] == [("job.submitted", first.id)]
    assert sync_store.get_job(first.id).input == {"n": 1}
    # another key is another job
    assert sync_store.submit(job_spec(idempotency_key="order-43")).id != first.id


def test_input_over_one_mib_is_bad_input_and_nothing_is_written(target: Target, sync_store: SyncStore) -> None:
    raw = target.raw()
    limit = 1 << 20
    with pytest.raises(BadInput, match=r"^input: 1048577 bytes is over the limit of 1048576 bytes"):
        sync_store.submit(JobSpec(type="big", input="x" * (limit - 1)))  # + 2 quotes
    with pytest.raises(BadInput, match="input"):
        sync_store.submit_many([JobSpec(type="ok"), JobSpec(type="big", input=["y" * limit])])
    assert snapshot(raw) == {}
    r = sync_store.submit(JobSpec(type="big", input="x" * (limit - 2)))  # exactly 1 MiB
    assert r.kind == "created"
    assert len(sync_store.get_job(r.id).input) == limit - 2


def test_claims_go_by_priority_then_first_in_first_out(sync_store: SyncStore, clock: ManualClock) -> None:
    order = [0, 5, -3, 5, 0, 100, -100, 5, 0]
    ids = []
    for p in order:
        clock.advance(0.001)
        ids.append(sync_store.submit(JobSpec(type="t", priority=p)).id)
    clock.advance(1)
    claimed = [c.id for _ in ids for c in sync_store.claim(Q, "w")]
    expected = [ids[i] for i in sorted(range(len(order)), key=lambda i: (-order[i], i))]
    assert claimed == expected
    assert sync_store.claim(Q, "w") == []


def test_fifo_holds_within_one_millisecond(sync_store: SyncStore, clock: ManualClock) -> None:
    """Jobs submitted together (one submit_many, or simply in the same millisecond) must
    still be claimed in submission order within their priority."""
    ids = [r.id for r in sync_store.submit_many([JobSpec(type="t", input=i) for i in range(20)])]
    claimed = [c.id for c in sync_store.claim(Q, "w", n=20)]
    assert claimed == ids


# ---------------------------------------------------------------------------------------------
# Retries and phases
# ---------------------------------------------------------------------------------------------


def test_retry_count_never_exceeds_max_retries(sync_store: SyncStore, clock: ManualClock) -> None:
    d = Driver(sync_store, clock)
    job = d.submit(job_spec(max_retries=3, backoff=2.0, backoff_max=5.0))
    ways = ["fail", "timeout", "lease_expired", "fail"]
    dues = []
    for n, way in enumerate(ways, start=1):
        token = d.claim(job, lease=1.0)
        if way == "lease_expired":
            clock.advance(2)
            r = sync_store.expire(job, token)
        else:
            r = sync_store.report(job, token, way, error="x" if way == "fail" else None)
        view = sync_store.get_job(job)
        assert view.retry_count == min(n, 3) <= view.max_retries
        if n <= 3:
            assert (r.kind, r.to) == ("moved", "scheduled")
            dues.append(view.due_at - clock())
            d.wake()
        else:
            assert (r.kind, r.to) == ("moved", "failed")
            assert view.reason == "handler_error"
    # exponential, capped at backoff_max, jitter in [0.5, 1] of the delay
    for due, delay in zip(dues, [2.0, 4.0, 5.0], strict=True):
        assert 0.5 * delay - 0.001 <= due <= delay + 0.001
    assert sync_store.get_job(job).attempts == 4
    d.trigger(job, "retry", "queued")
    assert sync_store.get_job(job).retry_count == 0


def test_phase_results_survive_a_retry_and_retry_from_start_drops_them(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    job = d.submit(job_spec(max_retries=1, phases=("fetch", "render", "send")))
    t1 = d.claim(job)
    assert sync_store.phase(job, t1, "fetch", "start").to == "running"
    assert sync_store.phase(job, t1, "fetch", "complete", {"rows": 3}).to == "completed"
    assert sync_store.phase(job, t1, "render", "start").to == "running"
    r = sync_store.fail(job, t1, "render crashed")
    assert (r.to, r.interrupted_phase) == ("scheduled", "render")
    view = sync_store.get_job(job)
    assert view.phases == {"fetch": "completed", "render": "failed", "send": "pending"}
    assert view.attempt_records[0].interrupted_phase == "render"
    d.wake()
    [claimed] = sync_store.claim(Q, "w2")
    assert claimed.phase_results == ["fetch", '{"rows":3}']
    view = sync_store.get_job(job)
    assert view.phases == {"fetch": "completed", "render": "pending", "send": "pending"}
    assert view.phase_results == {"fetch": {"rows": 3}}
    assert view.attempt_records[1].resumed_at_phase == "render"
    assert sync_store.phase(job, claimed.token, "render", "start").to == "running"
    assert sync_store.fail(job, claimed.token, "again").to == "failed"
    # the operator's plain retry keeps the completed phase
    d.trigger(job, "retry", "queued")
    view = sync_store.get_job(job)
    assert view.phase_results == {"fetch": {"rows": 3}}
    [c3] = sync_store.claim(Q, "w3")
    assert c3.phase_results == ["fetch", '{"rows":3}']
    sync_store.cancel(job)
    view = sync_store.get_job(job)
    assert view.phases == {"fetch": "completed", "render": "cancelled", "send": "cancelled"}
    # --from-start: every phase pending, results gone
    d.trigger(job, "retry_from_start", "queued")
    view = sync_store.get_job(job)
    assert view.phases == {"fetch": "pending", "render": "pending", "send": "pending"}
    assert view.phase_results == {}
    assert not any(k.startswith("pr:") for k in view.raw)
    [c4] = sync_store.claim(Q, "w4")
    assert c4.phase_results == []
    assert sync_store.get_job(job).attempt_records[-1].resumed_at_phase == "fetch"
    assert sync_store.get_job(job).input == {"n": 1}


def test_cancelling_a_queued_phased_job_cancels_every_phase(sync_store: SyncStore, clock: ManualClock) -> None:
    d = Driver(sync_store, clock)
    job = d.submit(job_spec(phases=("a", "b")))
    d.trigger(job, "cancel", "cancelled")
    assert sync_store.get_job(job).phases == {"a": "cancelled", "b": "cancelled"}


# Phase ops on an active job, by hand: (phase state reached, op, expected)
PHASE_TABLE = """
pending    start     -> running
pending    complete  invalid
running    start     invalid
running    complete  -> completed
completed  start     absorbed
completed  complete  absorbed
"""


@pytest.mark.parametrize("row", [line.split(None, 2) for line in PHASE_TABLE.strip().splitlines()],
                         ids=lambda r: f"{r[0]}-{r[1]}")
def test_phase_pair(target: Target, sync_store: SyncStore, clock: ManualClock, row: list[str]) -> None:
    state, op, expected = row
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(phases=("a", "b")))
    token = d.claim(job)
    if state in ("running", "completed"):
        assert sync_store.phase(job, token, "a", "start").kind == "moved"
    if state == "completed":
        assert sync_store.phase(job, token, "a", "complete", {"a": 1}).kind == "moved"
    before = snapshot(raw)
    r = sync_store.phase(job, token, "a", op, {"a": 2} if op == "complete" else None)
    after = snapshot(raw)
    if not expected.startswith("->"):
        assert (r.kind, r.phase, r.state) == (expected, "a", state)
        assert after == before
        return
    dest = expected[3:]
    assert (r.kind, r.phase, r.from_, r.to) == ("moved", "a", state, dest)
    assert diff_keys(before, after) == {K.job(job), K.events}
    h = after[K.job(job)][1]
    assert (h["state"], h["phases"]) == ("active", f"a={dest},b=pending")
    assert h.get("pr:a") == ('{"a":2}' if dest == "completed" else None)
    new = after[K.events][1][len(before[K.events][1]):]
    assert [(f["type"], f["phase"], f["from"], f["to"]) for _, f in new] == [(f"phase.{op}", "a", state, dest)]


def test_phase_ops_that_cannot_apply_write_nothing(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(phases=("a",)))
    token = d.claim(job)
    before = snapshot(raw)
    with pytest.raises(Rejected, match="has no phase nope"):
        sync_store.phase(job, token, "nope", "start")
    assert snapshot(raw) == before
    r = sync_store.phase(job, "bad.1", "a", "start")
    assert r.kind == "stale"
    assert diff_keys(before, snapshot(raw)) == {K.events}
    d.report(job, token, "complete", "completed")
    before = snapshot(raw)
    assert sync_store.phase(job, token, "a", "start").kind == "absorbed"
    assert snapshot(raw) == before


def test_validation_results_on_a_job_that_is_not_validating_write_nothing(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """``trigger('validation_passed', status=...)`` records the validator's status: only when
    the trigger applies. Invalid and absorbed pairs write nothing, whatever they carry."""
    d = Driver(sync_store, clock)
    raw = target.raw()
    done = d.submit(job_spec(has_validator=True))  # first in, so first claimed (FIFO)
    queued = d.submit(job_spec())
    t = d.claim(done)
    d.report(done, t, "complete", "validating")
    d.trigger(done, "validation_passed", "completed")
    for job, kind in ((queued, "invalid"), (done, "absorbed")):
        for trigger in ("validation_passed", "validation_exhausted"):
            before = snapshot(raw)
            r = sync_store.trigger(job, trigger, status="stale-status")
            assert r.kind == kind
            assert snapshot(raw) == before, f"{trigger} on {r.state} wrote {diff_keys(before, snapshot(raw))}"


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------

BATCH_HOOK = "http://hooks.example/batches"

# (state reached, op, expected): "-> X" moved, or absorbed | blocked | invalid | rejected | unseen.
# Setups: open = one unfinished member, no expected total; running = open + close;
# completed = expected 1, the member completed; completed_partial = expected 2, threshold 50,
# one member completed; failed = expected 1, found stuck with its member active; cancelled = cancel_batch.
# Every batch has stuck_after = 60 s, and the clock moves 1000 s before the op (so a sweep sees
# every live batch as stuck). finalize_stuck = finalize_batch(stuck=True); add = add_to_batch
# with a fresh job.
BATCH_TABLE = """
open               close           -> running
open               finalize        blocked
open               finalize_stuck  -> failed
open               cancel          -> cancelled
open               add             added
open               sweep           -> failed
running            close           invalid
running            finalize        blocked
running            finalize_stuck  -> failed
running            cancel          -> cancelled
running            add             rejected
running            sweep           -> failed
completed          close           absorbed
completed          finalize        absorbed
completed          finalize_stuck  absorbed
completed          cancel          absorbed
completed          add             rejected
completed          sweep           unseen
completed_partial  close           absorbed
completed_partial  finalize        absorbed
completed_partial  finalize_stuck  absorbed
completed_partial  cancel          absorbed
completed_partial  add             rejected
completed_partial  sweep           unseen
failed             close           absorbed
failed             finalize        absorbed
failed             finalize_stuck  absorbed
failed             cancel          absorbed
failed             add             rejected
failed             sweep           unseen
cancelled          close           absorbed
cancelled          finalize        absorbed
cancelled          finalize_stuck  absorbed
cancelled          cancel          absorbed
cancelled          add             rejected
cancelled          sweep           unseen
"""

# The events a moved batch op appends, by hand ("B" the batch, "M" its member).
BATCH_EVENTS = {
    ("open", "close"): [("batch.close", "B", "open", "running")],
    ("open", "finalize_stuck"): [("batch.finalize", "B", "open", "finalizing"),
                                 ("batch.failed", "B", "finalizing", "failed")],
    ("open", "sweep"): [("batch.finalize", "B", "open", "finalizing"),
                        ("batch.failed", "B", "finalizing", "failed")],
    ("open", "cancel"): [("batch.cancel", "B", "open", "cancelled"),
                         ("job.cancelled", "M", "queued", "cancelled")],
    ("running", "finalize_stuck"): [("batch.finalize", "B", "running", "finalizing"),
                                    ("batch.failed", "B", "finalizing", "failed")],
    ("running", "sweep"): [("batch.finalize", "B", "running", "finalizing"),
                           ("batch.failed", "B", "finalizing", "failed")],
    ("running", "cancel"): [("batch.cancel", "B", "running", "cancelled"),
                            ("job.cancelled", "M", "queued", "cancelled")],
}


def reach_batch(d: Driver, state: str) -> tuple[str, list[str]]:
    s = d.s

    def create(**kw: Any) -> str:
        r = s.create_batch(BatchSpec(stuck_after=60, webhook_url=BATCH_HOOK, **kw))
        assert r.kind == "created"
        return r.id

    if state in ("open", "running", "cancelled"):
        b = create()
        m = d.submit(job_spec(batch=b))
        if state == "running":
            assert s.close_batch(b).to == "running"
        if state == "cancelled":
            assert (s.cancel_batch(b).to, s.get_job(m).state) == ("cancelled", "cancelled")
        members = [m]
    elif state in ("completed", "failed"):
        b = create(expected=1)
        m = d.submit(job_spec(batch=b, max_retries=0))
        t = d.claim(m)
        if state == "completed":
            d.report(m, t, "complete", "completed")
        else:  # only the stuck sweep fails a batch (SPEC); its member may still finish later
            assert (s.finalize_batch(b, stuck=True).to, s.get_batch(b).reason) == ("failed", "stuck")
        members = [m]
    elif state == "completed_partial":
        b = create(expected=2, threshold=50)
        m1 = d.submit(job_spec(batch=b))
        d.clock.advance(0.01)
        m2 = d.submit(job_spec(batch=b))
        t = d.claim(m1)
        d.report(m1, t, "complete", "completed")
        members = [m1, m2]
    else:  # pragma: no cover
        raise AssertionError(state)
    assert s.get_batch(b).state == state
    return b, members


@pytest.mark.parametrize("row", [line.split(None, 2) for line in BATCH_TABLE.strip().splitlines()],
                         ids=lambda r: f"{r[0]}-{r[1]}")
def test_batch_pair(target: Target, sync_store: SyncStore, clock: ManualClock, row: list[str]) -> None:
    state, op, expected = row
    d = Driver(sync_store, clock)
    raw = target.raw()
    b, members = reach_batch(d, state)
    fresh = d.submit(job_spec()) if op == "add" else None
    clock.advance(1000)
    before = snapshot(raw)
    r: Any = None
    if expected == "rejected":
        with pytest.raises(Rejected, match=f"batch {b} is"):
            sync_store.add_to_batch(b, [fresh])
    elif op == "close":
        r = sync_store.close_batch(b)
    elif op == "finalize":
        r = sync_store.finalize_batch(b)
    elif op == "finalize_stuck":
        r = sync_store.finalize_batch(b, stuck=True)
    elif op == "cancel":
        r = sync_store.cancel_batch(b)
    elif op == "add":
        r = sync_store.add_to_batch(b, [fresh])
    elif op == "sweep":
        r = sync_store.sweep_batches(Q)
    after = snapshot(raw)
    bkey = K.batch(b)

    if expected in ("absorbed", "blocked", "invalid", "rejected", "unseen"):
        if expected == "unseen":
            assert (r.kind, r.n) == ("swept", 0)
        elif r is not None:
            assert (r.kind, r.state) == (expected, state)
        assert after == before, diff_keys(before, after)
        return
    if expected == "added":
        assert (r.kind, r.added) == ("added", 1)
        assert diff_keys(before, after) == {bkey, bkey + ":members", K.job(fresh), K.events, K.batches}
        assert after[bkey][1]["members"] == "2"
        assert raw.zscore(K.batches, b) == int(clock() * 1000) + 60_000  # activity: stuck timer restarts
        assert after[bkey + ":members"][1] == sorted(members + [fresh])
        assert after[K.job(fresh)][1]["batch"] == b
        [(_, f)] = after[K.events][1][len(before[K.events][1]):]
        assert (f["type"], f["id"], f["added"]) == ("batch.members_added", b, "1")
        return
    dest = expected[3:]
    if op == "sweep":
        assert (r.kind, r.n) == ("swept", 1)
        [inner] = r.batches
        assert (inner.kind, inner.id, inner.to) == ("moved", b, dest)
    else:
        assert (r.kind, r.id, r.from_, r.to) == ("moved", b, state, dest)
    h = after[bkey][1]
    assert h["state"] == dest
    new = after[K.events][1][len(before[K.events][1]):]
    names = {"B": b, "M": members[0]}
    assert [(f["type"], f["id"], f["from"], f["to"]) for _, f in new] == [
        (t, names[who], fr, to) for t, who, fr, to in BATCH_EVENTS[(state, op)]]
    live = raw.zscore(K.batches, b) is not None
    assert live == (dest in ("open", "running"))
    rows = delivery_ids_of(after) - delivery_ids_of(before)
    if dest == "failed":
        assert h["reason"] == "stuck"
        assert rows == {f"{b}~batch.failed~0"}
        body = json.loads(after[K.delivery(f"{b}~batch.failed~0")][1]["snapshot"])
        assert (body["state"], body["reason"], body["completed"], body["total"]) == ("failed", "stuck", 0, 1)
    else:
        assert rows == set()
    if dest == "cancelled":
        assert (h["reason"], h["cancelled"]) == ("cancelled", "1")
        assert after[K.job(members[0])][1]["reason"] == "batch_cancelled"


def test_create_batch_writes_the_batch_its_stuck_timer_and_one_event(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    before = snapshot(raw)
    r = sync_store.create_batch(BatchSpec(expected=4, threshold=75, progress_every=2, stuck_after=30,
                                          webhook_url=BATCH_HOOK))
    after = snapshot(raw)
    assert (r.kind, r.state) == ("created", "open")
    assert diff_keys(before, after) == {"jv:queues", K.batch(r.id), K.batches, K.events}
    assert after[K.batches][1] == [(r.id, int(clock() * 1000) + 30_000)]
    [(_, f)] = after[K.events][1]
    assert (f["type"], f["id"], f["to"], f["expected"]) == ("batch.created", r.id, "open", "4")
    view = sync_store.get_batch(r.id)
    assert (view.state, view.expected, view.threshold, view.progress_every, view.stuck_after,
            view.members, view.closed) == ("open", 4, 75, 2, 30.0, 0, False)
    # no stuck_after: never swept
    r2 = sync_store.create_batch(BatchSpec())
    assert raw.zscore(K.batches, r2.id) == float("inf")


def test_threshold_finalizes_once_and_late_members_move_counters_only(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=3, threshold=60, progress_every=1,
                                          webhook_url=BATCH_HOOK)).id
    members = []
    for _ in range(3):
        clock.advance(0.01)
        members.append(d.submit(job_spec(batch=b)))
    tokens = [d.claim(m) for m in members]
    d.report(members[0], tokens[0], "complete", "completed")  # 1/3: under 60 %
    assert sync_store.get_batch(b).state == "running"  # its 3 expected members are in
    d.report(members[1], tokens[1], "complete", "completed")  # 2/3 >= 60 %: finalize
    view = sync_store.get_batch(b)
    assert (view.state, view.completed, view.reason) == ("completed_partial", 2, None)
    d.report(members[2], tokens[2], "fail", "scheduled", error="late")
    d.wake()
    t3 = d.claim(members[2])
    d.report(members[2], t3, "complete", "completed")
    view = sync_store.get_batch(b)
    assert (view.state, view.completed, view.failed) == ("completed_partial", 3, 0)
    batch_events = [(e["type"], e["completed"] if e["type"] == "batch.progress" else None)
                    for e in stream(raw) if e["id"] == b]
    assert batch_events == [("batch.created", None), ("batch.close", None), ("batch.progress", "1"),
                            ("batch.progress", "2"),
                            ("batch.finalize", None), ("batch.completed", None), ("batch.progress", "3")]
    assert {i for i in delivery_ids(raw) if i.startswith(b)} == {
        f"{b}~batch.progress~1", f"{b}~batch.progress~2", f"{b}~batch.completed~0", f"{b}~batch.progress~3"}


def test_an_open_batch_without_total_finalizes_only_once_closed(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(notify=True)).id
    m = d.submit(job_spec(batch=b))
    d.report(m, d.claim(m), "complete", "completed")
    before = snapshot(raw)
    assert sync_store.finalize_batch(b).kind == "blocked"
    assert snapshot(raw) == before
    r = sync_store.close_batch(b)
    assert (r.kind, r.from_, r.to) == ("moved", "open", "completed")
    assert [e["type"] for e in stream(raw) if e["id"] == b] == [
        "batch.created", "batch.close", "batch.finalize", "batch.completed"]
    assert sync_store.get_batch(b).closed is True
    # members of a finished batch: refused, nothing written
    other = d.submit(job_spec())
    before = snapshot(raw)
    with pytest.raises(Rejected):
        sync_store.submit(job_spec(batch=b))
    with pytest.raises(Rejected):
        sync_store.add_to_batch(b, [other])
    after = snapshot(raw)
    assert diff_keys(before, after) <= {"jv:queues"}
    assert after["jv:queues"] == before["jv:queues"]


def test_the_stuck_sweep_waits_for_stuck_after_and_restarts_on_member_activity(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=3, threshold=50, stuck_after=10, notify=True)).id
    members = [d.submit(job_spec(batch=b)) for _ in range(3)]
    clock.advance(9)
    before = snapshot(raw)
    assert sync_store.sweep_batches(Q).n == 0
    assert snapshot(raw) == before
    [c] = sync_store.claim(Q, "w")
    d.report(c.id, c.token, "complete", "completed")  # activity at t0+9: stuck from t0+19
    assert raw.zscore(K.batches, b) == int(clock() * 1000) + 10_000
    clock.advance(9)
    assert sync_store.sweep_batches(Q).n == 0
    [c2] = sync_store.claim(Q, "w")
    d.report(c2.id, c2.token, "complete", "completed")  # 2/3 >= 50 %: finalized now
    assert sync_store.get_batch(b).state == "completed_partial"
    clock.advance(100)
    before = snapshot(raw)
    assert sync_store.sweep_batches(Q).n == 0
    assert snapshot(raw) == before
    assert members


def test_stuck_sweep_with_the_threshold_met_is_completed_partial(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(threshold=50, stuck_after=10, notify=True)).id
    for _ in range(2):
        d.submit(job_spec(batch=b))
    [c] = sync_store.claim(Q, "w")
    d.report(c.id, c.token, "complete", "completed")  # no total known: not ready
    assert sync_store.get_batch(b).state == "open"
    clock.advance(11)
    r = sync_store.sweep_batches(Q)
    assert (r.n, r.batches[0].to) == (1, "completed_partial")
    assert sync_store.get_batch(b).reason is None
    assert [e["type"] for e in stream(raw) if e["id"] == b][-2:] == ["batch.finalize", "batch.completed"]


# ---------------------------------------------------------------------------------------------
# Webhook deliveries
# ---------------------------------------------------------------------------------------------

# (state reached, op, variant, expected). Setups: a job with notify is cancelled (one pending
# row); pending[released] = taken then released (it keeps the token it was sent with);
# sending = taken (send lease 30 s); retry_wait = taken, failed with attempts left (retry at +5 s);
# delivered = taken, succeeded; dead = taken, rejected. The clock moves 1000 s before the op,
# except for the lease_live variant. Outcomes use the token of the last send ("none" when never
# sent). max_attempts is 3 (attempts_left), or 1 for no_attempts_left: one attempt is spent,
# so a send goes dead instead (attempts never exceed max_attempts, even after a release).
# redeliver is the operator's (no token): only a dead delivery moves, back to pending with a
# fresh attempt budget, and its job's notification with it.
DELIVERY_TABLE = """
pending     send     -                 -> sending
pending     succeed  -                 stale
pending     fail     -                 stale
pending     reject   -                 stale
pending     release  -                 stale
pending     redeliver -                invalid
pending     send     released          -> sending
pending     send     released+no_attempts_left  -> dead
pending     succeed  released          invalid
pending     fail     released          invalid
pending     reject   released          invalid
pending     release  released          invalid
sending     send     lease_live        unseen
sending     send     lease_expired     -> sending
sending     succeed  -                 -> delivered
sending     fail     attempts_left     -> retry_wait
sending     fail     no_attempts_left  -> dead
sending     reject   -                 -> dead
sending     release  -                 -> pending
sending     redeliver -                invalid
retry_wait  send     -                 -> sending
retry_wait  send     no_attempts_left  -> dead
retry_wait  succeed  -                 invalid
retry_wait  fail     -                 invalid
retry_wait  reject   -                 invalid
retry_wait  release  -                 invalid
retry_wait  redeliver -                invalid
delivered   send     -                 unseen
delivered   succeed  -                 absorbed
delivered   fail     -                 absorbed
delivered   reject   -                 absorbed
delivered   release  -                 absorbed
delivered   redeliver -                absorbed
dead        send     -                 unseen
dead        succeed  -                 absorbed
dead        fail     -                 absorbed
dead        reject   -                 absorbed
dead        release  -                 absorbed
dead        redeliver -                -> pending
"""

# Events a moved delivery op appends: (trigger, from, to, attempt) in order.
DELIVERY_EVENTS = {
    ("pending", "send", "-"): [("send", "pending", "sending", "1")],
    ("pending", "send", "released"): [("send", "pending", "sending", "2")],
    ("sending", "send", "lease_expired"): [("release", "sending", "pending", "1"),
                                          ("send", "pending", "sending", "2")],
    ("sending", "succeed", "-"): [("succeed", "sending", "delivered", "1")],
    ("sending", "fail", "attempts_left"): [("fail", "sending", "retry_wait", "1")],
    ("sending", "fail", "no_attempts_left"): [("fail", "sending", "dead", "1")],
    ("sending", "reject", "-"): [("reject", "sending", "dead", "1")],
    ("sending", "release", "-"): [("release", "sending", "pending", "1")],
    ("retry_wait", "send", "-"): [("send", "retry_wait", "sending", "2")],
    ("retry_wait", "send", "no_attempts_left"): [("send", "retry_wait", "dead", "1")],
    ("pending", "send", "released+no_attempts_left"): [("send", "pending", "dead", "1")],
    ("dead", "redeliver", "-"): [("redeliver", "dead", "pending", "0")],
}


@pytest.mark.parametrize("row", [line.split() for line in DELIVERY_TABLE.strip().splitlines()],
                         ids=lambda r: f"{r[0]}{'' if r[2] == '-' else '[' + r[2] + ']'}-{r[1]}")
def test_delivery_pair(target: Target, sync_store: SyncStore, clock: ManualClock, row: list[str]) -> None:
    state, op, variant, *rest = row
    expected = " ".join(rest)
    variants = set(variant.split("+"))
    max_attempts = 1 if "no_attempts_left" in variants else 3
    d = Driver(sync_store, clock)
    raw = target.raw()
    s = sync_store
    job = d.submit(job_spec(True))
    d.trigger(job, "cancel", "cancelled")
    did = f"{job}~job.cancelled~0"
    token = "none"
    if state != "pending" or "released" in variants:
        [taken] = s.take_deliveries(Q, lease=30)
        assert (taken.id, taken.attempt, taken.url) == (did, 1, HOOK)
        token = taken.token
        outcome = {"pending": "release", "retry_wait": "fail", "delivered": "succeed", "dead": "reject"}
        if state in outcome:
            r = s.delivery_outcome(Q, did, token, outcome[state], max_attempts=3, retry_at=clock() + 5)
            assert (r.kind, r.to) == ("moved", state)
    if variant != "lease_live":
        clock.advance(1000)
    before = snapshot(raw)
    if op == "send":
        r = s.take_deliveries(Q, lease=30, max_attempts=max_attempts)
    elif op == "redeliver":
        r = s.redeliver(did)
    else:
        r = s.delivery_outcome(Q, did, token, op, max_attempts=max_attempts,
                               retry_at=clock() + 7 if op == "fail" else None, status=503, error="e")
    after = snapshot(raw)
    dkey = K.delivery(did)
    if not expected.startswith("->"):
        if expected == "unseen":
            assert r == []
        else:
            assert (r.kind, r.state) == (expected, state)
        assert after == before, diff_keys(before, after)
        return
    dest = expected[3:]
    if op == "send" and dest == "dead":
        assert r == []
        assert (after[dkey][1]["attempts"], after[dkey][1]["token"]) == ("1", "")
    elif op == "send":
        [taken] = r
        assert (taken.id, taken.token != token, taken.attempt) == (did, True, int(after[dkey][1]["attempts"]))
        assert json.loads(taken.snapshot)["state"] == "cancelled"
    else:
        assert (r.kind, r.from_, r.to) == ("moved", state, dest)
    h = after[dkey][1]
    assert h["state"] == dest
    new = after[K.events][1][len(before[K.events][1]):]
    # (the attempt a send event names is checked on its own, in
    # test_a_send_event_names_the_attempt_it_starts)
    assert [(f["type"], f["id"], f["delivery"], f["from"], f["to"], f["attempt"] if t != "send" else "-")
            for (_, f), (t, *_) in zip(new, DELIVERY_EVENTS[(state, op, variant)], strict=True)] == [
        (f"webhook.{t}", job, did, fr, to, a if t != "send" else "-")
        for t, fr, to, a in DELIVERY_EVENTS[(state, op, variant)]]
    outbox = dict(after.get(K.outbox, ("", []))[1])
    now = int(clock() * 1000)
    if dest in ("delivered", "dead") or op == "redeliver":
        assert outbox.get(did) == (now if op == "redeliver" else None)
        assert (after[K.job(job)][1]["notification"], after[K.job(job)][1]["notification_event"]) == (
            dest, "job.cancelled")
        allowed = {dkey, K.outbox, K.events, K.job(job)}
        if op == "redeliver":
            assert (h["attempts"], h["token"]) == ("0", "")
    else:
        assert outbox[did] == {"sending": now + 30_000, "retry_wait": now + 7_000, "pending": now}[dest]
        allowed = {dkey, K.outbox, K.events}
    assert diff_keys(before, after) <= allowed


def test_a_delivery_outcome_with_a_wrong_token_writes_nothing(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True))
    d.trigger(job, "cancel", "cancelled")
    [first] = sync_store.take_deliveries(Q, lease=1)
    clock.advance(2)  # the sender died; another daemon takes it over with the same id
    [second] = sync_store.take_deliveries(Q, lease=30)
    assert (second.id, second.attempt) == (first.id, 2)
    before = snapshot(raw)
    r = sync_store.delivery_outcome(Q, first.id, first.token, "succeed", max_attempts=3)
    assert (r.kind, r.state) == ("stale", "sending")
    assert snapshot(raw) == before
    assert sync_store.delivery_outcome(Q, second.id, second.token, "succeed", max_attempts=3).to == "delivered"
    assert sync_store.get_job(job).notification == "delivered"


def test_a_redelivered_delivery_is_sent_again_with_its_id_and_a_fresh_budget(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """A dead delivery re-sent by the operator goes out again under the same id with attempts
    counted from 1; a late report of its last attempt is stale and writes nothing."""
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True))
    d.trigger(job, "cancel", "cancelled")
    [first] = sync_store.take_deliveries(Q, max_attempts=1)
    assert sync_store.delivery_outcome(Q, first.id, first.token, "fail", max_attempts=1).to == "dead"
    assert sync_store.get_job(job).notification == "dead"
    assert sync_store.redeliver(first.id).to == "pending"
    assert sync_store.get_job(job).notification == "pending"
    before = snapshot(raw)
    late = sync_store.delivery_outcome(Q, first.id, first.token, "succeed", max_attempts=1)
    assert (late.kind, late.state) == ("stale", "pending")
    assert snapshot(raw) == before
    [again] = sync_store.take_deliveries(Q, max_attempts=1)
    assert (again.id, again.attempt, again.token != first.token) == (first.id, 1, True)
    assert sync_store.delivery_outcome(Q, again.id, again.token, "succeed", max_attempts=1).to == "delivered"
    assert sync_store.get_job(job).notification == "delivered"
    second = sync_store.redeliver(first.id)  # delivered: absorbed, nothing written
    assert (second.kind, second.state) == ("absorbed", "delivered")
    assert [e["type"] for e in stream(raw) if e["type"].startswith("webhook.")] == [
        "webhook.send", "webhook.fail", "webhook.redeliver", "webhook.send", "webhook.succeed"]


def test_redeliver_of_an_unknown_or_malformed_delivery_writes_nothing(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    job = Driver(sync_store, clock).submit(job_spec(True))
    before = snapshot(raw)
    with pytest.raises(NotFound, match="delivery"):
        sync_store.redeliver(f"{job}~job.failed~0")
    for bad in ("nope", f"{job}~job.failed", f"{job}~~0", f"{job}~job.failed~x", "no id~job.failed~0"):
        with pytest.raises(BadInput):
            sync_store.redeliver(bad)
    assert snapshot(raw) == before


def test_a_send_event_names_the_attempt_it_starts(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    """The delivery taken for its first send says ``attempt == 1``; the ``webhook.send`` event
    of that same send must say so too (and 2 for the retry), like the fail event that follows."""
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True))
    d.trigger(job, "cancel", "cancelled")
    [first] = sync_store.take_deliveries(Q)
    sync_store.delivery_outcome(Q, first.id, first.token, "fail", max_attempts=3, retry_at=clock())
    [second] = sync_store.take_deliveries(Q)
    events = [(e["type"], e["attempt"]) for e in stream(raw) if e["type"].startswith("webhook.")]
    assert (first.attempt, second.attempt) == (1, 2)
    assert events == [("webhook.send", "1"), ("webhook.fail", "1"), ("webhook.send", "2")]


def test_a_member_retried_by_the_operator_is_counted_once(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """SPEC: a batch completes when all members are terminal. A member that failed and was
    retried by the operator, then completed, is one member: counting both of its terminal
    transitions makes the batch look settled while another member is still running."""
    d = Driver(sync_store, clock)
    b = sync_store.create_batch(BatchSpec(expected=3, notify=True)).id
    m1, m2, m3 = (d.submit(job_spec(batch=b, max_retries=0, priority=p)) for p in (3, 2, 1))
    d.report(m1, d.claim(m1), "fail", "failed", error="x")
    d.trigger(m1, "retry", "queued")
    d.report(m1, d.claim(m1), "complete", "completed")
    d.report(m2, d.claim(m2), "complete", "completed")
    t3 = d.claim(m3)
    assert sync_store.get_job(m3).state == "active"
    assert sync_store.get_batch(b).state == "running"  # m3 still runs (its 3 expected members are in)
    d.report(m3, t3, "complete", "completed")
    view = sync_store.get_batch(b)
    assert (view.state, view.completed) == ("completed", 3)


def test_adding_a_member_of_another_batch_is_rejected_and_writes_nothing(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    b1 = sync_store.create_batch(BatchSpec()).id
    b2 = sync_store.create_batch(BatchSpec()).id
    mine = d.submit(job_spec(batch=b1))
    free = d.submit(job_spec())
    before = snapshot(raw)
    with pytest.raises(Rejected, match=f"already belongs to batch {b1}"):
        sync_store.add_to_batch(b2, [free, mine])
    with pytest.raises(NotFound, match="default.NOPE not found"):
        sync_store.add_to_batch(b2, [free, "default.NOPE"])
    assert snapshot(raw) == before
    r = sync_store.add_to_batch(b1, [mine, free])  # mine is already there: counted once
    assert (r.kind, r.added) == ("added", 1)
    assert sync_store.get_batch(b1).members == 2


def test_a_delayed_submit_waits_in_the_due_set_until_its_time(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    r = sync_store.submit(job_spec(delay=30))
    assert r.state == "scheduled"
    assert index_membership(raw, r.id) == ["due"]
    assert raw.zscore(K.due, r.id) == int(clock() * 1000) + 30_000
    clock.advance(29.999)
    before = snapshot(raw)
    woke = sync_store.wake(Q)
    assert (woke.n, woke.next_due) == (0, int(clock() * 1000) + 1)
    assert snapshot(raw) == before
    clock.advance(0.001)
    assert sync_store.wake(Q).n == 1
    assert index_membership(raw, r.id) == ["queued"]
    assert [e["type"] for e in stream(raw)] == ["job.submitted", "job.wake"]


def test_the_watchdog_extends_or_completes_an_expired_lease_it_observed(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    d = Driver(sync_store, clock)
    raw = target.raw()
    job = d.submit(job_spec(True))
    token = d.claim(job, lease=5)
    clock.advance(4)
    before = snapshot(raw)
    assert sync_store.expire(job, token, "extend", lease=60).kind == "skipped"  # not expired yet
    assert snapshot(raw) == before
    clock.advance(2)
    [seen] = sync_store.expired(Q)
    r = sync_store.expire(job, seen.token, "extend", lease=60, reason="still running there")
    assert (r.kind, r.lease_deadline) == ("extended", int(clock() * 1000) + 60_000)
    assert raw.zscore(K.active, job) == int(clock() * 1000) + 60_000
    assert stream(raw)[-1]["type"] == "job.lease_extended"
    assert sync_store.expired(Q) == []
    clock.advance(61)
    [seen] = sync_store.expired(Q)
    r = sync_store.expire(job, seen.token, "complete", result={"from": "service"})
    assert (r.kind, r.to) == ("moved", "completed")
    view = sync_store.get_job(job)
    assert (view.result, view.attempt_records[0].by) == ({"from": "service"}, "watchdog")
    assert delivery_ids(raw) == {f"{job}~job.completed~0"}
    # the worker's late report is absorbed
    before = snapshot(raw)
    assert sync_store.complete(job, token, {"from": "worker"}).kind == "absorbed"
    assert snapshot(raw) == before


def test_an_id_collision_never_overwrites_a_job(target: Target, clock: ManualClock) -> None:
    """Input is immutable (SPEC). Two clients whose ids collide (same millisecond, same random
    bytes: ``Store(randbytes=...)`` is injectable for deterministic runs) must not let the
    second submit replace the first job's record."""
    raw = target.raw()
    same = lambda n: b"\x01" * n  # noqa: E731
    a = SyncStore(target.backend(), clock=clock, randbytes=same)
    b = SyncStore(target.backend(), clock=clock, randbytes=same)
    first = a.submit(JobSpec(type="one", input={"mine": 1}))
    with contextlib.suppress(Rejected, BadInput):
        b.submit(JobSpec(type="two", input={"theirs": 2}))
    view = a.get_job(first.id)
    assert (view.type, view.input) == ("one", {"mine": 1})
    assert [e["type"] for e in stream(raw) if e["id"] == first.id] == ["job.submitted"]


def test_a_submit_refused_for_an_id_collision_writes_no_idempotency_key(
    target: Target, clock: ManualClock
) -> None:
    """A refused submit writes nothing, not even its idempotency key: the key must not point
    at somebody else's job."""
    raw = target.raw()
    same = lambda n: b"\x02" * n  # noqa: E731
    a = SyncStore(target.backend(), clock=clock, randbytes=same)
    b = SyncStore(target.backend(), clock=clock, randbytes=same)
    a.submit(JobSpec(type="one"))
    before = snapshot(raw)
    with pytest.raises(Rejected, match="already exists"):
        b.submit(JobSpec(type="two", idempotency_key="k-1"))
    assert snapshot(raw) == before


def test_a_later_success_keeps_the_earlier_attempts_result_apart(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """Attempt 1 succeeded (then validation failed), a retry from the start ran attempt 2,
    which succeeded with another result: the job's result is attempt 2's, and attempt 1's
    moved to its own field; the view gives each attempt its own."""
    d = Driver(sync_store, clock)
    job = d.submit(job_spec(has_validator=True))
    d.report(job, d.claim(job), "complete", "validating", result={"run": 1})
    d.trigger(job, "validation_exhausted", "validation_failed")
    d.trigger(job, "retry_from_start", "queued")
    d.report(job, d.claim(job, worker="w2"), "complete", "validating", result={"run": 2})
    view = sync_store.get_job(job)
    assert view.result == {"run": 2}
    assert [(a.n, a.outcome, a.result) for a in view.attempt_records] == [
        (1, "succeeded", {"run": 1}), (2, "succeeded", {"run": 2})]
    stored = {k.decode(): v.decode() for k, v in target.raw().hgetall(f"jv:{{{Q}}}:job:{job}").items()}
    assert (json.loads(stored["ar:1"]), "ar:2" in stored) == ({"run": 1}, False)


def test_each_attempt_keeps_its_own_record_and_only_what_it_has(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """Attempt 1 failed (its error, no result), attempt 2 completed with its result: the view
    joins each attempt's start and end; only what an attempt has is stored, so each stored
    value of a small job stays small enough for Redis's compact hash encoding (64 bytes)."""
    d = Driver(sync_store, clock)
    job = d.submit(job_spec())
    d.report(job, d.claim(job), "fail", "scheduled", error="boom")
    d.wake()
    d.report(job, d.claim(job, worker="w2"), "complete", "completed", result={"ok": True})
    first, second = sync_store.get_job(job).attempt_records
    assert (first.n, first.worker, first.outcome, first.by, first.result, first.error) == (
        1, "w1", "failed", "worker", None, "boom")
    assert (second.n, second.worker, second.outcome, second.by, second.result, second.error) == (
        2, "w2", "succeeded", "worker", {"ok": True}, None)
    stored = {k.decode(): v.decode() for k, v in target.raw().hgetall(f"jv:{{{Q}}}:job:{job}").items()}
    assert json.loads(stored["result"]) == {"ok": True}  # the job's result is its successful attempt's
    assert "ar:1" not in stored
    assert "ar:2" not in stored
    assert "by" not in stored["atx:2"]
    assert "result" not in stored["atx:2"]
    assert max(len(v) for v in stored.values()) <= 64, {k: len(v) for k, v in stored.items() if len(v) > 64}
