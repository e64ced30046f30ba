"""The validator: a job reaches ``completed`` only once the source of truth agrees.

A handler's success moves a job of a type with a validator to ``validating``
(the job table decides). This actor takes ``validating`` jobs whose next check
is due (each under a check token, so two daemons never check one job at once),
and asks the type's validator:

* a Python validator, ``async def (job: JobView) -> ValidationResult`` (or a bool);
* or the built-in HTTP validator (:class:`~supervisor.app.HttpValidator`, or a
  job submitted with its own ``validator_url``): GET the URL template with
  ``{job_id}`` and ``{service_job_id}`` filled in, read a JSON field (dotted
  paths reach inside objects), compare it with the expected value, and require
  further fields to be non-null.

A network error, a time-out (``validation_timeout``), a non-2xx answer, an
answer that is not JSON, a validator that raises: each is a failed check with
its reason recorded. The HTTP validator's reasons are categories only
(:data:`CATEGORIES`): the job's submitter must not learn from them what lies
behind a URL (a closed port from an HTTP 404, an internal answer's body), so
the details go to the daemon's log, and of the answer only the compared
field's value is kept, truncated to :data:`STATUS_LIMIT` characters. The URL
must pass the destination policy (:mod:`adapters.destinations`), on its
resolved addresses too. Checks are ``validation_interval`` apart with
``validation_jitter``; the ``validation_attempts``-th failed check moves the job
to ``validation_failed`` with the last status the source of truth reported;
a passed check moves it to ``completed`` (and only then is ``job.completed``
written to the outbox). Checks run here, never in a worker slot.

Shutdown: checks under way are cancelled at once and given back unrecorded
(due again at once, for any daemon): a check is a read, cheap to make again.
A verdict already reached is still recorded.
A daemon that dies mid-check loses nothing: the check lease runs out and the
job is taken again.
"""

from __future__ import annotations

import logging
import random
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
import trio

from jobvisor.adapters.destinations import DestinationRefused
from jobvisor.adapters.errors import BadInput, HttpFailure, HttpTimeout, NotFound, StoreUnavailable
from jobvisor.adapters.http import HttpClient
from jobvisor.adapters.records import ValidationTask
from jobvisor.adapters.replies import Checked, Moved
from jobvisor.adapters.urls import check_url

from . import tracing
from .app import App, HttpValidator, ValidationResult
from .config import DaemonConfig
from .deps import Deps
from .inflight import InFlight
from .joblog import log_outcome
from .outage import StoreOutage

__all__ = ["Validator", "judge", "fill_url", "check_validator_urls", "CATEGORIES", "STATUS_LIMIT"]

log = logging.getLogger("jobvisor.validator")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_MISSING = object()
REASON_LIMIT = 300
STATUS_LIMIT = 64
"""Characters of the compared field's value kept (the status the source of truth reported)."""
CATEGORIES = ("refused_destination", "unreachable", "timeout", "http_error", "invalid_answer", "mismatch")
"""What an HTTP check may report to the submitter: ``mismatch`` alone carries a detail (the
compared field's value against the expected one, or the field that is missing or null)."""


def fill_url(template: str, job_id: str, service_job_id: str) -> str:
    """The URL for one job: ``{job_id}`` and ``{service_job_id}`` filled in, percent-encoded."""
    if "{service_job_id}" in template and not service_job_id:
        raise ValueError("the job has no service job id to fill {service_job_id} with")
    return template.replace("{job_id}", quote(job_id, safe="")).replace(
        "{service_job_id}", quote(service_job_id, safe=""))


def _lookup(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _encode(value).decode()


def judge(document: Any, validator: HttpValidator) -> ValidationResult:
    """The HTTP validator's verdict on the source of truth's JSON answer (pure)."""
    if not isinstance(document, dict):
        return ValidationResult(ok=False, reason="invalid_answer")
    value = _lookup(document, validator.field)
    if value is _MISSING:
        return ValidationResult(ok=False, reason=f"mismatch: {validator.field} is missing")
    status = _text(value)[:STATUS_LIMIT]
    if value != validator.expected:
        return ValidationResult(
            ok=False, status=status,
            reason=f"mismatch: {validator.field} is {status!r}, expected {validator.expected!r}")
    for name in validator.non_null:
        if _lookup(document, name) in (None, _MISSING):
            return ValidationResult(ok=False, status=status, reason=f"mismatch: {name} is null")
    return ValidationResult(ok=True, status=status)


class Validator:
    """The validator actor (see the module docstring); ``run`` is its child start."""

    def __init__(self, deps: Deps, http: HttpClient, *, rng: random.Random | None = None) -> None:
        self.deps = deps
        self.config = deps.config
        self.http = http
        self.rng = rng or random.Random()
        self.in_flight = InFlight(self.config.validation_concurrency)
        self.outage = StoreOutage("validator", log)
        self.destinations = self.config.destinations  # checked by name before each request

    @property
    def types(self) -> list[str]:
        return sorted(t for t, h in self.deps.app.handlers.items() if h.validator is not None)

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as checks:
            task_status.started()
            await self.in_flight.serve(
                stop, checks, queues=self.deps.queues, run=self._check, woke=self.deps.hub.validating_event,
                take=lambda queue, n: self.deps.store.validations_due(
                    queue, self.types, n=n, lease=self.config.validation_lease),
                clock=self.deps.clock, idle_poll=self.config.idle_poll, label="validator",
                outage=self.outage)
            await self.in_flight.drain(0.0)  # a check is a read: give it back now, redo it later

    # -- one check -------------------------------------------------------------------------

    async def _check(self, scope: trio.CancelScope, queue: str, task: ValidationTask) -> None:
        verdict: ValidationResult | None = None
        with tracing.span("jobvisor.validation", traceparent=task.traceparent, attributes={
                "jobvisor.job.id": task.id, "jobvisor.job.type": task.type, "jobvisor.queue": queue,
                "jobvisor.validation.check": task.check}) as span:
            with scope:
                verdict = await self._verdict(task)
            if verdict is not None and span is not None:
                span.set_attribute("jobvisor.validation.ok", verdict.ok)
                if not verdict.ok:
                    tracing.set_error(span, verdict.reason or verdict.status or "not confirmed")
        with trio.CancelScope(shield=True) as report:
            report.deadline = trio.current_time() + self.config.validation_lease
            try:
                if verdict is None:
                    await self.deps.store.release_validation(task.id, task.token)
                else:
                    await self._record(queue, task, verdict)
            except StoreUnavailable as exc:
                self.outage.failed(exc)  # the check's lease runs out; it is checked again
            except NotFound as exc:
                log.warning("validator: could not record the check of %s (%s)", task.id, exc)

    async def _verdict(self, task: ValidationTask) -> ValidationResult | None:
        """The check's verdict; ``None`` when there is nothing to record (job gone, store away)."""
        spec = self.deps.app.handlers.get(task.type)
        validator: Any = spec.validator if spec is not None else None
        if task.validator_url:
            base = validator if isinstance(validator, HttpValidator) else HttpValidator(url=task.validator_url)
            validator = msgspec.structs.replace(base, url=task.validator_url)
        if validator is None:
            return ValidationResult(ok=False, reason=f"no validator for job type {task.type!r} in this daemon")
        timeout = self.config.validation_timeout
        result: ValidationResult | None = None
        # The HTTP client bounds its own requests (and says so); the scope is the backstop.
        http = isinstance(validator, HttpValidator)
        with trio.move_on_after(timeout + 1.0 if http else timeout):
            try:
                if http:
                    result = await self._http_check(validator, task)
                else:
                    result = await self._python_check(validator, task)
            except (StoreUnavailable, NotFound):
                return None
        if result is None:
            return ValidationResult(ok=False, reason="timeout" if http else f"no verdict within {timeout:g}s")
        return result

    async def _python_check(self, validator: Any, task: ValidationTask) -> ValidationResult:
        job = await self.deps.store.get_job(task.id)
        try:
            answer = await validator(job)
        except Exception as exc:  # noqa: BLE001 - a validator that raises fails one check
            return ValidationResult(ok=False, reason=f"validator raised {type(exc).__name__}: {exc}")
        if isinstance(answer, bool):
            return ValidationResult(ok=answer, reason="" if answer else "validator returned False")
        if not isinstance(answer, ValidationResult):
            return ValidationResult(
                ok=False, reason=f"validator returned {type(answer).__name__}, not a ValidationResult")
        return answer

    async def _http_check(self, validator: HttpValidator, task: ValidationTask) -> ValidationResult:
        try:
            url = fill_url(validator.url, task.id, task.service_job_id)
        except ValueError as exc:
            return ValidationResult(ok=False, reason=str(exc))
        try:
            refusal = self.destinations.check_host(urlsplit(url).hostname or "")
            if refusal is not None:
                raise DestinationRefused(url, refusal.reason, check="name")
            answer = await self.http.get(url, self.config.validation_timeout)
        except DestinationRefused as exc:
            self.deps.metrics.outbound_refused.labels("validator", exc.check).inc()
            log.warning("validator: check of %s refused: %s (%s)", task.id, exc.reason, exc.url)
            return ValidationResult(ok=False, reason="refused_destination")
        except HttpFailure as exc:
            category = "timeout" if isinstance(exc, HttpTimeout) else "unreachable"
            log.info("validator: check of %s: %s (%s)", task.id, exc.reason, exc.url)
            return ValidationResult(ok=False, reason=category)
        if not 200 <= answer.status < 300:
            log.info("validator: check of %s: HTTP %d", task.id, answer.status)
            return ValidationResult(ok=False, reason="http_error")
        try:
            document = None if answer.truncated else _decode(answer.body)
        except msgspec.DecodeError:
            document = None
        if document is None:
            log.info("validator: check of %s: the answer is %s", task.id,
                     "too large" if answer.truncated else "not JSON")
            return ValidationResult(ok=False, reason="invalid_answer")
        return judge(document, validator)

    async def _record(self, queue: str, task: ValidationTask, verdict: ValidationResult) -> None:
        attempts = self.config.validation_attempts
        jitter = self.config.validation_jitter * self.rng.uniform(-1.0, 1.0)
        retry_at = self.deps.clock() + self.config.validation_interval * (1.0 + jitter)
        reason = verdict.reason[:REASON_LIMIT]
        error = None
        if not verdict.ok and task.check >= attempts:
            error = {"type": "ValidationFailed", "status": verdict.status or None,
                     "message": f"the source of truth did not confirm completion in {task.check} checks: {reason}"}
        reply = await self.deps.store.validation_outcome(
            task.id, task.token, ok=verdict.ok, status=verdict.status[:REASON_LIMIT], reason=reason,
            max_attempts=attempts, retry_at=retry_at, error=error)
        if isinstance(reply, Moved):
            outcome = "passed" if reply.to == "completed" else "exhausted"
            log_outcome(job_id=task.id, job_type=task.type, queue=queue, attempt=None, check=task.check,
                        outcome=reply.to, duration=None, error=error,
                        success_level=logging.INFO if self.config.log_outcomes == "info" else logging.DEBUG)
            # the job's validation is over: how many checks it took
            self.deps.metrics.validation_checks_per_job.labels(reply.to).observe(task.check)
        elif isinstance(reply, Checked):
            outcome = "failed"
        else:
            outcome = reply.kind  # stale, absorbed (cancelled meanwhile), not_found
        self.deps.metrics.validation_checks.labels(outcome).inc()


def check_validator_urls(app: App, config: DaemonConfig) -> None:
    """Refuse to start with an HTTP validator whose host the allow-list or the destination
    policy refuses by name (BadInput)."""
    for type_, spec in app.handlers.items():
        if isinstance(spec.validator, HttpValidator):
            field = f"validator url of {type_!r}"
            try:
                check_url(spec.validator.url, field, config.allowed_set)
                config.destinations.check_url(spec.validator.url, field)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
