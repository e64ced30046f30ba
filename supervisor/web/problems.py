"""Errors as ``application/problem+json`` (RFC 9457), with the CLI's meaning per status.

=====  ===========================================  ============
HTTP   when                                         CLI exit
=====  ===========================================  ============
400    bad input: the ``field`` is named, nothing   2
       was written
401    no token, or one this server does not know   -
403    a ``read`` token asked for a mutation        -
404    no such job, batch or route                  3
409    the transition was absorbed (already         0 / 2
       terminal) or refused (``Rejected``)
503    Redis is unreachable (``Retry-After``)       1
=====  ===========================================  ============

Every message passes through :func:`~adapters.redaction.redact_text`, so a URL's credentials
never reach a client, and none quotes a request header (tokens never appear in errors).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.responses import Response

from jobvisor.adapters.errors import BadInput, JobvisorError, NotFound, Rejected, StoreError, StoreUnavailable
from jobvisor.adapters.redaction import redact_text

__all__ = ["Problem", "problem_response", "problem_of", "field_of", "PROBLEM_TYPE"]

PROBLEM_TYPE = "application/problem+json"
_TITLES = {400: "Bad input", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           409: "Conflict", 500: "Internal error", 503: "Store unavailable"}
_PATH = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*(?:\[[0-9]+\])?): ")  # a flow's job: children[1]


class Problem(Exception):
    """An HTTP error to answer with; ``field`` names the bad part of the request."""

    def __init__(self, status: int, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or {}


def field_of(message: str) -> str | None:
    """The field a :class:`BadInput` message names: msgspec's ``at `$.priority``` or a leading
    ``priority: ...``."""
    found = _PATH.search(message)
    if found:
        return found.group(1)
    found = _PREFIX.match(message)
    return found.group(1) if found else None


def problem_of(exc: JobvisorError) -> Problem:
    """Our exception tree mapped to statuses (see the module docstring)."""
    text = redact_text(str(exc))
    if isinstance(exc, BadInput):
        return Problem(400, text, field=field_of(text))
    if isinstance(exc, NotFound):
        return Problem(404, text)
    if isinstance(exc, Rejected):
        return Problem(409, text)
    if isinstance(exc, StoreUnavailable):
        return Problem(503, text, headers={"Retry-After": "1"})
    if isinstance(exc, StoreError):
        return Problem(503 if "closed" in text else 500, text)
    return Problem(500, text)


def problem_response(problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": f"/api/v1/problems/{problem.status}",
        "title": _TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail.replace("\n", " ")[:2000],
    }
    if problem.field is not None:
        body["field"] = problem.field
    headers = dict(problem.headers)
    if problem.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="jobvisor"')
    return Response(msgspec.json.encode(body), status_code=problem.status, headers=headers, media_type=PROBLEM_TYPE)
