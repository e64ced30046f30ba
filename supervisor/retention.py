"""Retention: deletes finished jobs once they are older than their state's retention.

Every ``retention_interval`` (and once at start) it asks the store to purge,
queue by queue, in bounded batches of ``retention_batch`` jobs per store
call, until a batch comes back short. Each deletion is one atomic step in
the store that removes the job hash and what is only about it (its index
entries, its idempotency key when it still points at the job, its settled
webhook deliveries, its batch membership, its filing count) and appends one
``job.deleted`` event. Only filed jobs are deleted, each after the
retention of the state it was filed in, counted from its finish time
(defaults: completed 7 days, every other outcome 30 days). A delivery still
on its way is left alone: it carries its own snapshot, so the job it is
about can go.

A store outage is logged and retried at the next interval; stopping takes
effect between batches.
"""

from __future__ import annotations

import logging

import trio

from .deps import Deps
from .evaluator import refresh_filing_gauges
from .hub import every

__all__ = ["run_retention", "purge_expired"]

log = logging.getLogger("jobvisor.retention")


async def run_retention(deps: Deps, stop: trio.Event,
                        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Purge expired jobs now and then every ``retention_interval`` until ``stop`` is set."""
    task_status.started()
    await every(stop, deps.config.retention_interval, lambda: purge_expired(deps, stop), log,
                "retention deleted %d finished jobs")


async def purge_expired(deps: Deps, stop: trio.Event | None = None) -> int:
    """One pass over every queue of the daemon; returns how many jobs it deleted."""
    batch = deps.config.retention_batch
    deleted = 0
    for queue in deps.queues:
        touched = False
        while stop is None or not stop.is_set():
            now = deps.clock()
            cutoffs = {state: now - seconds for state, seconds in deps.config.retention.items()}
            reply = await deps.store.purge(queue, cutoffs, batch)
            for job in reply.jobs:
                deps.metrics.deleted.labels(queue, job.state).inc()
            deleted += reply.n
            touched = touched or reply.n > 0
            if reply.n < batch:
                break
        if touched:
            await refresh_filing_gauges(deps, queue)
    return deleted
