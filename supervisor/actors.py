"""The small actors: scheduler, pub/sub listener, queue gauges (the watchdog has its own module).

Each is ``async def run_<actor>(deps, stop, *, task_status)``: it reports
``started()`` once ready, returns soon after ``stop`` is set, and treats a
store outage as a reason to back off, never to crash.
"""

from __future__ import annotations

import logging
import math
import threading
from functools import partial

import trio

from adapters.backend import Backend
from adapters.errors import StoreUnavailable
from adapters.keys import Keys
from adapters.notify import InlinePoller, listen_blocking

from .deps import Deps
from .hub import wait_any

__all__ = ["run_scheduler", "run_listener", "run_gauges"]

log = logging.getLogger("jobvisor.actors")


async def run_scheduler(deps: Deps, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Move scheduled jobs whose time has come to ``queued``; sleep until the next one."""
    task_status.started()
    while not stop.is_set():
        changed = deps.hub.scheduled_event()
        next_due = math.inf
        try:
            for queue in deps.queues:
                reply = await deps.store.wake(queue)
                if reply.next_due is not None:
                    next_due = min(next_due, reply.next_due / 1000)
        except StoreUnavailable as exc:
            log.warning("scheduler: %s", exc)
        wait = min(deps.config.idle_poll, max(0.0, next_due - deps.clock()))
        await wait_any(stop, wait, changed)


async def run_listener(deps: Deps, backend: Backend, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Forward other processes' ``wake`` and ``cancel`` messages to the hub."""
    channels = []
    for queue in deps.queues:
        keys = Keys(queue)
        channels += [keys.wake_channel, keys.cancel_channel]
    if backend.inline:
        poller = InlinePoller(backend, channels)
        task_status.started()
        try:
            while not stop.is_set():
                poller.drain(deps.hub.on_message)
                await wait_any(stop, 0.05)
        finally:
            poller.close()
        return
    token = trio.lowlevel.current_trio_token()
    halt = threading.Event()

    def deliver(channel: str, data: str) -> None:
        try:
            trio.from_thread.run_sync(deps.hub.on_message, channel, data, trio_token=token)
        except trio.RunFinishedError:
            halt.set()

    async def stop_when_asked(scope: trio.CancelScope) -> None:
        await stop.wait()
        scope.cancel()

    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_when_asked, nursery.cancel_scope)
            # The thread checks `halt` every poll interval, so abandoning it on cancel is bounded.
            await trio.to_thread.run_sync(
                partial(listen_blocking, backend, channels, deliver, halt, poll=0.25), abandon_on_cancel=True
            )
    finally:
        halt.set()


async def run_gauges(deps: Deps, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep the queue-depth gauges fresh (every 5 s) and the health flag honest."""
    task_status.started()
    while not stop.is_set():
        try:
            for queue in deps.queues:
                for state, count in (await deps.store.queue_counts(queue)).items():
                    deps.metrics.queue_depth.labels(queue, state).set(count)
            deps.metrics.healthy = True
        except StoreUnavailable:
            deps.metrics.healthy = False
        await wait_any(stop, 5.0)
