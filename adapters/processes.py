"""Process isolation for handlers: a child process runs the function, and is killed on cancel.

Built on ``trio-parallel``: a cache of spawned worker processes owned by one
:class:`ProcessRunner` (per worker pool), each call sent to an idle child;
cancelling the call (the job's timeout, a cancel, a lost lease, a shutdown)
kills that child with SIGKILL and the next call starts a fresh one. That is
the hard time limit a handler which never yields needs: no cooperation is
asked of it.

What crosses the boundary: the handler (pickled by reference, so it must be
importable at module level) and its context go in; out comes ``("complete",
<result as JSON bytes>)``, ``("fail", <error record>)`` or ``("unstorable",
<reason>)``, all built in the child by :mod:`adapters.outcomes`, so nothing
the handler returns is unpickled in the daemon. A child that dies (a crash,
``os._exit``, the kernel's OOM killer) raises :class:`HandlerCrashed` naming
its exit code or signal, and the cache replaces it.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_parallel

from .errors import JobvisorError
from .outcomes import Unstorable, encode_result, error_record

__all__ = ["HandlerCrashed", "ProcessRunner", "open_process_runner"]


class HandlerCrashed(JobvisorError):
    """The child process running a handler died before it answered."""

    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode
        if exitcode is None:
            how = "ended without an exit status"
        elif exitcode < 0:
            try:
                name = signal.Signals(-exitcode).name
            except ValueError:
                name = f"signal {-exitcode}"
            how = f"was killed by {name}"
        else:
            how = f"exited with code {exitcode}"
        super().__init__(f"the handler's process {how} before it answered")


def _run_in_child(fn: Callable[[Any], Any], context: Any, max_bytes: int) -> tuple[str, Any]:
    """In the child: run the handler and turn whatever happened into plain data."""
    try:
        result = fn(context)
    except BaseException as exc:  # noqa: BLE001 - everything the handler raises fails its attempt
        return ("fail", error_record(exc))
    try:
        return ("complete", encode_result(result, max_bytes=max_bytes))
    except Unstorable as exc:
        return ("unstorable", exc.reason)


def _ready(modules: tuple[str, ...]) -> None:
    """Run once in a new child so that it is started, with the handlers' modules imported,
    before a job needs it."""
    for name in modules:
        importlib.import_module(name)


class ProcessRunner:
    """Runs handlers in child processes; see the module docstring.

    Children are started ahead of need: one before the runner is handed out (so the fork
    server is up, with the handlers' modules imported, before the first claim), and a
    replacement each time one is killed or dies, so a job's timeout is not spent starting an
    interpreter.
    """

    def __init__(self, context: trio_parallel.WorkerContext, slots: int, nursery: trio.Nursery,
                 modules: tuple[str, ...] = ()) -> None:
        self._context = context
        self._modules = modules
        self._limiter = trio.CapacityLimiter(max(1, slots))
        self._nursery = nursery

    def warm(self) -> None:
        """Start one child in the background (it waits, idle, in the cache)."""
        self._nursery.start_soon(self.warm_up)

    async def warm_up(self) -> None:
        """Start one child and wait until it has imported the handlers' modules."""
        with contextlib.suppress(trio_parallel.BrokenWorkerError):  # the next job starts its own child
            await self._context.run_sync(_ready, self._modules, kill_on_cancel=True, limiter=self._limiter)

    async def run(self, fn: Callable[[Any], Any], context: Any, *, max_bytes: int) -> tuple[str, Any]:
        """The handler's outcome, as :func:`_run_in_child` gives it. Cancelling kills the child.

        Raises :class:`HandlerCrashed` when the child dies first.
        """
        try:
            outcome: tuple[str, Any] = await self._context.run_sync(
                _run_in_child, fn, context, max_bytes, kill_on_cancel=True, limiter=self._limiter)
        except trio_parallel.BrokenWorkerError as exc:
            self.warm()
            proc = exc.args[-1] if exc.args else None
            raise HandlerCrashed(getattr(proc, "exitcode", None)) from None
        except trio.Cancelled:
            self.warm()  # the child was killed
            raise
        return outcome


@asynccontextmanager
async def open_process_runner(slots: int, *, modules: tuple[str, ...] = (),
                              idle_timeout: float = 600.0) -> AsyncIterator[ProcessRunner]:
    """A runner whose children live as long as the block; they are stopped on the way out.

    Children are forked from a fork server (a clean single-threaded process started once),
    which imports ``modules`` (the handlers' own) when it starts, so a new child is ready in
    milliseconds rather than after a fresh interpreter's imports.
    """
    server = multiprocessing.get_context("forkserver")
    server.set_forkserver_preload(["jobvisor.adapters.processes", *modules])
    async with (
        trio_parallel.open_worker_context(
            idle_timeout=idle_timeout, grace_period=1.0, worker_type=trio_parallel.WorkerType.FORKSERVER) as context,
        trio.open_nursery() as nursery,
    ):
        runner = ProcessRunner(context, slots, nursery, modules)
        await runner.warm_up()  # the fork server's imports happen here, not in a job's timeout
        try:
            yield runner
        finally:
            nursery.cancel_scope.cancel()
