"""The claim routes by job type, on redis-server and on the embedded store alike.

A daemon claims only the types it has handlers for (``Store.claim(types=...)``):
the best queued jobs of those types, by priority then age, never a job of another
type, never more than ``n``: the head of ``queued_all`` when it serves every type with
queued jobs, else the best heads across its types' ``queued:<type>`` zsets. Jobs of the earlier versions'
single ``queued`` index are still claimed (the scheduler's ``wake`` moves them into their
types' zsets). Unserved types are reported, not failed.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import K, ManualClock, Target, index_membership

Q = "default"


def submit(store: SyncStore, clock: ManualClock, job_type: str, priority: int = 0, **spec: Any) -> str:
    clock.advance(0.001)  # one ms apart: the order of submission is the order of age
    return store.submit(JobSpec(type=job_type, priority=priority, **spec)).id


def claim_ids(store: SyncStore, types: Any, n: int = 1) -> list[str]:
    return [j.id for j in store.claim(Q, "w", n=n, lease=60, types=types)]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@pytest.mark.parametrize("unserved", [False, True], ids=["serves-every-type", "another-type-waits"])
def test_priority_then_age_is_kept_across_types(
    target: Target, sync_store: SyncStore, clock: ManualClock, unserved: bool
) -> None:
    if unserved:  # a type nobody here serves waits too: the claims merge A, B and C
        submit(sync_store, clock, "D", 9)
    plan = [("A", 0), ("B", 5), ("C", 0), ("A", 9), ("B", 0), ("C", 5), ("A", 5), ("B", 9), ("C", 9),
            ("A", 0), ("C", 0), ("B", 5)]
    ids = [submit(sync_store, clock, t, p) for t, p in plan]
    # expected by hand: priority 9 (oldest first), then 5, then 0
    expected = [ids[i] for i in (3, 7, 8, 1, 5, 6, 11, 0, 2, 4, 9, 10)]
    got: list[str] = []
    for n in (1, 2, 4, 5):
        batch = claim_ids(sync_store, ["A", "B", "C"], n)
        assert len(batch) == n
        got += batch
    assert got == expected
    assert claim_ids(sync_store, ["A", "B", "C"], 10) == []


def test_n_is_respected_whatever_each_type_holds(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    for t in ("A", "B", "C", "D"):
        for _ in range(5):
            submit(sync_store, clock, t)
    assert len(claim_ids(sync_store, ["A", "B", "C", "D"], 3)) == 3
    assert len(claim_ids(sync_store, ["A", "B"], 7)) == 7  # 10 of A and B, less the 3 taken
    assert sync_store.queue_counts(Q)["queued"] == 20 - 10
    assert len(claim_ids(sync_store, None, 100)) == 10  # no types named: any type
    assert sync_store.queue_counts(Q)["active"] == 20


def test_types_not_served_are_never_claimed(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    a = [submit(sync_store, clock, "A") for _ in range(3)]
    b = [submit(sync_store, clock, "B", 9, max_retries=0) for _ in range(4)]  # better priority
    assert sorted(claim_ids(sync_store, ["A", "Z"], 10)) == sorted(a)
    assert claim_ids(sync_store, ["A"], 10) == []
    assert claim_ids(sync_store, [], 10) == []
    for job in b:
        view = sync_store.get_job(job)
        assert (view.state, view.attempts, view.retry_count) == ("queued", 0, 0)
        assert index_membership(target.raw(), job) == ["queued"]
    assert sync_store.queued_by_type(Q) == ({"B": 4}, 0)
    assert claim_ids(sync_store, ["B"], 10) == b
    assert sync_store.queued_by_type(Q) == ({}, 0)


def test_a_new_version_type_is_its_own_route(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    old = submit(sync_store, clock, "resize")
    new = submit(sync_store, clock, "resize.v2", 5)
    assert claim_ids(sync_store, ["resize"], 10) == [old]  # the old daemon never sees resize.v2
    assert claim_ids(sync_store, ["resize", "resize.v2"], 10) == [new]


def test_an_emptied_type_leaves_no_key_behind(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    job = submit(sync_store, clock, "A")
    kept = submit(sync_store, clock, "B")
    assert {_s(t) for t in raw.smembers(K.queued_types)} == {"A", "B"}
    claim_ids(sync_store, ["A"])
    assert raw.exists(K.queued_of("A")) == 0
    assert {_s(t) for t in raw.smembers(K.queued_types)} == {"B"}
    sync_store.cancel(kept)
    assert raw.exists(K.queued_of("B")) == 0
    assert raw.exists(K.queued_types) == 0
    assert index_membership(raw, job) == ["active"]


def test_release_retry_and_wake_come_back_to_their_types_index(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    job = submit(sync_store, clock, "A", max_retries=1, backoff=1.0)
    [c] = sync_store.claim(Q, "w", n=1, lease=60, types=["A"])
    sync_store.report(job, c.token, "release")
    assert index_membership(raw, job) == ["queued"]
    [c] = sync_store.claim(Q, "w", n=1, lease=60, types=["A"])
    sync_store.fail(job, c.token, {"message": "once"})
    assert index_membership(raw, job) == ["due"]
    clock.advance(5)
    assert sync_store.wake(Q).n == 1
    assert index_membership(raw, job) == ["queued"]
    assert claim_ids(sync_store, ["B"], 5) == []
    [c] = sync_store.claim(Q, "w", n=1, lease=60, types=["A"])
    sync_store.fail(job, c.token, {"message": "twice"})
    assert sync_store.get_job(job).state == "failed"
    sync_store.retry(job)
    assert index_membership(raw, job) == ["queued"]
    assert claim_ids(sync_store, ["A"]) == [job]


def _make_legacy(target: Target, job: str, job_type: str) -> None:
    """What an earlier version wrote: the job in the one untyped ``queued`` index, same score.
    (A raw write, the only one here: the current library never writes that index.)"""
    raw = target.raw()
    score = raw.zscore(K.queued_of(job_type), job)
    raw.zrem(K.queued_of(job_type), job)
    raw.zrem(K.queued_all, job)
    if raw.zcard(K.queued_of(job_type)) == 0:
        raw.srem(K.queued_types, job_type)
    raw.zadd(K.queued, {job: score})


def test_jobs_of_the_earlier_untyped_index_are_still_claimed(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    legacy_a = submit(sync_store, clock, "A", 5)
    legacy_b = submit(sync_store, clock, "B", 9)
    legacy_gone = submit(sync_store, clock, "A", 9)
    fresh_a = submit(sync_store, clock, "A", 0)
    for job, t in ((legacy_a, "A"), (legacy_b, "B"), (legacy_gone, "A")):
        _make_legacy(target, job, t)
    assert index_membership(raw, legacy_a) == ["untyped"]
    assert sync_store.queued_by_type(Q) == ({"A": 1}, 3)
    assert sync_store.queue_counts(Q)["queued"] == 4
    sync_store.cancel(legacy_gone)  # leaves the untyped index too
    assert index_membership(raw, legacy_gone) == ["finished"]
    # the scheduler's wake moves them to their types' indexes (the claim never reads that one)
    assert claim_ids(sync_store, ["A"], 10) == [fresh_a]
    assert sync_store.wake(Q).next_due is None  # all moved: nothing due
    assert raw.zcard(K.queued) == 0
    fresh_a = submit(sync_store, clock, "A", 0)
    # the daemon serving A: the legacy A first (priority 5), then the fresh one; B waits
    assert claim_ids(sync_store, ["A"], 10) == [legacy_a, fresh_a]
    assert index_membership(raw, legacy_b) == ["queued"]
    assert sync_store.queued_by_type(Q) == ({"B": 1}, 0)
    assert claim_ids(sync_store, ["B"], 10) == [legacy_b]


@pytest.mark.parametrize("first", ["wake", "claim"])
def test_jobs_queued_before_queued_all_are_claimed_in_order(
    target: Target, sync_store: SyncStore, clock: ManualClock, first: str
) -> None:
    """The version before ``queued_all`` left queued jobs in their types' zsets alone. The
    scheduler's wake (or a claim that finds ``queued_all`` empty) adds them, with their
    scores, so a daemon serving every type claims them in priority order, not after new ones."""
    raw = target.raw()
    old = [submit(sync_store, clock, t, p) for t, p in (("A", 0), ("B", 9), ("A", 5))]
    raw.zrem(K.queued_all, *old)  # what that version wrote: no queued_all entry
    assert raw.zcard(K.queued_all) == 0
    if first == "wake":
        sync_store.wake(Q)
        assert raw.zcard(K.queued_all) == 3
        new = submit(sync_store, clock, "A", 5)
        assert claim_ids(sync_store, ["A", "B"], 4) == [old[1], old[2], new, old[0]]
    else:
        assert claim_ids(sync_store, ["A", "B"], 2) == [old[1], old[2]]
        assert claim_ids(sync_store, ["A", "B"], 2) == [old[0]]
    assert raw.zcard(K.queued_all) == 0
    before = {k: raw.dump(k) for k in (K.queued_all, K.queued_types)}
    sync_store.wake(Q)  # the indexes agree: the wake's look writes nothing
    assert {k: raw.dump(k) for k in (K.queued_all, K.queued_types)} == before


def test_a_stale_entry_of_queued_all_does_not_hide_a_job_of_the_types_zsets(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """During a rolling deploy from the version before ``queued_all``, an old process claims a job
    out of its type's zset alone (its ``queued_all`` entry stays) and submits one into its type's
    zset alone: the counts agree, but the sets do not. A claim that pops the stale entry makes
    ``queued_all`` again, so the hidden job is claimed next, not starved."""
    raw = target.raw()
    taken = submit(sync_store, clock, "A", 100)  # an old daemon claims it: gone from its zset only
    hidden = submit(sync_store, clock, "B", 50)  # an old client submits it: in its zset only
    raw.zrem(K.queued_of("A"), taken)
    raw.srem(K.queued_types, "A")
    raw.hset(K.job(taken), "state", "active")
    raw.zrem(K.queued_all, hidden)
    assert raw.zcard(K.queued_all) == raw.zcard(K.queued_of("B")) == 1
    sync_store.wake(Q)  # the counts agree: the wake cannot tell
    fresh = submit(sync_store, clock, "A", 0)  # a busy queue: `queued_all` is never empty
    got = claim_ids(sync_store, ["A", "B"]) or claim_ids(sync_store, ["A", "B"])
    assert got == [hidden]  # priority 50 first, not the fresh job that came later at 0
    assert claim_ids(sync_store, ["A", "B"]) == [fresh]
    assert raw.zcard(K.queued_all) == 0


def test_a_claim_returns_the_trace_context_the_job_was_submitted_with(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = sync_store.submit(JobSpec(type="A", traceparent=parent)).id
    clock.advance(0.001)
    again = sync_store.submit(JobSpec(type="A", traceparent=parent)).id
    plain = submit(sync_store, clock, "A")
    submit(sync_store, clock, "C")
    # ["A"] while C waits: the route of some types; ["A", "C"]: the head of queued_all
    assert [(j.id, j.traceparent) for j in sync_store.claim(Q, "w", n=1, lease=60, types=["A"])] == [
        (traced, parent)]
    assert [(j.id, j.traceparent) for j in sync_store.claim(Q, "w", n=2, lease=60, types=["A", "C"])] == [
        (again, parent), (plain, "")]


def test_legacy_entries_are_moved_in_bounded_steps_by_wake(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    jobs = [submit(sync_store, clock, "B") for _ in range(300)]
    for job in jobs:
        _make_legacy(target, job, "B")
    assert claim_ids(sync_store, ["B"], 1) == []  # not moved yet
    # more to move: the scheduler comes again at once
    assert sync_store.wake(Q).next_due == int(clock() * 1000)
    assert raw.zcard(K.queued) == 300 - 256
    assert raw.zcard(K.queued_of("B")) == 256
    assert sync_store.wake(Q).next_due is None
    assert claim_ids(sync_store, ["B"], 300) == jobs  # order kept through the move


def test_unserved_types_are_reported_per_queue(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    for t, n in (("A", 2), ("B", 3), ("C", 1)):
        for _ in range(n):
            submit(sync_store, clock, t)
    assert sync_store.unserved([Q]) == {Q: {"A": 2, "B": 3, "C": 1}}  # no daemon at all
    sync_store.heartbeat("d1", {"queues": Q, "types": "A,C"}, ttl=30, start=True)
    sync_store.heartbeat("d2", {"queues": "other", "types": "B"}, ttl=30, start=True)  # not this queue
    assert sync_store.unserved([Q]) == {Q: {"B": 3}}
    sync_store.heartbeat("d3", {"queues": f"other,{Q}", "types": "B"}, ttl=30, start=True)
    assert sync_store.unserved([Q]) == {Q: {}}
    sync_store.worker_stopped("d3")
    assert sync_store.unserved([Q]) == {Q: {"B": 3}}
    clock.advance(31)  # d1's heartbeat ran out: declared lost, no longer serving
    assert {w.id for w in sync_store.declare_lost_workers()} == {"d1", "d2"}
    assert sync_store.unserved([Q]) == {Q: {"A": 2, "B": 3, "C": 1}}


def test_the_merge_reads_further_pages_of_a_type_when_it_must(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    urgent, later = [], []
    unserved = submit(sync_store, clock, "C", 9)  # so A and B are not every queued type: the merge
    for _ in range(20):  # interleaved in time; every A outranks every B
        urgent.append(submit(sync_store, clock, "A", 5))
        later.append(submit(sync_store, clock, "B", 0))
    # two types, n=25: pages of 14; A's first page runs out, so the merge reads A's next one
    assert claim_ids(sync_store, ["A", "B"], 25) == urgent + later[:5]
    assert raw.exists(K.queued_of("A")) == 0
    assert {_s(t) for t in raw.smembers(K.queued_types)} == {"B", "C"}
    assert claim_ids(sync_store, ["B", "A"], 15) == later[5:]  # exactly what was left
    assert {_s(t) for t in raw.smembers(K.queued_types)} == {"C"}
    assert [_s(m) for m in raw.zrange(K.queued_all, 0, -1)] == [unserved]
    assert claim_ids(sync_store, ["C"], 5) == [unserved]
    assert raw.exists(K.queued_types) == 0
    assert raw.exists(K.queued_all) == 0


TYPES = ("A", "B", "C", "D")


def _check_indexes(raw: Any, model: dict[str, tuple[int, int, str]], where: str) -> None:
    """The queued indexes hold exactly the model's queued jobs: each in its type's zset and in
    ``queued_all`` with the same score; ``queued_types`` names exactly the types that have any."""
    every = {_s(m): sc for m, sc in raw.zrange(K.queued_all, 0, -1, withscores=True)}
    union: dict[str, float] = {}
    for t in TYPES:
        mine = {_s(m): sc for m, sc in raw.zrange(K.queued_of(t), 0, -1, withscores=True)}
        assert set(mine) == {j for j, (_, _, jt) in model.items() if jt == t}, (where, t)
        union |= mine
    assert every == union, where
    assert {_s(t) for t in raw.smembers(K.queued_types)} == {jt for _, _, jt in model.values()}, where


@pytest.mark.parametrize("seed", [1, 2])
def test_every_claim_takes_the_best_jobs_of_its_types_and_the_indexes_agree(
    target: Target, sync_store: SyncStore, clock: ManualClock, seed: int
) -> None:
    """A seeded mix of submits (some in the same millisecond, so ties fall to the id), claims
    naming every type, some types, one, none or any (``None``), releases back to the queue and
    cancels. Each claim must return exactly the first ``n`` of the model's queued jobs of its
    types by (priority desc, enqueue time, id); after every step the indexes agree with the
    model. Both claim routes are taken, each many times."""
    rng = random.Random(seed)
    raw = target.raw()
    model: dict[str, tuple[int, int, str]] = {}  # queued job -> (-priority, enqueue ms, type)
    held: dict[str, str] = {}  # claimed job -> lease token
    routes = {"queued_all": 0, "types": 0}
    for step in range(260):
        where = f"seed {seed}, step {step}"
        roll = rng.random()
        if roll < 0.45:
            if rng.random() < 0.7:
                clock.advance(0.001)
            t, p = rng.choice(TYPES), rng.choice((0, 5, 9))
            job = sync_store.submit(JobSpec(type=t, priority=p, max_retries=3)).id
            model[job] = (-p, int(clock() * 1000), t)
        elif roll < 0.85:
            types = rng.choice([None, list(TYPES), [], *(sorted(rng.sample(TYPES, k)) for k in (1, 2, 3))])
            n = rng.randint(1, 6)
            present = {jt for _, _, jt in model.values()}
            routes["queued_all" if types is None or present <= set(types) else "types"] += 1
            served = set(TYPES if types is None else types)
            mine = sorted((pri, ms, job) for job, (pri, ms, jt) in model.items() if jt in served)
            got = sync_store.claim(Q, "w", n=n, lease=60, types=types)
            assert [c.id for c in got] == [job for _, _, job in mine[:n]], where
            for c in got:
                held[c.id] = c.token
                del model[c.id]
        elif roll < 0.93 and held:
            job = rng.choice(sorted(held))
            clock.advance(0.001)
            sync_store.report(job, held.pop(job), "release")
            view = sync_store.get_job(job)
            model[job] = (-view.priority, int(clock() * 1000), view.type)
        elif model:
            job = rng.choice(sorted(model))
            sync_store.cancel(job)
            del model[job]
        _check_indexes(raw, model, where)
    assert min(routes.values()) >= 20, routes


def test_a_type_missing_from_queued_types_is_still_never_claimed(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """Were ``queued_types`` ever to lack a type that has jobs, a daemon serving the others
    would take the head of ``queued_all``: a job of that type goes back where it was, unclaimed,
    and its type is listed again. (A raw write breaks the index on purpose.)"""
    raw = target.raw()
    mine = submit(sync_store, clock, "A", 0)
    other = submit(sync_store, clock, "B", 9)  # the head of queued_all
    raw.srem(K.queued_types, "B")
    assert claim_ids(sync_store, ["A"], 2) == [mine]
    view = sync_store.get_job(other)
    assert (view.state, view.attempts) == ("queued", 0)
    _check_indexes(raw, {other: (-9, 0, "B")}, "after the claim")
    assert claim_ids(sync_store, ["B"], 2) == [other]
