"""Dependencies, flows and chains in the store, on real Redis and the embedded store.

Expected states are written by hand from README's "Dependencies, flows and chains": the three
policies (fail: the dependent fails at once when a dependency ends in anything but
``completed``; ignore: a failed dependency counts as done; continue: released as soon as one
fails, or all complete), dependents released once (a retried dependency releases nobody
again), a flow's cancel cascade, the dependencies a claim shows, and bad input that writes
nothing. Two dependencies finishing at once release their dependent exactly once.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import trio

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.flows import FlowJob
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store, SyncStore
from tests.store_fixtures import K, ManualClock, Target, event_counts, snapshot, stream

pytestmark = pytest.mark.cluster

Q = "default"


def spec(**kw: Any) -> JobSpec:
    kw.setdefault("max_retries", 0)
    kw.setdefault("type", "t")
    return JobSpec(**kw)


class World:
    """A store and ways to finish a job of a given type."""

    def __init__(self, store: SyncStore) -> None:
        self.s = store

    def submit(self, **kw: Any) -> str:
        reply = self.s.submit(spec(**kw))
        assert reply.kind == "created"
        return reply.id

    def run(self, job: str, outcome: str, result: Any = None) -> None:
        """Claim ``job`` (by its type, each test's types are unique per job) and end it."""
        job_type = self.s.get_job(job).type
        [c] = self.s.claim(Q, "w", types=[job_type])
        assert c.id == job
        if outcome == "complete":
            assert self.s.complete(job, c.token, result).to == "completed"
        else:
            assert self.s.fail(job, c.token, {"message": "boom"}).to == "failed"

    def state(self, job: str) -> str:
        return self.s.get_job(job).state


@pytest.fixture
def w(sync_store: SyncStore) -> World:
    return World(sync_store)


# (policy, what happens to the three dependencies in order, the dependent's state after each)
POLICY_TABLE = [
    ("fail",     ["complete", "fail", "complete"],     ["waiting", "failed", "failed"]),
    ("fail",     ["complete", "complete", "complete"], ["waiting", "waiting", "queued"]),
    ("ignore",   ["complete", "fail", "complete"],     ["waiting", "waiting", "queued"]),
    ("ignore",   ["fail", "fail", "fail"],             ["waiting", "waiting", "queued"]),
    ("continue", ["complete", "fail", "complete"],     ["waiting", "queued", "queued"]),
    ("continue", ["complete", "complete", "complete"], ["waiting", "waiting", "queued"]),
    ("continue", ["fail", "complete", "complete"],     ["queued", "queued", "queued"]),
]


@pytest.mark.parametrize(("policy", "outcomes", "states"), POLICY_TABLE,
                         ids=[f"{p}-{'-'.join(o)}" for p, o, _ in POLICY_TABLE])
def test_each_policy_moves_the_dependent_as_written(
    target: Target, w: World, policy: str, outcomes: list[str], states: list[str]
) -> None:
    deps = [w.submit(type=f"d{n}") for n in range(3)]
    parent = w.submit(type="p", depends_on=tuple(deps), on_dependency_failure=policy)
    assert w.state(parent) == "waiting"
    for dep, outcome, expected in zip(deps, outcomes, states, strict=True):
        w.run(dep, outcome)
        assert w.state(parent) == expected
    view = w.s.get_job(parent)
    assert view.reason == ("dependency_failed" if states[-1] == "failed" else None)
    counts = event_counts(target.raw())
    released = [(parent, "job.deps_done"), (parent, "job.failed")]
    assert sum(counts[k] for k in released) == 1  # released once, whatever came after


def test_a_failed_dependency_fails_its_dependent_in_its_own_step_naming_it(target: Target, w: World) -> None:
    a, b = w.submit(type="a"), w.submit(type="b")
    parent = w.submit(type="p", depends_on=(a, b), notify=True, webhook_url="http://hooks.example/x")
    w.run(a, "fail")
    events = [e for e in stream(target.raw()) if e["id"] in (a, parent)][-2:]
    assert [(e["type"], e["id"]) for e in events] == [("job.failed", a), ("job.failed", parent)]
    assert (events[1]["from"], events[1]["to"], events[1]["reason"], events[1]["cause"]) == (
        "waiting", "failed", "dependency_failed", a)
    assert [d.event for d in w.s.job_deliveries(parent, 0)] == ["job.failed"]
    w.run(b, "complete")  # later: nothing more for the failed parent
    assert event_counts(target.raw())[(parent, "job.failed")] == 1


@pytest.mark.parametrize(("policy", "start"), [("fail", "failed"), ("ignore", "queued"), ("continue", "queued")])
def test_dependencies_already_finished_decide_the_start(w: World, policy: str, start: str) -> None:
    ok, bad = w.submit(type="a"), w.submit(type="b")
    w.run(ok, "complete")
    w.run(bad, "fail")
    job = w.submit(type="p", depends_on=(ok, bad), on_dependency_failure=policy)
    assert w.state(job) == start
    assert w.state(w.submit(type="q", depends_on=(ok,), on_dependency_failure=policy)) == "queued"


def test_a_retried_dependency_releases_nobody_again(target: Target, w: World, clock: ManualClock) -> None:
    dep = w.submit(type="a")
    ran = w.submit(type="p", depends_on=(dep,), on_dependency_failure="ignore")
    w.run(dep, "fail")
    assert w.state(ran) == "queued"
    w.run(ran, "complete", {"done": 1})
    raw = target.raw()
    assert raw.exists(K.dependents(dep)) == 0
    assert w.s.retry(dep).to == "queued"
    before = snapshot(raw)[K.job(ran)]
    w.run(dep, "complete")
    assert snapshot(raw)[K.job(ran)] == before  # the dependent ran once; the retry did not touch it
    assert event_counts(raw)[(ran, "job.deps_done")] == 1


def test_a_claim_shows_the_dependencies_in_the_order_given(w: World) -> None:
    a, b = w.submit(type="a"), w.submit(type="b")
    parent = w.submit(type="p", depends_on=(b, a), on_dependency_failure="ignore")
    w.run(a, "complete", {"pages": 3})
    w.run(b, "fail")
    [claimed] = w.s.claim(Q, "w", types=["p"])
    assert claimed.id == parent
    assert claimed.dependencies == [(b, "failed", "null"), (a, "completed", '{"pages":3}')]


def test_a_chain_runs_step_after_step_each_seeing_the_one_before(w: World) -> None:
    created = w.s.submit_flow([FlowJob(spec=spec(type="s0")), FlowJob(spec=spec(type="s1"), after=(0,)),
                               FlowJob(spec=spec(type="s2"), after=(1,))])
    ids = [c.id for c in created]
    assert [c.state for c in created] == ["queued", "waiting", "waiting"]
    for n, job in enumerate(ids):
        assert [w.state(j) for j in ids] == ["completed"] * n + ["queued"] + ["waiting"] * (2 - n)
        [c] = w.s.claim(Q, "w")
        assert c.id == job
        assert c.dependencies == ([] if n == 0 else [(ids[n - 1], "completed", str(n - 1))])
        w.s.complete(job, c.token, n)


def _flow(w: World, children: int = 5) -> list[str]:
    jobs = [FlowJob(spec=spec(type="parent"), after=tuple(range(1, children + 1))),
            *(FlowJob(spec=spec(type=f"c{n}"), parent=0) for n in range(children))]
    return [c.id for c in w.s.submit_flow(jobs)]


def test_a_parent_failed_by_a_child_leaves_its_other_children_to_run(w: World) -> None:
    parent, *children = _flow(w)
    w.run(children[0], "complete")
    w.run(children[1], "fail")
    w.s.claim(Q, "w", types=["c2"])
    assert w.state(parent) == "failed"  # policy fail: children[1] failed it
    assert w.s.cancel(parent).kind == "absorbed"
    assert [w.state(c) for c in children] == ["completed", "failed", "active", "queued", "queued"]
    assert w.s.retry(parent).to == "queued"  # a retried parent runs without waiting again


@pytest.mark.parametrize("policy", ["ignore", "continue"])
def test_the_cancel_cascade_counts(target: Target, w: World, policy: str) -> None:
    created = w.s.submit_flow(
        [FlowJob(spec=spec(type="parent", on_dependency_failure=policy), after=(1, 2, 3, 4, 5)),
         *(FlowJob(spec=spec(type=f"c{n}"), parent=0) for n in range(5))])
    parent, *children = [c.id for c in created]
    w.run(children[0], "complete")
    w.run(children[1], "complete")
    [running] = w.s.claim(Q, "w", types=["c2"])
    other = w.submit(type="x", depends_on=(children[4],))
    reply = w.s.cancel(parent)
    assert (reply.kind, reply.from_, reply.to) == ("moved", "waiting", "cancelled")
    assert [w.state(c) for c in children] == ["completed", "completed", "cancelled", "cancelled", "cancelled"]
    assert w.s.get_job(children[2]).reason == "parent_cancelled"
    counts = event_counts(target.raw())
    assert sum(n for (_, kind), n in counts.items() if kind == "job.cancelled") == 4
    assert reply.effects.count("cancel_handler") == 1  # the running child's handler is told
    assert w.s.complete(running.id, running.token, 1).kind == "absorbed"
    assert w.state(other) == "failed"  # children[4]'s own dependent, policy fail: its cancel failed it


# -- bad input: one refusal, nothing written ---------------------------------------------------


def _unchanged(target: Target, call: Any, message: str) -> None:
    before = snapshot(target.raw())
    with pytest.raises(BadInput, match=message):
        call()
    assert snapshot(target.raw()) == before


def test_an_unknown_dependency_writes_nothing(target: Target, w: World) -> None:
    known = w.submit(type="a")
    missing = f"{Q}.01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    _unchanged(target, lambda: w.s.submit(spec(depends_on=(known, missing))),
               f"^depends_on: no job {missing} in queue default$")
    _unchanged(target, lambda: w.s.submit_flow([FlowJob(spec=spec(depends_on=(missing,))),
                                                FlowJob(spec=spec(), after=(0,))]),
               f"^depends_on: no job {missing} in queue default$")
    # the unknown one on the flow's last job: the jobs before it are not written either
    _unchanged(target, lambda: w.s.submit_flow([FlowJob(spec=spec()), FlowJob(spec=spec()),
                                                FlowJob(spec=spec(depends_on=(missing,)), after=(0, 1))]),
               f"^depends_on: no job {missing} in queue default$")


def test_a_delay_on_a_job_of_a_flow_that_waits_is_refused(target: Target, w: World) -> None:
    _unchanged(target, lambda: w.s.submit_flow([FlowJob(spec=spec()), FlowJob(spec=spec(delay=30.0), after=(0,))]),
               "^flow: job 1 waits for other jobs and takes no delay$")


def test_a_cycle_in_a_flow_writes_nothing(target: Target, w: World) -> None:
    jobs = [FlowJob(spec=spec(), after=(2,)), FlowJob(spec=spec(), after=(0,)), FlowJob(spec=spec(), after=(1,))]
    _unchanged(target, lambda: w.s.submit_flow(jobs),
               "^flow: a cycle: job 0 waits for job 2 waits for job 1 waits for job 0$")


def test_a_dependency_of_another_queue_is_refused(target: Target, w: World) -> None:
    other = w.s.submit(spec(queue="elsewhere")).id
    _unchanged(target, lambda: spec(depends_on=(other,)),
               f"^depends_on: {other} is not in queue 'default' \\(dependencies share the job's queue\\)$")


# -- races ---------------------------------------------------------------------------------------


async def test_two_dependencies_finishing_at_once_release_the_parent_once(target: Target, trio_store: Store) -> None:
    for _ in range(20):
        a = (await trio_store.submit(spec(type="a"))).id
        b = (await trio_store.submit(spec(type="b"))).id
        parent = (await trio_store.submit(spec(type="p", depends_on=(a, b)))).id
        [ca] = await trio_store.claim(Q, "w1", types=["a"])
        [cb] = await trio_store.claim(Q, "w2", types=["b"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio_store.complete, a, ca.token, 1)
            nursery.start_soon(trio_store.complete, b, cb.token, 2)
        assert (await trio_store.get_job(parent)).state == "queued"
        assert event_counts(target.raw())[(parent, "job.deps_done")] == 1


def test_two_clients_finishing_both_dependencies_at_once_release_the_parent_once(redis_url: str) -> None:
    stores = [SyncStore(open_backend(redis_url)) for _ in range(2)]
    try:
        for n in range(20):
            s = stores[0]
            a, b = s.submit(spec(type="a")).id, s.submit(spec(type="b")).id
            parent = s.submit(spec(type="p", depends_on=(a, b), on_dependency_failure="continue")).id
            claimed = [s.claim(Q, "w", types=[t])[0] for t in ("a", "b")]
            barrier = threading.Barrier(2, timeout=20)
            replies: list[Any] = []

            def finish(store: SyncStore, job: str, token: str, fail: bool) -> None:
                barrier.wait()
                replies.append(store.fail(job, token, "x") if fail else store.complete(job, token, 1))

            threads = [threading.Thread(target=finish, args=(stores[i], c.id, c.token, n % 2 == i))
                       for i, c in enumerate(claimed)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert Counter(r.kind for r in replies) == {"moved": 2}
            assert stores[0].get_job(parent).state == "queued"
            assert sum("wake_workers" in r.effects for r in replies) == 1
    finally:
        for s in stores:
            s.close()
