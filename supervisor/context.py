"""What a handler receives: :class:`JobContext` (``async def``), :class:`SyncJobContext`
(a plain function in a thread) and :class:`ProcessContext` (a process-isolated one).

The worker pool builds them (:mod:`supervisor.workers`); a context records phases and the
external service's id through the pool's :class:`PhaseReporter`, fenced by the attempt's
lease. See :mod:`supervisor.app` for where each kind of handler runs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any, Protocol

import msgspec
import trio

from . import tracing
from .joblog import JobLogger

__all__ = ["Interrupted", "JobContext", "PhaseReporter", "ProcessContext", "SyncJobContext"]


class PhaseReporter(Protocol):
    """How a context records phases and service ids (the worker provides it)."""

    async def phase(self, name: str, trigger: str, result: Any = None) -> None: ...

    async def service_job_id(self, value: str) -> None: ...


class Interrupted(Exception):
    """Raised in a ``thread`` handler at its next ``ctx`` call once its attempt was
    interrupted (timeout, cancel, lost lease, shutdown): its outcome no longer counts."""


_UNSET: Any = object()


class JobContext:
    """What a handler receives: the job, its attempt, and ways to record progress."""

    def __init__(
        self,
        *,
        job_id: str,
        type: str,
        attempt: int,
        input: Any,
        retry_count: int,
        max_retries: int,
        phases: dict[str, str],
        phase_results: dict[str, Any],
        service_job_id: str | None,
        reporter: PhaseReporter,
        queue: str = "default",
        dependencies: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.job_id = job_id
        self.type = type
        self.attempt = attempt
        self.input = input
        self.retry_count = retry_count
        self.max_retries = max_retries
        self.phases = phases
        self.phase_results = phase_results
        self.service_job_id = service_job_id
        self._reporter = reporter
        self.queue = queue
        self.dependencies: dict[str, dict[str, Any]] = dependencies or {}
        """The jobs this one waited on, as they were when it was claimed: id -> ``{"state":
        ..., "result": ...}`` in the order given (README, "Dependencies, flows and chains")."""
        self.current_phase: str | None = None

    @cached_property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records name this job, its type, the attempt and the running phase
        (made at first use: most handlers never log)."""
        return JobLogger(self.job_id, self.type, self.attempt, lambda: self.current_phase)

    async def record_service_job_id(self, value: str) -> None:
        """Remember the external service's id for this job (status queries use it)."""
        await self._reporter.service_job_id(value)
        self.service_job_id = value

    async def phase(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run phase ``name`` as ``fn(*args)`` and store its result.

        A phase an earlier attempt completed is not run again: its stored
        result is returned. Phases must be declared on the handler. An
        ``async def`` is awaited; a plain function runs in a worker thread
        (``trio.to_thread``), so it does not hold the event loop.
        """
        stored = await self._phase_begin(name)
        if stored is not _UNSET:
            return stored
        with tracing.span("jobvisor.phase", attributes={"jobvisor.phase": name, "jobvisor.job.id": self.job_id}):
            if inspect.iscoroutinefunction(fn):
                result = await fn(*args)
            else:
                result = await trio.to_thread.run_sync(lambda: fn(*args))
                if inspect.isawaitable(result):
                    result = await result
        await self._phase_end(name, result)
        return result

    async def _phase_begin(self, name: str) -> Any:
        """The stored result of a completed phase, or ``_UNSET`` once ``name`` is started."""
        if name not in self.phases:
            raise ValueError(f"phase {name!r} is not declared for {self.type!r}")
        if self.phases[name] == "completed":
            return self.phase_results.get(name)
        await self._reporter.phase(name, "start")
        self.phases[name] = "running"
        self.current_phase = name
        return _UNSET

    async def _phase_end(self, name: str, result: Any) -> None:
        await self._reporter.phase(name, "complete", result)
        self.phases[name] = "completed"
        self.phase_results[name] = result
        self.current_phase = None


class SyncJobContext:
    """What a ``thread`` handler receives: :class:`JobContext`'s fields, with plain calls.

    ``phase`` and ``record_service_job_id`` hand their store calls to the
    daemon's event loop and wait for them. Once the attempt is interrupted,
    ``cancelled`` is true and every call raises :class:`Interrupted`; a
    handler with a long loop of its own should look at ``cancelled``.
    """

    def __init__(self, context: JobContext) -> None:
        self._context = context
        self.cancelled = False
        self.job_id, self.type, self.attempt = context.job_id, context.type, context.attempt
        self.input, self.retry_count, self.max_retries = context.input, context.retry_count, context.max_retries
        self.phases, self.phase_results = context.phases, context.phase_results
        self.dependencies = context.dependencies

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """:attr:`JobContext.log`."""
        return self._context.log

    @property
    def service_job_id(self) -> str | None:
        return self._context.service_job_id

    @property
    def current_phase(self) -> str | None:
        return self._context.current_phase

    def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        if self.cancelled:
            raise Interrupted(f"the attempt of {self.job_id} was interrupted")
        # From the handler's own thread: the call runs in the task that started the thread,
        # under its cancel scope, so a stopped attempt's store calls stop with it.
        return trio.from_thread.run(fn, *args)

    def record_service_job_id(self, value: str) -> None:
        """Remember the external service's id for this job (status queries use it)."""
        self._call(self._context.record_service_job_id, value)

    def phase(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run phase ``name`` as ``fn(*args)`` in this thread and store its result;
        a phase an earlier attempt completed is not run again."""
        stored = self._call(self._context._phase_begin, name)
        if stored is not _UNSET:
            return stored
        with tracing.span("jobvisor.phase", attributes={"jobvisor.phase": name, "jobvisor.job.id": self.job_id}):
            result = fn(*args)
        self._call(self._context._phase_end, name, result)
        return result


class ProcessContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a ``process`` handler receives in its child process: the job's fields."""

    job_id: str
    type: str
    attempt: int
    input: Any
    retry_count: int
    max_retries: int
    phase_results: dict[str, Any] = {}
    service_job_id: str | None = None
    dependencies: dict[str, dict[str, Any]] = {}

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records name this job, its type and the attempt. It logs in the child
        process, through that process's logging configuration (by default, WARNING and above
        to stderr, which the daemon's stderr receives)."""
        return JobLogger(self.job_id, self.type, self.attempt)
