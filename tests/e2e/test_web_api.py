"""The HTTP API of ``jobvisor web`` against a real redis-server, served by a real process.

Every endpoint; bad bodies are 400 naming the field with nothing written (the whole keyspace
compared); 401/403/404; cursor pagination; SSE resumed with Last-Event-ID exactly once.
No daemon runs here, so the keyspace changes only by what the API writes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.store import SyncStore
from tests.cli_support import dump
from tests.redis_server import RedisServer, free_port
from tests.web_support import ADMIN, READER, ROOT, SseReader, WebProcess, auth, env, web_server

MIB = 1 << 20


@pytest.fixture(scope="module")
def web(redis_server: RedisServer) -> Iterator[WebProcess]:
    with web_server(redis_server.url) as server:
        yield server


@pytest.fixture
def api(web: WebProcess, redis_url: str) -> Iterator[httpx.Client]:
    """An admin client of the module's server, on a flushed database."""
    with httpx.Client(base_url=web.url, headers=auth(), timeout=30) as client:
        yield client


def submit(api: httpx.Client, **body: Any) -> str:
    answer = api.post("/api/v1/jobs", json={"type": "echo", **body})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


# -- jobs ------------------------------------------------------------------------------------------


def test_submit_is_idempotent_by_key_and_status_shows_the_job(api: httpx.Client) -> None:
    first = api.post("/api/v1/jobs", json={"type": "echo", "input": {"n": 1}, "idempotency_key": "k-1",
                                           "priority": 5, "delay": 30, "webhook_url": "https://example.org/hook"})
    assert first.status_code == 201
    assert first.json()["created"] is True
    assert first.json()["state"] == "scheduled"
    again = api.post("/api/v1/jobs", json={"type": "echo", "input": {"n": 2}, "idempotency_key": "k-1"})
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "created": False, "state": "scheduled"}
    job = api.get(f"/api/v1/jobs/{first.json()['id']}").json()
    assert (job["type"], job["input"], job["priority"], job["state"]) == ("echo", {"n": 1}, 5, "scheduled")
    assert job["attempt_records"] == []
    assert job["deliveries"] == []
    assert "raw" not in job  # the raw hash holds lease tokens


def test_cancel_then_retry_then_absorbed_transitions_are_409(api: httpx.Client) -> None:
    job = submit(api)
    moved = api.post(f"/api/v1/jobs/{job}/cancel")
    assert moved.status_code == 200
    assert moved.json() == {"id": job, "outcome": "moved", "from": "queued", "to": "cancelled", "state": "cancelled"}
    assert "nothing to cancel" in problem(api.post(f"/api/v1/jobs/{job}/cancel"), 409)["detail"]
    retried = api.post(f"/api/v1/jobs/{job}/retry", json={"from_start": True})
    assert retried.status_code == 200
    assert retried.json()["to"] == "queued"
    assert "cannot retry" in problem(api.post(f"/api/v1/jobs/{job}/retry"), 409)["detail"]
    history = api.get(f"/api/v1/jobs/{job}/events").json()
    assert [e["type"] for e in history["events"]] == ["job.submitted", "job.cancelled", "job.retry_from_start"]
    assert history["complete"] is True


# -- bad input: 400 naming the field, nothing written -------------------------------------------------

BAD_SUBMITS = [
    pytest.param(b"{bad", "body", id="malformed-json"),
    pytest.param(b"[1, 2]", "body", id="not-an-object"),
    pytest.param(b"", "body", id="empty"),
    pytest.param(b'{"input": 1}', "type", id="no-type"),
    pytest.param(b'{"type": "nope"}', "type", id="unknown-type"),
    pytest.param(b'{"type": "echo", "webhook_url": "ftp://example.org/x"}', "webhook_url", id="bad-url"),
    pytest.param(b'{"type": "echo", "webhook_url": "http://127.0.0.1/x"}', "webhook_url", id="internal-url"),
    pytest.param(b'{"type": "echo", "priority": "high"}', "priority", id="bad-priority"),
    pytest.param(b'{"type": "echo", "delay": -1}', "delay", id="negative-delay"),
    pytest.param(b'{"type": "echo", "destinations": null}', "destinations", id="not-an-option"),
    pytest.param(b'{"type": "echo", "colour": "red"}', "colour", id="unknown-option"),
    pytest.param(b'{"type": "echo", "batch": "default.NOPE"}', None, id="unknown-batch"),
    pytest.param(b'{"type": "echo", "input": "' + b"x" * MIB + b'"}', "input", id="oversized-input"),
    pytest.param(b'{"type": "echo", "input": "' + b"x" * (2 * MIB) + b'"}', "body", id="oversized-body"),
    pytest.param(b'{"type": "echo", "input": ' + b"[" * 150 + b"]" * 150 + b"}", "input", id="too-deep"),
]


@pytest.mark.parametrize(("body", "field"), BAD_SUBMITS)
def test_a_bad_submit_is_400_naming_the_field_and_writes_nothing(
        api: httpx.Client, redis_url: str, body: bytes, field: str | None) -> None:
    submit(api)  # a database with something in it
    before = dump(redis_url)
    answer = api.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    if field is None:  # a batch that does not exist: not found, still nothing written
        assert answer.status_code in (404, 409), answer.text
    else:
        assert problem(answer, 400).get("field") == field, answer.text
    assert dump(redis_url) == before


@pytest.mark.parametrize(("path", "body", "field"), [
    pytest.param("/api/v1/batches", {"threshold": 0}, "threshold", id="batch-threshold"),
    pytest.param("/api/v1/batches", {"queue": "no spaces"}, "queue", id="batch-queue"),
    pytest.param("/api/v1/batches", {"webhook_url": "not a url"}, "webhook_url", id="batch-url"),
    pytest.param("{batch}/jobs", {"jobs": ["nope"]}, "jobs", id="batch-add-bad-id"),
    pytest.param("{batch}/jobs", {"jobs": []}, "jobs", id="batch-add-empty"),
    pytest.param("{batch}/jobs", {"jobs": ["x.A"], "more": 1}, "more", id="batch-add-option"),
    pytest.param("{job}/retry", {"from_start": "yes"}, "from_start", id="retry-from-start"),
    pytest.param("{job}/retry", {"hard": True}, "hard", id="retry-option"),
])
def test_other_bad_bodies_are_400_naming_the_field_and_write_nothing(
        api: httpx.Client, redis_url: str, path: str, body: Any, field: str) -> None:
    job = submit(api)
    assert api.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
    batch = api.post("/api/v1/batches", json={}).json()["id"]
    before = dump(redis_url)
    target = path.replace("{batch}", f"/api/v1/batches/{batch}").replace("{job}", f"/api/v1/jobs/{job}")
    assert problem(api.post(target, json=body), 400).get("field") == field
    assert dump(redis_url) == before


@pytest.mark.parametrize(("query", "field"), [
    ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "W10"}, "cursor"), ({"state": "done"}, "state"),
    ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"queue": "a b"}, "queue"),
    ({"created_after": "yesterday"}, "created_after"), ({"created_before": "nan"}, "created_before"),
])
def test_bad_listing_queries_are_400_naming_the_parameter(api: httpx.Client, query: dict[str, str],
                                                          field: str) -> None:
    assert problem(api.get("/api/v1/jobs", params=query), 400)["field"] == field


# -- listing --------------------------------------------------------------------------------------------


def test_listing_pages_through_every_job_once_with_filters(api: httpx.Client) -> None:
    jobs = [submit(api, input={"n": n}) for n in range(7)]
    cancelled = jobs[:2]
    for job in cancelled:
        api.post(f"/api/v1/jobs/{job}/cancel")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = api.get("/api/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(jobs)
    assert len(seen) == 7
    assert pages in (3, 4)
    by_state = api.get("/api/v1/jobs", params={"state": "cancelled"}).json()
    assert sorted(j["id"] for j in by_state["jobs"]) == sorted(cancelled)
    assert api.get("/api/v1/jobs", params={"type": "fail_once"}).json()["jobs"] == []
    created = [api.get(f"/api/v1/jobs/{j}").json()["created_at"] for j in jobs]
    later = api.get("/api/v1/jobs", params={"created_after": max(created) + 1}).json()
    assert later == {"jobs": [], "next_cursor": None}


# -- batches, queues, daemons, report, diagrams -------------------------------------------------------


def test_batches_create_add_close_cancel_and_status(api: httpx.Client) -> None:
    created = api.post("/api/v1/batches", json={"expected": 3, "threshold": 50})
    assert created.status_code == 201
    assert created.json()["state"] == "open"
    batch = created.json()["id"]
    member = submit(api, batch=batch)
    loose = submit(api)
    added = api.post(f"/api/v1/batches/{batch}/jobs", json={"jobs": [loose]})
    assert added.json() == {"id": batch, "added": 1}
    status = api.get(f"/api/v1/batches/{batch}").json()
    assert (status["members"], status["expected"], status["threshold"]) == (2, 3, 50)
    assert [b["id"] for b in api.get("/api/v1/batches").json()] == [batch]
    assert api.post(f"/api/v1/batches/{batch}/close").json()["to"] == "running"
    assert api.post(f"/api/v1/batches/{batch}/cancel").json()["to"] == "cancelled"
    problem(api.post(f"/api/v1/batches/{batch}/cancel"), 409)
    assert api.get(f"/api/v1/jobs/{member}").json()["batch"] == batch


def test_queues_daemons_report_and_diagrams(api: httpx.Client) -> None:
    # its own queue: the server's store names a queue in jv:queues once per process, and the
    # database is flushed between tests under the same server
    submit(api, queue="counted")
    (queue,) = api.get("/api/v1/queues").json()
    assert (queue["queue"], queue["queued"], queue["unserved"]) == ("counted", 1, 1)
    assert queue["types"] == {"echo": {"queued": 1, "daemons": 0}}
    assert len(queue["finished_per_minute"]) == 10
    assert api.get("/api/v1/daemons").json() == []
    report = api.get("/api/v1/report").json()
    assert (report["filed"], report["unfiled"]) == (0, 0)
    diagram = api.get("/api/v1/machines/job").json()
    assert diagram["mermaid"].startswith("stateDiagram-v2")
    assert api.get("/api/v1/health").json() == {"status": "ok"}
    document = api.get("/api/v1/openapi.json").json()
    assert {"/api/v1/jobs", "/api/v1/events", "/api/v1/batches/{batch_id}/jobs"} <= set(document["paths"])


# -- webhook deliveries ----------------------------------------------------------------------------------


def test_a_dead_delivery_is_re_sent_by_an_admin_once(web: WebProcess, api: httpx.Client, redis_url: str) -> None:
    job = submit(api, webhook_url="https://example.org/hook")
    assert api.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
    delivery = f"{job}~job.cancelled~0"
    with SyncStore(open_backend(redis_url)) as store:  # stands in for a daemon's deliverer: 410, dead
        [taken] = store.take_deliveries("default", max_attempts=1)
        assert store.delivery_outcome("default", delivery, taken.token, "reject", max_attempts=1,
                                      status=410).to == "dead"
    path = f"/api/v1/deliveries/{delivery}/redeliver"
    before = dump(redis_url)
    problem(httpx.post(web.url + path, headers=auth(READER)), 403)
    problem(httpx.post(web.url + path), 401)
    assert dump(redis_url) == before
    moved = api.post(path)
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"id": delivery, "outcome": "moved", "from": "dead", "to": "pending", "state": "pending"}
    shown = api.get(f"/api/v1/jobs/{job}").json()
    assert [(d["id"], d["state"], d["attempts"]) for d in shown["deliveries"]] == [(delivery, "pending", 0)]
    assert shown["notification"] == "pending"
    before = dump(redis_url)
    assert "pending: cannot re-send it" in problem(api.post(path), 409)["detail"]
    problem(api.post(f"/api/v1/deliveries/{job}~job.failed~0/redeliver"), 404)
    problem(api.post("/api/v1/deliveries/nope/redeliver"), 404)
    assert dump(redis_url) == before


# -- not found, auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/jobs/default.01ABCDEF"), ("GET", "/api/v1/jobs/not-an-id"),
    ("POST", "/api/v1/jobs/default.01ABCDEF/cancel"), ("POST", "/api/v1/jobs/default.01ABCDEF/retry"),
    ("GET", "/api/v1/jobs/default.01ABCDEF/events"), ("GET", "/api/v1/batches/default.01ABCDEF"),
    ("POST", "/api/v1/batches/default.01ABCDEF/close"), ("GET", "/api/v1/machines/spaceship"),
    ("GET", "/api/v1/nothing-here"),
])
def test_unknown_things_are_404_problems(api: httpx.Client, redis_url: str, method: str, path: str) -> None:
    before = dump(redis_url)
    problem(api.request(method, path), 404)
    assert dump(redis_url) == before


def test_tokens_roles_and_the_cookie_guard(web: WebProcess, redis_url: str) -> None:
    url = f"{web.url}/api/v1/jobs"
    bare = problem(httpx.get(url), 401)
    assert httpx.get(url).headers["www-authenticate"].startswith("Bearer")
    wrong = problem(httpx.get(url, headers=auth("x" * 30)), 401)
    assert problem(httpx.get(url, headers={"Authorization": "Basic abc"}), 401)
    assert httpx.get(url, headers=auth(READER)).status_code == 200
    before = dump(redis_url)
    refused = problem(httpx.post(url, headers=auth(READER), json={"type": "echo"}), 403)
    assert dump(redis_url) == before
    # the dashboard's cookie may mutate only with HX-Request (a cross-site form cannot send it)
    cookie = {"jobvisor_token": ADMIN}
    problem(httpx.post(url, cookies=cookie, json={"type": "echo"}), 403)
    assert dump(redis_url) == before
    assert httpx.post(url, cookies=cookie, headers={"HX-Request": "true"}, json={"type": "echo"}).status_code == 201
    for body in (bare, wrong, refused):
        assert ADMIN not in str(body)
        assert READER not in str(body)


def test_web_refuses_a_public_address_without_tokens(redis_url: str) -> None:
    """One line, exit 2, nothing listens (the other settings are checked in tests/supervisor)."""
    port = free_port()
    public = subprocess.run([sys.executable, "-m", "jobvisor", "web", "--redis", redis_url, "--host", "0.0.0.0",
                             "--port", str(port)], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert public.returncode == 2
    assert "no tokens are configured" in public.stderr
    assert len(public.stderr.strip().splitlines()) == 1


def test_unreachable_redis_is_503(tmp_path: Any) -> None:
    with web_server(f"redis://127.0.0.1:{free_port()}/0") as server, \
            httpx.Client(base_url=server.url, headers=auth(), timeout=30) as client:
        for path in ("/api/v1/queues", "/api/v1/health", "/api/v1/jobs/default.01ABC"):
            answer = problem(client.get(path), 503)
            assert answer["title"] == "Store unavailable"
        problem(client.post("/api/v1/jobs", json={"type": "echo"}), 503)


# -- live events --------------------------------------------------------------------------------------


def test_sse_resumed_with_last_event_id_delivers_every_event_exactly_once(api: httpx.Client, web: WebProcess) -> None:
    url = f"{web.url}/api/v1/events"
    first = SseReader(url, headers=auth(), params={"queue": "default"})
    start, _ = first.next()  # the position at connect, sent before any event
    assert start is not None
    batch_one = [submit(api, input={"n": n}) for n in range(5)]
    received: list[str] = []
    last = start
    for _ in range(2):
        last, event = first.next_event()
        received.append(event["id"])
    first.close()  # the client goes away with three events unread
    batch_two = [submit(api, input={"n": n}) for n in range(5, 10)]
    second = SseReader(url, headers={**auth(), "Last-Event-ID": last}, params={"queue": "default"})
    resumed_at, _ = second.next()
    assert resumed_at == last
    while len(received) < 10:
        _, event = second.next_event()
        received.append(event["id"])
    second.close()
    assert received == batch_one + batch_two  # each once, in order
    # a client that saw no event resumes from its connect position: nothing before or since is lost
    third = SseReader(url, headers={**auth(), "Last-Event-ID": start}, params={"queue": "default"})
    assert [third.next_event()[1]["id"] for _ in range(10)] == batch_one + batch_two
    third.close()


def test_sse_filters_by_job_and_refuses_a_bad_position(api: httpx.Client, web: WebProcess) -> None:
    job, other = submit(api), submit(api)
    reader = SseReader(f"{web.url}/api/v1/events", headers={**auth(), "Last-Event-ID": "default=0-0"},
                       params={"job": job})
    reader.next()
    _, event = reader.next_event()
    assert (event["id"], event["type"]) == (job, "job.submitted")
    api.post(f"/api/v1/jobs/{other}/cancel")
    api.post(f"/api/v1/jobs/{job}/cancel")
    _, event = reader.next_event()
    assert (event["id"], event["type"]) == (job, "job.cancelled")
    reader.close()
    bad = api.get("/api/v1/events", headers={"Last-Event-ID": "default=yesterday"})
    assert problem(bad, 400)["field"] == "Last-Event-ID"
    assert problem(api.get("/api/v1/events", params={"job": "nope"}), 400)["field"] == "job"
