"""The JSON API under ``/api/v1`` (described by :func:`~supervisor.web.schemas.openapi_document`).

Validation is the client's and the CLI's: a submit goes through
:func:`~supervisor.client.build_spec`, a batch through ``build_batch_spec``, so a body is refused
for exactly what ``jobvisor submit`` refuses, with the same one-line message (naming the field),
and before anything is written. Bodies are read up to :func:`body_limit` bytes and no further.
Mutations need the ``admin`` role, reads ``read``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobvisor.adapters.errors import BadInput, NotFound
from jobvisor.adapters.filing import Category, Problem
from jobvisor.adapters.keys import check_queue_name, queue_of
from jobvisor.adapters.limits import MAX_INPUT_BYTES, MAX_INPUT_DEPTH, input_depth_exceeded
from jobvisor.adapters.listing import finished_per_minute, list_jobs, live_batches
from jobvisor.adapters.operations import queue_paused
from jobvisor.adapters.records import Event, JobView
from jobvisor.adapters.redaction import redact_text
from jobvisor.adapters.replies import Absorbed, Created, Invalid, Moved, Transition
from jobvisor.adapters.routing import serving
from jobvisor.machines import MACHINES, to_mermaid

from ..client import build_batch_spec, build_spec
from .problems import Problem as HttpProblem
from .schemas import (
    AddResult,
    BatchCreated,
    Diagram,
    Health,
    JobHistory,
    QueueInfo,
    Report,
    SubmitResult,
    TriggerResult,
    TypeWaiting,
    openapi_document,
)
from .settings import Role
from .state import authorise, state_of

__all__ = ["routes", "body_limit", "json_response", "job_detail", "job_history", "queue_infos"]

ENVELOPE_BYTES = 64 * 1024
"""What a body may carry beyond the job's input (its options, the JSON around it)."""
HISTORY_PAGES = 20  # a job's history reads at most this many pages of 1000 stream entries
_encoder = msgspec.json.Encoder()
_NOT_OPTIONS = frozenset({"allowed_hosts", "destinations"})  # build_spec's own keywords, never a body's


def body_limit() -> int:
    """The largest request body: the SPEC's input limit plus :data:`ENVELOPE_BYTES`."""
    return MAX_INPUT_BYTES + ENVELOPE_BYTES


def json_response(data: Any, status: int = 200, *, redact: bool = False) -> Response:
    body = _encoder.encode(data)
    if redact:  # URLs are stored as given: their credentials are never shown
        body = redact_text(body.decode()).encode()
    return Response(body, status_code=status, media_type="application/json")


async def read_json(request: Request, *, optional: bool = False) -> Any:
    """The request's JSON body, read up to :func:`body_limit` bytes; bad ones are 400 naming ``body``."""
    limit = body_limit()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadInput(f"body: {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(f"body: more than {limit} bytes, over the limit")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data.strip():
        if optional:
            return {}
        raise BadInput("body: a JSON object is required")
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadInput(f"body: malformed JSON: {exc}") from None
    except RecursionError:
        raise BadInput(f"body: nested more than {MAX_INPUT_DEPTH} levels deep") from None
    if not isinstance(value, dict):
        raise BadInput("body: must be a JSON object")
    return value


def _options(body: dict[str, Any]) -> dict[str, Any]:
    for name in body:
        if name in _NOT_OPTIONS:
            raise BadInput(f"{name}: not an option")
    return body


def _job_id(request: Request, name: str = "job_id") -> str:
    """The id in the path; one that cannot be an id names nothing: 404."""
    value: str = request.path_params[name]
    try:
        queue_of(value)
    except ValueError:
        raise NotFound(f"{value[:100]!r} not found (ids read <queue>.<id>)") from None
    return value


def _trigger(reply: Transition, verb: str) -> Response:
    match reply:
        case Moved(id=id_, from_=from_, to=to):
            return json_response(TriggerResult(id=id_, outcome=reply.kind, from_=from_, to=to, state=to))
        case Absorbed(id=id_, state=state):
            raise HttpProblem(409, f"{id_} is {state}: nothing to {verb} (no change)")
        case Invalid(id=id_, state=state):
            raise HttpProblem(409, f"{id_} is {state}: cannot {verb} it")
    raise HttpProblem(409, f"{reply.id}: {reply.kind} in {reply.state}")


# -- jobs ---------------------------------------------------------------------------------------


async def submit(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    state = state_of(request)
    body = _options(await read_json(request))
    job_type = body.pop("type", None)
    if not isinstance(job_type, str):
        raise BadInput("type: required, the name of a job type")
    value = body.pop("input", None)
    if input_depth_exceeded(value):
        raise BadInput(f"input: nested more than {MAX_INPUT_DEPTH} levels deep")
    spec = build_spec(await state.submit_types(job_type), job_type, value, destinations=state.destinations, **body)
    reply = await state.store.submit(spec)
    created = isinstance(reply, Created)
    # an existing job's state as it is now
    current = reply.state if isinstance(reply, Created) else (await state.store.get_job(reply.id)).state
    return json_response(SubmitResult(id=reply.id, created=created, state=current), 201 if created else 200)


def _number(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{name}: {text[:40]!r} is not a number (epoch seconds)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadInput(f"{name}: must be a finite number")
    return value


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"{name}: {text[:40]!r} is not an integer") from None


def _queue(request: Request) -> str:
    queue = request.query_params.get("queue") or "default"
    try:
        return check_queue_name(queue)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


async def list_jobs_route(request: Request) -> Response:
    authorise(request, Role.READ)
    q = request.query_params
    page = await list_jobs(state_of(request).store, _queue(request), state=q.get("state") or None,
                           job_type=q.get("type") or None, created_after=_number(request, "created_after"),
                           created_before=_number(request, "created_before"), cursor=q.get("cursor") or None,
                           limit=_int(request, "limit", 50))
    return json_response(page)


async def job_detail(request: Request, job_id: str) -> dict[str, Any]:
    """A job as the API shows it: the record (without its raw hash) and its deliveries."""
    store = state_of(request).store
    job = await store.get_job(job_id)
    deliveries = await store.job_deliveries(job.id, job.epoch)
    data: dict[str, Any] = msgspec.to_builtins(job)
    data.pop("raw", None)
    data["deliveries"] = msgspec.to_builtins(deliveries)
    return data


async def get_job(request: Request) -> Response:
    authorise(request, Role.READ)
    return json_response(await job_detail(request, _job_id(request)), redact=True)


async def job_history(request: Request, job: JobView) -> JobHistory:
    """The job's events, read from its queue's stream from the job's creation on (bounded)."""
    store = state_of(request).store
    after = f"{int(job.created_at * 1000) - 1}-0"
    found: list[Event] = []
    for _ in range(HISTORY_PAGES):
        page = await store.events(job.queue, after, 1000)
        found.extend(e for e in page if e.id == job.id)
        if len(page) < 1000:
            return JobHistory(events=found, complete=True)
        after = page[-1].stream_id
    return JobHistory(events=found, complete=False)


async def get_job_events(request: Request) -> Response:
    authorise(request, Role.READ)
    job = await state_of(request).store.get_job(_job_id(request))
    return json_response(await job_history(request, job), redact=True)


async def cancel_job(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    store = state_of(request).store
    job_id = _job_id(request)
    await store.get_job(job_id)
    return _trigger(await store.cancel(job_id), "cancel")


async def retry_job(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    store = state_of(request).store
    job_id = _job_id(request)
    body = await read_json(request, optional=True)
    unknown = set(body) - {"from_start"}
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: not a retry option")
    from_start = body.get("from_start", False)
    if not isinstance(from_start, bool):
        raise BadInput("from_start: must be true or false")
    await store.get_job(job_id)
    return _trigger(await store.retry(job_id, from_start=from_start), "retry")


# -- batches ------------------------------------------------------------------------------------


async def create_batch(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    state = state_of(request)
    body = _options(await read_json(request))
    reply = await state.store.create_batch(build_batch_spec(destinations=state.destinations, **body))
    current = reply.state if isinstance(reply, Created) else (await state.store.get_batch(reply.id)).state
    return json_response(BatchCreated(id=reply.id, state=current), 201)


async def list_batches(request: Request) -> Response:
    authorise(request, Role.READ)
    store = state_of(request).store
    views = []
    for batch_id in await live_batches(store, _queue(request)):
        try:
            views.append(await store.get_batch(batch_id))
        except NotFound:
            continue  # ended and deleted since the index was read
    return json_response(views)


async def get_batch(request: Request) -> Response:
    authorise(request, Role.READ)
    return json_response(await state_of(request).store.get_batch(_job_id(request, "batch_id")))


async def add_to_batch(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    store = state_of(request).store
    batch_id = _job_id(request, "batch_id")
    body = await read_json(request)
    unknown = set(body) - {"jobs"}
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: not a batch add option")
    jobs = body.get("jobs")
    if not isinstance(jobs, list) or not jobs or not all(isinstance(j, str) for j in jobs):
        raise BadInput("jobs: must be a non-empty list of job ids")
    for job in jobs:
        try:
            queue_of(job)
        except ValueError:
            raise BadInput(f"jobs: {job[:100]!r} is not a jobvisor id (<queue>.<id>)") from None
    await store.get_batch(batch_id)
    reply = await store.add_to_batch(batch_id, jobs)
    return json_response(AddResult(id=batch_id, added=reply.added))


async def close_batch(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    store = state_of(request).store
    batch_id = _job_id(request, "batch_id")
    await store.get_batch(batch_id)
    return _trigger(await store.close_batch(batch_id), "close")


async def cancel_batch(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    store = state_of(request).store
    batch_id = _job_id(request, "batch_id")
    await store.get_batch(batch_id)
    return _trigger(await store.cancel_batch(batch_id), "cancel")


# -- webhook deliveries -------------------------------------------------------------------------


async def redeliver(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    delivery_id: str = request.path_params["delivery_id"]
    try:
        reply = await state_of(request).store.redeliver(delivery_id)
    except BadInput:  # an id that cannot be a delivery's names nothing
        raise NotFound(f"{delivery_id[:100]!r} not found (delivery ids read <job or batch id>~<event>~<epoch>)"
                       ) from None
    return _trigger(reply, "re-send")


# -- queues, daemons, filing, diagrams ----------------------------------------------------------


async def queue_infos(request: Request, minutes: int = 10) -> list[QueueInfo]:
    store = state_of(request).store
    workers = await store.workers()
    out = []
    now = time.time()
    for q in await store.queues():
        counts = await store.queue_counts(q)
        by_type, untyped = await store.queued_by_type(q)
        served = serving(q, workers)
        pause = await queue_paused(store, q)
        out.append(QueueInfo(
            queue=q, **counts, untyped=untyped, paused=pause.paused, paused_since=pause.since,
            types={t: TypeWaiting(queued=n, daemons=served.get(t, 0)) for t, n in sorted(by_type.items())},
            unserved=sum(n for t, n in by_type.items() if t not in served),
            finished_per_minute=await finished_per_minute(store, q, now, minutes),
        ))
    return out


async def queues(request: Request) -> Response:
    authorise(request, Role.READ)
    return json_response(await queue_infos(request))


async def daemons(request: Request) -> Response:
    authorise(request, Role.READ)
    include_gone = request.query_params.get("all", "false").lower() in ("1", "true", "yes")
    return json_response(await state_of(request).store.workers(include_gone=include_gone))


async def report(request: Request) -> Response:
    authorise(request, Role.READ)
    store = state_of(request).store
    names = [_queue(request)] if request.query_params.get("queue") else await store.queues()
    categories = {c.value: 0 for c in Category}
    problems = {p.value: 0 for p in Problem}
    counts: dict[str, dict[str, int]] = {c.value: {} for c in Category}
    unfiled = 0
    for q in names:
        found, waiting = await store.filing_counts(q)
        unfiled += waiting
        for (category, problem), n in found.items():
            categories[category] = categories.get(category, 0) + n
            problems[problem] = problems.get(problem, 0) + n
            counts.setdefault(category, {})[problem] = counts.get(category, {}).get(problem, 0) + n
    return json_response(Report(filed=sum(categories.values()), unfiled=unfiled, categories=categories,
                                problems=problems, counts=counts))


async def diagram(request: Request) -> Response:
    authorise(request, Role.READ)
    name = request.path_params["machine"]
    if name not in MACHINES:
        raise NotFound(f"machine {name[:40]!r} not found (known: {', '.join(sorted(MACHINES))})")
    return json_response(Diagram(machine=name, mermaid=to_mermaid(MACHINES[name])))


async def health(request: Request) -> Response:
    await state_of(request).store.queues()
    return json_response(Health(status="ok"))


async def openapi(request: Request) -> Response:
    cached: Response | None = getattr(request.app.state, "openapi", None)
    if cached is None:  # the document never changes while the process runs
        cached = request.app.state.openapi = json_response(openapi_document())
    return cached


def routes() -> list[Route]:
    from .events import events
    from .flows import flow_routes
    from .ops import ops_routes

    return [
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/api/v1/health", health, methods=["GET"]),
        Route("/api/v1/jobs", submit, methods=["POST"]),
        Route("/api/v1/jobs", list_jobs_route, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/events", get_job_events, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/v1/jobs/{job_id}/retry", retry_job, methods=["POST"]),
        Route("/api/v1/batches", create_batch, methods=["POST"]),
        Route("/api/v1/batches", list_batches, methods=["GET"]),
        Route("/api/v1/batches/{batch_id}", get_batch, methods=["GET"]),
        Route("/api/v1/batches/{batch_id}/jobs", add_to_batch, methods=["POST"]),
        Route("/api/v1/batches/{batch_id}/close", close_batch, methods=["POST"]),
        Route("/api/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
        Route("/api/v1/deliveries/{delivery_id}/redeliver", redeliver, methods=["POST"]),
        Route("/api/v1/queues", queues, methods=["GET"]),
        Route("/api/v1/daemons", daemons, methods=["GET"]),
        Route("/api/v1/report", report, methods=["GET"]),
        Route("/api/v1/machines/{machine}", diagram, methods=["GET"]),
        Route("/api/v1/events", events, methods=["GET"]),
        *ops_routes(),
        *flow_routes(),
    ]
