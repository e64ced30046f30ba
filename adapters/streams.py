"""Following event streams: positions, and blocking reads on a connection of their own.

A follower's place in each queue's stream is a :class:`Positions` (queue -> stream id,
exclusive). Its text form, ``default=1718000000000-0,mail=0-0``, is what the HTTP API sends
as each Server-Sent Event's ``id``, so a reconnecting client's ``Last-Event-ID`` says where
to go on in every stream it follows, and it misses nothing and sees nothing twice.

:class:`StreamFollower` waits for new entries with ``XREAD BLOCK`` on a coredis client
(:mod:`adapters.redis_async`) that is its own, opened per read, never the store actor's: a
blocking read would hold up every other caller's pipeline. Cancelling a read drops that
connection. Errors are ours (:class:`~adapters.errors.StoreUnavailable`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import anyio

from .backend import Backend
from .errors import BadInput, StoreError
from .keys import QUEUE_NAME, REGISTRY, events_key, key_slot
from .records import Event
from .store import event_of

__all__ = ["Positions", "StreamFollower", "stream_id_key"]

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")
MAX_POSITIONS = 256


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (``ms``, ``sequence``)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Positions(dict[str, str]):
    """queue -> the id of the last entry seen in its stream (``0-0``: none yet)."""

    def text(self) -> str:
        return ",".join(f"{q}={i}" for q, i in sorted(self.items()))

    @classmethod
    def parse(cls, text: str, field: str = "Last-Event-ID") -> Positions:
        """Positions from their text form; anything else is :class:`BadInput` naming ``field``."""
        out = cls()
        if len(text) > 64 * 1024:
            raise BadInput(f"{field}: too long to be an event id this server sent")
        for part in filter(None, text.split(",")):
            queue, eq, stream_id = part.partition("=")
            if not eq or not (QUEUE_NAME.fullmatch(queue) or queue == REGISTRY) or not _STREAM_ID.fullmatch(stream_id):
                raise BadInput(f"{field}: {part[:80]!r} is not queue=stream-id")
            out[queue] = stream_id
        if len(out) > MAX_POSITIONS:
            raise BadInput(f"{field}: more than {MAX_POSITIONS} queues")
        return out

    def seen(self, event: Event) -> bool:
        """Whether ``event`` is at or before this follower's place in its queue's stream."""
        at = self.get(event.queue)
        return at is not None and stream_id_key(event.stream_id) <= stream_id_key(at)


class StreamFollower:
    """Blocking reads of the event streams of some queues (redis-server only)."""

    def __init__(self, backend: Backend) -> None:
        if backend.inline:
            raise StoreError("following events needs redis-server (the embedded store is in one process)")
        self._backend = backend

    async def last_ids(self, queues: list[str]) -> Positions:
        """The id of the newest entry of each queue's stream (``0-0`` for an empty one)."""
        commands = [("XREVRANGE", events_key(q), "+", "-", "COUNT", 1) for q in queues]
        async with self._backend.async_client() as client:
            replies = await self._backend.run_commands(client, commands)
        out = Positions()
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply if isinstance(reply, StoreError) else StoreError(f"Redis refused XREVRANGE: {reply}")
            out[queue] = event_of(queue, reply[0]).stream_id if reply else "0-0"
        return out

    async def read(self, positions: Mapping[str, str], *, block: float, count: int = 500) -> list[Event]:
        """Entries after ``positions``, oldest first per stream; waits up to ``block`` seconds
        for the first one (must stay below the backend's time limit). Under a Cluster, one
        ``XREAD`` per hash slot, all at once; the first answer ends the others' wait."""
        if not positions:
            return []
        groups: dict[int, list[str]] = {}
        for queue in positions:
            groups.setdefault(key_slot(events_key(queue)) if self._backend.cluster else 0, []).append(queue)
        replies: list[Any] = []
        async with self._backend.async_client() as client, anyio.create_task_group() as group:

            async def one(queues: list[str]) -> None:
                command = ("XREAD", "COUNT", count, "BLOCK", max(1, int(block * 1000)), "STREAMS",
                           *(events_key(q) for q in queues), *(positions[q] for q in queues))
                (reply,) = await self._backend.run_commands(client, [command])
                if reply:
                    replies.append(reply)
                    group.cancel_scope.cancel()

            for queues in groups.values():
                group.start_soon(one, queues)
        by_key = {events_key(q): q for q in positions}
        out: list[Event] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply if isinstance(reply, StoreError) else StoreError(f"Redis refused XREAD: {reply}")
            for key, rows in _streams(reply):
                out.extend(event_of(by_key[key], row) for row in rows)
        return out

    def close(self) -> None:
        """Nothing to close: each read opens its own connection and closes it."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _streams(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREAD's answer as (key, rows), whether shaped as a map or as pairs."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    return [(_text(key), list(rows)) for key, rows in items]
