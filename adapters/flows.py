"""Flows: several new jobs submitted together, some depending on others (pure).

A flow is a list of :class:`FlowJob`: a job's spec, the positions in the list of the new
jobs it depends on (``after``), and for a flow's child the position of its parent. New jobs
can only depend on each other inside one flow (an existing job never depends on a job not
yet made), so a flow is the one place a cycle could be written: :func:`flow_order` refuses
one, naming it, before anything is sent, and gives the order in which the store writes the
jobs (every dependency before its dependents). The store's ``flow`` op checks again, in the
script that writes, that every dependency is an existing job or one written before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec import Struct

from .errors import BadInput
from .records import MAX_DEPENDENCIES, JobSpec

__all__ = ["FlowJob", "flow_order", "MAX_FLOW_JOBS"]

MAX_FLOW_JOBS = MAX_DEPENDENCIES + 1
"""The most jobs one flow may submit (a parent and its children)."""


class FlowJob(Struct, kw_only=True, frozen=True):
    """One job of a flow: its spec, the new jobs it waits for (positions in the flow) besides
    its spec's ``depends_on``, and its parent (a position) when it is a flow's child."""

    spec: JobSpec
    after: tuple[int, ...] = ()
    parent: int | None = None


def flow_order(jobs: Sequence[FlowJob]) -> list[int]:
    """The positions of ``jobs`` in an order where every job comes after the jobs it waits
    for (the given order where it allows). :class:`BadInput` when the flow is empty or too
    big, mixes queues, names a position it lacks, repeats a dependency, or has a cycle."""
    if not jobs:
        raise BadInput("flow: no jobs")
    if len(jobs) > MAX_FLOW_JOBS:
        raise BadInput(f"flow: {len(jobs)} jobs is over the limit of {MAX_FLOW_JOBS}")
    queue = jobs[0].spec.queue
    for i, job in enumerate(jobs):
        if job.spec.queue != queue:
            raise BadInput(f"flow: job {i} is in queue {job.spec.queue!r}, the flow in {queue!r}")
        if job.spec.idempotency_key is not None or job.spec.batch is not None:
            raise BadInput(f"flow: job {i} takes no idempotency_key or batch (a flow is one unit)")
        for j in (*job.after, *(() if job.parent is None else (job.parent,))):
            if not 0 <= j < len(jobs) or j == i:
                raise BadInput(f"flow: job {i} names job {j}, which the flow lacks")
        if job.parent is not None and i not in jobs[job.parent].after:
            raise BadInput(f"flow: job {i} names job {job.parent} as its parent, which does not wait for it")
        if job.after and job.spec.delay:  # it starts when its dependencies allow, not at a time
            raise BadInput(f"flow: job {i} waits for other jobs and takes no delay")
        if len(set(job.after)) != len(job.after):
            raise BadInput(f"flow: job {i} waits for a job twice")
        if len(job.after) + len(job.spec.depends_on) > MAX_DEPENDENCIES:
            raise BadInput(f"flow: job {i} has over {MAX_DEPENDENCIES} dependencies")
    order: list[int] = []
    state = [0] * len(jobs)  # 0 unseen, 1 on the current path, 2 placed
    for root in range(len(jobs)):
        if state[root]:
            continue
        path: list[int] = []
        stack: list[tuple[int, int]] = [(root, 0)]
        state[root] = 1
        path.append(root)
        while stack:
            node, k = stack[-1]
            after = jobs[node].after
            if k < len(after):
                stack[-1] = (node, k + 1)
                nxt = after[k]
                if state[nxt] == 1:
                    cycle = path[path.index(nxt):] + [nxt]
                    raise BadInput("flow: a cycle: job " + " waits for job ".join(str(c) for c in cycle))
                if state[nxt] == 0:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, 0))
            else:
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)
    return order
