"""The webhook deliverer's policy: what each answer leads to, and exactly when.

The actor runs alone over the embedded store (called inline) under trio's MockClock,
its HTTP client on ``httpx.MockTransport``: no sockets, so virtual time is safe and
every retry time is exact (the jitter comes from ``random.Random(SEED)``, replayed
here). The same behaviour against real loopback servers is in
``tests/test_http_scenarios.py``. Signatures are checked with the ``standardwebhooks``
library, as a receiver would.
"""

from __future__ import annotations

import email.utils
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
from standardwebhooks.webhooks import Webhook

from jobvisor import App
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.http import HttpClient, parse_retry_after
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import DirectExecutor, Store
from jobvisor.adapters.webhooks import check_secret, event_body
from jobvisor.supervisor.config import load_config
from jobvisor.supervisor.deps import Deps, TrioWallClock
from jobvisor.supervisor.hub import Hub
from jobvisor.supervisor.metrics import Metrics
from jobvisor.supervisor.webhooks import Deliverer, backoff_delay, classify
from tests.harness import Watcher

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SEED = 20250615
URL = "http://receiver.test/hooks"
Q = "default"


@dataclass
class Seen:
    at: float
    headers: dict[str, str]
    body: bytes


Handler = Callable[[int, httpx.Request], Awaitable[httpx.Response]]


class Receiver:
    """A MockTransport handler: answers request ``i`` with ``script(i, request)``; records each."""

    def __init__(self, script: Handler) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self.arrived = trio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(Seen(trio.current_time(), dict(request.headers), request.content))
        self.arrived.set()
        self.arrived = trio.Event()
        return await self.script(len(self.seen) - 1, request)


def statuses(*codes: int, headers: dict[int, dict[str, str]] | None = None) -> Handler:
    async def answer(i: int, request: httpx.Request) -> httpx.Response:
        code = codes[min(i, len(codes) - 1)]
        return httpx.Response(code, headers=(headers or {}).get(i, {}))

    return answer


@asynccontextmanager
async def deliverer(
    script: Handler, *, memory: MemoryServers | None = None, metrics: Metrics | None = None, **settings: Any
) -> AsyncIterator[tuple[Store, Watcher, Receiver]]:
    """The webhook actor alone, over the embedded store, with a scripted receiver."""
    memory = memory or MemoryServers()
    settings.setdefault("webhook_secret", SECRET)
    config = load_config({"redis": "memory://hooks", **settings}, environ={})
    clock = TrioWallClock()
    hub, watcher, receiver = Hub(), Watcher(), Receiver(script)
    store = Store(DirectExecutor(open_backend("memory://hooks", memory=memory), clock),
                  observers=[hub.observe, watcher])
    deps = Deps(store=store, app=App(), config=config, hub=hub, metrics=metrics or Metrics(), clock=clock)
    http = HttpClient(transport=httpx.MockTransport(receiver), clock=clock)
    actor = Deliverer(deps, http, rng=random.Random(SEED))
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run, stop)
            yield store, watcher, receiver
            stop.set()
    finally:
        await http.aclose()


async def cancelled_job(store: Store, **spec: Any) -> str:
    """A job whose ``job.cancelled`` event is now in the outbox."""
    spec.setdefault("webhook_url", URL)
    job = (await store.submit(JobSpec(type="report", input={"n": 1}, **spec))).id
    assert (await store.cancel(job)).to == "cancelled"
    return job


def settled(watcher: Watcher, delivery_id: str) -> Callable[[], Any]:
    return lambda: next((r for r in watcher.moves if r.id == delivery_id and r.to in ("delivered", "dead")), None)


# -- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "trigger"), [
    (200, "succeed"), (202, "succeed"), (204, "succeed"), (299, "succeed"),
    (500, "fail"), (502, "fail"), (503, "fail"), (504, "fail"), (429, "fail"),
    (400, "reject"), (401, "reject"), (404, "reject"), (410, "reject"), (422, "reject"),
    (301, "reject"), (304, "reject"),
])
def test_each_status_class_maps_to_its_trigger(status: int, trigger: str) -> None:
    assert classify(status) == trigger


def test_backoff_doubles_up_to_its_cap_with_equal_jitter() -> None:
    rng = random.Random(SEED)
    for attempt in range(1, 12):
        full = min(60.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(50):
            assert full / 2 <= backoff_delay(attempt, 2.0, 60.0, rng) <= full, f"seed {SEED}"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_750_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    for unreadable in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(unreadable, now) is None


def test_the_body_is_the_snapshot_with_its_times() -> None:
    snapshot = json.dumps({"id": "default.X", "state": "completed", "created_at_ms": 1_750_000_000_000,
                           "finished_at_ms": 1_750_000_000_250, "result": {"big": 12345678901234567890}})
    body = json.loads(event_body("job.completed", 1_750_000_000_250, snapshot))
    assert body["type"] == "job.completed"
    assert body["timestamp"] == "2025-06-15T15:06:40.250Z"
    data = body["data"]
    assert (data["state"], data["completed_at"], data["created_at"]) == (
        "completed", "2025-06-15T15:06:40.250Z", "2025-06-15T15:06:40.000Z")
    assert data["result"] == {"big": 12345678901234567890}
    failed = json.loads(event_body("job.failed", 1, snapshot.replace('"completed"', '"failed"')))
    assert failed["data"]["completed_at"] is None
    assert failed["data"]["finished_at"] is not None


@pytest.mark.parametrize("secret", ["whsec_", "whsec_c2hvcnQ=", "whsec_!!notbase64!!", "plain words", ""])
def test_a_bad_secret_is_refused_without_quoting_it(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook_secret") as caught:
        check_secret(secret)
    if secret[len("whsec_"):]:
        assert secret[len("whsec_"):] not in str(caught.value)
    with pytest.raises(BadInput, match="^setting webhook_secret: ") as caught:
        load_config({"webhook_secret": secret}, environ={})
    if secret[len("whsec_"):]:
        assert secret[len("whsec_"):] not in str(caught.value)


def test_the_secret_never_shows_in_the_configuration() -> None:
    config = load_config({}, environ={"JOBVISOR_WEBHOOK_SECRET": SECRET})
    assert config.webhook_secret == SECRET
    for text in (repr(config), str(config), f"{config!r}"):
        assert SECRET not in text
        assert SECRET[6:] not in text
        assert "webhook_secret=***" in text


def test_webhook_and_allow_list_settings_are_checked_at_load() -> None:
    config = load_config({}, environ={"JOBVISOR_ALLOWED_HOSTS": "hooks.example, *.corp.example",
                                      "JOBVISOR_WEBHOOK_URL": "https://a.b.corp.example/in"})
    assert config.allowed_set == frozenset({"hooks.example", "*.corp.example"})
    for flags, message in [
        ({"webhook_url": "ftp://x"}, "setting webhook_url: 'ftp://x' must use http or https"),
        ({"webhook_url": "https://"}, "setting webhook_url: 'https://' has no host"),
        ({"webhook_url": "https://evil.example/", "allowed_hosts": ["hooks.example"]},
         "setting webhook_url: host 'evil.example' is not in the allowed hosts"),
        ({"webhook_attempts": "0"}, "setting webhook_attempts: Expected `int` >= 1"),
        ({"webhook_timeout": "-1"}, "setting webhook_timeout: Expected `float` > 0"),
        ({"validation_jitter": "2"}, "setting validation_jitter: Expected `float` <= 1"),
    ]:
        with pytest.raises(BadInput) as caught:
            load_config(flags, environ={})
        assert str(caught.value).startswith(message), caught.value


# -- the actor under virtual time -----------------------------------------------------------------


async def test_retries_back_off_exponentially_with_jitter_then_dead(autojump_clock: trio.testing.MockClock) -> None:
    async with deliverer(statuses(500), webhook_attempts=4, webhook_backoff=1.0, webhook_backoff_max=100.0) as (
        store, watcher, receiver
    ):
        job = await cancelled_job(store)
        did = f"{job}~job.cancelled~0"
        await watcher.until(settled(watcher, did))
        view = await store.get_job(job)
        [delivery] = await store.job_deliveries(job, 0)
    assert len(receiver.seen) == 4
    rng = random.Random(SEED)
    expected = [min(100.0, 2 ** (n - 1)) * (0.5 + 0.5 * rng.random()) for n in (1, 2, 3)]
    gaps = [b.at - a.at for a, b in zip(receiver.seen, receiver.seen[1:], strict=False)]
    assert gaps == pytest.approx(expected, abs=0.002), f"seed {SEED}"
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
        "dead", 4, 500, "HTTP 500")
    assert view.notification == "dead"
    assert {s.headers["webhook-id"] for s in receiver.seen} == {did}
    assert len({s.body for s in receiver.seen}) == 1


async def test_a_429_waits_exactly_what_retry_after_says(autojump_clock: trio.testing.MockClock) -> None:
    async def script(i: int, request: httpx.Request) -> httpx.Response:
        if i == 0:
            return httpx.Response(429, headers={"Retry-After": "7"})
        if i == 1:  # an HTTP date, 40 s after the attempt's own (whole-second) timestamp
            later = int(request.headers["webhook-timestamp"]) + 40
            return httpx.Response(429, headers={"Retry-After": email.utils.formatdate(later, usegmt=True)})
        if i == 2:
            return httpx.Response(429, headers={"Retry-After": "999999"})  # capped
        return httpx.Response(200)

    async with deliverer(script, webhook_backoff_max=50.0) as (store, watcher, receiver):
        job = await cancelled_job(store)
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"), timeout=600)
        [delivery] = await store.job_deliveries(job, 0)
    t = [s.at for s in receiver.seen]
    assert t[1] - t[0] == pytest.approx(7.0, abs=0.002)
    assert 39.0 - 0.002 <= t[2] - t[1] <= 40.0 + 0.002
    assert t[3] - t[2] == pytest.approx(50.0, abs=0.002)
    assert (delivery.state, delivery.attempts) == ("delivered", 4)


async def test_delivery_latency_runs_from_the_event_to_the_receivers_2xx(
        autojump_clock: trio.testing.MockClock) -> None:
    metrics = Metrics()
    latency = "jobvisor_webhook_delivery_latency_seconds"
    async with deliverer(statuses(429, 200, headers={0: {"Retry-After": "30"}}), metrics=metrics) as (
            store, watcher, receiver):
        created = trio.current_time()
        job = await cancelled_job(store)
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"), timeout=600)
    assert metrics.registry.get_sample_value(f"{latency}_count") == 1
    # the event's time is stored in whole milliseconds
    assert metrics.registry.get_sample_value(f"{latency}_sum") == pytest.approx(
        receiver.seen[1].at - created, abs=0.002)
    assert receiver.seen[1].at - created == pytest.approx(30.0, abs=0.01)


async def test_a_receiver_that_hangs_costs_one_attempt_of_exactly_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def script(i: int, request: httpx.Request) -> httpx.Response:
        if i == 0:
            await trio.sleep_forever()
        return httpx.Response(204)

    async with deliverer(script, webhook_timeout=3.0, webhook_backoff=1.0) as (store, watcher, receiver):
        job = await cancelled_job(store)
        did = f"{job}~job.cancelled~0"
        await watcher.until(settled(watcher, did))
        fails = [r for r in watcher.moves if r.id == did and r.to == "retry_wait"]
        [delivery] = await store.job_deliveries(job, 0)
    assert len(fails) == 1
    assert len(receiver.seen) == 2
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 2, 204)
    rng = random.Random(SEED)
    assert receiver.seen[1].at - receiver.seen[0].at == pytest.approx(3.0 + 0.5 + 0.5 * rng.random(), abs=0.002)


@pytest.mark.parametrize("status", [400, 404, 410, 301])
async def test_other_4xx_and_redirects_are_dead_at_once(autojump_clock: trio.testing.MockClock, status: int) -> None:
    async with deliverer(statuses(status, 200)) as (store, watcher, receiver):
        job = await cancelled_job(store)
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"))
        [delivery] = await store.job_deliveries(job, 0)
        view = await store.get_job(job)
        await trio.sleep(600)  # ten minutes of virtual time: nothing more is sent
    assert len(receiver.seen) == 1
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("dead", 1, status)
    assert view.notification == "dead"


async def test_connection_errors_are_retried(autojump_clock: trio.testing.MockClock) -> None:
    async def script(i: int, request: httpx.Request) -> httpx.Response:
        if i == 0:
            raise httpx.ConnectError("connection refused", request=request)
        if i == 1:
            raise httpx.RemoteProtocolError("server disconnected without a response", request=request)
        return httpx.Response(200)

    async with deliverer(script, webhook_backoff=0.5) as (store, watcher, receiver):
        job = await cancelled_job(store)
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"))
        [delivery] = await store.job_deliveries(job, 0)
        events = [e for e in await store.events(Q) if e.type == "webhook.fail"]
    assert (delivery.state, delivery.attempts) == ("delivered", 3)
    assert [e.fields["attempt"] for e in events] == ["1", "2"]


async def test_the_default_url_no_url_and_the_allow_list(autojump_clock: trio.testing.MockClock) -> None:
    default = "http://default.test/in"
    async with deliverer(statuses(200), webhook_url=default, allowed_hosts=["default.test", "receiver.test"]) as (
        store, watcher, receiver
    ):
        to_default = await cancelled_job(store, webhook_url=None, notify=True)
        elsewhere = await cancelled_job(store, webhook_url="http://elsewhere.test/in")
        for job in (to_default, elsewhere):
            await watcher.until(settled(watcher, f"{job}~job.cancelled~0"))
        [sent] = await store.job_deliveries(to_default, 0)
        [refused] = await store.job_deliveries(elsewhere, 0)
    assert [s.headers["webhook-id"] for s in receiver.seen] == [f"{to_default}~job.cancelled~0"]
    assert (sent.state, sent.url) == ("delivered", "")
    assert (refused.state, refused.attempts, refused.last_error) == (
        "dead", 1, "refused destination: host 'elsewhere.test' is not in the allowed hosts")
    async with deliverer(statuses(200)) as (store, watcher, receiver):
        job = await cancelled_job(store, webhook_url=None, notify=True)
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"))
        [nowhere] = await store.job_deliveries(job, 0)
    assert nowhere.state == "dead"
    assert "no webhook URL" in (nowhere.last_error or "")
    assert receiver.seen == []


async def test_without_a_secret_deliveries_wait_in_the_outbox(autojump_clock: trio.testing.MockClock) -> None:
    memory = MemoryServers()
    async with deliverer(statuses(200), memory=memory, webhook_secret=None) as (store, watcher, receiver):
        job = await cancelled_job(store)
        await trio.sleep(600)
        [waiting] = await store.job_deliveries(job, 0)
    assert receiver.seen == []
    assert (waiting.state, waiting.attempts) == ("pending", 0)
    async with deliverer(statuses(200), memory=memory) as (store, watcher, receiver):
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"))
    assert len(receiver.seen) == 1


async def test_every_attempt_is_signed_and_verifies(autojump_clock: trio.testing.MockClock) -> None:
    async with deliverer(statuses(503, 503, 200), webhook_backoff=2.0) as (store, watcher, receiver):
        job = await cancelled_job(store)
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"))
    assert len(receiver.seen) == 3
    stamps = [int(s.headers["webhook-timestamp"]) for s in receiver.seen]
    assert stamps == sorted(stamps)
    assert stamps[0] < stamps[-1]
    for seen in receiver.seen:
        # the library checks the timestamp against the real clock: sign-time is virtual here,
        # so check the signature itself with the timestamp the attempt carried
        wh = Webhook(SECRET)
        expected = wh.sign(seen.headers["webhook-id"], _utc(stamps[receiver.seen.index(seen)]), seen.body.decode())
        assert seen.headers["webhook-signature"] == expected
        assert Webhook("whsec_" + "A" * 32).sign(seen.headers["webhook-id"], _utc(0), "x") != expected
        body = json.loads(seen.body)
        assert (body["type"], body["data"]["id"], body["data"]["state"]) == ("job.cancelled", job, "cancelled")


async def test_shutdown_returns_a_send_under_way_to_the_outbox(autojump_clock: trio.testing.MockClock) -> None:
    async def hang(i: int, request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    memory = MemoryServers()
    async with deliverer(hang, memory=memory, grace=2.0, webhook_timeout=600.0) as (store, watcher, receiver):
        job = await cancelled_job(store)
        await receiver.arrived.wait()
        t0 = trio.current_time()
    assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.01)  # the grace period, not the timeout
    async with deliverer(statuses(200), memory=memory) as (store, watcher, receiver):
        [parked] = await store.job_deliveries(job, 0)
        assert (parked.state, parked.attempts, parked.last_error) == ("pending", 1, "daemon shutting down")
        await watcher.until(settled(watcher, f"{job}~job.cancelled~0"))
        [delivery] = await store.job_deliveries(job, 0)
    assert (delivery.state, delivery.attempts) == ("delivered", 2)
    assert receiver.seen[0].headers["webhook-id"] == f"{job}~job.cancelled~0"


def _utc(seconds: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, tz=UTC)


def test_the_readmes_receiver_verifies_our_deliveries_and_refuses_forgeries(monkeypatch: pytest.MonkeyPatch) -> None:
    """README, "Receiving webhooks": its few lines, run as written, against a signed body."""
    import re
    import time
    from pathlib import Path

    from standardwebhooks.webhooks import WebhookVerificationError

    from jobvisor.adapters.webhooks import WebhookSigner

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"#### Receiving webhooks\n.*?```python\n(.*?)```", readme, re.S)
    assert match is not None, "README has no receiver example"
    monkeypatch.setenv("JOBVISOR_WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    body = event_body("job.completed", 1_750_000_000_000, json.dumps({"id": "default.X", "state": "completed"}))
    headers = WebhookSigner(SECRET).headers("default.X~job.completed~0", time.time(), body)
    event = namespace["on_webhook"](body, headers)
    assert (event["type"], event["data"]["state"]) == ("job.completed", "completed")
    with pytest.raises(WebhookVerificationError):
        namespace["on_webhook"](body.replace(b"completed", b"cancelled"), headers)


async def test_a_batch_event_is_delivered_like_a_job_event(autojump_clock: trio.testing.MockClock) -> None:
    from jobvisor.adapters.records import BatchSpec

    async with deliverer(statuses(200)) as (store, watcher, receiver):
        batch = (await store.create_batch(BatchSpec(expected=1, webhook_url=URL))).id
        job = (await store.submit(JobSpec(type="report", batch=batch))).id
        [claimed] = await store.claim(Q, "w1")
        assert (await store.complete(job, claimed.token, {"n": 1})).to == "completed"
        await watcher.until(settled(watcher, f"{batch}~batch.completed~0"))
        view = await store.get_batch(batch)
    [seen] = receiver.seen
    body = json.loads(seen.body)
    assert (body["type"], body["data"]["id"], body["data"]["state"]) == ("batch.completed", batch, "completed")
    assert body["data"]["completed_at"] is not None
    assert body["data"]["completed"] == 1
    assert view.notification == "delivered"


async def test_a_delivery_whose_snapshot_is_not_json_is_dead_and_the_actor_lives_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryServers()
    async with deliverer(statuses(200), memory=memory, webhook_secret=None) as (store, watcher, receiver):
        bad = await cancelled_job(store)
    # A raw write (the store never writes such a snapshot): the one way to get a poisoned row.
    open_backend("memory://hooks", memory=memory).client.hset(
        f"jv:{{default}}:delivery:{bad}~job.cancelled~0", "snapshot", "{not json")
    async with deliverer(statuses(200), memory=memory) as (store, watcher, receiver):
        await watcher.until(settled(watcher, f"{bad}~job.cancelled~0"))
        good = await cancelled_job(store)
        await watcher.until(settled(watcher, f"{good}~job.cancelled~0"))
        [dead] = await store.job_deliveries(bad, 0)
        [sent] = await store.job_deliveries(good, 0)
    assert (dead.state, dead.attempts) == ("dead", 1)
    assert "not JSON" in (dead.last_error or "")
    assert sent.state == "delivered"
    assert len(receiver.seen) == 1
