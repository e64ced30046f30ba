"""What every request handler is given, and how a request is authorised.

Authorisation: a ``Authorization: Bearer <token>`` header, or the dashboard's cookie (set by
its sign-in form, ``HttpOnly`` and ``SameSite=Strict``). A mutation authorised by the cookie
must also carry ``HX-Request`` (the dashboard's requests do; a cross-site form cannot), so a
signed-in browser cannot be made to act by another site. Without configured tokens every
caller is ``admin`` (``jobvisor web`` allows that on loopback only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.requests import HTTPConnection

from jobvisor.adapters.backend import Backend
from jobvisor.adapters.destinations import DestinationPolicy
from jobvisor.adapters.store import Store

from ..app import App
from ..published_types import PublishedTypes, merged
from .problems import Problem
from .settings import Role, WebSettings

__all__ = ["WebState", "COOKIE", "authorise", "state_of"]

COOKIE = "jobvisor_token"
TYPES_TTL = 1.0  # how long published job types are reused before being read again (seconds)


def _published_types() -> PublishedTypes:
    return PublishedTypes(TYPES_TTL, trio.current_time)


@dataclass
class WebState:
    store: Store
    backend: Backend
    settings: WebSettings
    destinations: DestinationPolicy
    app: App | None = None
    clock: Any = time.time
    published: PublishedTypes = field(default_factory=_published_types)

    async def submit_types(self, job_type: str) -> dict[str, dict[str, Any]]:
        """Job types and their defaults a submit of ``job_type`` is checked against: those
        daemons published (read again after ``TYPES_TTL`` seconds, or at once for a type not
        seen), then the ``--app``'s."""
        local = self.app.described_types() if self.app else None
        published = self.published.serves(job_type)
        if published is None:
            published = self.published.keep(await self.store.job_types())
        return merged(published, local)


def state_of(request: HTTPConnection) -> WebState:
    state: WebState = request.app.state.jobvisor
    return state


def presented_token(request: HTTPConnection) -> tuple[str | None, bool]:
    """The token the request carries and whether it came in the cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "Authorization: expected 'Bearer <token>'")
        return token.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def authorise(request: HTTPConnection, needed: Role) -> Role:
    """The caller's role, if it may do what needs ``needed``; else 401 or 403."""
    tokens = state_of(request).settings.tokens
    if not tokens:
        return Role.ADMIN
    token, from_cookie = presented_token(request)
    if token is None:
        raise Problem(401, "a bearer token is required")
    role = tokens.role_of(token)
    if role is None:
        raise Problem(401, "the token is not one this server accepts")
    if needed is Role.ADMIN and role is not Role.ADMIN:
        raise Problem(403, "this needs an admin token")
    if needed is Role.ADMIN and from_cookie and request.headers.get("hx-request") != "true":
        raise Problem(403, "a mutation signed in by cookie must come from the dashboard (HX-Request)")
    return role
