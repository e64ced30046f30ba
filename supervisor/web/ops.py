"""The operator's steps in the JSON API: bulk retry, bulk redelivery of dead webhooks, and a
queue's pause and resume (the listing is ``GET /api/v1/jobs``, :mod:`supervisor.web.api`).

Each route is :mod:`adapters.operations`, as the CLI and the clients run it: a body is
decoded into a record below (an unknown or ill-typed field is 400 naming it, before anything
is written), and every job or delivery moves through its own guarded op. All need ``admin``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.keys import check_queue_name
from jobvisor.adapters.operations import (
    BulkResult,
    parse_since,
    pause_queue,
    redeliver_dead,
    resume_queue,
    retry_matching,
)

from .api import json_response, read_json
from .settings import Role
from .state import authorise, state_of

__all__ = ["BulkRetry", "BulkRedeliver", "QueueState", "RECORDS", "ops_routes"]

_Queues = Annotated[list[str], msgspec.Meta(min_length=1, max_length=100)]


class BulkRetry(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Retry every job in ``state`` matching the filters (``queue``: every queue when absent)."""

    state: str
    queue: _Queues | None = None
    type: str | None = None
    since: float | str | None = None  # epoch seconds, or "30m", "2h", "7d", an ISO 8601 time
    from_start: bool = False
    dry_run: bool = False


class BulkRedeliver(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Re-send the dead deliveries of ``job``, or of every job matching the filters."""

    job: str | None = None
    queue: _Queues | None = None
    type: str | None = None
    since: float | str | None = None
    dry_run: bool = False


class QueueState(msgspec.Struct, kw_only=True, frozen=True):
    queue: str
    outcome: str  # moved, or absorbed (it was so already)
    paused: bool


RECORDS: tuple[Any, ...] = (BulkRetry, BulkRedeliver, BulkResult, QueueState)
"""The records of these routes, for the OpenAPI document."""


async def _body(request: Request, kind: type[Any]) -> Any:
    """The body as ``kind``, read by the API's one reader (bounded; 400 naming the field)."""
    try:
        return msgspec.convert(await read_json(request), kind)
    except msgspec.ValidationError as exc:
        raise BadInput(str(exc)) from None


async def bulk_retry(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    body: BulkRetry = await _body(request, BulkRetry)
    since = parse_since(body.since)
    return json_response(await retry_matching(state_of(request).store, state=body.state, queues=body.queue,
                                      job_type=body.type, since=since, from_start=body.from_start,
                                      dry_run=body.dry_run))


async def bulk_redeliver(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    body: BulkRedeliver = await _body(request, BulkRedeliver)
    if body.job is not None and (body.queue or body.type or body.since is not None):
        raise BadInput("job: give a job, or filters, not both")
    since = parse_since(body.since)
    return json_response(await redeliver_dead(state_of(request).store, job_id=body.job, queues=body.queue,
                                      job_type=body.type, since=since, dry_run=body.dry_run))


async def _pause(request: Request, pause: bool) -> Response:
    authorise(request, Role.ADMIN)
    name: str = request.path_params["queue"]
    try:
        check_queue_name(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    reply = await (pause_queue if pause else resume_queue)(state_of(request).store, name)
    return json_response(QueueState(queue=name, outcome=reply.kind, paused=pause))


async def pause(request: Request) -> Response:
    return await _pause(request, True)


async def resume(request: Request) -> Response:
    return await _pause(request, False)


def ops_routes() -> list[Route]:
    return [
        Route("/api/v1/retries", bulk_retry, methods=["POST"]),
        Route("/api/v1/redeliveries", bulk_redeliver, methods=["POST"]),
        Route("/api/v1/queues/{queue}/pause", pause, methods=["POST"]),
        Route("/api/v1/queues/{queue}/resume", resume, methods=["POST"]),
    ]


def ops_paths(ref: Any, op: Any, json: Any, path: Any) -> dict[str, Any]:
    """These routes in the OpenAPI document (given the document's own helpers)."""
    bulk = {"200": json(ref("BulkResult"), "what matched, and what was done (nothing on a dry run)")}
    queue = path("queue", "a queue name")
    state = {"200": json(ref("QueueState"))}
    return {
        "/api/v1/retries": {"post": op("retry every job in a state matching filters, each through the guarded "
                                       "retry", bulk, errors=(400, 403), body="BulkRetry")},
        "/api/v1/redeliveries": {"post": op("re-send the dead webhook deliveries of a job, or of every job "
                                            "matching filters (same webhook-id)", bulk, errors=(400, 403, 404),
                                            body="BulkRedeliver")},
        "/api/v1/queues/{queue}/pause": {"post": op("stop claims of a queue", state, errors=(400, 403, 404),
                                                    params=[queue])},
        "/api/v1/queues/{queue}/resume": {"post": op("let a queue be claimed again", state,
                                                     errors=(400, 403, 404), params=[queue])},
    }
