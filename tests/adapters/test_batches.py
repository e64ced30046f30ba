"""Batches end exactly once: the duplicate-finalize incident of SPEC.md, reproduced and closed.

The incident: ``publish_assessment_completed`` fired 3-4 times for one batch, because an
every-5-completions trigger, a threshold trigger and a stuck-batch sweep all called an
unguarded finalize, and concurrent sweeps took no lock. Here every one of those triggers
calls the one guarded ``finalize`` and only the first that finds the batch ready moves it.

Store tests run on the real redis-server and the embedded store side by side (the
``target`` fixture); the last test races three in-process daemons on the real Redis.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from jobvisor import App, Client
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import BadInput, NotFound, Rejected
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.store import Store, SyncStore
from tests.harness import running_daemon
from tests.store_fixtures import K, ManualClock, Target, delivery_ids, diff_keys, snapshot, stream

Q = "default"
HOOK = "http://hooks.example/batches"
TERMINAL_EVENTS = ("batch.completed", "batch.failed")


def member(batch: str, queue: str = Q, **kw: Any) -> JobSpec:
    return JobSpec(type="member", queue=queue, batch=batch, max_retries=0, **kw)


def batch_events(raw: Any, batch: str, queue: str = Q) -> list[dict[str, str]]:
    return [e for e in stream(raw, queue) if e["id"] == batch]


def batch_rows(raw: Any, batch: str, queue: str = Q) -> set[str]:
    return {d for d in delivery_ids(raw, queue) if d.startswith(batch + "~")}


def body(raw: Any, delivery: str, queue: str = Q) -> dict[str, Any]:
    snap: str = raw.hget(f"jv:{{{queue}}}:delivery:{delivery}", "snapshot").decode()
    return json.loads(snap)  # type: ignore[no-any-return]


# -- the incident ----------------------------------------------------------------------------------


def test_the_incident_one_batch_completed_at_the_eighth_of_ten(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """10 members, threshold 80 %, progress every 5, and after every completion the
    incident's other triggers fire too (the every-K trigger and the threshold trigger call
    finalize, two sweeps run): exactly one ``batch.completed``, when the 8th completes;
    progress at 5 and 10; the 9th and 10th completions move counters only."""
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=10, threshold=80, progress_every=5, stuck_after=600,
                                          webhook_url=HOOK)).id
    sync_store.submit_many([member(b) for _ in range(10)])
    claimed = sync_store.claim(Q, "w", n=10, lease=600)
    assert len(claimed) == 10
    for i, c in enumerate(claimed, start=1):
        clock.advance(1)
        bkey_before = snapshot(raw)[K.batch(b)][1]
        assert sync_store.complete(c.id, c.token, {"i": i}).to == "completed"
        view = sync_store.get_batch(b)
        assert (view.completed, view.state) == (i, "running" if i < 8 else "completed_partial")  # all 10 in
        if i > 8:  # late: the counter, nothing else of the batch
            changed = {f for f, v in snapshot(raw)[K.batch(b)][1].items() if bkey_before.get(f) != v}
            assert changed == {"completed"}
        before = snapshot(raw)
        others = [sync_store.finalize_batch(b), sync_store.finalize_batch(b),
                  sync_store.sweep_batches(Q, ready_from=0), sync_store.sweep_batches(Q, ready_from=0)]
        assert snapshot(raw) == before, diff_keys(before, snapshot(raw))
        assert [r.kind for r in others] == ["blocked" if i < 8 else "absorbed"] * 2 + ["swept"] * 2
        assert [r.n for r in others[2:]] == [0, 0]
    events = [(e["type"], e.get("completed")) for e in batch_events(raw, b)]
    assert events == [("batch.created", None), ("batch.close", "0"), ("batch.progress", "5"), ("batch.finalize", "8"),
                      ("batch.completed", "8"), ("batch.progress", "10")]
    assert batch_rows(raw, b) == {f"{b}~batch.progress~5", f"{b}~batch.completed~0", f"{b}~batch.progress~10"}
    done = body(raw, f"{b}~batch.completed~0")
    assert (done["state"], done["completed"], done["total"], done["failed"]) == ("completed_partial", 8, 10, 0)
    assert body(raw, f"{b}~batch.progress~10")["completed"] == 10
    view = sync_store.get_batch(b)
    assert (view.state, view.completed, view.finished_at) == ("completed_partial", 10, clock() - 2)


def test_progress_counts_completions_not_failures(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=5, threshold=40, progress_every=2, notify=True)).id
    ids = [r.id for r in sync_store.submit_many([member(b) for _ in range(5)])]
    claimed = {c.id: c for c in sync_store.claim(Q, "w", n=5)}
    sync_store.fail(ids[0], claimed[ids[0]].token, "no")
    sync_store.cancel(ids[1])
    # its 5 expected members are in: closed; then 2 finished, 0 completed
    assert [e["type"] for e in batch_events(raw, b)] == ["batch.created", "batch.close"]
    sync_store.complete(ids[2], claimed[ids[2]].token)
    sync_store.complete(ids[3], claimed[ids[3]].token)  # 2 completions of 5 = 40 %
    assert [(e["type"], e.get("completed")) for e in batch_events(raw, b)] == [
        ("batch.created", None), ("batch.close", "0"), ("batch.progress", "2"), ("batch.finalize", "2"),
        ("batch.completed", "2")]
    view = sync_store.get_batch(b)
    assert (view.state, view.completed, view.failed, view.cancelled) == ("completed_partial", 2, 1, 1)


def test_every_member_terminal_under_the_threshold_completes(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """SPEC: ``completed`` is "all members terminal"; ``failed`` is only for a stuck batch."""
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=3, threshold=100, notify=True)).id
    ids = [r.id for r in sync_store.submit_many([member(b) for _ in range(3)])]
    claimed = {c.id: c for c in sync_store.claim(Q, "w", n=3)}
    sync_store.complete(ids[0], claimed[ids[0]].token)
    sync_store.fail(ids[1], claimed[ids[1]].token, "no")
    assert sync_store.get_batch(b).state == "running"  # its 3 expected members are in
    sync_store.cancel(ids[2])
    view = sync_store.get_batch(b)
    assert (view.state, view.reason, view.completed, view.failed, view.cancelled) == ("completed", None, 1, 1, 1)
    assert batch_rows(raw, b) == {f"{b}~batch.completed~0"}


# -- stuck ---------------------------------------------------------------------------------------------


def test_stuck_over_the_threshold_is_completed_partial(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    # no expected total, never closed: its size is unknown, so only the stuck sweep can end it
    b = sync_store.create_batch(BatchSpec(threshold=50, stuck_after=30, webhook_url=HOOK)).id
    ids = [r.id for r in sync_store.submit_many([member(b) for _ in range(4)])]
    for c in sync_store.claim(Q, "w", n=2):
        sync_store.complete(c.id, c.token)
    clock.advance(29.999)
    assert (sync_store.sweep_batches(Q).n, sync_store.get_batch(b).state) == (0, "open")
    clock.advance(0.001)
    r = sync_store.sweep_batches(Q)
    assert (r.n, r.batches[0].id, r.batches[0].to) == (1, b, "completed_partial")
    assert [e["type"] for e in batch_events(raw, b)][-2:] == ["batch.finalize", "batch.completed"]
    assert batch_rows(raw, b) == {f"{b}~batch.completed~0"}
    assert body(raw, f"{b}~batch.completed~0")["reason"] is None
    before = snapshot(raw)
    assert sync_store.sweep_batches(Q, ready_from=0).n == 0
    assert sync_store.finalize_batch(b, stuck=True).kind == "absorbed"
    assert snapshot(raw) == before
    assert ids


def test_stuck_under_the_threshold_is_failed_stuck_and_late_members_count_only(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=4, threshold=50, stuck_after=30, webhook_url=HOOK)).id
    sync_store.submit_many([member(b) for _ in range(4)])
    claimed = sync_store.claim(Q, "w", n=4, lease=600)
    sync_store.complete(claimed[0].id, claimed[0].token)  # 1 of 4: under 50 %
    clock.advance(30)
    r = sync_store.sweep_batches(Q)
    assert (r.n, r.batches[0].to) == (1, "failed")
    view = sync_store.get_batch(b)
    assert (view.state, view.reason, view.completed) == ("failed", "stuck", 1)
    failed = body(raw, f"{b}~batch.failed~0")
    assert (failed["state"], failed["reason"], failed["completed"], failed["total"]) == ("failed", "stuck", 1, 4)
    for c in claimed[1:]:
        sync_store.complete(c.id, c.token)
    view = sync_store.get_batch(b)
    assert (view.state, view.reason, view.completed) == ("failed", "stuck", 4)
    assert [e["type"] for e in batch_events(raw, b)] == ["batch.created", "batch.close", "batch.finalize",
                                                         "batch.failed"]
    assert batch_rows(raw, b) == {f"{b}~batch.failed~0"}


# -- empty batches ----------------------------------------------------------------------------------


def test_a_closed_batch_with_no_members_finalizes_at_once_and_once(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(stuck_after=5, threshold=80, webhook_url=HOOK)).id
    r = sync_store.close_batch(b)
    assert (r.kind, r.from_, r.to) == ("moved", "open", "completed")
    assert [e["type"] for e in batch_events(raw, b)] == [
        "batch.created", "batch.close", "batch.finalize", "batch.completed"]
    assert batch_rows(raw, b) == {f"{b}~batch.completed~0"}
    assert (body(raw, f"{b}~batch.completed~0")["total"], raw.zscore(K.batches, b)) == (0, None)
    clock.advance(60)
    before = snapshot(raw)
    again = [sync_store.close_batch(b), sync_store.finalize_batch(b), sync_store.finalize_batch(b, stuck=True),
             sync_store.cancel_batch(b), sync_store.sweep_batches(Q, ready_from=0)]
    assert [x.kind for x in again] == ["absorbed"] * 4 + ["swept"]
    assert snapshot(raw) == before


def test_a_batch_expecting_no_members_is_completed_when_created(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    r = sync_store.create_batch(BatchSpec(expected=0, notify=True))
    assert (r.kind, r.state) == ("created", "completed")
    assert [e["type"] for e in batch_events(raw, r.id)] == [
        "batch.created", "batch.close", "batch.finalize", "batch.completed"]
    assert batch_rows(raw, r.id) == {f"{r.id}~batch.completed~0"}


# -- members added late --------------------------------------------------------------------------------


def test_adding_finished_jobs_finalizes_once_after_all_are_members(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """The first finished job alone would reach the threshold; the others still join, and the
    one finalize comes after the last of them (never a member added to a finalized batch)."""
    raw = target.raw()
    done = [r.id for r in sync_store.submit_many([JobSpec(type="m") for _ in range(2)])]
    for c in sync_store.claim(Q, "w", n=2):
        sync_store.complete(c.id, c.token)
    waiting = sync_store.submit(JobSpec(type="m")).id
    b = sync_store.create_batch(BatchSpec(expected=3, threshold=30, progress_every=1, notify=True)).id
    r = sync_store.add_to_batch(b, [done[0], waiting, done[1], done[0]])
    assert (r.kind, r.added, r.state) == ("added", 3, "completed_partial")
    view = sync_store.get_batch(b)
    assert (view.members, view.completed) == (3, 2)
    assert {sync_store.get_job(j).batch for j in (*done, waiting)} == {b}
    assert [(e["type"], e.get("completed")) for e in batch_events(raw, b)] == [
        ("batch.created", None), ("batch.members_added", None), ("batch.progress", "1"),
        ("batch.progress", "2"), ("batch.close", "2"), ("batch.finalize", "2"), ("batch.completed", "2")]


def test_closing_fixes_the_size_below_the_expected_total(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    """Closing says "no more members": the members so far are the whole batch."""
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=5, notify=True)).id
    sync_store.submit_many([member(b), member(b)])
    for c in sync_store.claim(Q, "w", n=2):
        sync_store.complete(c.id, c.token)
    assert sync_store.get_batch(b).state == "open"  # 2 of the 5 expected
    r = sync_store.close_batch(b)
    assert (r.from_, r.to) == ("open", "completed")
    assert body(raw, f"{b}~batch.completed~0")["total"] == 2


def test_a_member_submitted_is_activity_for_the_stuck_timer(
    target: Target, sync_store: SyncStore, clock: ManualClock
) -> None:
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(stuck_after=30)).id
    assert raw.zscore(K.batches, b) == int(clock() * 1000) + 30_000
    clock.advance(20)
    sync_store.submit(member(b))
    assert raw.zscore(K.batches, b) == int(clock() * 1000) + 30_000
    clock.advance(29)
    assert (sync_store.sweep_batches(Q).n, sync_store.get_batch(b).state) == (0, "open")
    clock.advance(1)
    assert sync_store.sweep_batches(Q).batches[0].to == "failed"


# -- bad input: a clear error, nothing written ---------------------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"threshold": 0}, "threshold"), ({"threshold": 101}, "threshold"), ({"threshold": -5}, "threshold"),
    ({"progress_every": 0}, "progress_every"), ({"progress_every": -1}, "progress_every"),
    ({"expected": -1}, "expected"), ({"stuck_after": 0}, "stuck_after"),
    ({"webhook_url": "ftp://x"}, "webhook_url"), ({"threshold": "high"}, "threshold"),
    ({"colour": "red"}, "colour"),
])
def test_bad_batch_options_name_the_field_and_write_nothing(
    target: Target, options: dict[str, Any], field: str
) -> None:
    raw = target.raw()
    with Client(target.url, memory=target.memory) as client:
        before = snapshot(raw)
        with pytest.raises(BadInput) as caught:
            client.create_batch(**options)
        assert snapshot(raw) == before
    message = str(caught.value)
    assert field in message, message
    assert "\n" not in message, message


def test_an_unknown_or_malformed_batch_id_is_refused_and_nothing_written(
    target: Target, sync_store: SyncStore
) -> None:
    raw = target.raw()
    job = sync_store.submit(JobSpec(type="m")).id
    unknown = "default.01JXXXXXXXXXXXXXXXXXXXXXXX"
    before = snapshot(raw)
    calls: list[Callable[[], Any]] = [
        lambda: sync_store.add_to_batch(unknown, [job]), lambda: sync_store.close_batch(unknown),
        lambda: sync_store.finalize_batch(unknown), lambda: sync_store.cancel_batch(unknown),
        lambda: sync_store.get_batch(unknown), lambda: sync_store.submit(member(unknown)),
    ]
    for call in calls:
        with pytest.raises(NotFound, match=f"^batch {unknown} not found$"):
            call()
    for call in [lambda: sync_store.close_batch("nodot"), lambda: sync_store.add_to_batch("nodot", [job]),
                 lambda: sync_store.submit(member("nodot"))]:
        with pytest.raises(BadInput, match="nodot"):
            call()
    assert snapshot(raw) == before


@pytest.mark.parametrize("end", ["completed", "completed_partial", "failed", "cancelled"])
def test_adding_to_a_finalized_batch_is_refused_and_nothing_written(
    target: Target, sync_store: SyncStore, clock: ManualClock, end: str
) -> None:
    raw = target.raw()
    threshold = 100 if end == "completed" else 50
    b = sync_store.create_batch(BatchSpec(expected=2, threshold=threshold, stuck_after=10, notify=True)).id
    sync_store.submit_many([member(b), member(b)])
    claimed = sync_store.claim(Q, "w", n=2, lease=600)
    if end == "completed":
        for c in claimed:
            sync_store.complete(c.id, c.token)
    elif end == "completed_partial":
        sync_store.complete(claimed[0].id, claimed[0].token)
    elif end == "failed":
        clock.advance(10)
        sync_store.sweep_batches(Q)
    else:
        sync_store.cancel_batch(b)
    assert sync_store.get_batch(b).state == end
    loose = sync_store.submit(JobSpec(type="m")).id
    before = snapshot(raw)
    with pytest.raises(Rejected, match=f"^batch {b} is {end}; no more members can be added$"):
        sync_store.add_to_batch(b, [loose])
    with pytest.raises(Rejected, match=f"^batch {b} is {end}"):
        sync_store.submit(member(b))
    assert snapshot(raw) == before


def test_more_members_than_expected_are_refused_and_nothing_written(
    target: Target, sync_store: SyncStore
) -> None:
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec(expected=2)).id
    first = sync_store.submit(member(b)).id
    loose = [sync_store.submit(JobSpec(type="m")).id for _ in range(2)]
    before = snapshot(raw)
    with pytest.raises(Rejected, match=f"^batch {b} expects 2 members and has 1"):
        sync_store.add_to_batch(b, loose)
    assert snapshot(raw) == before
    assert sync_store.add_to_batch(b, [first, loose[0]]).added == 1  # a member again is not new
    with pytest.raises(Rejected, match="expects 2 members and has 2"):
        sync_store.submit(member(b))
    assert sync_store.get_batch(b).members == 2


def test_adding_more_than_a_thousand_jobs_in_one_call_is_refused_and_nothing_written(
    target: Target, sync_store: SyncStore
) -> None:
    """One add is one atomic script; an unbounded one would hold Redis for everyone."""
    raw = target.raw()
    b = sync_store.create_batch(BatchSpec()).id
    jobs = [r.id for r in sync_store.submit_many([JobSpec(type="m") for _ in range(1001)])]
    before = snapshot(raw)
    with pytest.raises(BadInput, match="^job_ids: 1001 jobs in one add; at most 1000 per call"):
        sync_store.add_to_batch(b, jobs)
    assert snapshot(raw) == before
    assert sync_store.add_to_batch(b, jobs[:1000]).added == 1000


# -- every trigger at once ---------------------------------------------------------------------------------

ROUNDS = 25
MEMBERS = 50


async def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    async with trio.open_nursery() as nursery:
        for i in range(len(calls)):
            nursery.start_soon(one, i)
    return results


def check_once(raw: Any, b: str, queue: str, every: int, completed: int = MEMBERS) -> Counter[str]:
    """Exactly one finalize, one terminal event and one terminal outbox row; progress once per K."""
    events = batch_events(raw, b, queue)
    kinds = Counter(e["type"] for e in events)
    assert kinds["batch.finalize"] == 1, kinds
    assert sum(kinds[t] for t in TERMINAL_EVENTS) == 1, kinds
    rows = batch_rows(raw, b, queue)
    assert len([r for r in rows if r.split("~")[1] in TERMINAL_EVENTS]) == 1, rows
    progress = sorted(int(e["completed"]) for e in events if e["type"] == "batch.progress")
    assert progress == list(range(every, completed + 1, every)), progress
    return kinds


async def test_fifty_completions_race_sweeps_and_finalizes_on_one_batch(target: Target, trio_store: Store) -> None:
    """Through one store actor (which merges concurrent callers into one script call, in
    varying orders): 50 member completions, 10 monitor sweeps (stuck and ready), and 10
    explicit finalizes, all started at once, round after round."""
    raw, q, rng = target.raw(), "race-batches", random.Random(7)
    for round_no in range(ROUNDS):
        threshold = rng.choice([50, 80, 100])
        stuck_after = rng.choice([None, 0.001])
        b = (await trio_store.create_batch(BatchSpec(queue=q, expected=MEMBERS, threshold=threshold,
                                                     progress_every=5, stuck_after=stuck_after,
                                                     webhook_url=HOOK))).id
        await trio_store.submit_many([member(b, q) for _ in range(MEMBERS)])
        claimed = await trio_store.claim(q, "w", n=MEMBERS, lease=600)
        assert len(claimed) == MEMBERS
        calls: list[Callable[[], Any]] = [
            (lambda c=c: trio_store.complete(c.id, c.token)) for c in claimed]
        calls += [lambda: trio_store.sweep_batches(q, ready_from=0)] * 10
        calls += [lambda: trio_store.finalize_batch(b)] * 5 + [lambda: trio_store.finalize_batch(b, stuck=True)] * 5
        rng.shuffle(calls)
        replies = await _race(calls)
        assert all(r.kind != "error" for r in replies)
        check_once(raw, b, q, 5)
        view = await trio_store.get_batch(b)
        assert view.completed == MEMBERS, round_no
        assert view.state in ("completed", "completed_partial", "failed"), view
        assert (view.reason == "stuck") is (view.state == "failed")


async def test_three_daemons_monitors_and_fifty_completions_finalize_once(redis_url: str) -> None:
    """Three daemons on one real Redis, their batch monitors sweeping every millisecond, their
    workers completing 50 members of one batch at once (handlers held at a gate until all 50
    run), and five explicit finalizes: exactly one finalize per batch, round after round."""
    q, rounds = "race", 20

    class Gate:
        def __init__(self) -> None:
            self.open = trio.Event()
            self.all_running = trio.Event()
            self.running = 0

    gate = Gate()
    app = App()

    @app.handler("member", queue=q, timeout=60, max_retries=0)
    async def held(ctx: Any) -> int:
        mine = gate
        mine.running += 1
        if mine.running == MEMBERS:
            mine.all_running.set()
        await mine.open.wait()
        return 1

    class Completions:
        """Observes the three daemons' stores: which jobs completed, and a wait for a set of them."""

        def __init__(self) -> None:
            self.ids: set[str] = set()
            self.waiting: tuple[set[str], trio.Event] | None = None

        def __call__(self, replies: Any) -> None:
            self.ids.update(r.id for r in replies if r.kind == "moved" and r.to == "completed")
            if self.waiting is not None and self.waiting[0] <= self.ids:
                self.waiting[1].set()

        async def wait_for(self, ids: list[str]) -> None:
            self.waiting = (set(ids), trio.Event())
            self([])
            await self.waiting[1].wait()

    settings = {"redis": redis_url, "concurrency": 20, "batch_interval": 0.001, "idle_poll": 0.05}
    completions = Completions()
    rng = random.Random(11)
    outcomes: Counter[str] = Counter()
    async with (
        running_daemon(app, worker_id="a", **settings) as (a, _),
        running_daemon(app, worker_id="b", **settings) as (b_daemon, _),
        running_daemon(app, worker_id="c", **settings) as (c, _),
    ):
        stores = [a.store, b_daemon.store, c.store]
        for store in stores:
            store.observers.append(completions)
        raw = redis.Redis.from_url(redis_url)
        try:
            for round_no in range(rounds):
                gate = Gate()
                stuck_after = rng.choice([None, None, 0.02, 0.05])
                batch = (await a.store.create_batch(BatchSpec(
                    queue=q, expected=MEMBERS, threshold=rng.choice([60, 80, 100]), progress_every=5,
                    stuck_after=stuck_after, webhook_url=HOOK))).id
                try:
                    ids = [r.id for r in await b_daemon.store.submit_many(
                        [JobSpec(type="member", queue=q, batch=batch, max_retries=0, timeout=60)
                         for _ in range(MEMBERS)])]
                except Rejected:  # a monitor found it stuck before its members came: one outcome
                    view = await c.store.get_batch(batch)
                    assert (view.state, view.reason, view.members) == ("failed", "stuck", 0)
                    check_once(raw, batch, q, 5, completed=0)
                    outcomes["failed before members"] += 1
                    continue
                with trio.fail_after(30):
                    await gate.all_running.wait()
                    finalizes = [lambda s=s: s.finalize_batch(batch) for s in stores] * 2
                    async with trio.open_nursery() as nursery:
                        gate.open.set()
                        nursery.start_soon(_race, finalizes[:5])
                    await completions.wait_for(ids)
                view = await c.store.get_batch(batch)
                assert view.completed == MEMBERS, (round_no, view)
                assert view.state in ("completed", "completed_partial", "failed"), view
                kinds = check_once(raw, batch, q, 5)
                outcomes[view.state] += 1
                assert kinds["batch.failed"] == (view.state == "failed")
        finally:
            raw.close()
    assert sum(outcomes.values()) == rounds, outcomes


def test_the_readme_batch_example_runs(redis_url: str) -> None:
    """README.md's Python batch example, as written, against the test's Redis."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("### Batches")
    section = readme[start:readme.index("\n## ", start)]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    with SyncStore(open_backend(redis_url)) as store:
        store.register_types({"echo": {"queue": "default"}})  # what a daemon running examples.app publishes
    namespace: dict[str, Any] = {"Client": Client}
    exec(code.replace("redis://127.0.0.1:6379/0", redis_url), namespace)  # noqa: S102 - the README's own code
    view = namespace["view"]
    assert (view.state, view.members, view.closed, view.threshold, view.stuck_after) == (
        "running", 10, True, 80, 600.0)
