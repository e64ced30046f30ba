"""``jobvisor web``: the API and the dashboard, served by hypercorn's trio worker.

One trio run holds the store actor (the same :class:`~adapters.store_actor.StoreActor` the
daemon uses: concurrent requests batched into pipelines on one connection) and the server.
Redis may be away at start or later: requests answer 503 meanwhile, and the server keeps
listening. The access log is off (a request line never carries a token, but a log of every
request is the operator's choice to add in front).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import JobvisorError
from jobvisor.adapters.store import Store
from jobvisor.adapters.store_actor import StoreActor

from ..app import App
from ..client import submitter_policy
from .api import routes as api_routes
from .dashboard import routes as dashboard_routes
from .problems import Problem, problem_of, problem_response
from .settings import WebSettings
from .state import WebState

__all__ = ["create_app", "serve", "serve_state"]

log = logging.getLogger("jobvisor.web")


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def _ours(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobvisorError)
    return problem_response(problem_of(exc))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = "no such route" if exc.status_code == 404 else str(exc.detail)
    return problem_response(Problem(exc.status_code, detail, headers=dict(exc.headers or {})))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path)
    return problem_response(Problem(500, "internal error (logged by the server)"))


def create_app(state: WebState) -> Starlette:
    """The ASGI application over ``state`` (its store must be served by a running actor)."""
    middleware = []
    if state.settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(state.settings.cors_origins),
            allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        ))
    app = Starlette(
        routes=[*api_routes(), *dashboard_routes()],
        middleware=middleware,
        exception_handlers={Problem: _problem, JobvisorError: _ours, HTTPException: _http, Exception: _unexpected},
    )
    app.state.jobvisor = state
    return app


async def serve(settings: WebSettings, app: App | None = None, *, shutdown: trio.Event | None = None,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until ``shutdown`` is set (or the run is cancelled); ``task_status`` gets the
    bound addresses (``http://127.0.0.1:8080``)."""
    backend = open_backend(settings.redis)
    actor = StoreActor(backend, time.time)
    state = WebState(store=Store(actor), backend=backend, settings=settings, destinations=submitter_policy(),
                     app=app)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await serve_state(state, shutdown=shutdown, task_status=task_status)
            actor.close()
    finally:
        backend.close()


async def serve_state(state: WebState, *, shutdown: trio.Event | None = None,
                      task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``state`` (its store served by a running actor, the web process's or a daemon's)
    on ``state.settings``' address until ``shutdown`` is set."""
    settings = state.settings
    config = HypercornConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("jobvisor.web.server")
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 75.0
    config.include_server_header = False  # the server's name and version are nobody's business
    trigger: Any = (shutdown if shutdown is not None else trio.Event()).wait
    await hypercorn_serve(create_app(state), config, shutdown_trigger=trigger,  # type: ignore[arg-type]
                          task_status=task_status)
