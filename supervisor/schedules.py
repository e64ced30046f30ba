"""The schedule actor: fires the ticks of the schedules of this daemon's queues.

At start it adds the app's declared schedules (:meth:`App.schedule`), leaving alone those
already defined so (a restart writes nothing). Then it reads, per queue, the schedules due
now (one index read) and, for each, plans the ticks due (:func:`adapters.timing.plan`: the
missed-tick policy) and offers them to the store in one call; it sleeps until the next tick
of any schedule (at most ``idle_poll``: the safety net that notices schedules added by other
processes), on trio's clock, so a MockClock drives it in tests.

Any number of daemons run this actor over the same queues. They all wake at the same tick
and offer it; the store's ``fire`` is guarded by the tick (later than the last recorded), so
one of them submits the job and the others are answered ``blocked``, having written nothing.
"""

from __future__ import annotations

import logging
import math

import trio

from jobvisor.adapters.errors import BadInput, StoreUnavailable
from jobvisor.adapters.schedules import ScheduleSpec, ScheduleView
from jobvisor.adapters.timing import plan

from .app import App, ScheduleDecl
from .client import build_spec
from .deps import Deps
from .hub import wait_any
from .outage import StoreOutage

__all__ = ["declared_spec", "run_schedules"]

log = logging.getLogger("jobvisor.schedules")


def declared_spec(app: App, decl: ScheduleDecl) -> ScheduleSpec:
    """The schedule an app declares, its job built as a client's submit builds it (the type's
    registered defaults); :class:`BadInput` when the type has no handler in the app."""
    types = app.described_types()
    job = build_spec(types, decl.type, decl.input, queue=decl.queue)
    return ScheduleSpec(name=decl.name, job=job, cron=decl.cron, every=decl.every, tz=decl.tz,
                        missed=decl.missed, catch_up_max=decl.catch_up_max, grace=decl.grace)


async def _declare(deps: Deps, stop: trio.Event) -> None:
    """Add the app's schedules (an outage waited out; a shutdown ends the wait)."""
    specs = []
    for decl in deps.app.schedules.values():
        try:
            specs.append(declared_spec(deps.app, decl))
        except BadInput as exc:
            log.error("schedule %s not added: %s", decl.name, exc)
    outage = StoreOutage("schedules", log)
    while specs and not stop.is_set():
        try:
            for spec in list(specs):
                try:
                    await deps.store.add_schedule(spec, keep=True)
                except BadInput as exc:
                    log.error("schedule %s not added: %s", spec.name, exc)
                specs.remove(spec)
            outage.reached()
        except StoreUnavailable as exc:
            await wait_any(stop, outage.failed(exc))


async def _tick(deps: Deps, view: ScheduleView, now: float) -> None:
    if view.next_at is None:
        return
    due = plan(view.timing(), int(view.next_at * 1000), int(now * 1000), missed=view.missed,
               catch_up_max=view.catch_up_max, grace_ms=int(view.grace * 1000))
    for reply in await deps.store.tick_schedule(view, due):
        if reply.moved:
            log.debug("schedule %s: %s", view.name, reply)


async def run_schedules(deps: Deps, stop: trio.Event,
                        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Declare the app's schedules, then fire every due tick; sleep until the next one."""
    task_status.started()
    await _declare(deps, stop)
    outage = StoreOutage("schedules", log)
    while not stop.is_set():
        next_due = math.inf
        try:
            for queue in deps.queues:
                now = deps.clock()
                due, later = await deps.store.due_schedules(queue, now)
                for view in due:
                    await _tick(deps, view, now)
                if due:  # armed again: read the index once more before sleeping
                    next_due = now
                elif later is not None:
                    next_due = min(next_due, later)
            outage.reached()
        except StoreUnavailable as exc:
            next_due = deps.clock() + outage.failed(exc)
        await wait_any(stop, min(deps.config.idle_poll, max(0.0, next_due - deps.clock())))
