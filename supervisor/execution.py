"""Running one handler where its type says: on the loop, in a thread, or in a child process.

:meth:`Executor.run` returns the attempt's outcome as plain data, whatever
the handler did: ``("complete", <result JSON bytes>)`` or ``("fail",
<error record>)``. An exception of any kind (a raising ``__str__``, an
exception group, ``SystemExit``), a result that cannot be stored (too deep,
too large, not JSON), a child process that died: each becomes a ``fail`` of
this attempt alone, with the reason recorded. Only trio's own cancellation
goes through, so the caller's cancel scope sees its timeout, cancel or
shutdown.

Cancellation by isolation:

* ``loop``: the handler is cancelled at its next checkpoint, as any trio code;
* ``thread``: the thread cannot be interrupted. :class:`SyncJobContext` is
  marked cancelled (its next ``ctx`` call raises ``Interrupted``) and the call
  keeps waiting for the thread (``abandon_on_cancel=False``), so the worker
  pool's abandon bound decides how long the slot waits for it;
* ``process``: the child process is killed at once.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import trio

from jobvisor.adapters.outcomes import Unstorable, encode_result, error_record
from jobvisor.adapters.processes import HandlerCrashed, ProcessRunner

from .app import HandlerSpec, JobContext, ProcessContext, SyncJobContext

__all__ = ["Executor", "Outcome", "without_cancellation"]

Outcome = tuple[str, Any]


def without_cancellation(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """``exc`` split into (trio's cancellation in it, everything else), either possibly None."""
    if isinstance(exc, trio.Cancelled):
        return exc, None
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)
    return None, exc


class Executor:
    """Runs handlers for one worker pool; ``processes`` is needed for ``process`` isolation."""

    def __init__(self, *, max_result_bytes: int, processes: ProcessRunner | None = None) -> None:
        self.max_result_bytes = max_result_bytes
        self.processes = processes
        # Threads are bounded by the pool's slots already; a limiter of our own keeps blocked
        # handlers (abandoned ones hold a token until they return) from starving trio's
        # default limiter, which other code in the daemon uses.
        self._threads = trio.CapacityLimiter(math.inf)

    async def run(self, spec: HandlerSpec, context: JobContext,
                  attach: Callable[[SyncJobContext], None]) -> Outcome:
        """The attempt's outcome (see the module docstring); raises only ``trio.Cancelled``."""
        try:
            if spec.isolation == "thread":
                sync = SyncJobContext(context)
                attach(sync)
                return await trio.to_thread.run_sync(self._in_thread, spec.fn, sync,
                                                     limiter=self._threads, abandon_on_cancel=False)
            if spec.isolation == "process":
                return await self._in_process(spec, context)
            result = await spec.fn(context)
            return self._encoded(result)  # encoding runs user code too (a type's own hooks)
        except BaseException as exc:  # noqa: BLE001 - a handler's failure is its attempt's, never ours
            cancelled, rest = without_cancellation(exc)
            if cancelled is not None:
                raise cancelled from None
            assert rest is not None
            return ("fail", error_record(rest))

    def _encoded(self, result: Any) -> Outcome:
        try:
            return ("complete", encode_result(result, max_bytes=self.max_result_bytes))
        except Unstorable as exc:
            return ("fail", {"type": "UnencodableResult", "message": exc.reason})

    def _in_thread(self, fn: Callable[[SyncJobContext], Any], context: SyncJobContext) -> Outcome:
        try:
            result = fn(context)
            if inspect.isawaitable(result):  # an async handler that did not look like one
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                return ("fail", {"type": "TypeError", "message": "the handler was registered as a plain "
                                 "function but returned an awaitable; register it with async def"})
            return self._encoded(result)
        except BaseException as exc:  # noqa: BLE001 - see run
            return ("fail", error_record(exc))

    async def _in_process(self, spec: HandlerSpec, context: JobContext) -> Outcome:
        if self.processes is None:
            raise RuntimeError("process isolation needs the worker pool's process runner")
        view = ProcessContext(
            job_id=context.job_id, type=context.type, attempt=context.attempt, input=context.input,
            retry_count=context.retry_count, max_retries=context.max_retries,
            phase_results=context.phase_results, service_job_id=context.service_job_id,
            dependencies=context.dependencies)
        try:
            kind, value = await self.processes.run(spec.fn, view, max_bytes=self.max_result_bytes)
        except HandlerCrashed as exc:
            return ("fail", {"type": "HandlerCrashed", "message": str(exc), "exitcode": exc.exitcode})
        if kind == "unstorable":
            return ("fail", {"type": "UnencodableResult", "message": value})
        return (kind, value)
