"""Dependencies, flows and chains from the command line and the HTTP API, against a real redis-server.

``jobvisor submit --depends-on ID [--depends-on ID] --on-dependency-failure POLICY`` makes a
``waiting`` job that ``jobvisor jobs --state waiting`` lists; an unknown id or one of another
queue is exit 2 with one line naming ``depends_on``, and nothing is written (the whole keyspace
compared). The HTTP API's submit takes the same fields and refuses the same input with 400
(the API's bad input), nothing written.

``jobvisor flow --parent T --child T=JSON...`` and ``jobvisor chain T T=JSON...`` print the
ids they made; the jobs are read back from Redis: the parent ``waiting`` on every child (each
child's ``dependents`` set names it, and the child names its parent), the children
``queued``; a chain's each step ``waiting`` on the one before. Bad steps, JSON, policies,
mixed queues and an empty chain are exit 2, one line, the keyspace unchanged. Over HTTP,
``POST /api/v1/flows`` and ``/chains`` answer 201 with the ids of the same jobs, 400 naming the
job and the field with nothing written, 403 to a read token; the OpenAPI document lists both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
import redis

from jobvisor.adapters.keys import Keys
from tests.cli_support import assert_nothing_written, assert_one_line_error, dump, jv, ok_json
from tests.redis_server import RedisServer
from tests.web_support import READER, WebProcess, auth, web_server

APP = ("--app", "examples.app:app")
FLOW_APP = ("--app", "tests.flow_app:app")
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


# -- flow and chain --------------------------------------------------------------------------------


def jobs_of(url: str, ids: list[str]) -> dict[str, dict[str, object]]:
    """Each job's state, type, input, parent and the waiting jobs depending on it, read from Redis."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        out: dict[str, dict[str, object]] = {}
        for job_id in ids:
            keys = Keys("default")
            record = client.hgetall(keys.job(job_id))
            out[job_id] = {"state": record["state"], "type": record["type"], "input": json.loads(record["input"]),
                           "parent": record.get("parent"), "dependents": client.smembers(keys.dependents(job_id))}
        return out
    finally:
        client.close()


def test_flow_prints_the_ids_and_the_parent_waits_for_its_children(redis_url: str) -> None:
    made = jv("flow", *FLOW_APP, "--redis", redis_url, "--parent", 'parent={"title": "t"}',
              "--child", 'child={"n": 1}', "--child", 'child={"n": 2}', "--on-dependency-failure", "ignore")
    assert (made.returncode, made.stderr) == (0, ""), made.stderr
    parent, *children = made.stdout.split()
    assert len(children) == 2
    jobs = jobs_of(redis_url, [parent, *children])
    assert jobs[parent] == {"state": "waiting", "type": "parent", "input": {"title": "t"}, "parent": None,
                            "dependents": set()}
    for n, child in enumerate(children, 1):
        assert jobs[child] == {"state": "queued", "type": "child", "input": {"n": n}, "parent": parent,
                               "dependents": {parent}}
    waiting = ok_json(jv("jobs", "--state", "waiting", "--json", "--redis", redis_url))
    assert [j["id"] for j in waiting["jobs"]] == [parent]


def test_flow_json_names_parent_and_children(redis_url: str) -> None:
    made = ok_json(jv("flow", *FLOW_APP, "--redis", redis_url, "--json", "--parent", "parent",
                      "--child", 'child={"n": 1}'))
    assert set(made) == {"parent", "children"}
    jobs = jobs_of(redis_url, [made["parent"], *made["children"]])
    assert [jobs[j]["state"] for j in (made["parent"], *made["children"])] == ["waiting", "queued"]
    assert jobs[made["parent"]]["input"] is None


def test_chain_prints_the_ids_in_order_each_waiting_on_the_one_before(redis_url: str) -> None:
    made = jv("chain", *FLOW_APP, "--redis", redis_url, 'child={"n": 1}', "child", 'parent=[1, 2]')
    assert (made.returncode, made.stderr) == (0, ""), made.stderr
    steps = made.stdout.split()
    jobs = jobs_of(redis_url, steps)
    assert [(jobs[s]["state"], jobs[s]["type"], jobs[s]["input"]) for s in steps] == [
        ("queued", "child", {"n": 1}), ("waiting", "child", None), ("waiting", "parent", [1, 2])]
    assert [jobs[s]["dependents"] for s in steps] == [{steps[1]}, {steps[2]}, set()]
    assert [jobs[s]["parent"] for s in steps] == [None, None, None]  # a chain's steps are nobody's children
    listed = ok_json(jv("chain", *FLOW_APP, "--redis", redis_url, "--json", "child"))
    assert [jobs_of(redis_url, listed["steps"])[listed["steps"][0]]["state"]] == ["queued"]


@pytest.mark.parametrize(("args", "patterns"), [
    (("flow", "--parent", "parent", "--child", "nope"), ("children[0]: type: unknown job type 'nope'",)),
    (("flow", "--parent", "parent=", "--child", "child"), ("parent: input: malformed JSON",)),
    (("flow", "--parent", "parent", "--child", "child", "--child", 'child={"n": '),
     ("children[1]: input: malformed JSON",)),
    (("flow", "--parent", "parent", "--child", "child", "--on-dependency-failure", "maybe"),
     ("on-dependency-failure", "maybe")),
    (("flow", "--parent", "parent", "--child", "elsewhere"), ("flow: job 1 is in queue 'other'",)),
    (("flow", "--parent", "parent"), ("--child",)),
    (("flow", "--parent", "parent", "--child", "child", "--queue", "bad queue!"), ("queue: ", "bad queue!")),
    (("chain",), ("required",)),
    (("chain", "child", "elsewhere"), ("flow: job 1 is in queue 'other'",)),
    (("chain", "child", "child=[1"), ("steps[1]: input: malformed JSON",)),
    (("chain", "child", "=1"), ("steps[1]: type: unknown job type ''",)),
], ids=["unknown-type", "parent-json", "child-json", "bad-policy", "mixed-queues", "no-child", "bad-queue",
        "empty-chain", "chain-mixed-queues", "chain-json", "chain-no-type"])
def test_bad_flows_and_chains_are_one_line_exit_2_and_write_nothing(
    redis_url: str, args: tuple[str, ...], patterns: tuple[str, ...]
) -> None:
    submit(redis_url)  # a database with something in it
    before = dump(redis_url)
    result = jv(*args, *FLOW_APP, "--redis", redis_url)
    assert_one_line_error(result, 2, *(re.escape(p) for p in patterns))
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


def test_the_http_api_submits_flows_and_chains(web: WebProcess, redis_url: str) -> None:
    with httpx.Client(base_url=web.url, headers=auth(), timeout=30) as api:
        made = api.post("/api/v1/flows", json={"parent": {"type": "echo", "input": {"p": 1}},
                                               "children": [{"type": "echo", "input": {"c": 1}},
                                                            {"type": "fail_once", "priority": 5}],
                                               "on_dependency_failure": "continue"})
        assert made.status_code == 201, made.text
        flow = made.json()
        assert set(flow) == {"parent", "children"}
        jobs = jobs_of(redis_url, [flow["parent"], *flow["children"]])
        assert jobs[flow["parent"]] == {"state": "waiting", "type": "echo", "input": {"p": 1}, "parent": None,
                                        "dependents": set()}
        assert [(jobs[c]["state"], jobs[c]["type"], jobs[c]["parent"], jobs[c]["dependents"])
                for c in flow["children"]] == [("queued", "echo", flow["parent"], {flow["parent"]}),
                                               ("queued", "fail_once", flow["parent"], {flow["parent"]})]
        shown = api.get(f"/api/v1/jobs/{flow['children'][1]}").json()
        assert shown["priority"] == 5  # each child is a whole submit body
        made = api.post("/api/v1/chains", json={"steps": [{"type": "echo"}, {"type": "echo", "input": [2]}]})
        assert made.status_code == 201, made.text
        steps = made.json()["steps"]
        jobs = jobs_of(redis_url, steps)
        assert [(jobs[s]["state"], jobs[s]["input"], jobs[s]["dependents"]) for s in steps] == [
            ("queued", None, {steps[1]}), ("waiting", [2], set())]
        document = api.get("/api/v1/openapi.json").json()
        assert {"/api/v1/flows", "/api/v1/chains"} <= set(document["paths"])
        assert document["paths"]["/api/v1/flows"]["post"]["requestBody"]["content"]["application/json"] == {
            "schema": {"$ref": "#/components/schemas/FlowSubmit"}}
        assert {"FlowSubmit", "ChainSubmit", "FlowCreated", "ChainCreated"} <= set(document["components"]["schemas"])


ECHO = {"type": "echo"}


@pytest.mark.parametrize(("path", "body", "words", "field"), [
    ("/api/v1/flows", {"parent": {"type": "nope"}, "children": [ECHO]}, "parent: type: unknown job type 'nope'",
     "parent"),
    ("/api/v1/flows", {"parent": ECHO, "children": [ECHO, {"type": "echo", "timeout": -1}]}, "children[1]: ",
     "timeout"),
    ("/api/v1/flows", {"parent": ECHO, "children": []}, "children: required", "children"),
    ("/api/v1/flows", {"children": [ECHO]}, "parent: required", "parent"),
    ("/api/v1/flows", {"parent": ECHO, "children": [ECHO], "on_dependency_failure": "maybe"},
     "on_dependency_failure: must be one of", "on_dependency_failure"),
    ("/api/v1/flows", {"parent": ECHO, "children": [{"type": "echo", "queue": "other"}]},
     "flow: job 1 is in queue 'other'", "flow"),
    ("/api/v1/flows", {"parent": ECHO, "children": ["echo"]}, "children[0]: must be a JSON object",
     "children[0]"),
    ("/api/v1/flows", {"parent": ECHO, "children": [ECHO], "extra": 1}, "extra: not a field", "extra"),
    ("/api/v1/flows", {"parent": {"type": "echo", "idempotency_key": "k"}, "children": [ECHO]},
     "takes no idempotency_key", "flow"),
    ("/api/v1/chains", {"steps": []}, "steps: required", "steps"),
    ("/api/v1/chains", {"steps": [ECHO, {"input": 1}]}, "steps[1]: type: required", "steps[1]"),
    ("/api/v1/chains", {"steps": [ECHO, {"type": "echo", "queue": "other"}]}, "flow: job 1 is in queue 'other'",
     "flow"),
    ("/api/v1/chains", {"steps": [ECHO, {"type": "echo", "depends_on": [UNKNOWN]}]}, f"no job {UNKNOWN}", None),
], ids=["unknown-type", "bad-option", "no-children", "no-parent", "bad-policy", "mixed-queues", "not-an-object",
        "unknown-field", "idempotency-key", "empty-chain", "chain-no-type", "chain-mixed-queues",
        "chain-unknown-dependency"])
def test_bad_http_flows_and_chains_are_400_and_write_nothing(
    web: WebProcess, redis_url: str, path: str, body: dict[str, object], words: str, field: str | None
) -> None:
    with httpx.Client(base_url=web.url, headers=auth(), timeout=30) as api:
        assert api.post("/api/v1/jobs", json=ECHO).status_code == 201  # a database with something in it
        before = dump(redis_url)
        refused = api.post(path, json=body)
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert words in refused.json()["detail"]
        if field is not None:
            assert refused.json()["field"] == field
        assert_nothing_written(before, dump(redis_url))


def test_flows_and_chains_need_an_admin_token(web: WebProcess, redis_url: str) -> None:
    before = dump(redis_url)
    for path, body in (("/api/v1/flows", {"parent": ECHO, "children": [ECHO]}), ("/api/v1/chains", {"steps": [ECHO]})):
        assert httpx.post(web.url + path, json=body, headers=auth(READER), timeout=30).status_code == 403
        assert httpx.post(web.url + path, json=body, timeout=30).status_code == 401
    assert_nothing_written(before, dump(redis_url))
