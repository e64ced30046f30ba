"""Validation and webhooks end to end: a whole daemon, real loopback HTTP servers.

Sources of truth and webhook receivers are :class:`tests.http_servers.ScriptedServer`
instances on 127.0.0.1 that misbehave on purpose (500, 429 with Retry-After, hang,
reset, garbage, 410/400). The daemon runs in process on the real clock with short
intervals, against the session's redis-server and the embedded store alike. Waits
are event-driven (the store's replies, the servers' request log), bounded by
``trio.fail_after``. Receivers verify every signature with the ``standardwebhooks``
library, exactly as the README tells users to.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from jobvisor import App, Daemon
from jobvisor.adapters.backend import CommandCall
from jobvisor.adapters.errors import NotFound
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import JobSpec
from tests.harness import Watcher, running_daemon
from tests.http_servers import (
    GARBAGE,
    HANG,
    RESET,
    Request,
    ScriptedServer,
    Step,
    refused_url,
    source_of_truth,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# The receivers and sources of truth here listen on loopback, which the destination policy
# refuses by default: these tests turn the development switch on, explicitly.
FAST = dict(webhook_secret=SECRET, validation_interval=0.05, validation_jitter=0.0, validation_timeout=1.0,
            webhook_backoff=0.05, webhook_timeout=1.0, idle_poll=0.2, allow_private_destinations=True)


@pytest.fixture(params=["redis", "memory"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"memory://{uuid.uuid4().hex}"


def synced_app(validator_url: str | None = None, **options: Any) -> App:
    app = App()

    @app.handler("sync", max_retries=0)
    async def sync(ctx: Any) -> dict[str, Any]:
        return {"rows": 7, "job": ctx.job_id}

    @app.handler("plain", max_retries=0)
    async def plain(ctx: Any) -> str:
        return "done"

    if validator_url is not None:
        app.http_validator("sync", validator_url, **options)
    return app


def settled(watcher: Watcher, delivery_id: str) -> Callable[[], Any]:
    return lambda: next((r for r in watcher.moves if r.id == delivery_id and r.to in ("delivered", "dead")), None)


def verified(request: Request) -> Any:
    """The body, verified the way a receiver does it."""
    return Webhook(SECRET).verify(request.body, request.headers)


async def submit(daemon: Daemon, type_: str = "sync", **spec: Any) -> str:
    spec.setdefault("has_validator", type_ == "sync" and "validator_url" not in spec)
    return (await daemon.store.submit(JobSpec(type=type_, max_retries=0, **spec))).id


@pytest.mark.parametrize("busy", [0, 3])
async def test_the_completed_webhook_waits_for_the_source_of_truth(store_url: str, busy: int) -> None:
    with source_of_truth(busy) as truth, ScriptedServer() as receiver:
        app = synced_app(truth.url_for("/jobs/{job_id}"))
        async with running_daemon(app, redis=store_url, **FAST) as (daemon, watcher):
            job = await submit(daemon, webhook_url=receiver.url_for("/hooks"))
            did = f"{job}~job.completed~0"
            await watcher.until(settled(watcher, did), timeout=30)
            view = await daemon.store.get_job(job)
    checks, hooks = truth.requests, receiver.requests
    assert len(checks) == busy + 1
    assert {c.path for c in checks} == {f"/jobs/{job}"}
    assert len(hooks) == 1
    assert hooks[0].path == "/hooks"
    assert hooks[0].at >= checks[-1].at  # sent only after the check that agreed
    body = verified(hooks[0])
    assert hooks[0].headers["webhook-id"] == did
    assert body["type"] == "job.completed"
    data = body["data"]
    assert (data["id"], data["state"], data["validation_status"]) == (job, "completed", "completed")
    assert data["completed_at"] is not None
    assert data["result"] == {"rows": 7, "job": job}
    assert view.state == "completed"
    assert view.notification == "delivered"
    assert [c.ok for c in view.validation_checks] == [False] * busy + [True]


async def test_a_source_of_truth_that_never_agrees_sends_no_completed_webhook(store_url: str) -> None:
    with source_of_truth(10**6) as truth, ScriptedServer() as receiver:
        app = synced_app(truth.url_for("/jobs/{job_id}"))
        async with running_daemon(app, redis=store_url, validation_attempts=3, **FAST) as (daemon, watcher):
            job = await submit(daemon, webhook_url=receiver.url)
            await watcher.until(settled(watcher, f"{job}~job.validation_failed~0"), timeout=30)
            view = await daemon.store.get_job(job)
            events = [e.type for e in await daemon.store.events("default") if e.id == job]
    assert len(truth.requests) == 3
    assert (view.state, view.validation_status) == ("validation_failed", "processing")
    assert [c.reason for c in view.validation_checks] == ["mismatch: status is 'processing', expected 'completed'"] * 3
    [hook] = receiver.requests
    body = verified(hook)
    assert body["type"] == "job.validation_failed"
    assert body["data"]["completed_at"] is None
    assert "job.completed" not in events


async def test_every_bad_answer_from_the_source_of_truth_is_a_failed_check_with_its_reason(store_url: str) -> None:
    script = [Step(status=500), Step(body=b"<html>busy</html>"), HANG, RESET, GARBAGE, Step(json=[1, 2]),
              Step(json={"status": "completed", "completed_at": None})]
    with ScriptedServer(script, then=Step(json={"status": "completed", "completed_at": "now"})) as truth:
        app = synced_app(truth.url_for("/jobs/{job_id}"))
        async with running_daemon(app, redis=store_url, validation_attempts=10, **FAST) as (daemon, watcher):
            job = await submit(daemon)
            nowhere = await submit(daemon, "plain", validator_url=refused_url() + "{job_id}")
            for j in (job, nowhere):
                await watcher.until(lambda j=j: any(r.id == j and r.to in ("completed", "validation_failed")
                                                    for r in watcher.moves), timeout=60)
            view = await daemon.store.get_job(job)
            lost = await daemon.store.get_job(nowhere)
    reasons = [c.reason for c in view.validation_checks]
    assert view.state == "completed"
    assert len(reasons) == 8
    # categories only: the submitter learns nothing else of what answered (or did not)
    assert reasons[:6] == ["http_error", "invalid_answer", "timeout", "unreachable", "unreachable", "invalid_answer"]
    assert (reasons[6], view.validation_checks[6].status) == ("mismatch: completed_at is null", "completed")
    assert view.validation_checks[7].ok
    assert lost.state == "validation_failed"
    assert len(lost.validation_checks) == 10
    assert [c.reason for c in lost.validation_checks] == ["unreachable"] * 10
    assert lost.error["type"] == "ValidationFailed"


async def test_a_receiver_failing_twice_gets_three_signed_attempts_with_one_id(store_url: str) -> None:
    with ScriptedServer([Step(status=500), Step(status=500)]) as receiver:
        async with running_daemon(synced_app(), redis=store_url, **FAST) as (daemon, watcher):
            job = await submit(daemon, "plain", webhook_url=receiver.url)
            did = f"{job}~job.completed~0"
            await watcher.until(settled(watcher, did), timeout=30)
            [delivery] = await daemon.store.job_deliveries(job, 0)
            fails = [e for e in await daemon.store.events("default") if e.type == "webhook.fail"]
    hooks = receiver.requests
    assert len(hooks) == 3
    assert {h.headers["webhook-id"] for h in hooks} == {did}
    assert len({h.body for h in hooks}) == 1
    bodies = [verified(h) for h in hooks]
    assert all(b["data"]["state"] == "completed" for b in bodies)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 3, 200)
    assert [(e.fields["attempt"], e.fields["status"], e.fields["error"]) for e in fails] == [
        ("1", "500", "HTTP 500"), ("2", "500", "HTTP 500")]


async def test_a_429_is_retried_no_sooner_than_retry_after(store_url: str) -> None:
    with ScriptedServer([Step(status=429, headers={"Retry-After": "1"})]) as receiver:
        async with running_daemon(synced_app(), redis=store_url, **FAST) as (daemon, watcher):
            job = await submit(daemon, "plain", webhook_url=receiver.url)
            await watcher.until(settled(watcher, f"{job}~job.completed~0"), timeout=30)
    first, second = receiver.requests
    assert second.at - first.at >= 0.95  # the backoff alone would be 0.05 s
    assert verified(second)["type"] == "job.completed"


async def test_a_hanging_receiver_costs_one_attempt_and_no_worker(store_url: str) -> None:
    with ScriptedServer([HANG]) as receiver:
        settings = {**FAST, "webhook_timeout": 3.0, "concurrency": 1}
        async with running_daemon(synced_app(), redis=store_url, **settings) as (daemon, watcher):
            job = await submit(daemon, "plain", webhook_url=receiver.url)
            await receiver.wait_for_async(1, timeout=30)
            other = await submit(daemon, "plain")
            await watcher.until(lambda: any(r.id == other and r.to == "completed" for r in watcher.moves))
            [hanging] = await daemon.store.job_deliveries(job, 0)
            assert hanging.state == "sending"  # the one worker slot was free all along
            await watcher.until(settled(watcher, f"{job}~job.completed~0"), timeout=30)
            [delivery] = await daemon.store.job_deliveries(job, 0)
            fail = next(e for e in await daemon.store.events("default") if e.type == "webhook.fail")
    assert len(receiver.requests) == 2
    assert (delivery.state, delivery.attempts) == ("delivered", 2)
    assert fail.fields["error"].startswith("no answer within 3s")


@pytest.mark.parametrize("status", [410, 400])
async def test_gone_or_bad_request_is_dead_at_once(store_url: str, status: int) -> None:
    with ScriptedServer([Step(status=status)]) as receiver:
        async with running_daemon(synced_app(), redis=store_url, **FAST) as (daemon, watcher):
            job = await submit(daemon, "plain", webhook_url=receiver.url)
            await watcher.until(settled(watcher, f"{job}~job.completed~0"), timeout=30)
            [delivery] = await daemon.store.job_deliveries(job, 0)
            view = await daemon.store.get_job(job)
            outbox = (await daemon.store.queue_counts("default"))["outbox"]
    assert len(receiver.requests) == 1
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("dead", 1, status)
    assert (view.notification, outbox) == ("dead", 0)


async def test_a_reset_connection_and_a_garbage_answer_are_retried(store_url: str) -> None:
    with ScriptedServer([RESET, GARBAGE]) as receiver:
        async with running_daemon(synced_app(), redis=store_url, **FAST) as (daemon, watcher):
            job = await submit(daemon, "plain", webhook_url=receiver.url)
            await watcher.until(settled(watcher, f"{job}~job.completed~0"), timeout=30)
            [delivery] = await daemon.store.job_deliveries(job, 0)
            fails = [e.fields["error"] for e in await daemon.store.events("default") if e.type == "webhook.fail"]
    assert len(receiver.requests) == 3
    assert (delivery.state, delivery.attempts) == ("delivered", 3)
    assert fails[0].startswith(("not a valid HTTP answer", "connection failed")), fails
    assert fails[1].startswith("not a valid HTTP answer"), fails


async def test_retention_deleting_the_job_mid_delivery_breaks_nothing(store_url: str) -> None:
    with ScriptedServer([HANG]) as receiver:
        async with running_daemon(synced_app(), redis=store_url, **FAST) as (daemon, watcher):
            job = await submit(daemon, "plain", webhook_url=receiver.url)
            await receiver.wait_for_async(1, timeout=30)
            # Stands in for the retention actor: delete the job's hash (and its index entry)
            # through the backend while its webhook is in flight.
            keys = Keys("default")
            await daemon.actor.execute([CommandCall(("DEL", keys.job(job))),
                                        CommandCall(("ZREM", keys.finished, job))])
            await watcher.until(settled(watcher, f"{job}~job.completed~0"), timeout=30)
            [delivery] = await daemon.store.job_deliveries(job, 0)
            with pytest.raises(NotFound):
                await daemon.store.get_job(job)
            restarts = dict(daemon.supervisor.restarts)
    first, second = receiver.requests
    assert first.body == second.body  # the snapshot, not the (deleted) job
    assert verified(second)["data"]["state"] == "completed"
    assert (delivery.state, delivery.attempts) == ("delivered", 2)
    assert set(restarts.values()) == {0}
