"""``GET /api/v1/events``: the event streams as Server-Sent Events, resumable exactly once.

Each event's SSE ``id`` is the follower's place in every stream it follows
(:class:`~adapters.streams.Positions`, ``queue=stream-id,...``), so ``Last-Event-ID`` (or the
``last_event_id`` query parameter, for clients that cannot set headers) resumes after the
last event the client received, in every queue at once: nothing is missed, nothing repeats.
The position is sent once at connect (an ``id`` without data), so a client that saw no event
before it lost its connection resumes from where it started, not from "now".

Filters: ``queue`` (one stream; ``@workers`` is the daemons' registry), ``job`` (its queue's
stream, that job's events), ``batch`` (the batch's events and its members'). Without one,
every queue, including queues that appear later (followed from their first event).

Each connection reads with its own blocking ``XREAD`` (:class:`~adapters.streams.StreamFollower`)
and ends when the client goes; while Redis is away it waits, sending comments, and goes on.
The events one read finds go out in one write (one chunk of the response, one ``send``), not
one write per event: per-write cost in the server, not Redis, bounded the fan-out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from jobvisor.adapters.errors import BadInput, StoreUnavailable
from jobvisor.adapters.keys import REGISTRY, check_queue_name, queue_of
from jobvisor.adapters.listing import is_batch_member
from jobvisor.adapters.records import Event
from jobvisor.adapters.redaction import redact_text
from jobvisor.adapters.store import Store
from jobvisor.adapters.streams import Positions, StreamFollower

from .settings import Role
from .state import authorise, state_of

__all__ = ["events", "BLOCK", "KEEPALIVE"]

BLOCK = 1.0  # seconds one XREAD waits (also how often new queues are looked for)
KEEPALIVE = 15.0  # a comment at least this often, so proxies keep an idle stream open
_encoder = msgspec.json.Encoder()


def _object_queue(value: str, name: str) -> str:
    try:
        return queue_of(value)
    except ValueError:
        raise BadInput(f"{name}: {value[:100]!r} is not a jobvisor id (<queue>.<id>)") from None


class _Filter:
    """Which events a connection wants."""

    def __init__(self, store: Store, job: str | None, batch: str | None) -> None:
        self.store = store
        self.job = job
        self.batch = batch
        self._members: dict[str, bool] = {}  # a job's membership, looked up once

    async def wants(self, event: Event) -> bool:
        if self.job is not None:
            return event.id == self.job
        if self.batch is not None:
            if event.id == self.batch:
                return True
            if event.id not in self._members:
                self._members[event.id] = await is_batch_member(self.store, self.batch, event.id)
            return self._members[event.id]
        return True


async def events(request: Request) -> Response:
    authorise(request, Role.READ)
    state = state_of(request)
    q = request.query_params
    job, batch, queue = q.get("job") or None, q.get("batch") or None, q.get("queue") or None
    fixed: list[str] | None = None
    if job is not None:
        fixed = [_object_queue(job, "job")]
    elif batch is not None:
        fixed = [_object_queue(batch, "batch")]
    elif queue is not None:
        if queue != REGISTRY:
            try:
                check_queue_name(queue)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
        fixed = [queue]
    last = request.headers.get("last-event-id") or q.get("last_event_id") or None
    resume = Positions.parse(last) if last is not None else None
    follower = StreamFollower(state.backend)
    stream = _stream(state.store, follower, fixed, resume, _Filter(state.store, job, batch))
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(store: Store, follower: StreamFollower, fixed: list[str] | None, resume: Positions | None,
                  wanted: _Filter) -> AsyncIterator[str]:
    try:
        while True:
            try:
                positions = await _start(store, follower, fixed, resume)
                break
            except StoreUnavailable:
                yield ": store unavailable, waiting\n\n"
                await trio.sleep(BLOCK)
        yield f"retry: 1000\nid: {positions.text()}\n\n"
        quiet_since = trio.current_time()
        while True:
            try:
                found = await follower.read(positions, block=BLOCK) if positions else []
                if not found and fixed is None:
                    for name in await store.queues():
                        positions.setdefault(name, "0-0")  # a queue that appeared: from its start
            except StoreUnavailable:
                yield ": store unavailable, waiting\n\n"
                await trio.sleep(BLOCK)
                continue
            if not positions:
                await trio.sleep(BLOCK)  # no queue exists yet: nothing to block on
            skipped = False
            chunk: list[str] = []  # everything one read found goes out in one write
            for event in found:
                positions[event.queue] = event.stream_id
                if await wanted.wants(event):
                    data = redact_text(_encoder.encode(event).decode())
                    chunk.append(f"id: {positions.text()}\ndata: {data}\n\n")
                    skipped = False
                else:
                    skipped = True
            if skipped:  # the place moved past events this client does not want
                chunk.append(f"id: {positions.text()}\n\n")
            if chunk:
                yield "".join(chunk)
                quiet_since = trio.current_time()
            elif trio.current_time() - quiet_since >= KEEPALIVE:
                yield ": keep-alive\n\n"
                quiet_since = trio.current_time()
    finally:
        follower.close()


async def _start(store: Store, follower: StreamFollower, fixed: list[str] | None,
                 resume: Positions | None) -> Positions:
    """Where to begin: after ``resume`` (queues it lacks appeared later: from their start),
    else after the newest entry of each stream."""
    names = fixed if fixed is not None else await store.queues()
    if resume is None:
        return await follower.last_ids(list(names))
    positions = Positions({n: resume.get(n, "0-0") for n in names})
    if fixed is None:
        positions.update(resume)
    return positions
