"""The store: every guarded transition and every read, as one API.

This module gathers the store's parts under the names the rest of the code imports:

* :mod:`adapters.store_ops`: :class:`Store`, the ``async`` op API over an executor
  (its groups: :mod:`~adapters.store_jobs`, :mod:`~adapters.store_upkeep`,
  :mod:`~adapters.store_reads`; shared plumbing in :mod:`~adapters.store_core`);
* :mod:`adapters.store_views`: stored records decoded into views, and the one codec
  of the phase fields;
* :mod:`adapters.store_sync`: :class:`SyncStore`, the blocking client generated from
  :class:`Store`;
* :mod:`adapters.store_actor`: the daemon's executor (trio; imported by the daemon only).

Importing this module loads no trio, HTTP client, Redis client or embedded store:
:func:`adapters.backend.open_backend` loads the one a URL names.
"""

from __future__ import annotations

from .store_core import IDEMPOTENCY_TTL, MAX_BATCH_ADD, DirectExecutor, Due, Executor
from .store_ops import Store
from .store_sync import SyncStore
from .store_views import batch_view, event_of, job_view, worker_view

__all__ = [
    "IDEMPOTENCY_TTL",
    "MAX_BATCH_ADD",
    "DirectExecutor",
    "Due",
    "Executor",
    "Store",
    "SyncStore",
    "batch_view",
    "event_of",
    "job_view",
    "worker_view",
]
