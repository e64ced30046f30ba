"""Rate limits of job types: the declaration (``"100/m"``, ``rate_key="customer_id"``) and the
form the Lua library reads (pure).

A limit allows ``count`` job starts per second, minute or hour, spaced evenly: one start every
``period / count`` (GCRA with a burst of 1, enforced by the claim in ``lua/rate.lua``). With a
``rate_key``, each value of that top-level input field has its own limit. A bad declaration is a
``ValueError`` naming the field, one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RateLimit", "parse_rate", "check_rate_key", "wire"]

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_SPEC = re.compile(r"([1-9][0-9]{0,8})/([smh])")
_FIELD = re.compile(r"[^\s]{1,128}")
MIN_INTERVAL = 0.001
"""The closest two starts of one limit may be (s): the store keeps times in milliseconds."""


@dataclass(frozen=True)
class RateLimit:
    count: int
    period: float  # seconds

    @property
    def interval(self) -> float:
        """Seconds between two starts."""
        return self.period / self.count

    def __str__(self) -> str:
        unit = next(u for u, p in _PERIODS.items() if p == self.period)
        return f"{self.count}/{unit}"


def parse_rate(spec: object) -> RateLimit:
    """``"<count>/<s|m|h>"`` as a :class:`RateLimit`; a ``ValueError`` naming ``rate_limit``."""
    m = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if m is None:
        raise ValueError(f"rate_limit: {spec!r} is not <count>/<s|m|h> (for example '100/m', '10/s', '1000/h')")
    limit = RateLimit(int(m.group(1)), _PERIODS[m.group(2)])
    if limit.interval < MIN_INTERVAL:
        raise ValueError(f"rate_limit: {spec!r} is more than 1000 starts a second (the store's resolution is 1 ms)")
    return limit


def check_rate_key(field: object, rate_limit: object) -> str:
    """``field`` if it names a top-level input field (1 to 128 characters, no space) and a
    ``rate_limit`` is given; else a ``ValueError`` naming ``rate_key``."""
    if not isinstance(field, str) or _FIELD.fullmatch(field) is None:
        raise ValueError(f"rate_key: {field!r} is not an input field name (1 to 128 characters, no space)")
    if rate_limit is None:
        raise ValueError("rate_key: needs a rate_limit")
    return field


def wire(limit: RateLimit | None, field: str | None = None) -> str:
    """What ``rates`` holds for a type: ``"<interval ms>"`` or ``"<interval ms> <field>"``;
    ``""`` for no limit."""
    if limit is None:
        return ""
    ms = f"{limit.interval * 1000:.6f}".rstrip("0").rstrip(".")
    return ms if field is None else f"{ms} {field}"
