"""The schedule operations of the store: add, pause, resume, remove, list, and a daemon's
ticks. Each write is one Lua op of ``lua/schedule.lua`` (see :mod:`adapters.store`).

A schedule's job template is the store's own submit op (:meth:`JobOps._submit_op`, the code
a client's submit runs) with its id left for the tick, so a tick's job and a client's are
made alike; the Lua submits it with the submit op itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from . import errors, ops
from .errors import BadInput
from .keys import QUEUES, SCHEDULES, Keys, check_queue_name
from .replies import Absorbed, Created, Transition
from .schedules import ScheduleSpec, ScheduleView, check_schedule_name, schedule_view
from .store_core import json_encode
from .store_jobs import JobOps
from .store_views import b2s
from .timing import Plan

__all__ = ["ScheduleOps"]

_DUE_PAGE = 100
_DEFINITION = ("missed", "catch_up_max", "grace_ms", "job_type", "template")


class ScheduleOps(JobOps):
    """Schedules: what clients and the daemons' schedule actor ask of the store."""

    async def add_schedule(self, spec: ScheduleSpec, *, keep: bool = False) -> Created | Transition:
        """Add ``spec`` (``created``), or redefine the schedule of that name (``moved``; a paused
        one stays paused). A redefinition with the same ticks keeps the next tick it had, so the
        ticks missed while no daemon ran are still missed ones. With ``keep`` (a daemon declaring
        its app's schedules at start), a schedule already defined so is left alone: ``absorbed``,
        nothing written. A name held by a live schedule of another queue is :class:`BadInput`;
        nothing is written then."""
        timing = spec.timing()
        queue = spec.job.queue
        template = json_encode(msgspec.structs.replace(self._submit_op(spec.job), id="")).decode()
        held = await self._command("HGET", SCHEDULES, spec.name)
        if held is not None and b2s(held) != queue:
            other = await self._stored(b2s(held), spec.name)
            if other and other["state"] != "removed":
                raise BadInput(f"name: schedule {spec.name!r} exists in queue {b2s(held)!r}")
        op = ops.ScheduleAdd(
            name=spec.name, cron=timing.cron or "", every_ms=timing.every_ms or 0, tz=timing.tz,
            missed=spec.missed, catch_up_max=spec.catch_up_max, grace_ms=int(spec.grace * 1000),
            job_type=spec.job.type, template=template, next_at=timing.next_after(self._now_ms()),
        )
        stored = await self._stored(queue, spec.name) if held is not None else None
        if stored and stored["state"] != "removed":
            same_ticks = all(stored.get(f, "") == str(getattr(op, f)) for f in ("cron", "every_ms", "tz"))
            if keep and same_ticks and all(stored.get(f, "") == str(getattr(op, f)) for f in _DEFINITION):
                return Absorbed(id=spec.name, state=stored["state"])
            if same_ticks and stored.get("next_at"):
                op = msgspec.structs.replace(op, next_at=int(stored["next_at"]))
        reply = await self._op(queue, op)
        await self._commands([("HSET", SCHEDULES, spec.name, queue), ("SADD", QUEUES, queue)])
        self._known_queues.add(queue)
        return reply

    async def pause_schedule(self, name: str) -> Transition:
        """No tick fires while paused (``invalid`` when it is not active)."""
        view = await self.get_schedule(name)
        return await self._op(view.queue, ops.ScheduleTrigger(name=name, trigger="pause"))

    async def resume_schedule(self, name: str) -> Transition:
        """Active again, due at its first tick after now: ticks that fell while it was paused
        are not fired (``invalid`` when it is not paused)."""
        view = await self.get_schedule(name)
        next_at = view.timing().next_after(self._now_ms())
        return await self._op(view.queue, ops.ScheduleTrigger(name=name, trigger="resume", next_at=next_at))

    async def remove_schedule(self, name: str) -> Transition:
        """No more ticks (``absorbed`` when removed already). ``add`` may bring it back."""
        view = await self.get_schedule(name)
        return await self._op(view.queue, ops.ScheduleTrigger(name=name, trigger="remove"))

    async def get_schedule(self, name: str) -> ScheduleView:
        """The schedule ``name``; :class:`NotFound` when there is none."""
        check_schedule_name(name)
        held = await self._command("HGET", SCHEDULES, name)
        view = None if held is None else await self._schedule(b2s(held), name)
        if view is None:
            raise errors.NotFound(f"schedule {name} not found")
        return view

    async def list_schedules(self, queue: str | None = None, *, removed: bool = False) -> list[ScheduleView]:
        """Every schedule (of ``queue``), by name; removed ones only with ``removed``."""
        held = {b2s(k): b2s(v) for k, v in (await self._command("HGETALL", SCHEDULES)).items()}
        names = sorted(n for n, q in held.items() if queue is None or q == queue)
        if not names:
            return []
        rows = await self._commands(("HGETALL", Keys(held[n]).schedule(n)) for n in names)
        views = [schedule_view({b2s(k): b2s(v) for k, v in row.items()}) for row in rows if row]
        return [v for v in views if removed or v.state != "removed"]

    async def _schedule(self, queue: str, name: str) -> ScheduleView | None:
        stored = await self._stored(queue, name)
        return schedule_view(stored) if stored else None

    async def _stored(self, queue: str, name: str) -> dict[str, str]:
        raw = await self._command("HGETALL", Keys(queue).schedule(name))
        return {b2s(k): b2s(v) for k, v in raw.items()}

    # -- the daemons' ticks ------------------------------------------------------------

    async def due_schedules(self, queue: str, now: float) -> tuple[list[ScheduleView], float | None]:
        """The active schedules of ``queue`` due at ``now`` (epoch seconds), and when the next
        one not yet due is (``None``: none is active)."""
        keys = Keys(check_queue_name(queue))
        now_ms = int(now * 1000)
        due, head = await self._commands([
            ("ZRANGEBYSCORE", keys.schedules, "-inf", now_ms, "LIMIT", 0, _DUE_PAGE),
            ("ZRANGEBYSCORE", keys.schedules, f"({now_ms}", "+inf", "WITHSCORES", "LIMIT", 0, 1),
        ])
        later = _first_score(head)
        if not due:
            return [], later
        rows = await self._commands(("HGETALL", keys.schedule(b2s(n))) for n in due)
        views = [schedule_view({b2s(k): b2s(v) for k, v in row.items()}) for row in rows if row]
        return views, (now if len(due) == _DUE_PAGE else later)

    async def tick_schedule(self, view: ScheduleView, plan: Plan) -> list[Transition]:
        """The plan's ticks, in one call: the skip (if any), then each fire, oldest first, each
        submitting under a new job id. A tick another daemon moved first is ``blocked``."""
        queue = view.queue
        now_ms = self._now_ms()
        batch: list[ops.ScheduleTick] = []
        if plan.skip is not None:
            batch.append(ops.ScheduleTick(name=view.name, trigger="skip", tick=plan.skip, next_at=plan.next_at))
        for tick in plan.fire:
            batch.append(ops.ScheduleTick(name=view.name, trigger="fire", tick=tick, next_at=plan.next_at,
                                          id=self.ids.new_id(queue, now_ms)))
        if not batch:
            return []
        return await self._ops(queue, batch)


def _first_score(reply: Sequence[object]) -> float | None:
    """The score of a ``WITHSCORES`` reply's first member (epoch seconds), in either reply shape."""
    if not reply:
        return None
    first = reply[0]
    score = first[1] if isinstance(first, list | tuple) else reply[1]
    return float(b2s(score)) / 1000
