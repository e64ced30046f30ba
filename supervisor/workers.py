"""The worker pool: N handler slots fed by one claim loop.

Claiming: as many jobs as there are free slots, by priority, in one store
call per queue; when nothing is queued the loop waits on the hub (a
``wake`` message or this daemon's own transition), with ``idle_poll`` as a
safety net, so an idle daemon does not spin.

Running: each handler runs in its own task and cancel scope, whose deadline
is the job's timeout; the slot's own task waits for it. The pool renews every
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
the type has a validator); an exception or an unencodable result ``fail``;
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
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from adapters.errors import StoreUnavailable
from adapters.records import ClaimedJob, Reply, SlotView

from .app import JobContext
from .deps import Deps
from .hub import wait_any

__all__ = ["WorkerPool", "error_record"]

log = logging.getLogger("jobvisor.worker")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def error_record(exc: BaseException, *, limit: int = 8) -> dict[str, Any]:
    """An exception as stored: type, message and a short traceback summary."""
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=limit)
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": "".join(frames)[-4000:],
    }


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
    reason: str | None = None  # why the scope was cancelled: cancelled | lost | shutdown
    context: JobContext | None = None
    outcome: tuple[str, Any] | None = None
    abandoned: bool = False

    def stop(self, reason: str) -> None:
        """Cancel the handler; the slot waits ``abandon_after`` more for it, at most."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()
        self.wait.deadline = min(self.wait.deadline, trio.current_time() + self.abandon_after)

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
        self._slot_freed = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._handlers_live = 0
        self._handler_ended = trio.Event()
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
            await self._handler_ended.wait()

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.host is None:  # on its own: the pool hosts its handlers (and waits for them)
            async with trio.open_nursery() as host:
                self.host = host
                await self._run(stop, task_status)
            return
        await self._run(stop, task_status)

    async def _run(self, stop: trio.Event, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as handlers:
            handlers.start_soon(self._renew_loop)
            async with trio.open_nursery() as claiming:
                claiming.start_soon(self._claim_loop, handlers)
                task_status.started()
                await stop.wait()
                claiming.cancel_scope.cancel()
            await wait_any(self._idle, self.config.grace, self.skip_grace)
            for running in list(self.running.values()):
                running.stop("shutdown")
            with trio.move_on_after(self.config.abandon_after + 5):
                await self._idle.wait()
            handlers.cancel_scope.cancel()

    # -- claiming -------------------------------------------------------------------

    async def _claim_loop(self, handlers: trio.Nursery) -> None:
        backoff = 0.05
        while True:
            if self.free <= 0:
                await self._slot_freed.wait()
                continue
            work = self.deps.hub.work_event()
            claimed = 0
            try:
                for queue in self.deps.queues:
                    if self.free <= 0:
                        break
                    # Shielded: a claim that reached Redis has leased its jobs, so its answer
                    # must not be dropped by a shutdown cancelling this loop; the jobs start,
                    # and the shutdown's grace-then-release path hands them back.
                    with trio.CancelScope(shield=True) as shield:
                        shield.deadline = trio.current_time() + self.config.lease
                        jobs = await self.deps.store.claim(
                            queue, self.config.worker_id, n=self.free, lease=self.config.lease,
                            types=self.deps.app.handlers,
                        )
                    for job in jobs:
                        self._start(handlers, queue, job)
                    claimed += len(jobs)
                backoff = 0.05
            except StoreUnavailable as exc:
                log.warning("claim failed: %s; retrying in %.2fs", exc, backoff)
                await trio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            if claimed == 0:
                await wait_any(work, self.config.idle_poll)

    def _start(self, handlers: trio.Nursery, queue: str, job: ClaimedJob) -> None:
        running = _Running(job, queue, heapq.heappop(self._free_slots), self.deps.clock(),
                           self.config.abandon_after)
        self.running[job.id] = running
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self.deps.hub.register_running(job.id, running.stop)
        handlers.start_soon(self._run_job, running)

    def _finished(self, running: _Running) -> None:
        if self.running.pop(running.job.id, None) is not None:
            heapq.heappush(self._free_slots, running.slot)
        self.deps.hub.unregister_running(running.job.id)
        self._slot_freed.set()
        self._slot_freed = trio.Event()
        if not self.running:
            self._idle.set()

    # -- running ----------------------------------------------------------------------

    async def _run_job(self, running: _Running) -> None:
        job = running.job
        try:
            spec = self.deps.app.handlers.get(job.type)
            if spec is None:
                await self._report(running, "fail", error={
                    "type": "UnknownJobType",
                    "message": f"no handler for job type {job.type!r} in this daemon",
                })
                return
            context = self._context(running)
            running.context = context
            timeout = job.timeout_ms / 1000
            started = trio.current_time()
            running.scope.deadline = started + timeout
            running.wait.deadline = min(running.wait.deadline, started + timeout + self.config.abandon_after)
            assert self.host is not None
            self._handlers_live += 1
            self.host.start_soon(self._handle, running, spec.fn, context)
            with running.wait:
                try:
                    await running.done.wait()
                except trio.Cancelled:
                    if running.wait.cancel_called:  # our own wait ran out: abandoned, below
                        raise
                    # The pool itself is torn down (the daemon gave up, or its shutdown ran out
                    # of time): hand the job back now rather than leave it to lease expiry.
                    running.stop("shutdown")
                    phase = running.context.current_phase if running.context else None
                    await self._report(running, "release", error={
                        "type": "Interrupted", "message": "daemon stopping", "phase": phase})
                    raise
            if not running.done.is_set():
                outcome = self._abandon(running, timeout)
            elif running.scope.cancelled_caught:
                outcome = self._interrupted(running, timeout)
            else:
                outcome = running.outcome
            if outcome is None:
                return
            trigger, value = outcome
            if trigger == "complete":
                try:
                    raw = _encode(value)
                except (TypeError, msgspec.EncodeError) as exc:
                    await self._report(running, "fail", error={
                        "type": "UnencodableResult",
                        "message": f"the handler's result cannot be encoded as JSON: {exc}",
                    })
                    return
                await self._report(running, "complete", raw_result=raw)
            elif trigger == "release":
                await self._report(running, "release", error=value)
            else:
                await self._report(running, trigger, error=value)
        finally:
            self._finished(running)

    async def _handle(self, running: _Running, fn: Callable[[JobContext], Awaitable[Any]],
                      context: JobContext) -> None:
        """The handler itself, in the host nursery; its outcome is left on ``running``."""
        started = trio.current_time()
        try:
            with running.scope:
                try:
                    result = await fn(context)
                except Exception as exc:  # noqa: BLE001 - a handler error fails the attempt
                    running.outcome = ("fail", error_record(exc))
                else:
                    running.outcome = ("complete", result)
        finally:
            self.deps.metrics.handler_duration.labels(running.job.type).observe(trio.current_time() - started)
            running.done.set()
            self._handlers_live -= 1
            self._handler_ended.set()
            self._handler_ended = trio.Event()
            if self.abandoned.pop((running.job.id, running.job.attempt), None) is not None:
                self.deps.metrics.abandoned_handlers.set(len(self.abandoned))
                log.warning("the abandoned handler of %s returned after all; its outcome is discarded",
                            running.job.id)

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

    def _interrupted(self, running: _Running, timeout: float) -> tuple[str, Any] | None:
        phase = running.context.current_phase if running.context else None
        if running.reason in ("cancelled", "lost"):
            return None  # the store already moved on; a report would be absorbed or stale
        if running.reason == "shutdown":
            return ("release", {"type": "Interrupted", "message": "daemon shutting down", "phase": phase})
        return ("timeout", {"type": "Timeout",
                            "message": f"handler exceeded its timeout of {timeout:g}s", "phase": phase})

    def _context(self, running: _Running) -> JobContext:
        job = running.job
        phases: dict[str, str] = {}
        for part in filter(None, job.phases.split(",")):
            name, _, state = part.partition("=")
            phases[name] = state
        pairs = job.phase_results
        results = {pairs[i]: _decode(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return JobContext(
            job_id=job.id, type=job.type, attempt=job.attempt, input=_decode(job.input),
            retry_count=job.retry_count, max_retries=job.max_retries, phases=phases,
            phase_results=results, service_job_id=job.service_job_id or None,
            reporter=_Reporter(self, running),
        )

    # -- talking to the store ------------------------------------------------------------

    async def persist(self, call: Any) -> Reply:
        """Run a fenced store call, retrying with backoff while the store is away."""
        backoff = 0.05
        while True:
            try:
                result: Reply = await call()
                return result
            except StoreUnavailable as exc:
                log.warning("store unavailable (%s); retrying in %.2fs", exc, backoff)
                await trio.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    def check_still_ours(self, running: _Running, reply: Reply) -> None:
        if reply.kind == "stale":
            running.stop("lost")
        elif reply.kind == "absorbed":
            running.stop("cancelled")

    async def _report(self, running: _Running, trigger: str, *, error: Any = None,
                      raw_result: bytes | None = None) -> None:
        job = running.job
        # Shielded so a shutdown cannot drop an outcome half-way, but bounded by the lease:
        # past it, the watchdog owns the job and this report would be stale anyway.
        reply: Reply | None = None
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.config.lease
            reply = await self.persist(
                lambda: self.deps.store.report(job.id, job.token, trigger, error=error, raw_result=raw_result)
            )
        if reply is None:
            log.error("could not report %s for %s within the lease; the watchdog will recover it",
                      trigger, job.id)
        elif reply.kind == "stale":
            log.info("late %s for %s rejected by the lease fence", trigger, job.id)
        elif reply.kind == "absorbed":
            log.info("late %s for %s absorbed: the job is already %s", trigger, job.id, reply.state)

    async def _renew_loop(self) -> None:
        while True:
            await trio.sleep(self.config.heartbeat)
            jobs = list(self.running.values())
            if not jobs:
                continue
            replies: dict[str, Reply] = {}

            async def renew(running: _Running) -> None:
                try:
                    replies[running.job.id] = await self.deps.store.renew(
                        running.job.id, running.job.token, self.config.lease
                    )
                except StoreUnavailable as exc:
                    log.warning("lease renewal failed: %s", exc)

            async with trio.open_nursery() as nursery:
                for running in jobs:
                    nursery.start_soon(renew, running)
            for running in jobs:
                reply = replies.get(running.job.id)
                if reply is not None:
                    self.check_still_ours(running, reply)
