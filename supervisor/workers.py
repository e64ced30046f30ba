"""The worker pool: N handler slots fed by one claim loop.

Claiming: as many jobs as there are free slots, by priority, in one store
call per queue; when nothing is queued the loop waits on the hub (a
``wake`` message or this daemon's own transition), with ``idle_poll`` as a
safety net, so an idle daemon does not spin.

Claims are exact: each claim call carries a nonce the store builds its lease
tokens from, so a claim whose answer never arrived (the connection dropped
under it) is settled once the store answers again: the jobs it leased to
this daemon are looked up by nonce (``reclaim``) and run, or released when
there is no free slot for them. A job id is in at most one slot; a claim that
would break that is a bug, refused and logged (raised under
``JOBVISOR_STRICT_INVARIANTS=1``, which the tests set).

Running: each handler runs in its own task and cancel scope, whose deadline
is the job's timeout; the slot's own task waits for it. Where the handler
runs (the loop, a thread, a child process) and how whatever it does becomes
an outcome is :mod:`supervisor.execution`'s job. A handler that returns
after its timeout (it blocked the loop, or ignored its cancellation) is
judged timed out: the timeout is a hard limit. The pool renews every
running job's lease every third of the lease in one batched store call. A
handler is cancelled, and its outcome not reported, when the job was
cancelled (here, or on another daemon: the cancel message, or a renewal
answered ``absorbed``) or when its lease was lost to another worker (a
renewal answered ``stale``).

Abandoning: a handler that ignores its cancellation (blocking code in a
thread that cannot be interrupted) gets ``abandon_after`` more seconds; then
the slot gives up on it: the attempt is reported (``timeout`` or, at
shutdown, ``release``) with ``abandoned: true`` in its error, and the slot
takes new work. The handler's task lives on in the daemon's host nursery
until it returns, and whatever it returns is discarded (its lease is gone,
so any late report it makes is fenced out).

Reporting: success ``complete`` (the store routes through validation when
the type has a validator); an exception or a result that cannot be stored ``fail``;
the timeout ``timeout``; shutdown ``release``. Reports are fenced by the
lease token and retried with backoff while the store is unavailable; a
second copy of a report that did land is absorbed by the store.

Shutdown (the ``stop`` event): stop claiming, let running handlers finish
within ``grace``, then cancel them and release their jobs (the attempt names
the interrupted phase), and return.
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import msgspec
import trio

from jobvisor.adapters.errors import StoreError, StoreUnavailable
from jobvisor.adapters.ids import created_ms
from jobvisor.adapters.outcomes import error_record
from jobvisor.adapters.processes import open_process_runner
from jobvisor.adapters.records import ClaimedJob, SlotView
from jobvisor.adapters.replies import Absorbed, Fenced, Moved, Reply, Stale
from jobvisor.adapters.store_views import claimed_dependencies, claimed_phases

from . import tracing
from .app import HandlerSpec, JobContext, SyncJobContext
from .deps import Deps
from .execution import Executor
from .hub import wait_any
from .joblog import log_outcome, log_stale, outcome_logged
from .loop_monitor import LoopMonitor
from .outage import StoreOutage

R = TypeVar("R")

__all__ = ["InvariantViolation", "WorkerPool", "error_record"]

log = logging.getLogger("jobvisor.worker")
_decode = msgspec.json.Decoder().decode

STORE_ANSWER = 5.0
"""How long one store round trip may take before the connection gives up (the backend's timeout)."""

CLAIM_BOUND = 5
"""A claim waits at most this many leases for its answer; past it the claim is settled later."""


class InvariantViolation(AssertionError):
    """The worker pool found its own bookkeeping broken (a bug): raised only in strict mode."""


def _report_args(outcome: tuple[str, Any]) -> dict[str, Any]:
    """An outcome as :meth:`WorkerPool._report` takes it: a result's JSON, or an error."""
    trigger, value = outcome
    return {"raw_result": value} if trigger == "complete" else {"error": value}


def _strict() -> bool:
    return os.environ.get("JOBVISOR_STRICT_INVARIANTS", "") not in ("", "0")


@dataclass
class _Running:
    job: ClaimedJob
    queue: str
    slot: int
    since: float  # epoch seconds
    abandon_after: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)  # the handler's
    wait: trio.CancelScope = field(default_factory=trio.CancelScope)  # the slot's wait for it
    done: trio.Event = field(default_factory=trio.Event)
    reason: str | None = None  # why the scope was cancelled: timeout | cancelled | lost | shutdown
    context: JobContext | None = None
    sync_context: SyncJobContext | None = None  # a thread handler's, told when it is stopped
    outcome: tuple[str, Any] | None = None
    deadline: float = float("inf")  # the handler's timeout, in trio time
    returned_at: float | None = None  # when the handler returned an outcome (trio time)
    stopped_at: float | None = None  # when it was first asked to stop (trio time)
    abandoned: bool = False

    def stop(self, reason: str) -> None:
        """Cancel the handler; the slot waits ``abandon_after`` more for it, at most."""
        if self.reason is None:
            self.reason = reason
            self.stopped_at = trio.current_time()
        self.scope.cancel()
        if self.sync_context is not None:
            self.sync_context.cancelled = True
        self.wait.deadline = min(self.wait.deadline, trio.current_time() + self.abandon_after)

    def attach(self, sync_context: SyncJobContext) -> None:
        self.sync_context = sync_context
        if self.reason is not None:
            sync_context.cancelled = True

    def view(self) -> SlotView:
        job = self.job
        return SlotView(slot=self.slot, job=job.id, type=job.type, attempt=job.attempt, since=self.since)


class _Reporter:
    """Phase and service-id records for one running job, fenced by its lease."""

    def __init__(self, pool: WorkerPool, running: _Running) -> None:
        self.pool = pool
        self.running = running

    async def phase(self, name: str, trigger: str, result: Any = None) -> None:
        job = self.running.job
        reply = await self.pool.persist(lambda: self.pool.deps.store.phase(job.id, job.token, name, trigger, result))
        self.pool.check_still_ours(self.running, reply)

    async def service_job_id(self, value: str) -> None:
        job = self.running.job
        reply = await self.pool.persist(
            lambda: self.pool.deps.store.record_service_job_id(job.id, job.token, value)
        )
        self.pool.check_still_ours(self.running, reply)


class WorkerPool:
    """Handler slots for the daemon's queues (see the module docstring)."""

    def __init__(self, deps: Deps, host: trio.Nursery | None = None) -> None:
        self.deps = deps
        self.config = deps.config
        self.host = host  # where handler tasks run: it outlives the pool (see run_daemon)
        self.running: dict[str, _Running] = {}
        self.abandoned: dict[tuple[str, int], _Running] = {}  # given up on, not yet returned
        self._free_slots = list(range(1, self.config.concurrency + 1))
        # Made by a waiter, set and dropped when it happens: no event per job nobody waits on.
        self._slot_freed: trio.Event | None = None
        self._idle = trio.Event()
        self._idle.set()
        self._handlers_live = 0
        self._handler_ended: trio.Event | None = None  # as _slot_freed
        self._renew_soon = trio.Event()
        # The pool's one view of the store: one WARNING when it is lost, one INFO when back.
        self.outage = StoreOutage("workers", log, max_backoff=min(2.0, self.config.lease / 4))
        self._unsettled: list[tuple[str, str]] = []  # (queue, nonce) of claims whose answer was lost
        self._held_until: float | None = None  # when a job a rate limit held back may start
        self._frames: dict[FrameType, _Running] = {}  # handler frames, for the loop monitor
        self.executor = Executor(max_result_bytes=self.config.max_result_bytes)
        self._success_level = logging.INFO if self.config.log_outcomes == "info" else logging.DEBUG
        self.monitor = LoopMonitor(
            interval=min(1.0, self.config.heartbeat / 2), threshold=self.config.loop_lag_threshold,
            lease=self.config.lease, observe=deps.metrics.loop_lag.observe, culprit=self._culprit,
            on_stall=self.renew_soon)
        self.skip_grace = trio.Event()  # a second signal: interrupt running handlers now

    @property
    def free(self) -> int:
        return self.config.concurrency - len(self.running)

    @property
    def handlers_live(self) -> int:
        """Handler tasks not yet returned (running ones and abandoned ones)."""
        return self._handlers_live

    def slots(self) -> tuple[list[SlotView], list[SlotView]]:
        """The jobs the slots hold now, and the handlers abandoned but still running."""
        return ([r.view() for r in sorted(self.running.values(), key=lambda r: r.slot)],
                [r.view() for r in self.abandoned.values()])

    async def wait_handlers_returned(self) -> None:
        """Until every handler task has returned (abandoned ones included)."""
        while self._handlers_live:
            if self._handler_ended is None:
                self._handler_ended = trio.Event()
            await self._handler_ended.wait()

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with AsyncExitStack() as stack:
            modules = tuple(sorted({h.fn.__module__ for h in self.deps.app.handlers.values()
                                    if h.isolation == "process"}))
            if modules:
                self.executor.processes = await stack.enter_async_context(
                    open_process_runner(self.config.concurrency, modules=modules))
            if self.host is None:  # on its own: the pool hosts its handlers (and waits for them)
                self.host = await stack.enter_async_context(trio.open_nursery())
            await self._run(stop, task_status)

    async def _run(self, stop: trio.Event, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as handlers:
            handlers.start_soon(self._renew_loop)
            handlers.start_soon(self.monitor.run, trio.Event())
            async with trio.open_nursery() as claiming:
                claiming.start_soon(self._claim_loop, handlers)
                task_status.started()
                await stop.wait()
                claiming.cancel_scope.cancel()
            await self._release_unsettled(handlers)
            await wait_any(self._idle, self.config.grace, self.skip_grace)
            for running in list(self.running.values()):
                running.stop("shutdown")
            with trio.move_on_after(self.config.abandon_after + 5):
                await self._idle.wait()
            handlers.cancel_scope.cancel()

    # -- claiming -------------------------------------------------------------------

    async def _claim_loop(self, handlers: trio.Nursery) -> None:
        unsettled = self._unsettled
        while True:
            try:
                while unsettled:
                    await self._settle(handlers, *unsettled[0])
                    unsettled.pop(0)
                if self.free <= 0:
                    if self._slot_freed is None:
                        self._slot_freed = trio.Event()
                    await self._slot_freed.wait()
                    continue
                work = self.deps.hub.work_event()
                claimed = 0
                self._held_until = None
                for queue in self.deps.queues:
                    if self.free <= 0:
                        break
                    await trio.lowlevel.checkpoint_if_cancelled()  # a stop ends claiming here
                    nonce = self.deps.store.claim_nonce()
                    jobs = await self._claim(queue, nonce, unsettled)
                    for job in jobs:
                        self._start_or_release(handlers, queue, job)
                    claimed += len(jobs)
                self.outage.reached()
            except StoreUnavailable as exc:
                await self.outage.wait(exc)
                continue
            if claimed == 0:
                await wait_any(work, self._nap())

    def _nap(self) -> float:
        """How long an idle claim loop waits for work: ``idle_poll``, or less when a rate limit
        held a job back (until it may start; README, "Rate limits")."""
        if self._held_until is None:
            return self.config.idle_poll
        return min(self.config.idle_poll, max(0.0, self._held_until - self.deps.clock()))

    async def _claim(self, queue: str, nonce: str, unsettled: list[tuple[str, str]]) -> list[ClaimedJob]:
        """One claim. Shielded: a claim that reached Redis has leased its jobs, so a shutdown must
        not drop its answer (the jobs start, and the shutdown's grace-then-release path hands
        them back). An answer that does not come (Redis went away, or the bound ran out) leaves
        the claim ``unsettled``: :meth:`_settle` finds its jobs by nonce later."""
        jobs: list[ClaimedJob] | None = None
        asked = tracing.now_ns()
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLAIM_BOUND * self.config.lease):
            try:
                jobs, held = await self.deps.store.claim_next(
                    queue, self.config.worker_id, n=self.free, lease=self.config.lease,
                    types=self.deps.app.handlers, nonce=nonce)
                if held is not None and (self._held_until is None or held < self._held_until):
                    self._held_until = held
            except StoreUnavailable:
                unsettled.append((queue, nonce))
                raise
        if jobs is None:
            unsettled.append((queue, nonce))
            log.warning("a claim on %s got no answer within %gs; its jobs will be looked up", queue,
                        CLAIM_BOUND * self.config.lease)
            return []
        now = self.deps.clock()
        for job in jobs:
            made = created_ms(job.id) if job.attempt == 1 else None
            if made is not None:  # a first attempt: how long the job waited to be claimed
                self.deps.metrics.queue_waits[(job.type,)].observe(max(0.0, now - made / 1000))
            if job.traceparent:  # a span of the job's trace (none without one)
                tracing.record_span("jobvisor.claim", traceparent=job.traceparent, start_ns=asked, attributes={
                    "jobvisor.job.id": job.id, "jobvisor.job.type": job.type, "jobvisor.queue": queue,
                    "jobvisor.attempt": job.attempt, "jobvisor.worker": self.config.worker_id})
        return jobs

    async def _release_unsettled(self, handlers: trio.Nursery) -> None:
        """At shutdown: hand back the jobs of claims whose answer was lost (bounded, best effort;
        what is not found in time is recovered by a watchdog when its lease runs out)."""
        with trio.move_on_after(self.config.lease):
            while self._unsettled:
                try:
                    await self._settle(handlers, *self._unsettled[0], release=True)
                except StoreUnavailable as exc:
                    await self.outage.wait(exc)
                    continue
                self._unsettled.pop(0)

    async def _settle(self, handlers: trio.Nursery, queue: str, nonce: str, *, release: bool = False) -> None:
        """Run (or release, without a free slot or when ``release``) the jobs a lost claim
        answer leased to us."""
        with trio.CancelScope(shield=True) as shield:
            shield.deadline = trio.current_time() + CLAIM_BOUND * self.config.lease
            jobs = await self.deps.store.reclaim(queue, self.config.worker_id, nonce)
        if shield.cancelled_caught:
            raise StoreUnavailable(self.config.redis, "no answer to a claim lookup")
        if jobs:
            log.info("found %d job(s) leased by a claim whose answer was lost; %s them", len(jobs),
                     "releasing" if release else "running")
        for job in jobs:
            self._start_or_release(handlers, queue, job, release=release)

    def _start_or_release(self, handlers: trio.Nursery, queue: str, job: ClaimedJob, *,
                          release: bool = False) -> None:
        if job.id in self.running:
            message = f"job {job.id} was claimed again while a slot of this daemon runs it"
            if _strict():
                raise InvariantViolation(message)
            log.error("invariant broken: %s; the second copy is not started", message)
            return
        if release or not self._free_slots or self.skip_grace.is_set():
            running = _Running(job, queue, 0, self.deps.clock(), self.config.abandon_after)
            handlers.start_soon(partial(self._report, running, "release", error={
                "type": "NotStarted", "message": "claimed while no slot was free, or while stopping; "
                                                 "handed back unrun"}))
            return
        self._start(handlers, queue, job)

    def _start(self, handlers: trio.Nursery, queue: str, job: ClaimedJob) -> None:
        running = _Running(job, queue, heapq.heappop(self._free_slots), self.deps.clock(),
                           self.config.abandon_after)
        self.running[job.id] = running
        if len(self.running) + len(self._free_slots) != self.config.concurrency:
            message = (f"{len(self.running)} running and {len(self._free_slots)} free slots for a "
                       f"concurrency of {self.config.concurrency}")
            if _strict():
                raise InvariantViolation(message)
            log.error("invariant broken: %s", message)
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self.deps.hub.register_running(job.id, running.stop)
        handlers.start_soon(self._run_job, running)

    def _finished(self, running: _Running) -> None:
        # The context refers back to ``running`` (its reporter): without this cycle the job's
        # objects go now, by reference counting, rather than at the collector's next pass.
        running.context = None
        if self.running.get(running.job.id) is running:
            del self.running[running.job.id]
            heapq.heappush(self._free_slots, running.slot)
            self.deps.hub.unregister_running(running.job.id)
        if self._slot_freed is not None:
            self._slot_freed.set()
            self._slot_freed = None
        if not self.running:
            self._idle.set()

    # -- running ----------------------------------------------------------------------

    async def _run_job(self, running: _Running) -> None:
        job = running.job
        if tracing.quiet(job.traceparent):  # no span would record or carry anything
            await self._attempt(running)
            return
        attributes = {"jobvisor.job.id": job.id, "jobvisor.job.type": job.type,
                      "jobvisor.queue": running.queue, "jobvisor.attempt": job.attempt}
        with tracing.span("jobvisor.attempt", traceparent=job.traceparent, kind="consumer",
                          attributes=attributes) as span:
            try:
                await self._attempt(running)
            finally:
                tracing.set_outcome(span, running.outcome, running.reason)

    async def _attempt(self, running: _Running) -> None:
        job = running.job
        try:
            spec = self.deps.app.handlers.get(job.type)
            if spec is None:  # claims name this daemon's types, so this is a bug: hand it back unrun
                log.error("claimed job %s of type %r, which this daemon has no handler for; releasing it",
                          job.id, job.type)
                await self._report(running, "release", error={
                    "type": "NotStarted", "message": f"no handler for job type {job.type!r} in this daemon"})
                return
            context = self._context(running)
            running.context = context
            timeout = job.timeout_ms / 1000
            running.deadline = trio.current_time() + timeout
            running.scope.deadline = running.deadline
            # The slot waits for the handler until its timeout, then (the handler told to stop)
            # ``abandon_after`` more at most; a stop before the timeout (cancel, lost lease,
            # shutdown) brings that bound forward (``_Running.stop``). A handler that returns in
            # time costs one wait; the wait past a stop is a second one.
            running.wait.deadline = min(running.wait.deadline, running.deadline)
            assert self.host is not None
            self._handlers_live += 1
            self.host.start_soon(self._handle, running, spec, context)
            await self._wait_for(running, running.wait, timeout)
            if not running.done.is_set():
                if trio.current_time() >= running.deadline:  # tell it (a thread handler sees ctx.cancelled)
                    running.stop("timeout")
                stopped = trio.current_time() if running.stopped_at is None else running.stopped_at
                until = min(running.deadline, stopped) + self.config.abandon_after
                if until > trio.current_time():
                    await self._wait_for(running, trio.CancelScope(deadline=until), timeout)
            outcome = self._judge(running, timeout)
            if outcome is None:
                return
            await self._report(running, outcome[0], **_report_args(outcome))
        finally:
            self._finished(running)

    async def _wait_for(self, running: _Running, scope: trio.CancelScope, limit: float) -> None:
        """Wait for the handler to return, at most until ``scope``'s deadline (then it is
        abandoned, unless it returns later within a longer wait); ``limit`` is the job's timeout."""
        with scope:
            try:
                await running.done.wait()
            except trio.Cancelled:
                if scope.cancel_called:  # our own wait ran out: abandoned (see _attempt)
                    raise
                # The pool itself is torn down (the daemon gave up, or its shutdown ran out
                # of time): report what the handler finished, else hand the job back now
                # rather than leave it to lease expiry.
                finished = self._judge(running, limit) if running.done.is_set() else None
                running.stop("shutdown")
                phase = running.context.current_phase if running.context else None
                if finished is not None and finished[0] != "release":
                    await self._report(running, finished[0], **_report_args(finished))
                else:
                    await self._report(running, "release", error={
                        "type": "Interrupted", "message": "daemon stopping", "phase": phase})
                raise

    def _judge(self, running: _Running, timeout: float) -> tuple[str, Any] | None:
        """What to report for a handler that returned, was cancelled, or was given up on.

        The timeout is a hard limit: a handler that returned after it (it blocked the loop, or
        finished a thread after being told to stop) timed out, whatever it returned. An async
        handler that returned in time keeps its outcome even when it was asked to stop (it never
        saw the request): a shutdown reports it, and for a job cancelled or taken over
        meanwhile the store absorbs it or records it as a stale report. A thread handler that
        returned after being told to stop (``ctx.cancelled``) may have cut its work short, so
        its outcome does not count: released at a shutdown, timed out at its timeout.
        """
        if not running.done.is_set():
            return self._abandon(running, timeout)
        returned = running.returned_at
        if returned is not None and running.sync_context is not None and running.stopped_at is not None \
                and running.stopped_at <= returned:
            returned = None  # a thread handler told to stop: what it returned then does not count
        if returned is not None and returned <= running.deadline:
            return running.outcome  # if the job moved on meanwhile, the store absorbs or fences it
        if running.reason in ("cancelled", "lost"):
            return None  # the store already moved on; a report would be absorbed or stale
        phase = running.context.current_phase if running.context else None
        if returned is None and running.reason == "shutdown":
            return ("release", {"type": "Interrupted", "message": "daemon shutting down", "phase": phase})
        late = "" if returned is None else (
            f"; it returned {returned - running.deadline:.2f}s late (it did not yield to "
            f"its cancellation), so its outcome was discarded")
        return ("timeout", {"type": "Timeout", "phase": phase,
                            "message": f"handler exceeded its timeout of {timeout:g}s{late}"})

    async def _handle(self, running: _Running, spec: HandlerSpec, context: JobContext) -> None:
        """The handler itself, in the host nursery; its outcome is left on ``running``."""
        started = trio.current_time()
        frame = sys._getframe()
        self._frames[frame] = running
        try:
            with running.scope:
                running.outcome = await self.executor.run(spec, context, running.attach)
                running.returned_at = trio.current_time()
        finally:
            del self._frames[frame]
            del frame  # the frame's own local refers to it: without this cycle its objects go now
            returned = running.outcome[0] if running.outcome is not None else "interrupted"
            ended = trio.current_time() if running.returned_at is None else running.returned_at
            self.deps.metrics.handler_durations[running.job.type, returned].observe(ended - started)
            running.done.set()
            self._handlers_live -= 1
            if self._handler_ended is not None:
                self._handler_ended.set()
                self._handler_ended = None
            if self.abandoned.pop((running.job.id, running.job.attempt), None) is not None:
                self.deps.metrics.abandoned_handlers.set(len(self.abandoned))
                log.warning("the abandoned handler of %s returned after all; its outcome is discarded",
                            running.job.id)

    def _culprit(self, frame: FrameType) -> str | None:
        """The handler a frame of the loop thread belongs to (called from the monitor's thread)."""
        running = self._frames.get(frame)
        return None if running is None else f"the handler of job {running.job.id} (type {running.job.type})"

    def _abandon(self, running: _Running, timeout: float) -> tuple[str, Any] | None:
        """The handler ignored its cancellation for ``abandon_after``: free the slot without it."""
        running.abandoned = True
        self.abandoned[(running.job.id, running.job.attempt)] = running
        self.deps.metrics.abandoned_handlers.set(len(self.abandoned))
        waited = self.config.abandon_after
        log.error("the handler of %s ignored its cancellation for %gs: abandoned, its slot is free again",
                  running.job.id, waited)
        phase = running.context.current_phase if running.context else None
        if running.reason in ("cancelled", "lost"):
            return None
        if running.reason == "shutdown":
            return ("release", {"type": "Interrupted", "abandoned": True, "phase": phase,
                                "message": f"daemon shutting down; the handler ignored its cancellation "
                                           f"for {waited:g}s and was abandoned"})
        return ("timeout", {"type": "Timeout", "abandoned": True, "phase": phase,
                            "message": f"handler exceeded its timeout of {timeout:g}s and ignored its "
                                       f"cancellation for {waited:g}s; abandoned"})

    def _context(self, running: _Running) -> JobContext:
        job = running.job
        phases, results = claimed_phases(job)
        return JobContext(
            job_id=job.id, type=job.type, attempt=job.attempt, input=_decode(job.input),
            retry_count=job.retry_count, max_retries=job.max_retries, phases=phases,
            phase_results=results, service_job_id=job.service_job_id or None,
            reporter=_Reporter(self, running), queue=running.queue, dependencies=claimed_dependencies(job),
        )

    # -- talking to the store ------------------------------------------------------------

    async def persist(self, call: Callable[[], Awaitable[R]], *, keep: trio.CancelScope | None = None) -> R:
        """Run a fenced store call, retrying with backoff while the store is away.

        Its lease token can still win for as long as the store is away (time during which
        Redis cannot be reached is not counted against a lease: README, "Redis outages"),
        so the call is retried until the store answers; ``keep`` (the caller's bounding
        scope) is extended by a lease on each failure, unless a second signal asked the
        daemon to stop at once (:attr:`skip_grace`).
        """
        outage = self.outage
        while True:
            if keep is not None and not self.skip_grace.is_set():
                # A store that hangs (rather than refuses) stops every watchdog's sweep too, so
                # the token can still win: each attempt gets its own answer time plus a lease.
                keep.deadline = max(keep.deadline, trio.current_time() + STORE_ANSWER + self.config.lease)
            try:
                result = await call()
                outage.reached()
                return result
            except StoreUnavailable as exc:
                delay = outage.failed(exc)
                if keep is not None and not self.skip_grace.is_set():
                    keep.deadline = max(keep.deadline, trio.current_time() + delay + self.config.lease)
                await trio.sleep(delay)

    def check_still_ours(self, running: _Running, reply: Reply) -> None:
        if isinstance(reply, Stale):
            running.stop("lost")
        elif isinstance(reply, Absorbed):
            running.stop("cancelled")

    async def _report(self, running: _Running, trigger: str, *, error: Any = None,
                      raw_result: bytes | None = None) -> None:
        job = running.job
        # Shielded so a shutdown cannot drop an outcome half-way. Bounded by a lease while the
        # store answers (past it the watchdog owns the job); while the store is away the lease
        # is not running out, so the report is kept and retried (``persist`` extends the bound).
        reply: Fenced | None = None
        refused: StoreError | None = None
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.config.lease) as scope:
            try:
                reply = await self.persist(
                    lambda: self.deps.store.report(job.id, job.token, trigger, error=error, raw_result=raw_result),
                    keep=scope,
                )
            except StoreError as exc:  # the store is closed under a torn-down daemon, or refused it
                refused = exc
        if reply is None:
            log.error("could not report %s for %s (%s); the watchdog will recover it", trigger, job.id,
                      refused or "no answer in time")
        elif isinstance(reply, Moved) and reply.to != "queued":  # a release hands the job back: not an outcome
            if outcome_logged(reply.to, self._success_level):
                log_outcome(job_id=job.id, job_type=job.type, queue=running.queue, attempt=job.attempt,
                            outcome=reply.to, duration=max(0.0, self.deps.clock() - running.since),
                            error=error, success_level=self._success_level)
        elif isinstance(reply, Stale):
            log_stale(job_id=job.id, job_type=job.type, queue=running.queue, attempt=job.attempt,
                      trigger=trigger)
        elif isinstance(reply, Absorbed):
            log.info("late %s for %s absorbed: the job is already %s", trigger, job.id, reply.state)

    def renew_soon(self) -> None:
        """Renew every lease now rather than at the next heartbeat (after the loop stalled)."""
        self._renew_soon.set()

    async def _renew_loop(self) -> None:
        """Renew every running job's lease each ``heartbeat``; after a renewal the store could
        not take, again as soon as it is back (the outage's backoff), not a heartbeat later."""
        outage = self.outage
        wait = self.config.heartbeat
        while True:
            await wait_any(self._renew_soon, wait)
            self._renew_soon = trio.Event()
            wait = self.config.heartbeat
            jobs = list(self.running.values())
            if not jobs:
                continue
            replies: dict[str, Reply] = {}
            failure: list[StoreUnavailable] = []

            async def renew(running: _Running, replies: dict[str, Reply], failure: list[StoreUnavailable]) -> None:
                try:
                    replies[running.job.id] = await self.deps.store.renew(
                        running.job.id, running.job.token, self.config.lease
                    )
                except StoreUnavailable as exc:
                    failure.append(exc)

            async with trio.open_nursery() as nursery:
                for running in jobs:
                    nursery.start_soon(renew, running, replies, failure)
            if failure:
                wait = min(wait, outage.failed(failure[0]))
            elif replies:
                outage.reached()
            for running in jobs:
                reply = replies.get(running.job.id)
                if reply is not None:
                    self.check_still_ours(running, reply)
