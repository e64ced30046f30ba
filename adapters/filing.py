"""How the evaluator files a finished job: ``category`` and ``problem`` (SPEC.md, "Actors").

Theory of operation. Every job that reaches a terminal state is a
candidate (:class:`~adapters.records.Unfiled`); :func:`classify` is a pure
function of what the store read about it, and the store's ``file`` op is a
guarded step that records the answer once per outcome. The problem decides
the category: ``none`` is ``complete``, ``missing_output`` is
``incomplete``, every other problem is ``filed`` (recorded for review).

=====================  ==========================================================  ===================
state                  condition (first match wins)                                problem
=====================  ==========================================================  ===================
completed              result empty (null, "", {}, []) or a declared required      missing_output
                       output absent or null
completed              its ``job.completed`` webhook went ``dead``                 notification_failed
completed              webhook still on its way ``notification_deadline`` after    notification_failed
                       the job finished
completed              webhook still on its way                                    (not yet: wait)
completed              otherwise                                                   none
any other              the job ended with reason ``stuck``                         stuck
cancelled              its batch was given up as stuck (reason ``stuck``)          stuck
cancelled              otherwise                                                   cancelled
validation_failed                                                                  validation_failed
timed_out                                                                          timed_out
failed                 reason ``worker_lost`` (the watchdog found its lease        worker_lost
                       expired with no retries left)
failed                 otherwise (the handler failed its last allowed attempt)     retries_exhausted
=====================  ==========================================================  ===================

A completed job that notifies is filed only once its notification settled,
because "delivered" and "dead" file it differently; a job that did not
complete is filed at once (its own problem comes first).
"""

from __future__ import annotations

import enum

from .records import Unfiled

__all__ = ["Category", "Problem", "CATEGORY_OF", "classify", "NOTIFICATION_DEADLINE"]

NOTIFICATION_DEADLINE = 86400.0
"""Seconds after which a completed job's undelivered webhook counts as failed (1 day)."""

_ON_ITS_WAY = frozenset({"pending", "sending", "retry_wait"})


class Category(enum.StrEnum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    FILED = "filed"


class Problem(enum.StrEnum):
    NONE = "none"
    MISSING_OUTPUT = "missing_output"
    NOTIFICATION_FAILED = "notification_failed"
    VALIDATION_FAILED = "validation_failed"
    TIMED_OUT = "timed_out"
    RETRIES_EXHAUSTED = "retries_exhausted"
    WORKER_LOST = "worker_lost"
    STUCK = "stuck"
    CANCELLED = "cancelled"


CATEGORY_OF: dict[Problem, Category] = {
    p: Category.COMPLETE if p is Problem.NONE else
    Category.INCOMPLETE if p is Problem.MISSING_OUTPUT else Category.FILED
    for p in Problem
}
"""The category each problem files under."""


def classify(job: Unfiled, *, now_ms: int, notification_deadline: float = NOTIFICATION_DEADLINE) -> Problem | None:
    """The problem to file ``job`` under, or ``None`` when it cannot be filed yet (see the table)."""
    if job.state == "completed":
        if job.result_empty or job.missing:
            return Problem.MISSING_OUTPUT
        if job.notification == "dead":
            return Problem.NOTIFICATION_FAILED
        if job.notification in _ON_ITS_WAY:
            if now_ms - job.finished_at >= notification_deadline * 1000:
                return Problem.NOTIFICATION_FAILED
            return None
        return Problem.NONE
    if job.reason == "stuck":
        return Problem.STUCK
    match job.state:
        case "cancelled":
            return Problem.STUCK if job.batch_reason == "stuck" else Problem.CANCELLED
        case "validation_failed":
            return Problem.VALIDATION_FAILED
        case "timed_out":
            return Problem.TIMED_OUT
        case "failed":
            return Problem.WORKER_LOST if job.reason == "worker_lost" else Problem.RETRIES_EXHAUSTED
    raise ValueError(f"state: {job.state!r} is not a terminal job state")
