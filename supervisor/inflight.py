"""Work under way in an actor: one task per item, each in its own cancel scope.

The validator and the webhook deliverer take items from the store up to a
limit, run each in a task of their nursery, and on shutdown let what is under
way finish within a bound, then cancel the rest. :class:`InFlight` keeps that
bookkeeping in one place: free slots, an event set when a slot frees, an event
set when nothing is under way, and the scopes to cancel.

The task function receives its :class:`trio.CancelScope` and runs only the
outside call (the HTTP request, the validator) inside it; what it then writes
to the store it writes outside the scope (shielded, bounded), so a cancelled
item is still given back or recorded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from jobvisor.adapters.errors import StoreUnavailable

from .hub import wait_any
from .outage import StoreOutage

__all__ = ["InFlight"]

log = logging.getLogger("jobvisor.inflight")


class InFlight:
    """Up to ``limit`` items under way, by key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.scopes: dict[str, trio.CancelScope] = {}
        self._freed = trio.Event()
        self._idle = trio.Event()
        self._idle.set()

    @property
    def free(self) -> int:
        return self.limit - len(self.scopes)

    def freed_event(self) -> trio.Event:
        """Set when the next slot frees: take it *before* deciding to wait."""
        return self._freed

    def __contains__(self, key: str) -> bool:
        return key in self.scopes

    def start(
        self, nursery: trio.Nursery, key: str, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        """Run ``fn(scope, *args)`` in ``nursery``; the slot is taken at once."""
        scope = trio.CancelScope()
        self.scopes[key] = scope
        if self._idle.is_set():
            self._idle = trio.Event()
        nursery.start_soon(self._run, key, scope, fn, args)

    async def _run(self, key: str, scope: trio.CancelScope, fn: Callable[..., Awaitable[Any]],
                   args: tuple[Any, ...]) -> None:
        try:
            await fn(scope, *args)
        finally:
            self.scopes.pop(key, None)
            self._freed.set()
            self._freed = trio.Event()
            if not self.scopes:
                self._idle.set()

    async def serve(
        self, stop: trio.Event, nursery: trio.Nursery, *, queues: Sequence[str],
        take: Callable[[str, int], Awaitable[Any]], run: Callable[..., Awaitable[Any]],
        woke: Callable[[], trio.Event], clock: Callable[[], float], idle_poll: float, label: str,
        outage: StoreOutage | None = None,
    ) -> None:
        """Until ``stop``: take due items of every queue into the free slots and run each as
        ``run(scope, queue, item)``; then sleep until the earliest next due item, a nudge
        (``woke()``'s event), a freed slot, or ``idle_poll`` at most. ``take(queue, n)``
        answers the items (each with an ``id``) and ``next_due`` (epoch seconds or None).
        A store outage is waited out with ``outage``'s backoff (and logged by it, twice)."""
        outage = outage or StoreOutage(label, log)
        while not stop.is_set():
            woken = woke()
            freed = self.freed_event()
            next_due = math.inf
            try:
                for queue in queues:
                    if self.free <= 0:
                        break
                    due = await take(queue, self.free)
                    for item in due.items:
                        if item.id not in self:
                            self.start(nursery, item.id, run, queue, item)
                    if due.next_due is not None:
                        next_due = min(next_due, due.next_due)
                outage.reached()
            except StoreUnavailable as exc:
                next_due = clock() + outage.failed(exc)
            wait = next_due - clock()
            wait = idle_poll if wait <= 0 else min(idle_poll, wait)
            await wait_any(stop, wait, woken, freed)

    async def drain(self, grace: float, *, after_cancel: float = 5.0) -> None:
        """Wait up to ``grace`` for everything under way, then cancel what is left and wait
        up to ``after_cancel`` more for it to be given back."""
        with trio.move_on_after(grace):
            await self._idle.wait()
        for scope in list(self.scopes.values()):
            scope.cancel()
        with trio.move_on_after(after_cancel):
            await self._idle.wait()
