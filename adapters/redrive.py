"""Re-drive policies of job types: the declaration and the form the store reads (pure).

A job type may declare ``redrive=Redrive(notification_failed=2, missing_output=1, delay=60)``:

* a job of the type filed ``notification_failed`` whose webhook went ``dead`` is redelivered (a
  new delivery of the same event id) ``delay`` seconds after its filing, and again ``delay``
  seconds after each re-drive while it is dead, at most ``notification_failed`` times;
* a job filed ``incomplete`` / ``missing_output`` (it completed, without an output its type
  requires) is run again as a new job (``completed`` absorbs every trigger, so the job itself
  never leaves it): ``delay`` seconds after its filing, a re-run of the same type and input,
  linked both ways (``rerun``, ``rerun_of``); a re-run filed so again is re-run in turn, at most
  ``missing_output`` re-runs in one chain.

Each re-drive is one guarded step in the store (``lua/redrive.lua``). A bad declaration is a
``ValueError`` naming the field, one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "MAX_REDRIVES", "MAX_DELAY", "Redrive", "redrive_of", "policies"]

KINDS = ("notification_failed", "missing_output")
"""The filings a policy may re-drive (the job's ``problem``)."""

MAX_REDRIVES = 100
"""The most re-drives of one kind a policy may allow."""

MAX_DELAY = 7 * 86400.0
"""The longest delay (s) before a re-drive."""


@dataclass(frozen=True)
class Redrive:
    """A type's re-drive policy: at most ``notification_failed`` redeliveries and
    ``missing_output`` re-runs, ``delay`` s apart."""

    notification_failed: int = 0
    delay: float = 60.0
    missing_output: int = 0

    def __post_init__(self) -> None:
        for kind in KINDS:
            n = getattr(self, kind)
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_REDRIVES:
                raise ValueError(f"redrive: {kind} must be a whole number from 0 to {MAX_REDRIVES}, not {n!r}")
        d = self.delay
        if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or not 0 <= d <= MAX_DELAY:
            raise ValueError(f"redrive: delay must be a number of seconds from 0 to {MAX_DELAY:.0f}, not {d!r}")

    def limit(self, kind: str) -> int:
        """How many re-drives of ``kind`` the policy allows (0: none)."""
        return int(getattr(self, kind)) if kind in KINDS else 0

    def describe(self) -> dict[str, Any]:
        """As published with the type (``jv:types``)."""
        return {"notification_failed": self.notification_failed, "missing_output": self.missing_output,
                "delay": self.delay}


def redrive_of(published: object) -> Redrive | None:
    """The policy a type published (``describe()["redrive"]``), ``None`` when it has none or
    published one this version cannot read."""
    if not isinstance(published, dict):
        return None
    try:
        policy = Redrive(notification_failed=published.get("notification_failed", 0),
                         missing_output=published.get("missing_output", 0), delay=published.get("delay", 60.0))
    except ValueError:
        return None
    return policy if any(policy.limit(k) for k in KINDS) else None


def policies(types: dict[str, dict[str, Any]]) -> dict[str, Redrive]:
    """Job type -> its re-drive policy, for the types (as published) that have one."""
    found = {t: redrive_of(d.get("redrive")) for t, d in types.items()}
    return {t: p for t, p in found.items() if p is not None}
