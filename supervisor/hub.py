"""In-process notifications between actors: work to claim, schedules that changed,
jobs to validate, webhooks to deliver, cancel requests for running handlers.

The hub learns of changes two ways: the store reports every reply it gets
(``observe``), whose ``effects`` (the machine rows' effect names, in
``machines/``) say what each op did, so this daemon's own transitions wake its
actors at once;
and the pub/sub listener forwards what other processes published
(``wake`` and ``cancel`` channels). Waiters always have a timeout as a
safety net, so a missed message costs latency, never a stuck job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.replies import Moved, Reply

from .outage import StoreOutage

__all__ = ["Hub"]

class Hub:
    def __init__(self) -> None:
        self._work = trio.Event()
        self._scheduled = trio.Event()
        self._validating = trio.Event()
        self._outbox: trio.Event | None = None  # made by a waiter: a change nobody waits on costs nothing
        self._cancel_handlers: dict[str, Callable[[str], None]] = {}

    # -- work to claim ------------------------------------------------------

    def work_event(self) -> trio.Event:
        """The event the next ``work_available`` sets: take it *before* claiming."""
        return self._work

    def work_available(self) -> None:
        self._work.set()
        self._work = trio.Event()

    # -- schedules ---------------------------------------------------------

    def scheduled_event(self) -> trio.Event:
        return self._scheduled

    def scheduled_changed(self) -> None:
        self._scheduled.set()
        self._scheduled = trio.Event()

    # -- validation and webhooks ---------------------------------------------

    def validating_event(self) -> trio.Event:
        """Set when a job of this daemon entered ``validating``: take it *before* looking."""
        return self._validating

    def validating_changed(self) -> None:
        self._validating.set()
        self._validating = trio.Event()

    def outbox_event(self) -> trio.Event:
        """Set when a transition of this daemon may have written an outbox row."""
        if self._outbox is None:
            self._outbox = trio.Event()
        return self._outbox

    def outbox_changed(self) -> None:
        if self._outbox is not None:
            self._outbox.set()
            self._outbox = None

    # -- running handlers -------------------------------------------------------

    def register_running(self, job_id: str, cancel: Callable[[str], None]) -> None:
        self._cancel_handlers[job_id] = cancel

    def unregister_running(self, job_id: str) -> None:
        self._cancel_handlers.pop(job_id, None)

    def cancel_requested(self, job_id: str) -> bool:
        """Cancel the handler running ``job_id`` here, if one is; True when it was."""
        cancel = self._cancel_handlers.get(job_id)
        if cancel is None:
            return False
        cancel("cancelled")
        return True

    # -- sources -------------------------------------------------------------------

    def observe(self, replies: Sequence[Reply]) -> None:
        """React to the effects the store's replies performed (never to state names)."""
        for r in replies:
            for effect in r.effects:
                match effect:
                    case "wake_workers":
                        self.work_available()
                    case "arm_backoff" | "arm_delay":
                        self.scheduled_changed()
                    case "cancel_handler" if isinstance(r, Moved):
                        self.cancel_requested(r.id)
                    case "start_validation":
                        self.validating_changed()
                    case "notify":
                        self.outbox_changed()

    def on_message(self, channel: str, data: str) -> None:
        """A pub/sub message from any process (``...:wake`` or ``...:cancel``)."""
        if channel.endswith(":wake"):
            self.work_available()
        elif channel.endswith(":cancel"):
            self.cancel_requested(data)


async def wait_any(event: trio.Event, at_most: float, *others: Any) -> None:
    """Wait until ``event`` (or any of ``others``) is set, at most ``at_most`` seconds (an idle
    actor's nap, not a deadline: reaching it is the normal way out, so it is not a cancel scope
    the caller opens)."""
    with trio.move_on_after(at_most):
        if not others:
            await event.wait()
            return
        async with trio.open_nursery() as nursery:
            for ev in (event, *others):
                nursery.start_soon(_set_then_cancel, ev, nursery.cancel_scope)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def every(stop: trio.Event, interval: float, step: Callable[[], Awaitable[int]],
                log: logging.Logger, done: str) -> None:
    """Run ``step()`` now and then every ``interval`` seconds until ``stop``; log ``done``
    (``%d``: what ``step`` returned) when it did something. A store outage is waited out
    (the next round comes after the outage's backoff, or ``interval`` if sooner) and logged
    twice, when it starts and when it ends (:class:`~supervisor.outage.StoreOutage`)."""
    outage = StoreOutage(log.name.rsplit(".", 1)[-1], log)
    while not stop.is_set():
        wait = interval
        try:
            count = await step()
            outage.reached()
            if count:
                log.info(done, count)
        except StoreUnavailable as exc:
            wait = min(interval, outage.failed(exc))
        await wait_any(stop, wait)
