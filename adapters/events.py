"""Reading the event streams, synchronously: a stretch of history, then everything appended.

Each queue's events live in one Redis stream (``keys.events_key``), capped at about
:data:`~adapters.backend.STREAM_CAP` entries. :class:`EventFeed` is what the command line's
``events`` and ``events --follow`` read through, so they never touch the Redis client:

* :meth:`EventFeed.history` is the last ``limit`` events of a queue (of one job or batch
  only, when one is named), and the stream position they were read up to;
* :meth:`EventFeed.follow` yields every event appended after those positions, in stream
  order per queue, blocking up to ``block`` seconds per round trip (``XREAD BLOCK``); it
  runs until the caller stops iterating (Ctrl-C in the CLI).

Errors are the store's: :class:`~adapters.errors.StoreUnavailable` when Redis cannot be
reached (following does not retry: the caller decides), :class:`~adapters.errors.NotFound`
from :meth:`EventFeed.subject` for an id that names neither a job nor a batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from .backend import CommandCall
from .errors import BadInput, NotFound
from .keys import events_key, queue_of
from .records import Event
from .store import SyncStore, event_of

__all__ = ["EventFeed", "START"]

START = "0-0"
"""The position before a stream's first event: following from it prints everything."""

PAGE = 1000
FOLLOW_COUNT = 100


class EventFeed:
    """The event streams of ``store``'s queues (and of the registry)."""

    def __init__(self, store: SyncStore) -> None:
        self._store = store

    def subject(self, object_id: str) -> str:
        """The queue of the job or batch ``object_id``; :class:`BadInput` for a malformed id,
        :class:`NotFound` naming it when neither a job nor a batch has this id (never
        stored, or deleted by retention)."""
        try:
            queue = queue_of(object_id)
        except ValueError:
            raise BadInput(f"job: {object_id!r} is not a jobvisor id (<queue>.<id>)") from None
        try:
            self._store.get_job(object_id)
        except NotFound:
            try:
                self._store.get_batch(object_id)
            except NotFound:
                raise NotFound(f"job {object_id} not found (no job or batch has this id)") from None
        return queue

    def queues(self) -> list[str]:
        """The queues jobs were submitted to."""
        return self._store.queues()

    def history(self, queue: str, object_id: str | None, limit: int) -> tuple[list[Event], str]:
        """The last ``limit`` events of ``queue`` (of ``object_id`` only, when given), oldest
        first, and the stream position they were read up to (:data:`START` for an empty stream),
        where :meth:`follow` goes on."""
        if object_id is None:
            latest = self._store.latest_events(queue, limit)
            return latest, latest[-1].stream_id if latest else START
        found: list[Event] = []
        after = "-"
        while page := self._store.events(queue, after, PAGE):  # the stream is capped: a bounded scan
            found = (found + [e for e in page if e.id == object_id])[-limit:]
            after = page[-1].stream_id
        return found, START if after == "-" else after

    def follow(self, positions: Mapping[str, str], *, discover: bool, block: float = 1.0) -> Iterator[Event]:
        """Every event appended after ``positions`` (queue -> stream position), as it comes.

        With ``discover``, queues that appear later are followed too, from their first event.
        Between round trips nothing is held: stopping the iteration at any point is clean.
        """
        where = {events_key(q): (q, pos) for q, pos in positions.items()}
        while True:
            if discover:
                for q in self._store.queues():
                    where.setdefault(events_key(q), (q, START))
            if not where:
                time.sleep(block)  # no queue exists yet: no stream to block on
                continue
            for key, event in self._read(where, block):
                where[key] = (event.queue, event.stream_id)
                yield event

    def _read(self, where: Mapping[str, tuple[str, str]], block: float) -> list[tuple[str, Event]]:
        keys = list(where)
        command = ("XREAD", "COUNT", FOLLOW_COUNT, "BLOCK", max(1, int(block * 1000)), "STREAMS",
                   *keys, *(where[k][1] for k in keys))
        backend = self._store.backend
        [answer] = backend.run([CommandCall(command)], int(time.time() * 1000))
        if isinstance(answer, Exception):
            raise answer
        found = []
        for raw_key, rows in _streams(answer):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            queue = where[key][0]
            found += [(key, event_of(queue, row)) for row in rows]
        return found


def _streams(answer: Any) -> list[tuple[Any, Any]]:
    """An ``XREAD`` reply as (key, rows) pairs: a list (RESP2), a map (RESP3), or nothing."""
    if not answer:
        return []
    if isinstance(answer, dict):
        return [(k, v[0] if v and isinstance(v[0], list) and len(v) == 1 else v) for k, v in answer.items()]
    return [(k, rows) for k, rows in answer]
