"""The re-drive actor: performs the re-drives the job types' policies call for (README, "Re-drive").

Each job type may declare a :class:`~adapters.redrive.Redrive` policy, published with the type,
so every daemon reads the same policies (its own app's first, then what other daemons
published). The evaluator puts a job filed under a problem its type's policy covers in the
queue's ``redrive`` index (score: when it is due). This actor reads, per queue, the due entries
(one index read, never a scan of the jobs) and offers each to the store's guarded ``redrive``;
then it sleeps until the index's next due time (at most ``idle_poll``, the safety net that
notices jobs other daemons filed), on trio's clock, so a MockClock drives it in tests.

Any number of daemons run it over the same queues: of two offers of one re-drive exactly one
performs it (a new delivery of the same event id, one ``job.redriven`` event); the other is
``skipped``, having written nothing. The daemon's own deliverer is woken to send what it
re-drove. A daemon with no policy among the known types reads
only the published types, every ``evaluator_interval``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio

from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.redrive import Redrive, policies
from jobvisor.adapters.replies import Redriven

from .deps import Deps
from .hub import wait_any
from .outage import StoreOutage

__all__ = ["BATCH", "redrive_policies", "redrive_due", "run_redrive"]

log = logging.getLogger("jobvisor.redrive")

BATCH = 100
"""Due re-drives read per store call."""


async def redrive_policies(deps: Deps) -> dict[str, Redrive]:
    """Job type -> re-drive policy: the published types', this daemon's own handlers' first."""
    types: dict[str, dict[str, Any]] = await deps.store.job_types()
    types.update(deps.app.described_types())
    return policies(types)


async def redrive_due(deps: Deps, known: dict[str, Redrive], stop: trio.Event | None = None) -> tuple[int, float]:
    """Offer every due re-drive of the daemon's queues; how many this daemon performed, and
    when (epoch s) the next entry of any index falls due (``inf``: none)."""
    done, next_due = 0, math.inf
    for queue in deps.queues:
        while stop is None or not stop.is_set():
            due = await deps.store.redrives_due(queue, known, BATCH, wait=deps.config.evaluator_interval)
            for item in due.items:
                reply = await deps.store.redrive(item, known[item.type])
                if isinstance(reply, Redriven):
                    done += 1
                    deps.hub.outbox_changed()  # this daemon's deliverer sends it now
                    log.info("job %s: %s re-driven (%d of %d), delivery %s", item.id, item.kind, reply.count,
                             known[item.type].limit(item.kind), reply.delivery)
            if len(due.items) < BATCH:
                if due.next_due is not None:
                    next_due = min(next_due, due.next_due)
                break
    return done, next_due


async def run_redrive(deps: Deps, stop: trio.Event,
                      *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Perform due re-drives now and whenever the next falls due, until ``stop`` is set."""
    task_status.started()
    outage = StoreOutage("redrive", log)
    while not stop.is_set():
        poll = deps.config.evaluator_interval
        next_due = math.inf
        try:
            known = await redrive_policies(deps)
            if known:
                poll = deps.config.idle_poll
                _, next_due = await redrive_due(deps, known, stop)
            outage.reached()
        except StoreUnavailable as exc:
            next_due = deps.clock() + outage.failed(exc)
        await wait_any(stop, min(poll, max(0.0, next_due - deps.clock())))
