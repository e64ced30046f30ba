"""The webhook deliverer: the outbox, sent at least once, signed, never lost.

Every notifying transition wrote its outbox row (a delivery hash with its own
snapshot) in the same atomic step. This actor takes due deliveries (each now
``sending`` under a token and a send lease, ``webhook_lease``), POSTs the
event body signed per Standard Webhooks (:mod:`adapters.webhooks`) to the job's
URL or ``webhook_url``, and reports the outcome through the webhook table:

* 2xx: ``succeed`` (``delivered``);
* 5xx, 429, a time-out (``webhook_timeout`` bounds the whole attempt), a
  refused or reset connection, an answer that is not HTTP: ``fail``, retried
  after ``webhook_backoff * 2^(attempt-1)`` (capped at ``webhook_backoff_max``)
  with equal jitter, or exactly after ``Retry-After`` on a 429 (capped the
  same way); the ``webhook_attempts``-th failure is ``dead``;
* any other status (3xx, 4xx but 429), no URL, a host outside
  ``allowed_hosts``: ``reject`` (``dead`` at once);
* a destination the policy refuses (:mod:`adapters.destinations`): by name
  here, or by the address the name resolves to at connect time (DNS
  rebinding): ``reject``, ``dead`` at once with the reason, nothing sent,
  counted in ``jobvisor_outbound_refused``.

Every attempt of one delivery carries the same ``webhook-id`` and body. A
daemon that dies mid-send leaves the delivery ``sending``; when its send lease
runs out any daemon takes it again (released, then sent with the next
attempt number): at least once, never lost. Without ``webhook_secret`` nothing
is taken: deliveries wait in the outbox for a daemon that can sign them.

Shutdown: nothing new is taken; sends under way get the grace period, then
are cancelled and returned to the outbox (``release``), their attempt counted.
"""

from __future__ import annotations

import contextlib
import logging
import random
from urllib.parse import urlsplit

import trio

from jobvisor.adapters.destinations import DestinationRefused
from jobvisor.adapters.errors import HttpFailure, StoreUnavailable
from jobvisor.adapters.http import HttpClient
from jobvisor.adapters.records import Delivery
from jobvisor.adapters.replies import Moved
from jobvisor.adapters.webhooks import WebhookSigner, event_body

from . import tracing
from .deps import Deps
from .inflight import InFlight
from .outage import StoreOutage

__all__ = ["Deliverer", "classify", "backoff_delay"]

log = logging.getLogger("jobvisor.webhooks")


def classify(status: int) -> str:
    """The webhook trigger a receiver's status code calls for: succeed, fail or reject."""
    if 200 <= status < 300:
        return "succeed"
    if status == 429 or status >= 500:
        return "fail"
    return "reject"


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next attempt after failed ``attempt`` (1-based): exponential,
    capped, with equal jitter (between half and all of it)."""
    delay: float = min(cap, base * 2.0 ** (attempt - 1))
    return delay * (0.5 + 0.5 * rng.random())


class _Outcome:
    __slots__ = ("trigger", "status", "error", "retry_at")

    def __init__(self, trigger: str, *, status: int | None = None, error: str = "",
                 retry_at: float | None = None) -> None:
        self.trigger = trigger
        self.status = status
        self.error = error
        self.retry_at = retry_at


class Deliverer:
    """The webhook actor (see the module docstring); ``run`` is its child start."""

    def __init__(self, deps: Deps, http: HttpClient, *, rng: random.Random | None = None) -> None:
        self.deps = deps
        self.config = deps.config
        self.http = http
        self.rng = rng or random.Random()
        secret = self.config.webhook_secret
        self.signer = WebhookSigner(secret) if secret else None
        self.destinations = self.config.destinations  # checked by name before each request
        self.in_flight = InFlight(self.config.webhook_concurrency)
        self.outage = StoreOutage("webhooks", log)

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.signer is None:
            task_status.started()
            waiting = 0
            with contextlib.suppress(StoreUnavailable):
                for queue in self.deps.queues:
                    waiting += (await self.deps.store.queue_counts(queue)).get("outbox", 0)
            (log.warning if waiting else log.info)(
                "webhook deliverer off: no webhook secret is configured (JOBVISOR_WEBHOOK_SECRET); "
                "%d deliveries wait in the outbox", waiting)
            await stop.wait()
            return
        async with trio.open_nursery() as sends:
            task_status.started()
            await self.in_flight.serve(
                stop, sends, queues=self.deps.queues, run=self._send, woke=self.deps.hub.outbox_event,
                take=lambda queue, n: self.deps.store.outbox_due(
                    queue, n=n, lease=self.config.webhook_lease, max_attempts=self.config.webhook_attempts),
                clock=self.deps.clock, idle_poll=self.config.idle_poll, label="webhooks",
                outage=self.outage)
            await self.in_flight.drain(self.config.grace)

    # -- one attempt -----------------------------------------------------------------------

    async def _send(self, scope: trio.CancelScope, queue: str, delivery: Delivery) -> None:
        outcome: _Outcome | None = None
        with tracing.span("jobvisor.webhook", traceparent=delivery.traceparent, kind="client", attributes={
                "jobvisor.delivery.id": delivery.id, "jobvisor.webhook.event": delivery.event,
                "jobvisor.delivery.attempt": delivery.attempt}) as span:
            with scope:
                outcome = await self._attempt(delivery)
            if outcome is not None and span is not None:
                if outcome.status:
                    span.set_attribute("http.response.status_code", outcome.status)
                if outcome.trigger != "succeed":
                    tracing.set_error(span, outcome.error or outcome.trigger)
        if outcome is None:  # cancelled by shutdown: back to the outbox
            outcome = _Outcome("release", error="daemon shutting down")
        reply = None
        with trio.CancelScope(shield=True) as report:
            report.deadline = trio.current_time() + self.config.webhook_lease
            while True:
                try:
                    reply = await self.deps.store.delivery_outcome(
                        queue, delivery.id, delivery.token, outcome.trigger,
                        max_attempts=self.config.webhook_attempts, retry_at=outcome.retry_at,
                        status=outcome.status, error=outcome.error[:500])
                    self.outage.reached()
                    break
                except StoreUnavailable as exc:
                    await self.outage.wait(exc)
        if reply is None:
            log.error("webhooks: the outcome of %s was not recorded; it will be sent again", delivery.id)
            return
        self.deps.metrics.webhook_attempts.labels(outcome.trigger).inc()
        if isinstance(reply, Moved) and reply.to == "delivered":
            # from the transition that made the event (its outbox row) to the receiver's 2xx
            self.deps.metrics.webhook_latency.observe(max(0.0, self.deps.clock() - delivery.created_at / 1000))
        if isinstance(reply, Moved) and reply.to == "dead":
            log.warning("webhook %s is dead after %d attempt(s): %s", delivery.id, delivery.attempt,
                        outcome.error or f"HTTP {outcome.status}")

    async def _attempt(self, delivery: Delivery) -> _Outcome:
        url = delivery.url or self.config.webhook_url
        if not url:
            return _Outcome("reject", error="no webhook URL: the event has none and webhook_url is not set")
        refusal = self.destinations.check_host(urlsplit(url).hostname or "")
        if refusal is not None:
            return self._refused(delivery, DestinationRefused(url, refusal.reason, check="name"))
        assert self.signer is not None
        try:
            body = event_body(delivery.event, delivery.created_at, delivery.snapshot)
        except ValueError as exc:
            return _Outcome("reject", error=str(exc))
        headers = self.signer.headers(delivery.id, self.deps.clock(), body)
        tracing.inject_headers(headers)  # traceparent: the receiver's spans join the job's trace
        try:
            answer = await self.http.post(url, body, headers, self.config.webhook_timeout)
        except DestinationRefused as exc:
            return self._refused(delivery, exc)
        except HttpFailure as exc:
            return _Outcome("fail", error=exc.reason, retry_at=self._retry_at(delivery.attempt))
        trigger = classify(answer.status)
        if trigger == "succeed":
            return _Outcome(trigger, status=answer.status)
        if trigger == "reject":
            return _Outcome(trigger, status=answer.status, error=f"HTTP {answer.status}")
        retry_at = self._retry_at(delivery.attempt)
        if answer.status == 429 and answer.retry_after is not None:
            retry_at = self.deps.clock() + min(answer.retry_after, self.config.webhook_backoff_max)
        return _Outcome(trigger, status=answer.status, error=f"HTTP {answer.status}", retry_at=retry_at)

    def _refused(self, delivery: Delivery, exc: DestinationRefused) -> _Outcome:
        """A refused destination: ``dead`` at once with the reason; counted and logged."""
        self.deps.metrics.outbound_refused.labels("webhook", exc.check).inc()
        log.warning("webhook %s to %s refused: %s", delivery.id, exc.url, exc.reason)
        return _Outcome("reject", error=f"refused destination: {exc.reason}")

    def _retry_at(self, attempt: int) -> float:
        delay = backoff_delay(attempt, self.config.webhook_backoff, self.config.webhook_backoff_max, self.rng)
        return self.deps.clock() + delay
