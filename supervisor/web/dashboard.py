"""The dashboard at ``/``: server-rendered pages kept live by the event stream.

Pages read the store through the same functions as the API (``api.job_detail``,
``api.queue_infos``, ``adapters.listing``). Each page subscribes to ``/api/v1/events`` (its
queue, or its job) with the browser's ``EventSource``; an event makes htmx fetch the page
again and swap its ``#live`` part (throttled to one fetch a second). Cancel, retry and the
re-send of a dead webhook delivery are posts to the API, shown to admin tokens only, each
behind a confirmation.

The job page draws the job machine (``machines.to_mermaid``) with the states this job went
through highlighted, read from its event history (each ``job.*`` event's ``from``/``to``).
Static files (htmx, mermaid, pinned and vendored with their licences) ship in the package.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from jobvisor.adapters.errors import BadInput, NotFound
from jobvisor.adapters.listing import list_jobs, live_batches
from jobvisor.adapters.redaction import redact_text
from jobvisor.machines import JOB, JobState, to_mermaid

from .api import job_detail, job_history, queue_infos
from .problems import Problem
from .settings import Role
from .state import COOKIE, authorise, state_of

__all__ = ["routes", "highlighted_diagram", "visited_states"]

HERE = Path(__file__).parent
_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _json(value: Any) -> str:
    return redact_text(json.dumps(value, indent=2, sort_keys=True, default=str))


_env.filters["when"] = _when
_env.filters["pretty"] = _json


def _page(name: str, request: Request, role: Role, **context: Any) -> HTMLResponse:
    template = _env.get_template(name)
    return HTMLResponse(template.render(admin=role is Role.ADMIN, request=request,
                                        signed_in=bool(state_of(request).settings.tokens), **context))


def _role(request: Request) -> Role | Response:
    """The caller's role, or the sign-in page's redirect."""
    try:
        return authorise(request, Role.READ)
    except Problem as problem:
        if problem.status == 401:
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)
        raise


def visited_states(events: list[Any]) -> list[str]:
    """The job's path through its machine: the states its ``job.*`` events entered, in order."""
    path: list[str] = []
    for event in events:
        if not event.type.startswith("job.") or "to" not in event.fields:
            continue
        if not path and event.fields.get("from"):
            path.append(event.fields["from"])
        path.append(event.fields["to"])
    return path


def highlighted_diagram(path: list[str], current: str) -> str:
    """The job machine's Mermaid source with ``path``'s states (and ``current``) styled."""
    lines = [to_mermaid(JOB)]
    known = {s.value for s in JobState}
    visited = sorted({s for s in path if s in known} - {current})
    lines.append("    classDef visited fill:#d6ecff,stroke:#1f6feb,stroke-width:2px,color:#0b2a4a")
    lines.append("    classDef current fill:#1f6feb,stroke:#0b2a4a,stroke-width:3px,color:#ffffff")
    if visited:
        lines.append(f"    class {','.join(visited)} visited")
    if current in known:
        lines.append(f"    class {current} current")
    return "\n".join(lines)


async def overview(request: Request) -> Response:
    role = _role(request)
    if isinstance(role, Response):
        return role
    store = state_of(request).store
    infos = await queue_infos(request)
    daemons = await store.workers()
    batches = []
    for info in infos:
        for batch_id in await live_batches(store, info.queue, 20):
            try:
                batches.append(await store.get_batch(batch_id))
            except NotFound:
                continue
    filing = {q.queue: await store.filing_counts(q.queue) for q in infos}
    return _page("overview.html", request, role, queues=infos, daemons=daemons, batches=batches, filing=filing,
                 now=time.time(), events_url="/api/v1/events")


async def jobs(request: Request) -> Response:
    role = _role(request)
    if isinstance(role, Response):
        return role
    q = request.query_params
    queue = q.get("queue") or "default"
    filters = {"queue": queue, "state": q.get("state") or "", "type": q.get("type") or ""}
    error = None
    try:
        page = await list_jobs(state_of(request).store, queue, state=filters["state"] or None,
                               job_type=filters["type"] or None, cursor=q.get("cursor") or None, limit=50)
    except BadInput as exc:
        error, page = str(exc), None
    next_url = None
    if page is not None and page.next_cursor:
        next_url = "/jobs?" + urlencode({**{k: v for k, v in filters.items() if v}, "cursor": page.next_cursor})
    events = "/api/v1/events?" + urlencode({"queue": queue}) if error is None else ""
    return _page("jobs.html", request, role, page=page, filters=filters, error=error, next_url=next_url,
                 states=[s.value for s in JobState], events_url=events)


async def job(request: Request) -> Response:
    role = _role(request)
    if isinstance(role, Response):
        return role
    job_id = request.path_params["job_id"]
    store = state_of(request).store
    try:
        view = await store.get_job(job_id)
    except (NotFound, BadInput):
        return _page("missing.html", request, role, what=f"job {job_id}", events_url="")
    detail = await job_detail(request, job_id)
    history = await job_history(request, view)
    path = visited_states(history.events)
    return _page("job.html", request, role, job=detail, history=history, path=path,
                 diagram=highlighted_diagram(path, view.state), terminal=JOB.is_terminal(view.state),
                 events_url="/api/v1/events?" + urlencode({"job": job_id}))


async def batch(request: Request) -> Response:
    role = _role(request)
    if isinstance(role, Response):
        return role
    batch_id = request.path_params["batch_id"]
    try:
        view = await state_of(request).store.get_batch(batch_id)
    except (NotFound, BadInput):
        return _page("missing.html", request, role, what=f"batch {batch_id}", events_url="")
    return _page("batch.html", request, role, batch=view,
                 events_url="/api/v1/events?" + urlencode({"batch": batch_id}))


def _next(value: str | None) -> str:
    """Where to go after signing in: a path on this server only."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def login(request: Request) -> Response:
    settings = state_of(request).settings
    if request.method == "GET":
        login = _env.get_template("login.html")
        return HTMLResponse(login.render(error=None, next=_next(request.query_params.get("next"))))
    raw = (await request.body())[:8192].decode("utf-8", "replace")
    form = parse_qs(raw)
    token = (form.get("token") or [""])[0].strip()
    target = _next((form.get("next") or ["/"])[0])
    if not settings.tokens or settings.tokens.role_of(token) is None:
        page = _env.get_template("login.html").render(error="That is not a token this server accepts.", next=target)
        return HTMLResponse(page, status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview, methods=["GET"]),
        Route("/jobs", jobs, methods=["GET"]),
        Route("/jobs/{job_id}", job, methods=["GET"]),
        Route("/batches/{batch_id}", batch, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST", "GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
