"""The registry actor: this daemon and its worker slots, with a heartbeat, in Redis.

At start the daemon registers (``worker.started``); every third of the lease
it heartbeats its record: host, pid, queues, the job types it has handlers
for (the only ones it claims), concurrency, the job each busy slot holds and
any handler it abandoned. A record is live until its
heartbeat deadline (one lease ahead); past it, any daemon's watchdog declares
it lost, once (``worker.lost``). A daemon declared lost that heartbeats again
(it was paused, not dead) is live again (``worker.returned``). On a graceful
stop it leaves the registry (``worker.stopped``) and is never declared lost.

``jobvisor workers`` reads the registry.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import msgspec
import trio

from jobvisor.adapters.errors import StoreError, StoreUnavailable
from jobvisor.adapters.records import SlotView
from jobvisor.adapters.replies import Returned

from .deps import Deps
from .hub import wait_any
from .outage import StoreOutage

__all__ = ["Registration", "run_registry"]

log = logging.getLogger("jobvisor.registry")
_encode = msgspec.json.Encoder().encode

Slots = Callable[[], tuple[list[SlotView], list[SlotView]]]


class Registration:
    """This daemon's registry record; ``slots`` tells what its worker slots hold now."""

    def __init__(self, deps: Deps, slots: Slots) -> None:
        self.deps = deps
        self.slots = slots
        self.registered = False  # survives a restart of the actor: it registers once
        config = deps.config
        self.fields = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "queues": ",".join(deps.queues),
            "concurrency": str(config.concurrency),
            # what its claims take: a job of another type waits for a daemon that has it
            "types": ",".join(sorted(deps.app.handlers)),
        }

    async def beat(self) -> None:
        busy, abandoned = self.slots()
        fields = {**self.fields, "slots": _encode(busy).decode(), "abandoned": _encode(abandoned).decode()}
        reply = await self.deps.store.heartbeat(
            self.deps.config.worker_id, fields, ttl=self.deps.config.lease, start=not self.registered
        )
        self.registered = True
        if isinstance(reply, Returned):
            log.warning("this daemon had been declared %s (its heartbeat was late); it is live again",
                        reply.state or "gone")

    async def leave(self) -> None:
        await self.deps.store.worker_stopped(self.deps.config.worker_id)

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        outage = StoreOutage("registry", log)
        while not stop.is_set():
            wait = self.deps.config.heartbeat
            try:
                await self.beat()
                outage.reached()
            except StoreUnavailable as exc:  # beat again as soon as the store is back
                wait = min(wait, outage.failed(exc))
            await wait_any(stop, wait)
        # Stopping (not crashing): leave the registry, bounded, even when cancelled meanwhile.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 5.0
            try:
                await self.leave()
            except StoreError as exc:
                log.warning("could not leave the registry (%s); it will be declared lost", exc)


async def run_registry(registration: Registration, stop: trio.Event, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The registry actor (see :class:`Registration`)."""
    await registration.run(stop, task_status=task_status)
