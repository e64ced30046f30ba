"""Reading the event streams, synchronously: a stretch of history, then everything appended.

Each queue's events live in one Redis stream (``keys.events_key``), capped at about
:data:`~adapters.backend.STREAM_CAP` entries. :class:`EventFeed` is what the command line's
``events`` and ``events --follow`` read through, so they never touch the Redis client:

* :meth:`EventFeed.history` is the last ``limit`` events of a queue (of one job or batch
  only, when one is named), and the stream position they were read up to;
* :meth:`EventFeed.follow` yields every event appended after those positions, in stream
  order per queue, blocking up to ``block`` seconds per round trip (``XREAD BLOCK``); it
  runs until the caller stops iterating (Ctrl-C in the CLI). On a Cluster one ``XREAD`` can
  only name the streams of one slot: every slot's streams are read in one round trip (one
  pipeline per master), and when none has anything new, one blocking read per slot waits,
  all at once, each on a connection of its own.

Errors are the store's: :class:`~adapters.errors.StoreUnavailable` when Redis cannot be
reached (following does not retry unless given ``outage``: then it reports each outage there
and goes on after a pause, from the same positions, e.g. through a failover),
:class:`~adapters.errors.NotFound` from :meth:`EventFeed.subject` for an id that names neither
a job nor a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .backend import CommandCall
from .errors import BadInput, NotFound, StoreUnavailable
from .keys import events_key, key_slot, queue_of
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

    def follow(self, positions: Mapping[str, str], *, discover: bool, block: float = 1.0,
               outage: Callable[[StoreUnavailable], None] | None = None) -> Iterator[Event]:
        """Every event appended after ``positions`` (queue -> stream position), as it comes.

        With ``discover``, queues that appear later are followed too, from their first event.
        Between round trips nothing is held: stopping the iteration at any point is clean.
        With ``outage``, Redis away is reported there and followed by a pause (doubling up to
        2 s), then the reads go on from the same positions.
        """
        where = {events_key(q): (q, pos) for q, pos in positions.items()}
        pause = 0.1
        while True:
            try:
                if discover:
                    for q in self._store.queues():
                        where.setdefault(events_key(q), (q, START))
                if not where:
                    time.sleep(block)  # no queue exists yet: no stream to block on
                    continue
                found = self._read(where, block)
            except StoreUnavailable as exc:
                if outage is None:
                    raise
                outage(exc)
                time.sleep(pause)  # a backoff while Redis is away, not a synchronisation
                pause = min(2.0, pause * 2)
                continue
            pause = 0.1
            for key, event in found:
                where[key] = (event.queue, event.stream_id)
                yield event

    def _read(self, where: Mapping[str, tuple[str, str]], block: float) -> list[tuple[str, Event]]:
        backend = self._store.backend
        slots: dict[int, list[str]] = {}
        for key in where:
            slots.setdefault(key_slot(key) if backend.cluster else 0, []).append(key)
        groups = list(slots.values())
        now = int(time.time() * 1000)
        if len(groups) == 1:
            return self._found(where, backend.run([CommandCall(_xread(where, groups[0], block))], now))
        found = self._found(where, backend.run([CommandCall(_xread(where, g, None)) for g in groups], now))
        if found:
            return found
        with ThreadPoolExecutor(len(groups)) as pool:  # a blocking read per slot, all at once
            answers = list(pool.map(lambda g: backend.run([CommandCall(_xread(where, g, block))], now)[0], groups))
        return self._found(where, answers)

    @staticmethod
    def _found(where: Mapping[str, tuple[str, str]], answers: list[Any]) -> list[tuple[str, Event]]:
        found = []
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
            for raw_key, rows in _streams(answer):
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                queue = where[key][0]
                found += [(key, event_of(queue, row)) for row in rows]
        return found


def _xread(where: Mapping[str, tuple[str, str]], keys: list[str], block: float | None) -> tuple[Any, ...]:
    waiting = ("BLOCK", max(1, int(block * 1000))) if block is not None else ()
    return ("XREAD", "COUNT", FOLLOW_COUNT, *waiting, "STREAMS", *keys, *(where[k][1] for k in keys))


def _streams(answer: Any) -> list[tuple[Any, Any]]:
    """An ``XREAD`` reply as (key, rows) pairs: a list (RESP2), a map (RESP3), or nothing."""
    if not answer:
        return []
    if isinstance(answer, dict):
        return [(k, v[0] if v and isinstance(v[0], list) and len(v) == 1 else v) for k, v in answer.items()]
    return [(k, rows) for k, rows in answer]
