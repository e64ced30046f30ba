"""The batch monitor: stuck and ready batches, through the one guarded finalize.

Every daemon runs one for each queue it serves, so a batch is watched as
long as any daemon runs. A sweep is one store call per queue
(``sweep_batches``), one atomic script:

* **stuck**: batches with no member activity (a member added or finished)
  for their stuck-after time are finalized with the stuck fact:
  ``completed_partial`` when the threshold was reached, else ``failed`` with
  the reason ``stuck``;
* **ready**: a page of live batches (``batch_sweep_size`` of them, the next
  page on the next sweep) gets the ordinary finalize. Members finishing,
  ``close`` and ``add`` already finalize a batch in their own step; this
  pass is the safety net for a batch left ready by anything else, and it
  writes nothing for a batch that is not ready.

No double work, and no lock: several monitors (and every member's own
transition) may try to finalize one batch at the same moment; the finalize
is a guarded transition, so one of them moves it and the others find it
terminal (it has left the stuck-deadline set) or not ready, and write
nothing. Nothing is held across an ``await``: the monitor only reads the
reply of a call that already decided.

Between sweeps the monitor sleeps until the earliest stuck deadline the
store reported, at most ``batch_interval`` (a batch created elsewhere with
an earlier deadline is found within that interval). A store outage is
logged and the next sweep comes after the interval; it never crashes the
actor.
"""

from __future__ import annotations

import logging
import math

import trio

from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.replies import Moved

from .deps import Deps
from .hub import wait_any
from .outage import StoreOutage

__all__ = ["run_batch_monitor"]

log = logging.getLogger("jobvisor.batches")


async def run_batch_monitor(
    deps: Deps, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Sweep every served queue's batches until ``stop`` is set (see the module docstring)."""
    config = deps.config
    cursors = dict.fromkeys(deps.queues, 0)
    task_status.started()
    outage = StoreOutage("batch monitor", log)
    while not stop.is_set():
        next_due = math.inf
        try:
            for queue in deps.queues:
                reply = await deps.store.sweep_batches(
                    queue, config.batch_sweep_size, ready_from=cursors[queue]
                )
                cursors[queue] = reply.cursor or 0
                for moved in reply.batches:
                    if isinstance(moved, Moved):
                        level = logging.WARNING if moved.to == "failed" else logging.INFO
                        log.log(level, "batch %s finalized by the monitor: %s", moved.id, moved.to)
                if reply.next_due is not None:
                    next_due = min(next_due, reply.next_due / 1000)
            outage.reached()
        except StoreUnavailable as exc:
            next_due = deps.clock() + outage.failed(exc)
        await wait_any(stop, min(config.batch_interval, max(0.0, next_due - deps.clock())))
