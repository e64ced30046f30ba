"""Schedules as records: what an ``add`` asks for (:class:`ScheduleSpec`), checked before
anything is written, and a stored schedule as a view (:class:`ScheduleView`).

A schedule's name is one schedule across every queue (``jv:schedules`` maps it to its queue);
its keys live in its queue's hash tag. The job it submits is a :class:`JobSpec` like any
submit's, without the options that have no meaning for a repeated job (``delay``, ``batch``,
an idempotency key: the tick itself is what makes a tick's submit happen once).
"""

from __future__ import annotations

import re
from typing import Any

from msgspec import Struct

from .errors import BadInput
from .records import JobSpec
from .timing import MISSED_POLICIES, Timing

__all__ = ["CATCH_UP_MAX", "SCHEDULE_NAME", "ScheduleSpec", "ScheduleView", "check_schedule_name",
           "schedule_view"]

SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
CATCH_UP_MAX = 100
"""The most missed ticks one schedule catches up on (``catch_up_max`` is 1 to this)."""


def check_schedule_name(name: str) -> str:
    if not isinstance(name, str) or not SCHEDULE_NAME.fullmatch(name):
        raise BadInput(f"name: {name!r} is not a schedule name (1-64 of letters, digits, '_', '.' and '-')")
    return name


class ScheduleSpec(Struct, kw_only=True, frozen=True):
    """A schedule to add: ``cron`` (in ``tz``) or ``every`` seconds, the missed-tick policy,
    and the job each tick submits. :meth:`timing` checks it (:class:`BadInput` naming the field)."""

    name: str
    job: JobSpec
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    missed: str = "skip"
    catch_up_max: int = 10
    grace: float = 60.0

    def timing(self) -> Timing:
        """The checked ticks of this schedule; every other field checked too."""
        check_schedule_name(self.name)
        if self.missed not in MISSED_POLICIES:
            raise BadInput(f"missed: {self.missed!r} is not a policy (skip or catch_up)")
        if isinstance(self.catch_up_max, bool) or not 1 <= self.catch_up_max <= CATCH_UP_MAX:
            raise BadInput(f"catch_up_max: {self.catch_up_max!r} is not from 1 to {CATCH_UP_MAX}")
        if isinstance(self.grace, bool) or not 1 <= self.grace <= 7 * 86400:
            raise BadInput(f"grace: {self.grace!r} is not from 1 to 604800 seconds")
        for name in ("delay", "batch", "idempotency_key"):
            if getattr(self.job, name):
                raise BadInput(f"{name}: a schedule's job takes no {name}")
        try:
            return Timing.parse(self.cron, self.every, self.tz)
        except ValueError as exc:
            raise BadInput(str(exc)) from None


class ScheduleView(Struct, kw_only=True, frozen=True):
    """A stored schedule. Times are epoch seconds; ``last_tick`` is ``None`` before its first."""

    name: str
    queue: str
    state: str
    job_type: str
    cron: str | None
    every: float | None
    tz: str
    missed: str
    catch_up_max: int
    grace: float
    next_at: float | None
    last_tick: float | None
    fired: int
    last_job: str | None
    created_at: float

    def timing(self) -> Timing:
        return Timing(self.cron, None if self.every is None else int(self.every * 1000), self.tz)


def _seconds(value: str) -> float | None:
    return int(value) / 1000 if value else None


def schedule_view(fields: dict[str, str]) -> ScheduleView:
    """A schedule's hash (decoded to text) as a view."""
    every = fields.get("every_ms", "")
    data: dict[str, Any] = {
        "name": fields["name"],
        "queue": fields.get("queue", ""),
        "state": fields["state"],
        "job_type": fields.get("job_type", ""),
        "cron": fields.get("cron") or None,
        "every": int(every) / 1000 if every and every != "0" else None,
        "tz": fields.get("tz") or "UTC",
        "missed": fields.get("missed") or "skip",
        "catch_up_max": int(fields.get("catch_up_max") or 1),
        "grace": int(fields.get("grace_ms") or 60000) / 1000,
        "next_at": _seconds(fields.get("next_at", "")),
        "last_tick": _seconds(fields.get("last_tick", "")),
        "fired": int(fields.get("fired") or 0),
        "last_job": fields.get("last_job") or None,
        "created_at": int(fields.get("created_at") or 0) / 1000,
    }
    return ScheduleView(**data)
