"""The operator's routes of the JSON API (``jobvisor web`` process, real redis-server): bulk
retry and bulk redelivery (a dry run writes nothing, the keyspace compared whole), queue pause
and resume shown in ``/queues``, the idempotency lifetime in the submit body; bad bodies are
400 naming the field with nothing written; only ``admin`` may do any of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.cli_support import dump
from tests.redis_server import RedisServer
from tests.web_support import READER, WebProcess, auth, web_server


@pytest.fixture(scope="module")
def web(redis_server: RedisServer) -> Iterator[WebProcess]:
    with web_server(redis_server.url) as server:
        yield server


@pytest.fixture
def api(web: WebProcess, redis_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, headers=auth(), timeout=30) as client:
        yield client


def failed(url: str, n: int, **spec: Any) -> list[str]:
    """``n`` failed jobs, made by store ops (the web process remembers the queues it submitted to, and
    every test starts on an empty database)."""
    with SyncStore(open_backend(url)) as store:  # stands in for a client and a daemon whose handler failed
        ids = [store.submit(JobSpec(type="echo", max_retries=0, **spec)).id for _ in range(n)]
        for job in store.claim("default", "w1", n=n):
            store.fail(job.id, job.token, {"type": "Boom", "message": "no"})
    return ids


def test_bulk_retry_dry_run_then_for_real(api: httpx.Client, redis_url: str) -> None:
    ids = failed(redis_url, 7)
    before = dump(redis_url)
    dry = api.post("/api/v1/retries", json={"state": "failed", "type": "echo", "since": "1h", "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert (dry.json()["matched"], dry.json()["done"], sorted(dry.json()["ids"])) == (7, 0, sorted(ids))
    assert dump(redis_url) == before
    done = api.post("/api/v1/retries", json={"state": "failed", "queue": ["default"]})
    assert (done.json()["matched"], done.json()["done"], done.json()["skipped"]) == (7, 7, {})
    listed = api.get("/api/v1/jobs", params={"state": "queued", "limit": 500}).json()["jobs"]
    assert sorted(j["id"] for j in listed) == sorted(ids)


def test_bulk_redelivery_re_sends_dead_deliveries(api: httpx.Client, redis_url: str) -> None:
    ids = failed(redis_url, 2, webhook_url="https://example.org/hook")
    with SyncStore(open_backend(redis_url)) as store:
        for d in store.take_deliveries("default", n=10, max_attempts=1):
            store.delivery_outcome("default", d.id, d.token, "reject", max_attempts=1, status=410)
    listed = api.get("/api/v1/jobs", params={"state": "failed"}).json()["jobs"]
    assert {j["notification"] for j in listed} == {"dead"}
    before = dump(redis_url)
    dry = api.post("/api/v1/redeliveries", json={"type": "echo", "dry_run": True}).json()
    assert sorted(dry["ids"]) == sorted(f"{i}~job.failed~0" for i in ids)
    assert dump(redis_url) == before
    one = api.post("/api/v1/redeliveries", json={"job": ids[0]}).json()
    assert (one["matched"], one["done"]) == (1, 1)
    rest = api.post("/api/v1/redeliveries", json={"queue": ["default"]}).json()
    assert (rest["matched"], rest["done"], rest["ids"]) == (1, 1, [f"{ids[1]}~job.failed~0"])


def test_pause_and_resume_a_queue(web: WebProcess, api: httpx.Client, redis_url: str) -> None:
    failed(redis_url, 1)
    before = dump(redis_url)
    assert httpx.post(f"{web.url}/api/v1/queues/default/pause", headers=auth(READER)).status_code == 403
    assert httpx.post(f"{web.url}/api/v1/queues/default/pause").status_code == 401
    assert api.post("/api/v1/queues/never/pause").status_code == 404
    assert api.post("/api/v1/queues/bad%20name/pause").status_code == 400
    assert dump(redis_url) == before
    assert api.post("/api/v1/queues/default/pause").json() == {"queue": "default", "outcome": "moved", "paused": True}
    assert api.post("/api/v1/queues/default/pause").json()["outcome"] == "absorbed"
    [info] = api.get("/api/v1/queues").json()
    assert info["paused"] is True
    assert info["paused_since"] is not None
    assert api.post("/api/v1/queues/default/resume").json() == {
        "queue": "default", "outcome": "moved", "paused": False}
    assert api.get("/api/v1/queues").json()[0]["paused"] is False


def test_the_idempotency_lifetime_in_the_submit_body(api: httpx.Client, redis_url: str) -> None:
    answer = api.post("/api/v1/jobs", json={"type": "echo", "idempotency_key": "k", "idempotency_ttl": 120})
    assert answer.status_code == 201, answer.text
    client = redis.Redis.from_url(redis_url)
    try:
        assert 119_000 < client.pttl(Keys("default").idem("k")) <= 120_000
    finally:
        client.close()


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/retries", {}, "state"),
    ("/api/v1/retries", {"state": "queued"}, "state"),
    ("/api/v1/retries", {"state": "failed", "queue": "default"}, "queue"),
    ("/api/v1/retries", {"state": "failed", "queue": ["no such"]}, "queue"),
    ("/api/v1/retries", {"state": "failed", "since": "whenever"}, "since"),
    ("/api/v1/retries", {"state": "failed", "dry_run": "yes"}, "dry_run"),
    ("/api/v1/retries", {"state": "failed", "everything": True}, "everything"),
    ("/api/v1/redeliveries", {"job": "default.01ARZ3NDEKTSV4RRFFQ69G5FAV", "type": "echo"}, "job"),
    ("/api/v1/redeliveries", {"since": -1}, "since"),
    ("/api/v1/jobs", {"type": "echo", "idempotency_ttl": 60}, "idempotency_ttl"),
    ("/api/v1/jobs", {"type": "echo", "idempotency_key": "k", "idempotency_ttl": 0}, "idempotency_ttl"),
])
def test_bad_bodies_are_400_naming_the_field_and_write_nothing(api: httpx.Client, redis_url: str, path: str,
                                                                body: dict[str, Any], field: str) -> None:
    failed(redis_url, 1)
    before = dump(redis_url)
    answer = api.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["detail"]
    assert dump(redis_url) == before
