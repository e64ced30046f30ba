"""Running a daemon inside a test: in process, on the embedded store or a real Redis.

``running_daemon`` starts :func:`supervisor.run_daemon` in a nursery and
yields the :class:`~supervisor.Daemon`; leaving the block shuts it down the
graceful way. :class:`Watcher` turns the store's replies into events a test
can wait on, so nothing waits by sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from jobvisor import App, Daemon, run_daemon
from jobvisor.adapters.backend import MemoryServers
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Moved, Reply
from jobvisor.machines import JOB
from jobvisor.supervisor.config import load_config
from jobvisor.supervisor.supervise import ChildSpec

TERMINAL = frozenset(s.value for s in JOB.terminal)


class Watcher:
    """Wakes waiters whenever the store answers anything."""

    def __init__(self) -> None:
        self._changed = trio.Event()
        self.replies: list[Reply] = []

    def __call__(self, replies: Sequence[Reply]) -> None:
        self.replies.extend(replies)
        self._changed.set()
        self._changed = trio.Event()

    @property
    def moves(self) -> list[Moved]:
        """The transitions among the replies so far (the replies that have ``to``)."""
        return [r for r in self.replies if isinstance(r, Moved)]

    async def until(self, condition: Callable[[], Any], timeout: float = 60.0) -> Any:  # noqa: ASYNC109  (a test's bound)
        """Wait until ``condition()`` (sync) is truthy, re-checking after each store reply."""
        with trio.fail_after(timeout):
            while True:
                changed = self._changed
                value = condition()
                if value:
                    return value
                await changed.wait()


@asynccontextmanager
async def running_daemon(
    app: App, *, redis: str = "memory://test", memory: MemoryServers | None = None,
    extra_children: Sequence[ChildSpec] = (), **settings: Any
) -> AsyncIterator[tuple[Daemon, Watcher]]:
    """A daemon for ``app``; ``settings`` are :class:`DaemonConfig` fields (``worker_id``
    defaults to ``test-worker``), ``extra_children`` more supervised actors."""
    config = load_config({"redis": redis, "worker_id": "test-worker", **settings}, environ={})
    watcher = Watcher()
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(
            partial(run_daemon, config, app, memory=memory or MemoryServers(), handle_signals=False,
                    extra_children=tuple(extra_children))
        )
        daemon.store.observers.append(watcher)
        try:
            yield daemon, watcher
        finally:
            daemon.shutdown.set()


async def job_state(daemon: Daemon, job_id: str) -> str:
    return (await daemon.store.get_job(job_id)).state


def spec(app: App, type_: str, **extra: Any) -> JobSpec:
    """A job spec for ``type_`` with the handler's registered defaults, overridden by ``extra``."""
    h = app.handlers[type_]
    defaults = {"queue": h.queue, "phases": h.phases, "timeout": h.timeout, "max_retries": h.max_retries,
                "backoff": h.backoff, "backoff_max": h.backoff_max}
    return JobSpec(type=type_, **{**defaults, **extra})


def ended(watcher: Watcher, job_id: str, after: int = 0) -> Callable[[], Moved | None]:
    """A condition for ``watcher.until``: the reply (from ``after`` on) that moved ``job_id`` to a terminal state."""
    def terminal_reply() -> Moved | None:
        return next((r for r in watcher.replies[after:] if isinstance(r, Moved)
                     and r.id == job_id and r.machine == "job" and r.to in TERMINAL), None)
    return terminal_reply

