"""The watchdog: recovers jobs whose lease ran out, and declares lost daemons.

Every daemon runs one; they cooperate through guarded store steps, never by
talking to each other.

A store outage is not a lost worker: when the watchdogs' sweeps of a queue
pause for longer than :attr:`Watchdog.outage_gap` (nobody could reach Redis),
the first sweep after it re-arms every lease of the queue, and every live
daemon's heartbeat, to one full lease from that moment, before it reads what
expired (the rule is in the Lua, ``outage_rearm``, and in README's guarantees).
Outages are waited out and logged twice (:class:`~supervisor.outage.StoreOutage`).

Theory of operation
-------------------
A lease runs out when the worker holding it, or its whole daemon, stopped
renewing: it died, or it is paused. Each sweep reads the expired leases of
every queue (``expired``) and decides each one:

* the job recorded a service job id and its type has a status query: the
  watchdog first takes the lease in hand (``inspect``: for a hold, no other
  watchdog sees the job, and only a decision presenting this inspection's
  nonce counts), then asks the external service, bounded in time
  (``status_query_timeout``) and in concurrency (``status_query_concurrency``
  queries at once; jobs beyond that wait for a later sweep, while jobs that
  need no query are decided at once, so a slow service stalls nothing);
* :func:`decide` turns the answer into one store step (``expire``):

  ===============================  =================  ===============================
  the external service says        trigger            cause (on the event)
  ===============================  =================  ===============================
  completed (with its result)      ``complete``       ``service_completed``
  running, within the timeout      ``extend``         ``service_running``
  running, past the job's timeout  ``timeout``        ``service_running_past_timeout``
  failed                           ``lease_expired``  ``service_failed``
  unknown                          ``lease_expired``  ``service_unknown``
  (the query raised)               ``lease_expired``  ``status_query_failed``
  (the query took too long)        ``lease_expired``  ``status_query_timeout``
  (no status query for the type)   ``lease_expired``  ``no_status_query``
  (no service job id recorded)     ``lease_expired``  ``no_service_job_id``
  ===============================  =================  ===============================

  ``complete`` goes through validation when the type has a validator, and the
  handler is not run again; ``lease_expired`` is a retry within ``max_retries``,
  else ``failed`` with reason ``worker_lost``; ``extend`` never reaches past the
  attempt's timeout. Each decision is one event carrying its cause.

Every step presents the lease token the watchdog saw expire, so when several
watchdogs race on one lease, one decides and the others are ``skipped``; a
worker that was only late and renews or reports first wins, and the decision
is skipped too.

Lost daemons: each sweep also declares lost the daemons whose registry
heartbeat stopped (``declare_lost_workers``); leaving the live set and being
declared lost is one guarded step, so each is declared lost once, whichever
watchdog gets there.

Cancellation: a status query is run under ``move_on_after``; it must honour
cancellation (trio-async I/O such as httpx does). Stopping the watchdog
cancels queries in flight; their holds run out and any watchdog takes the
jobs again.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from jobvisor.adapters.errors import StoreError, StoreUnavailable
from jobvisor.adapters.ids import new_token
from jobvisor.adapters.records import Expired
from jobvisor.adapters.replies import Extended, Inspecting, Moved

from .app import ServiceStatus, StatusAnswer, StatusQuery
from .deps import Deps
from .hub import wait_any
from .outage import StoreOutage

__all__ = ["Cause", "Decision", "decide", "Watchdog", "run_watchdog"]

log = logging.getLogger("jobvisor.watchdog")
_encode = msgspec.json.Encoder().encode

PAGE = 100
"""Expired leases read per store call."""
PAGES = 20
"""Store calls per queue and sweep at most (the rest waits for the next sweep)."""


class Cause(enum.StrEnum):
    """Why the watchdog decided what it did (the ``cause`` field of the event)."""

    SERVICE_COMPLETED = "service_completed"
    SERVICE_RUNNING = "service_running"
    SERVICE_RUNNING_PAST_TIMEOUT = "service_running_past_timeout"
    SERVICE_FAILED = "service_failed"
    SERVICE_UNKNOWN = "service_unknown"
    STATUS_QUERY_FAILED = "status_query_failed"
    STATUS_QUERY_TIMEOUT = "status_query_timeout"
    NO_STATUS_QUERY = "no_status_query"
    NO_SERVICE_JOB_ID = "no_service_job_id"


@dataclass(frozen=True)
class Decision:
    """One store step for an expired lease: ``trigger`` with its ``cause``."""

    trigger: str  # lease_expired | complete | timeout | extend
    cause: Cause
    result: Any = None
    lease: float | None = None  # extend only: seconds from now
    detail: str = ""


def decide(
    answer: StatusAnswer | Cause, *, now: float, attempt_deadline: float | None, lease: float,
    detail: str = "",
) -> Decision:
    """What to do with an expired lease, given the external service's ``answer``.

    ``answer`` is the status query's answer, or the :class:`Cause` that stood
    in for one (no query, the query failed or timed out). Pure: no I/O, no clock.
    """
    if isinstance(answer, Cause):
        return Decision("lease_expired", answer, detail=detail)
    match answer.status:
        case ServiceStatus.COMPLETED:
            return Decision("complete", Cause.SERVICE_COMPLETED, result=answer.result)
        case ServiceStatus.RUNNING:
            left = lease if attempt_deadline is None else attempt_deadline - now
            if left <= 0:
                return Decision("timeout", Cause.SERVICE_RUNNING_PAST_TIMEOUT)
            return Decision("extend", Cause.SERVICE_RUNNING, lease=min(lease, left))
        case ServiceStatus.FAILED:
            return Decision("lease_expired", Cause.SERVICE_FAILED, detail=detail)
        case _:
            return Decision("lease_expired", Cause.SERVICE_UNKNOWN, detail=detail)


def _checked(answer: Any) -> StatusAnswer | tuple[Cause, str]:
    """The query's answer if it is a well-formed :class:`StatusAnswer`, else why not."""
    if not isinstance(answer, StatusAnswer):
        return Cause.STATUS_QUERY_FAILED, f"the status query returned {type(answer).__name__}, not a StatusAnswer"
    try:
        status = ServiceStatus(answer.status)
    except ValueError:
        return Cause.STATUS_QUERY_FAILED, f"the status query answered an unknown status {answer.status!r}"
    if status is ServiceStatus.COMPLETED:
        try:
            _encode(answer.result)
        except (TypeError, msgspec.EncodeError) as exc:
            return Cause.STATUS_QUERY_FAILED, f"the service's result cannot be encoded as JSON: {exc}"
    return StatusAnswer(status=status, result=answer.result)


class Watchdog:
    """One daemon's watchdog (see the module docstring)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.config = deps.config
        self.queries = trio.Semaphore(self.config.status_query_concurrency)
        self.outage = StoreOutage("watchdog", log)

    @property
    def interval(self) -> float:
        return self.config.watchdog_interval

    @property
    def outage_gap(self) -> float:
        """A pause of every watchdog's sweeps longer than this is a store outage (README,
        "Redis outages"): well above the sweep interval, well below what a holder needs."""
        return max(self.config.lease / 4, 3 * self.interval)

    @property
    def hold(self) -> float:
        """How long an inspection keeps other watchdogs off: the query's bound plus a lease."""
        return self.config.status_query_timeout + self.config.lease

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as queries:
            task_status.started()
            while not stop.is_set():
                wait = self.interval
                try:
                    await self.sweep_workers()
                    for queue in self.deps.queues:
                        await self.sweep(queue, queries)
                    self.outage.reached()
                except StoreUnavailable as exc:
                    wait = min(wait, self.outage.failed(exc))
                await wait_any(stop, wait)
            queries.cancel_scope.cancel()

    async def sweep_workers(self) -> None:
        """Declare lost the daemons whose heartbeat stopped (each once, across watchdogs)."""
        for lost in await self.deps.store.declare_lost_workers(gap=self.outage_gap, lease=self.config.lease):
            self.deps.metrics.workers_lost.inc()
            log.warning("daemon %s declared lost: no heartbeat since %.3f (it held %s)",
                        lost.id, lost.heartbeat_at / 1000, lost.slots or "no jobs")

    async def sweep(self, queue: str, queries: trio.Nursery) -> None:
        """Decide every expired lease of ``queue`` that needs no query; start the queries."""
        offset = 0
        for _ in range(PAGES):
            jobs = await self.deps.store.expired(queue, n=PAGE, offset=offset,
                                                 gap=self.outage_gap, lease=self.config.lease)
            async with trio.open_nursery() as now:
                for job in jobs:
                    query = self._query_for(job)
                    if isinstance(query, Cause):
                        now.start_soon(self._decide_now, job, query)
                        continue
                    try:
                        self.queries.acquire_nowait()
                    except trio.WouldBlock:
                        offset += 1  # left in the index for a later sweep
                        continue
                    now.start_soon(self._inspect, job, query, queries)
            if len(jobs) < PAGE:
                return

    def _query_for(self, job: Expired) -> StatusQuery | Cause:
        spec = self.deps.app.handlers.get(job.type)
        if spec is None or spec.status_query is None:
            return Cause.NO_STATUS_QUERY
        if not job.service_job_id:
            return Cause.NO_SERVICE_JOB_ID
        return spec.status_query

    async def _decide_now(self, job: Expired, cause: Cause) -> None:
        try:
            await self._apply(job, Decision("lease_expired", cause), None)
        except StoreUnavailable as exc:
            self.outage.failed(exc)

    async def _inspect(self, job: Expired, query: StatusQuery, queries: trio.Nursery) -> None:
        """Take the lease in hand, then ask in the background (the semaphore is held)."""
        inspector = f"{self.config.worker_id}/{new_token()}"
        try:
            reply = await self.deps.store.inspect(job.id, job.token, hold=self.hold, inspector=inspector)
        except BaseException as exc:
            self.queries.release()
            if isinstance(exc, StoreUnavailable):
                self.outage.failed(exc)
                return
            raise
        if not isinstance(reply, Inspecting):
            self.queries.release()
            return
        queries.start_soon(self._ask, job, query, inspector)

    async def _ask(self, job: Expired, query: StatusQuery, inspector: str) -> None:
        try:
            answer: StatusAnswer | Cause
            detail = ""
            with trio.move_on_after(self.config.status_query_timeout) as bound:
                try:
                    checked = _checked(await query(job.service_job_id))
                except Exception as exc:  # noqa: BLE001 - the user's query failing is an answer too
                    answer, detail = Cause.STATUS_QUERY_FAILED, f"{type(exc).__name__}: {exc}"[:500]
                else:
                    if isinstance(checked, tuple):
                        answer, detail = checked
                    else:
                        answer = checked
            if bound.cancelled_caught:
                answer = Cause.STATUS_QUERY_TIMEOUT
                detail = f"no answer within {self.config.status_query_timeout:g}s"
        finally:
            self.queries.release()
        decision = decide(answer, now=self.deps.clock(), attempt_deadline=job.attempt_deadline,
                          lease=self.config.lease, detail=detail)
        try:
            await self._apply(job, decision, inspector)
        except StoreUnavailable as exc:  # its hold runs out, and a later sweep decides again
            self.outage.failed(exc)

    async def _apply(self, job: Expired, decision: Decision, inspector: str | None) -> None:
        error = None
        if decision.trigger == "lease_expired":
            error = {"type": "WorkerLost", "cause": decision.cause, "worker": job.worker,
                     "message": f"worker {job.worker or '?'} stopped renewing its lease ({decision.cause}"
                                + (f": {decision.detail}" if decision.detail else "") + ")"}
        elif decision.trigger == "timeout":
            error = {"type": "Timeout", "cause": decision.cause, "worker": job.worker,
                     "message": "the worker was lost and the external service was still running the "
                                f"job past its timeout of {job.timeout_ms / 1000:g}s"}
        try:
            reply = await self.deps.store.expire(
                job.id, job.token, decision.trigger, result=decision.result, lease=decision.lease,
                reason=decision.cause if decision.trigger == "extend" else None,
                inspector=inspector, cause=decision.cause, error=error,
            )
        except StoreError as exc:
            if isinstance(exc, StoreUnavailable):
                raise
            log.error("watchdog: the store refused the decision on %s: %s", job.id, exc)
            return
        if isinstance(reply, Moved | Extended):
            self.deps.metrics.watchdog_decisions.labels(decision.trigger, decision.cause).inc()
            log.warning("job %s lost its worker %s: %s (%s)%s", job.id, job.worker or "?", decision.trigger,
                        decision.cause, f"; now {reply.to}" if isinstance(reply, Moved) else "")


async def run_watchdog(deps: Deps, stop: trio.Event,
                       *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The watchdog actor (see :class:`Watchdog`)."""
    await Watchdog(deps).run(stop, task_status=task_status)
