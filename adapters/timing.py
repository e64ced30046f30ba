"""When a schedule's ticks fall (pure: no I/O, no clock of its own).

A schedule ticks on a cron expression read in a time zone (cronsim parses and walks it;
``zoneinfo`` maps each local time to an instant), or every N seconds.

* Cron: the expression is walked over *local wall times*, each mapped to one instant. A local
  time that does not exist (the hour skipped when clocks go forward) is skipped; one that
  exists twice (the hour repeated when clocks go back) fires once, at its first occurrence.
  So ``30 2 * * *`` does not fire on the day 02:30 is skipped, and ``*/5 * * * *`` does not
  fire during the repeated hour (use ``tz="UTC"`` or ``every=`` for constant spacing).
* ``every``: the multiples of the interval since the Unix epoch (so every process computes
  the same ticks, whenever it started).

Missed ticks (no daemon ran when they fell) follow the schedule's policy, :func:`plan`:
``skip`` fires the latest missed tick when it is at most ``grace`` old (else records it as
skipped); ``catch_up`` fires the latest ``catch_up_max`` missed ticks, oldest first. Ticks
are epoch milliseconds throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["MISSED_POLICIES", "Plan", "Timing", "plan"]

MISSED_POLICIES = ("skip", "catch_up")
_SLACK = timedelta(hours=3)  # wider than any zone's offset change: a walk starts this far off


@dataclass(frozen=True)
class Timing:
    """A schedule's ticks: ``cron`` in ``tz``, or ``every_ms``. Build with :meth:`parse`."""

    cron: str | None
    every_ms: int | None
    tz: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", ZoneInfo(self.tz))

    @classmethod
    def parse(cls, cron: str | None = None, every: float | None = None, tz: str | None = None) -> Timing:
        """Checked: exactly one of ``cron`` and ``every``; a ``ValueError`` naming the field."""
        if (cron is None) == (every is None):
            raise ValueError("cron: give a cron expression or every=seconds (exactly one)")
        zone = tz or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"tz: unknown time zone {zone!r}") from None
        if every is not None:
            if isinstance(every, bool) or not 1 <= every <= 366 * 86400:
                raise ValueError("every: seconds between ticks, from 1 to 31622400")
            if every * 1000 != int(every * 1000):
                raise ValueError("every: at most millisecond resolution")
            return cls(None, int(every * 1000), zone)
        assert cron is not None
        try:
            CronSim(cron, datetime(2024, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"cron: {cron!r} is not a cron expression ({exc})") from None
        return cls(cron, None, zone)

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ``ms``."""
        if self.every_ms is not None:
            return (ms // self.every_ms + 1) * self.every_ms
        return next(self._walk(ms, reverse=False))

    def latest(self, upto: int, since: int, n: int) -> list[int]:
        """The latest ``n`` (at most) ticks ``t`` with ``since <= t <= upto``, oldest first."""
        found: list[int] = []
        if self.every_ms is not None:
            t = upto // self.every_ms * self.every_ms
            while t >= since and len(found) < n:
                found.append(t)
                t -= self.every_ms
        else:
            for t in self._walk(upto, reverse=True):
                if t < since or len(found) >= n:
                    break
                found.append(t)
        return found[::-1]

    def _walk(self, ms: int, *, reverse: bool) -> Iterator[int]:
        """The cron's instants after ``ms`` (before or at it, ``reverse``), in order. The walk
        is over local wall times, started ``_SLACK`` to the safe side so no local time whose
        instant is on the right side is passed over; each is mapped by ``_instant``."""
        zone = self._zone
        local = datetime.fromtimestamp(ms / 1000, timezone.utc).astimezone(zone).replace(tzinfo=None)
        start = local + _SLACK if reverse else local - _SLACK
        assert self.cron is not None
        for wall in CronSim(self.cron, start, reverse=reverse):
            instant = _instant(wall, zone)
            if instant is None:
                continue
            if (instant <= ms) if reverse else (instant > ms):
                yield instant


def _instant(wall: datetime, zone: ZoneInfo) -> int | None:
    """The instant (epoch ms) of a local wall time: its first occurrence; ``None`` when the
    zone skips it. (A naive wall time read with fold=0 is its first occurrence; it exists
    when the round trip through UTC gives it back.)"""
    aware = wall.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None)
    if back != wall:
        return None
    return int(aware.timestamp() * 1000)


@dataclass(frozen=True)
class Plan:
    """What a daemon does for a due schedule at ``now``: fire ``fire`` (oldest first), record
    ``skip`` as passed without a submit, and arm the schedule at ``next_at``."""

    fire: list[int]
    skip: int | None
    next_at: int


def plan(timing: Timing, next_at: int, now: int, *, missed: str, catch_up_max: int, grace_ms: int) -> Plan:
    """The ticks due at ``now`` for a schedule armed at ``next_at`` (nothing before it)."""
    after = timing.next_after(now)
    if now < next_at:
        return Plan([], None, next_at)
    due = timing.latest(now, next_at, catch_up_max if missed == "catch_up" else 1)
    if not due:
        return Plan([], None, after)
    if missed == "skip" and now - due[-1] > grace_ms:
        return Plan([], due[-1], after)
    return Plan(due, None, after)
