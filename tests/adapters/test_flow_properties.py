"""Properties of dependencies, checked with Hypothesis on the embedded store (the same Lua as
redis-server; a fresh store per example).

* No cycle is accepted: a flow of random jobs with random "waits for" links is written exactly
  when its graph has no cycle (decided here by removing jobs nothing waits on, independently
  of the code under test), and a refused flow writes nothing.
* A job never starts before its dependencies allow: over random acyclic flows with random
  policies, driven by random claims, completions, failures and cancels, every claim of a job
  finds each of its dependencies finished at least once (``fail``, ``ignore``), or one of
  them failed (``continue``); and no job is left ``waiting`` once every dependency finished.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.flows import FlowJob
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import snapshot

Q = "default"
TERMINAL = {"completed", "failed", "cancelled", "timed_out", "validation_failed"}
PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh() -> tuple[SyncStore, Any]:
    backend = open_backend("memory://flows", memory=MemoryServers())
    return SyncStore(backend), backend.client


def has_cycle(links: list[set[int]]) -> bool:
    left = {i: set(after) for i, after in enumerate(links)}
    while left:
        free = [i for i, after in left.items() if not after & left.keys()]
        if not free:
            return True
        for i in free:
            del left[i]
    return False


graphs = st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.lists(st.sets(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n))


@PROPERTIES
@given(graphs)
def test_a_flow_is_written_exactly_when_it_has_no_cycle(links: list[set[int]]) -> None:
    links = [{j for j in after if j != i} for i, after in enumerate(links)]
    store, raw = fresh()
    jobs = [FlowJob(spec=JobSpec(type="t"), after=tuple(sorted(after))) for after in links]
    before = snapshot(raw)
    if has_cycle(links):
        with pytest.raises(BadInput, match="^flow: a cycle: job "):
            store.submit_flow(jobs)
        assert snapshot(raw) == before
        return
    created = store.submit_flow(jobs)
    for i, after in enumerate(links):
        assert store.get_job(created[i].id).state == ("waiting" if after else "queued")


@st.composite
def runs(draw: Any) -> tuple[list[list[int]], list[str], list[tuple[str, int, bool]]]:
    n = draw(st.integers(min_value=2, max_value=7))
    # job i may wait only on jobs after it: acyclic by construction, in any order of submission
    links = [sorted(draw(st.sets(st.integers(i + 1, n - 1), max_size=3))) if i < n - 1 else [] for i in range(n)]
    policies = draw(st.lists(st.sampled_from(["fail", "ignore", "continue"]), min_size=n, max_size=n))
    steps = draw(st.lists(st.tuples(st.sampled_from(["claim", "finish", "cancel"]), st.integers(0, n - 1),
                                    st.booleans()), max_size=40))
    return links, policies, steps


@PROPERTIES
@given(runs())
def test_a_job_never_starts_before_its_dependencies_allow(
    run: tuple[list[list[int]], list[str], list[tuple[str, int, bool]]],
) -> None:
    links, policies, steps = run
    store, _ = fresh()
    jobs = [FlowJob(spec=JobSpec(type="t", max_retries=0, on_dependency_failure=p), after=tuple(a))
            for a, p in zip(links, policies, strict=True)]
    ids = [c.id for c in store.submit_flow(jobs)]
    index = {job: i for i, job in enumerate(ids)}
    finished: set[str] = set()
    failed: set[str] = set()
    held: dict[str, str] = {}

    def note() -> None:
        for job in ids:
            state = store.get_job(job).state
            if state in TERMINAL:
                finished.add(job)
                if state != "completed":
                    failed.add(job)

    for action, pick, ok in itertools.chain(steps, [("drain", 0, True)] * (3 * len(ids))):
        if action in ("claim", "drain"):
            for claimed in store.claim(Q, "w", n=1):
                deps = [ids[k] for k in links[index[claimed.id]]]
                assert [d for d, _, _ in claimed.dependencies] == deps
                if policies[index[claimed.id]] == "continue":
                    assert all(d in finished for d in deps) or any(d in failed for d in deps), claimed.id
                else:
                    assert all(d in finished for d in deps), claimed.id
                held[claimed.id] = claimed.token
        if action in ("finish", "drain") and held:
            job = sorted(held)[pick % len(held)]
            token = held.pop(job)
            store.complete(job, token, 1) if ok else store.fail(job, token, "boom")
        if action == "cancel":
            store.cancel(ids[pick])
            held.pop(ids[pick], None)
        note()
    for i, job in enumerate(ids):
        if store.get_job(job).state == "waiting":
            assert not all(ids[k] in finished for k in links[i]), job
