"""Waiting for a job to end, without polling: its queue's event stream, read blocking.

:func:`wait_job` takes the queue's newest stream id first, then reads the job once: a job
that is terminal already is answered at once, and one that ends after that read leaves its
terminal event after the position taken, so the blocking reads that follow (``XREAD BLOCK``)
see it. Each terminal event of the job (``job.completed``, ``job.failed``...) leads to one
more read of the job, which is answered once its state is terminal (a job retried since is
waited for again). Nothing else is read while the job runs.

The blocking read is given by the caller: :func:`follower_reader` for async code (a coredis
client of its own per read, never the executor's multiplexed one, which a blocking read
would hold up), :func:`direct_reader` for the synchronous client (one redis-py connection
of its pool). Each read waits at most ``block_cap`` seconds, below the connection's time
limit, and the whole wait at most ``timeout``: then :class:`~adapters.errors.WaitTimeout`.
The embedded store has no second process to wait for: it is refused
(:class:`~adapters.errors.StoreError`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from jobvisor.machines import JOB

from .backend import Backend
from .calls import CommandCall
from .errors import BadInput, StoreError, WaitTimeout
from .keys import events_key, queue_of
from .records import Event, JobView
from .store_core import one
from .store_ops import Store
from .store_views import event_of

__all__ = ["TERMINAL_EVENTS", "TERMINAL_STATES", "Reader", "direct_reader", "follower_reader", "wait_job"]

TERMINAL_STATES = frozenset(str(s.value) for s in JOB.terminal)
TERMINAL_EVENTS = frozenset(JOB.notifications.values())

Reader = Callable[[str, str, float], Awaitable[list[Event]]]
"""``read(queue, after, block)``: the queue's events after stream id ``after``, waiting up to
``block`` seconds for the first."""


async def wait_job(store: Store, job_id: str, read: Reader, *, limit: float | None, block_cap: float) -> JobView:
    """The job's view once its state is terminal; :class:`WaitTimeout` after ``limit``
    seconds (``limit``; ``None``: none; ``0``: answer only if terminal already)."""
    try:
        queue = queue_of(job_id)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if limit is not None and not (limit >= 0 and math.isfinite(limit)):
        raise BadInput(f"timeout: {limit!r} is not a number of seconds >= 0")
    deadline = math.inf if limit is None else time.monotonic() + limit
    after = await _newest_id(store, queue)
    view = await store.get_job(job_id)
    while view.state not in TERMINAL_STATES:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(job_id, limit or 0.0, view.state)
        events = await read(queue, after, min(left, block_cap))
        if events:
            after = events[-1].stream_id
        if any(e.id == job_id and e.type in TERMINAL_EVENTS for e in events):
            view = await store.get_job(job_id)
    return view


async def _newest_id(store: Store, queue: str) -> str:
    rows = one((await store.executor.execute(
        [CommandCall(("XREVRANGE", events_key(queue), "+", "-", "COUNT", 1))]))[0])
    return event_of(queue, rows[0]).stream_id if rows else "0-0"


def block_cap(backend: Backend) -> float:
    """The longest one blocking read may wait: below the connection's time limit."""
    return max(0.05, backend.timeout * 0.8)


def follower_reader(backend: Backend) -> Reader:
    """Blocking reads on a coredis client of their own (trio or asyncio)."""
    _refuse_inline(backend)
    from .streams import StreamFollower

    follower = StreamFollower(backend)

    async def read(queue: str, after: str, block: float) -> list[Event]:
        return await follower.read({queue: after}, block=block)

    return read


def direct_reader(store: Store, backend: Backend) -> Reader:
    """Blocking reads through a store over a direct (blocking) executor."""
    _refuse_inline(backend)

    async def read(queue: str, after: str, block: float) -> list[Event]:
        command = ("XREAD", "COUNT", 500, "BLOCK", max(1, int(block * 1000)), "STREAMS", events_key(queue), after)
        reply = one((await store.executor.execute([CommandCall(command)]))[0])
        return [event_of(queue, row) for _, rows in _streams(reply) for row in rows]

    return read


def _refuse_inline(backend: Backend) -> None:
    if backend.inline:
        raise StoreError("wait needs redis-server (the embedded store has no other process to wait for)")


def _streams(reply: Any) -> list[tuple[Any, list[Any]]]:
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    return [(key, list(rows)) for key, rows in items]
