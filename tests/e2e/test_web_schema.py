"""Property-based tests of the API against its own OpenAPI document (schemathesis): for
generated requests to every operation, no 5xx, and every response matches its schema.
Bounded: a few derandomized examples per operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err
from schemathesis.openapi import from_url

from tests.redis_server import RedisServer
from tests.web_support import WebProcess, auth, web_server

EXAMPLES = 8
# What the API promises: no 5xx, documented statuses, content types, headers and bodies. (A
# schema-valid submit naming a type no daemon published is a 400 by design: the set of types
# lives in Redis, not in the document.)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def web(redis_server: RedisServer) -> Iterator[WebProcess]:
    with web_server(redis_server.url) as server:
        yield server


def test_no_server_errors_and_every_response_matches_the_schema(web: WebProcess) -> None:
    # the event stream never ends: it has its own tests (test_web_api.py)
    schema = from_url(f"{web.url}/api/v1/openapi.json").exclude(path="/api/v1/events")
    checked = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # the document itself is wrong: say where
            raise result.err()
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Case[Any]) -> None:
            case.call_and_validate(headers=auth(), checks=CHECKS, timeout=30)

        check()
        checked.append(operation.label)
    assert len(checked) == 24, checked  # every operation but the event stream
