"""The store's reads: stored records decoded into views (:mod:`adapters.store_views`),
event streams, counts, and the job types daemons publish."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jobvisor.machines import JOB

from . import routing
from .errors import NotFound
from .keys import (
    QUEUE_NAME,
    QUEUES,
    TYPES,
    Keys,
    RegistryKeys,
    check_queue_name,
    events_key,
)
from .ops import CountQueued
from .records import BatchView, DeliveryView, Event, JobView, WorkerView
from .store_core import StoreCore, json_decode, json_encode
from .store_views import b2s, batch_view, delivery_view, event_of, job_view, worker_view

__all__ = ["ReadOps"]

JOB_NOTIFICATIONS = tuple(JOB.notifications.values())  # every event type a job's outbox row can have


class ReadOps(StoreCore):
    """Reads, and the job types a daemon publishes."""

    async def workers(self, *, include_gone: bool = False, gone_limit: int = 100) -> list[WorkerView]:
        """Live daemons (oldest first), then, with ``include_gone``, the latest stopped or lost."""
        live = await self._command("ZRANGE", RegistryKeys.live, 0, -1)
        ids = [b2s(i) for i in live]
        if include_gone:
            gone = await self._command("ZREVRANGE", RegistryKeys.gone, 0, gone_limit - 1)
            ids += [b2s(i) for i in gone if b2s(i) not in ids]
        if not ids:
            return []
        rows = await self._commands(("HGETALL", RegistryKeys.daemon(i)) for i in ids)
        now = self.executor.now()
        return [worker_view({b2s(k): b2s(v) for k, v in row.items()}, now) for row in rows if row]

    async def filing_counts(self, queue: str) -> tuple[dict[tuple[str, str], int], int]:
        """Filed jobs still stored by (category, problem), and how many wait to be filed."""
        keys = Keys(check_queue_name(queue))
        raw, waiting = await self._commands([("HGETALL", keys.filing), ("ZCARD", keys.unfiled)])
        counts: dict[tuple[str, str], int] = {}
        for field, value in raw.items():
            category, _, problem = b2s(field).partition(":")
            if int(value):
                counts[(category, problem)] = int(value)
        return counts, int(waiting)

    async def job_deliveries(self, job_id: str, epoch: int) -> list[DeliveryView]:
        """The webhook deliveries of a job's notifications, epochs ``0..epoch``, oldest first."""
        keys = Keys(self._queue_of(job_id))
        ids = [f"{job_id}~{event}~{e}" for e in range(epoch + 1) for event in JOB_NOTIFICATIONS]
        rows = await self._commands(("HGETALL", keys.delivery(i)) for i in ids)
        views = [delivery_view(i, {b2s(k): b2s(v) for k, v in raw.items()})
                 for i, raw in zip(ids, rows, strict=True) if raw]
        return sorted(views, key=lambda v: v.created_at)

    # -- reads ------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobView:
        """The job as stored; :class:`NotFound` when there is none."""
        raw = await self._command("HGETALL", Keys(self._queue_of(job_id)).job(job_id))
        if not raw:
            raise NotFound(f"job {job_id} not found")
        return job_view({b2s(k): b2s(v) for k, v in raw.items()})

    async def get_batch(self, batch_id: str) -> BatchView:
        raw = await self._command("HGETALL", Keys(self._queue_of(batch_id)).batch(batch_id))
        if not raw:
            raise NotFound(f"batch {batch_id} not found")
        return batch_view({b2s(k): b2s(v) for k, v in raw.items()})

    async def latest_events(self, queue: str, count: int = 100) -> list[Event]:
        """The last ``count`` events of ``queue`` (or of the registry), oldest first."""
        rows = await self._command("XREVRANGE", events_key(queue), "+", "-", "COUNT", count)
        return [event_of(queue, row) for row in reversed(rows)]

    async def events(self, queue: str, after: str = "-", count: int = 1000) -> list[Event]:
        """Events of ``queue`` (or of the registry, ``REGISTRY``) after stream id ``after``
        (exclusive), oldest first."""
        start = after if after == "-" else f"({after}"
        rows = await self._command("XRANGE", events_key(queue), start, "+", "COUNT", count)
        return [event_of(queue, row) for row in rows]

    async def register_types(self, types: dict[str, dict[str, Any]]) -> None:
        """Publish job types and their defaults (``jv:types``) so submitters can check them."""
        if types:
            await self._command("HSET", TYPES, *[x for t, d in types.items() for x in (t, json_encode(d))])

    async def job_types(self) -> dict[str, dict[str, Any]]:
        raw = await self._command("HGETALL", TYPES)
        return {b2s(k): json_decode(v) for k, v in raw.items()}

    async def queues(self) -> list[str]:
        """The queues jobs were submitted to. A name no queue may have (left by an earlier
        version that let a trailing newline through) is skipped: no daemon can serve it."""
        names = (b2s(q) for q in await self._command("SMEMBERS", QUEUES))
        return sorted(q for q in names if QUEUE_NAME.fullmatch(q))

    async def queue_counts(self, queue: str) -> dict[str, int]:
        """Jobs of ``queue`` per index (``queued`` counts every type, untyped ones included)."""
        keys = Keys(check_queue_name(queue))
        names = ("waiting", "scheduled", "active", "validating", "finished", "outbox")
        sets = (keys.waiting, keys.due, keys.active, keys.validating, keys.finished, keys.outbox)
        by_type, untyped = await self.queued_by_type(queue)
        counts = await self._commands(("ZCARD", key) for key in sets)
        return {"queued": sum(by_type.values()) + untyped,
                **dict(zip(names, (int(c) for c in counts), strict=True))}

    async def queued_by_type(self, queue: str) -> tuple[dict[str, int], int]:
        """Queued jobs of ``queue`` per job type, and how many still sit in the earlier
        versions' untyped index (a claim moves them to their types' indexes)."""
        reply = await self._op(check_queue_name(queue), CountQueued())
        return dict(reply.counts), reply.untyped

    async def rate_limits(self, queue: str) -> dict[str, tuple[float, str | None]]:
        """The rate limits the claims of ``queue`` enforce: type -> (seconds between two
        starts, the input field of a keyed limit or ``None``); see README, "Rate limits"."""
        raw = await self._command("HGETALL", Keys(check_queue_name(queue)).rates)
        limits: dict[str, tuple[float, str | None]] = {}
        for t, v in raw.items():
            interval, _, field = b2s(v).partition(" ")
            limits[b2s(t)] = (float(interval) / 1000, field or None)
        return limits

    async def unserved(self, queues: Iterable[str]) -> dict[str, dict[str, int]]:
        """Per queue, the queued jobs of each type that no live daemon serves (they wait,
        never claimed by a daemon without the handler; see :mod:`adapters.routing`)."""
        workers = await self.workers()
        return {q: routing.unserved(q, (await self.queued_by_type(q))[0], workers) for q in queues}


