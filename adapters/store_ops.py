"""The store's op API: :class:`Store`, every guarded transition and every read.

:class:`Store` is written once, as ``async`` methods over an *executor*
(:mod:`adapters.store_core`): the daemon's :class:`~adapters.store_actor.StoreActor`,
or a :class:`~adapters.store_core.DirectExecutor` for the embedded store and the
synchronous client (:mod:`adapters.store_sync`), so there is one implementation of
each operation, not two. Its methods are grouped by concern:

* :class:`~adapters.store_jobs.JobOps`: submit, workers' fenced reports, operator and
  watchdog triggers, validation checks;
* :class:`~adapters.store_upkeep.UpkeepOps`: the registry of daemons, batches, webhook
  deliveries, filing and retention;
* :class:`~adapters.store_reads.ReadOps`: stored records as views
  (:mod:`adapters.store_views`), event streams and counts;
* :class:`~adapters.store_schedules.ScheduleOps` (over the job ops, whose submit op its job
  templates are): schedules and the daemons' ticks.

Payload hygiene: results, errors, phase results and service ids pass through the
store's :class:`~adapters.sanitize.Sanitizer` before they are sent (so attempt
records, built from them in Lua, are sanitized too); job input never does, and input
over ``max_input_bytes`` is refused.

The protocol is typed: each method sends ops of :mod:`adapters.ops` and returns the
replies of :mod:`adapters.replies` its op can answer (for example ``report`` answers
:data:`~adapters.replies.Fenced`: moved, absorbed, blocked, invalid, stale or not_found),
or the items a list answer carries. Only refusals the caller must fix raise
(:class:`~adapters.errors.Rejected`, :class:`~adapters.errors.NotFound`).
"""

from __future__ import annotations

from .store_reads import ReadOps
from .store_schedules import ScheduleOps
from .store_upkeep import UpkeepOps

__all__ = ["Store"]


class Store(ScheduleOps, UpkeepOps, ReadOps):
    """jobvisor's store API over an executor (see the module docstring)."""
