"""Which queued jobs wait for a job type no live daemon serves (pure).

A daemon claims only the job types it has handlers for (its claim names them;
see ``queued:<type>`` in :mod:`adapters.keys`), and publishes them in its
registry record with every heartbeat. So during a rolling deploy a job of a type
only the new version knows is never claimed by an old daemon: it stays
``queued`` until a daemon that has the handler claims it. It is not a failure
and is never filed; it is *unserved*, and reported, while no live daemon of its
queue has its type.

A type is served on a queue when a daemon of the registry is ``live``, claims
from that queue and lists the type. Daemons of earlier versions publish no types
(and claim only from the earlier untyped index), so they serve none here.
"""

from __future__ import annotations

from collections.abc import Iterable

from .records import WorkerView

__all__ = ["serving", "unserved"]


def serving(queue: str, workers: Iterable[WorkerView]) -> dict[str, int]:
    """Job type -> how many live daemons claim it from ``queue``."""
    counts: dict[str, int] = {}
    for w in workers:
        if w.state == "live" and queue in w.queues:
            for t in w.types:
                counts[t] = counts.get(t, 0) + 1
    return counts


def unserved(queue: str, waiting: dict[str, int], workers: Iterable[WorkerView]) -> dict[str, int]:
    """Of ``waiting`` (type -> queued jobs of ``queue``), the types no live daemon serves."""
    served = serving(queue, workers)
    return {t: n for t, n in sorted(waiting.items()) if n > 0 and t not in served}
