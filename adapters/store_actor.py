"""The store actor: one owner for the Redis connection, serving every other actor.

Callers never touch the connection. :meth:`StoreActor.execute` puts a
request on a memory channel and waits for its answer; the actor takes
everything waiting at that moment, merges the ops of all requests for the
same queue into one ``FCALL`` (each op is still atomic on its own), sends
one pipeline, one round trip, and hands each caller its share of the
results. Under load, many callers' transitions cost one round trip.

Cancellation: a caller cancelled while waiting simply stops waiting; its
request still runs to completion and the answer is dropped, so no
connection is ever left half-way through a reply. The actor's own round
trip is shielded (and bounded by the connection timeout): a cancelled actor
finishes the round trip it started. The actor owns one coredis client
(:mod:`adapters.redis_async`, on anyio: no thread sits between trio and Redis); each
serving task's round trip is one pipeline per node (one node unless Redis is a Cluster,
whose nodes are sent to at once).

Redis away: the batch's callers get :class:`StoreUnavailable` naming the
URL; for a backoff window (doubling up to ``max_backoff``) new requests fail
at once with the same error; the first request after the window probes
again, and its connection reconnects. Nothing is re-sent by the actor.
A round trip whose replies are transient refusals (``LOADING``, ``OOM``,
``BUSY``... classified in :mod:`adapters.backend`) counts as Redis away too:
each caller gets its own refusal, and the backoff window starts; in that window only
requests that run a script fail at once (reads go on to Redis, which answers them itself: under
``OOM`` they still work, so a reader sees no outage that is not its own).
:meth:`StoreActor.problem` keeps the last such error until a script runs
again (reads alone do not clear it: under ``OOM`` they still work), for
``/healthz``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .backend import Backend
from .calls import Call, OpsCall
from .errors import StoreError, StoreUnavailable
from .redis_async import AsyncRedis  # coredis loads here, before trio runs, never in the loop

__all__ = ["StoreActor", "StoreStatistics"]

MAX_OPS_PER_SCRIPT = 256
"""Ops merged into one FCALL at most, so one call never holds Redis for long."""


@dataclass(slots=True, eq=False)
class _Request:
    calls: Sequence[Call]
    done: trio.Event = field(default_factory=trio.Event)
    results: list[Any] | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class StoreStatistics:
    """Counters since start (``statistics()``, trio's naming)."""

    requests: int = 0
    round_trips: int = 0
    ops: int = 0
    scripts: int = 0
    failures: int = 0


class StoreActor:
    """Serves :class:`~adapters.store.Store` calls over one backend.

    ``run`` is the actor; :meth:`close` ends it once the requests already
    queued are served (the supervisor closes storage last).
    """

    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], float],
        *,
        concurrency: int = 2,
        max_batch: int = 4096,
        buffer: int = 65536,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.backend = backend
        self.now = clock
        self.concurrency = 1 if backend.inline else concurrency
        self.max_batch = max_batch
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._send, self._receive = trio.open_memory_channel[_Request](buffer)
        self._stats = StoreStatistics()
        self._down_until = -math.inf
        self._backoff = 0.0
        self._last_error: StoreUnavailable | None = None
        self._waiting: set[_Request] = set()  # answered with an error if the actor ends first
        self._problem: StoreUnavailable | None = None
        self._refused = False
        self.closed = trio.Event()

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(**{f: getattr(self._stats, f) for f in StoreStatistics.__slots__})

    def problem(self) -> StoreUnavailable | None:
        """Why the store cannot serve: the last transient error, until a script ran again."""
        return self._problem

    def _went_away(self, exc: StoreUnavailable, *, refused: bool = False) -> None:
        self._stats.failures += 1
        self._refused = refused  # Redis answered (a refusal), rather than went away
        self._backoff = min(self.max_backoff, max(self.min_backoff, self._backoff * 2))
        self._down_until = trio.current_time() + self._backoff
        self._last_error = exc
        self._problem = exc

    async def execute(self, calls: Sequence[Call]) -> list[Any]:
        """Run ``calls`` in the actor's next pipeline; raises what the backend raised."""
        request = _Request(calls)
        if self.closed.is_set():
            raise StoreError("the store is closed")
        try:
            await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreError("the store is closed") from None
        self._waiting.add(request)
        try:
            await request.done.wait()
        finally:
            self._waiting.discard(request)
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def close(self) -> None:
        """No new requests; ``run`` returns once the queued ones are served."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        release = trio.Event()
        try:
            async with trio.open_nursery() as holder:
                client = None if self.backend.inline else await holder.start(self._hold_client, release)
                try:
                    async with self._receive, trio.open_nursery() as nursery:
                        for _ in range(self.concurrency):
                            nursery.start_soon(self._serve_loop, self._receive.clone(), client)
                        task_status.started()
                finally:
                    release.set()
        finally:
            self.closed.set()
            for request in list(self._waiting):  # the actor was cancelled under them
                if not request.done.is_set():
                    request.error = StoreError("the store is closed")
                    request.done.set()

    async def _hold_client(self, release: trio.Event, *, task_status: trio.TaskStatus[AsyncRedis]) -> None:
        """Open the coredis client and keep it until ``release``, shielded: its connections run
        as tasks of their own, and a cancelled actor still finishes the round trips it started
        on them (see ``_serve``); they close once the serving tasks are done."""
        with trio.CancelScope(shield=True):
            async with self.backend.async_client() as client:
                task_status.started(client)
                await release.wait()

    async def _serve_loop(self, receive: trio.MemoryReceiveChannel[_Request], connection: AsyncRedis | None) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._serve(batch, connection)

    async def _serve(self, batch: list[_Request], connection: AsyncRedis | None) -> None:
        self._stats.requests += len(batch)
        if self._last_error is not None and trio.current_time() < self._down_until:
            held = [r for r in batch if not self._refused or any(isinstance(c, OpsCall) for c in r.calls)]
            for request in held:
                request.error = self._last_error.again()
                request.done.set()
            batch = [r for r in batch if not r.done.is_set()]
            if not batch:
                return
        calls, routes = _merge(batch)
        now_ms = int(self.now() * 1000)
        try:
            if connection is None:
                results = self.backend.run(calls, now_ms)
            else:
                # Shielded: a round trip that started is finished (or its connection
                # dropped), so no caller's ops are left half-sent; bounded by the timeout.
                with trio.CancelScope(shield=True):
                    results = await self.backend.run_async(connection, calls, now_ms)
        except StoreUnavailable as exc:
            self._went_away(exc)
            for request in batch:
                request.error = exc
                request.done.set()
            return
        except StoreError as exc:  # refused for good (a handshake, a script error): its callers'
            for request in batch:  # answer, never the end of the actor serving everyone
                request.error = exc
                request.done.set()
            return
        refusal = next((r for r in results if isinstance(r, StoreUnavailable)), None)
        scripts = any(isinstance(c, OpsCall) for c in calls)
        if refusal is not None:
            self._went_away(refusal, refused=True)
        elif scripts or not self._refused:  # reads answered under a refusal prove nothing
            self._backoff = 0.0
            self._last_error = None
            self._refused = False
            if scripts:
                self._problem = None
        self._stats.round_trips += 1
        self._stats.scripts += sum(isinstance(c, OpsCall) for c in calls)
        self._stats.ops += sum(c.count for c in calls if isinstance(c, OpsCall))
        for request, parts in zip(batch, routes, strict=True):
            request.results = [_pick(results, route) for route in parts]
            request.done.set()


# A route says where one call's answer is: (index of the merged call, slice of its replies),
# or (index, None) for a call sent as it was.
_Route = tuple[int, slice | None]


@dataclass(slots=True)
class _Script:
    queue: str
    chunks: list[bytes] = field(default_factory=list)
    count: int = 0


def _merge(batch: list[_Request]) -> tuple[list[Call], list[list[_Route]]]:
    """Merge every request's ops for one queue into as few FCALLs as the cap allows."""
    slots: list[Call | _Script] = []
    current: dict[str, int] = {}  # queue -> index of its script still taking ops
    routes: list[list[_Route]] = []
    for request in batch:
        parts: list[_Route] = []
        for call in request.calls:
            if not isinstance(call, OpsCall):
                slots.append(call)
                parts.append((len(slots) - 1, None))
                continue
            index = current.get(call.queue)
            script = slots[index] if index is not None else None
            if not isinstance(script, _Script) or script.count + call.count > MAX_OPS_PER_SCRIPT:
                script = _Script(call.queue)
                slots.append(script)
                index = current[call.queue] = len(slots) - 1
            assert index is not None
            script.chunks.append(call.ops[1:-1])
            parts.append((index, slice(script.count, script.count + call.count)))
            script.count += call.count
        routes.append(parts)
    calls: list[Call] = [
        OpsCall(s.queue, b"[" + b",".join(c for c in s.chunks if c) + b"]", s.count)
        if isinstance(s, _Script) else s
        for s in slots
    ]
    return calls, routes


def _pick(results: list[Any], route: _Route) -> Any:
    index, part = route
    value = results[index]
    if part is None or isinstance(value, BaseException):
        return value
    return value[part]
