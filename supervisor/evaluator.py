"""The evaluator: files every finished job as ``complete``, ``incomplete`` or ``filed``.

Every ``evaluator_interval`` (and once at start) it reads the finished jobs
not yet filed, in bounded batches (:data:`BATCH` per store call), classifies
each with the pure :func:`adapters.filing.classify`, and files the batch in
one store call. Filing is a guarded step in the store: a job is filed once
per outcome, however many daemons' evaluators race for it (the losers get
``absorbed``), with exactly one ``job.filed`` event. A completed job whose
webhook is still on its way is looked at again one interval later.

Required outputs and re-drive policies come from the handlers of this daemon's
app and from the types other daemons published, so any daemon can file any job
of its queues; a job filed under a problem its type's re-drive policy covers is
put in the queue's ``redrive`` index for the re-drive actor (``redrive.py``).

Only terminal jobs are ever filed: a job waiting ``queued`` for a type no live
daemon serves (a rolling deploy under way) is not a failure. Each pass also
refreshes the ``jobvisor_unserved_jobs`` gauges of the daemon's queues from the
registry and the per-type queued counts (one read of each, every interval).

A store outage is logged and the pass is tried again at the next interval;
stopping takes effect between batches.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from jobvisor.adapters.filing import classify
from jobvisor.adapters.replies import Filed

from .deps import Deps
from .hub import every
from .redrive import redrive_policies

__all__ = ["run_evaluator", "file_finished", "refresh_filing_gauges", "refresh_unserved_gauges"]

log = logging.getLogger("jobvisor.evaluator")

BATCH = 200
"""Jobs read and filed per store call."""


async def run_evaluator(deps: Deps, stop: trio.Event,
                        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """File finished jobs now and then every ``evaluator_interval`` until ``stop`` is set."""
    task_status.started()
    await every(stop, deps.config.evaluator_interval, lambda: file_finished(deps, stop), log,
                "filed %d finished jobs")


async def _required_outputs(deps: Deps) -> dict[str, list[str]]:
    types: dict[str, dict[str, Any]] = await deps.store.job_types()
    types.update(deps.app.described_types())
    return {t: list(d["required_outputs"]) for t, d in types.items() if d.get("required_outputs")}


async def file_finished(deps: Deps, stop: trio.Event | None = None) -> int:
    """One pass over every queue of the daemon; returns how many jobs this pass filed."""
    required = await _required_outputs(deps)
    redrive = await redrive_policies(deps)
    filed = 0
    for queue in deps.queues:
        while stop is None or not stop.is_set():
            jobs = await deps.store.unfiled(queue, BATCH, required=required)
            if not jobs:
                break
            now_ms = int(deps.clock() * 1000)
            decisions = [(job, classify(job, now_ms=now_ms)) for job in jobs]
            replies = await deps.store.file_jobs(decisions, wait=deps.config.evaluator_interval, redrive=redrive)
            filed += sum(isinstance(r, Filed) for r in replies)
            if len(jobs) < BATCH:
                break
        await refresh_filing_gauges(deps, queue)
    await refresh_unserved_gauges(deps)
    return filed


async def refresh_filing_gauges(deps: Deps, queue: str) -> None:
    """Set the filing gauges of ``queue`` from the store's counts (shared by every daemon)."""
    counts, waiting = await deps.store.filing_counts(queue)
    deps.metrics.set_filing(queue, counts, waiting)


async def refresh_unserved_gauges(deps: Deps) -> None:
    """Set the unserved gauges of the daemon's queues (jobs waiting for a type nobody live serves)."""
    deps.metrics.set_unserved(await deps.store.unserved(deps.queues))
