"""The small actors: scheduler and pub/sub listener (the watchdog has its own module).

Each is ``async def run_<actor>(deps, stop, *, task_status)``: it reports
``started()`` once ready, returns soon after ``stop`` is set, and treats a
store outage as a reason to back off, never to crash.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import trio

from jobvisor.adapters.backend import Backend
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.notify import InlinePoller, listen

from .deps import Deps
from .hub import wait_any
from .outage import StoreOutage

__all__ = ["run_scheduler", "run_listener"]

log = logging.getLogger("jobvisor.actors")


async def run_scheduler(deps: Deps, stop: trio.Event,
                        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Move scheduled jobs whose time has come to ``queued``; sleep until the next one."""
    task_status.started()
    outage = StoreOutage("scheduler", log)
    while not stop.is_set():
        changed = deps.hub.scheduled_event()
        next_due = math.inf
        try:
            for queue in deps.queues:
                reply = await deps.store.wake(queue)
                if reply.next_due is not None:
                    next_due = min(next_due, reply.next_due / 1000)
            outage.reached()
        except StoreUnavailable as exc:
            next_due = deps.clock() + outage.failed(exc)
        wait = min(deps.config.idle_poll, max(0.0, next_due - deps.clock()))
        await wait_any(stop, wait, changed)


async def run_listener(deps: Deps, backend: Backend, stop: trio.Event,
                       *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
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
    task_status.started()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(listen, backend, channels, deps.hub.on_message))
        await stop.wait()
        nursery.cancel_scope.cancel()

