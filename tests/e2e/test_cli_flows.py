"""Dependencies from the command line and the HTTP API, against a real redis-server.

``jobvisor submit --depends-on ID [--depends-on ID] --on-dependency-failure POLICY`` makes a
``waiting`` job that ``jobvisor jobs --state waiting`` lists; an unknown id or one of another
queue is exit 2 with one line naming ``depends_on``, and nothing is written (the whole keyspace
compared). The HTTP API's submit takes the same fields and refuses the same input with 400
(the API's bad input), nothing written.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cli_support import assert_nothing_written, assert_one_line_error, dump, jv, ok_json
from tests.redis_server import RedisServer
from tests.web_support import WebProcess, auth, web_server

APP = ("--app", "examples.app:app")
UNKNOWN = "default.01ZZZZZZZZZZZZZZZZZZZZZZZZ"


def submit(url: str, *args: str) -> dict[str, object]:
    return dict(ok_json(jv("submit", "echo", *APP, "--json", "--redis", url, *args)))


def test_submit_depends_on_waits_and_jobs_lists_it(redis_url: str) -> None:
    a = str(submit(redis_url)["id"])
    b = str(submit(redis_url)["id"])
    parent = submit(redis_url, "--depends-on", a, "--depends-on", b, "--on-dependency-failure", "ignore")
    assert parent["state"] == "waiting"
    listed = ok_json(jv("jobs", "--state", "waiting", "--json", "--redis", redis_url))
    assert [j["id"] for j in listed["jobs"]] == [parent["id"]]
    status = ok_json(jv("status", str(parent["id"]), "--json", "--redis", redis_url))
    assert status["state"] == "waiting"
    queues = ok_json(jv("queues", "--json", "--redis", redis_url))
    assert (queues["default"]["queued"], queues["default"]["waiting"]) == (2, 1)
    cancelled = jv("cancel", str(parent["id"]), "--redis", redis_url)
    assert cancelled.returncode == 0, cancelled.stderr


@pytest.mark.parametrize(("args", "patterns"), [
    (("--depends-on", UNKNOWN), ("depends_on", f"no job {UNKNOWN}")),
    (("--depends-on", "other.01ZZZZZZZZZZZZZZZZZZZZZZZZ"), ("depends_on", "not in queue 'default'")),
    (("--depends-on", "not an id"), ("depends_on", "not a jobvisor id")),
    (("--depends-on", "@known", "--depends-on", "@known"), ("depends_on", "twice")),
    (("--depends-on", "@known", "--delay", "5"), ("depends_on", "no delay")),
    (("--depends-on", "@known", "--on-dependency-failure", "maybe"), ("on-dependency-failure",)),
], ids=["unknown", "other-queue", "malformed", "repeated", "delay", "bad-policy"])
def test_bad_dependencies_are_one_line_exit_2_and_write_nothing(
    redis_url: str, args: tuple[str, ...], patterns: tuple[str, ...]
) -> None:
    known = str(submit(redis_url)["id"])
    before = dump(redis_url)
    result = jv("submit", "echo", *APP, "--redis", redis_url, *(known if a == "@known" else a for a in args))
    assert_one_line_error(result, 2, *patterns)
    assert_nothing_written(before, dump(redis_url))


@pytest.fixture(scope="module")
def web(redis_server: RedisServer) -> Iterator[WebProcess]:
    with web_server(redis_server.url) as server:
        yield server


def test_the_http_submit_takes_dependencies_and_refuses_bad_ones(web: WebProcess, redis_url: str) -> None:
    with httpx.Client(base_url=web.url, headers=auth(), timeout=30) as api:
        made = api.post("/api/v1/jobs", json={"type": "echo"})
        assert made.status_code == 201, made.text
        dep = made.json()["id"]
        waiting = api.post("/api/v1/jobs", json={"type": "echo", "depends_on": [dep],
                                                 "on_dependency_failure": "continue"})
        assert (waiting.status_code, waiting.json()["state"]) == (201, "waiting")
        before = dump(redis_url)
        for body, words in (({"depends_on": [UNKNOWN]}, f"no job {UNKNOWN}"),
                            ({"depends_on": [dep], "on_dependency_failure": "sometimes"}, "on_dependency_failure")):
            refused = api.post("/api/v1/jobs", json={"type": "echo", **body})
            assert refused.status_code == 400, refused.text  # the API's bad input, as for every field
            assert refused.headers["content-type"] == "application/problem+json"
            assert words in refused.json()["detail"]
        assert_nothing_written(before, dump(redis_url))
