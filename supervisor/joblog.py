"""Logs about jobs: one line per job outcome, and the logger a handler gets (``ctx.log``).

Every outcome is logged once, by the daemon that holds the job when it happens, on the
``jobvisor.jobs`` logger: failures (``failed``, ``timed_out``, ``validation_failed``), lost
workers and stale reports at WARNING; successes (``completed``, a retry scheduled) at DEBUG, or
at INFO with ``log_outcomes = "info"``, so a busy daemon does not drown its logs by default.

Each record carries the job's fields as attributes (``job_id``, ``job_type``, ``queue``,
``attempt``, ``phase``, ``outcome``, ``duration``), which the JSON log format prints as keys;
the text format prints them in the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from jobvisor.adapters.redaction import redact_text

__all__ = ["JobLogger", "handler_logger", "log_outcome", "log_stale", "outcome_level", "outcome_logged"]

log = logging.getLogger("jobvisor.jobs")

FAILURES = frozenset({"failed", "timed_out", "validation_failed"})
"""Outcomes logged at WARNING whatever ``log_outcomes`` says."""

LABELS = {"scheduled": "retry scheduled", "validating": "completed, validating"}
"""How an outcome reads in the log line when its state name says less."""

SUMMARY_LIMIT = 200
"""Characters of an error's message in the outcome line (the stored error keeps it whole)."""


def outcome_level(outcome: str, success_level: int) -> int:
    return logging.WARNING if outcome in FAILURES else success_level


def outcome_logged(outcome: str, success_level: int) -> bool:
    """Whether :func:`log_outcome` would log ``outcome`` (so a caller can skip making its fields)."""
    return log.isEnabledFor(outcome_level(outcome, success_level))


def summary(error: Any) -> str:
    """An error record's one-line summary: ``Type: message`` on one line, cut to a length."""
    if not isinstance(error, Mapping):
        return "" if error is None else " ".join(str(error).split())[:SUMMARY_LIMIT]
    kind, message = error.get("type"), error.get("message")
    text = " ".join(str(message or "").split())[:SUMMARY_LIMIT]
    return f"{kind}: {text}" if kind and text else str(kind or text)


def log_outcome(*, job_id: str, job_type: str, queue: str, attempt: int | None, outcome: str,
                duration: float | None, error: Any = None, check: int | None = None,
                success_level: int = logging.DEBUG) -> None:
    """The one line for a job outcome (``outcome`` is the state the job moved to): by the worker
    that reported the attempt (``attempt``, ``duration``), or by the validator that made the last
    check (``check``)."""
    level = outcome_level(outcome, success_level)
    if not log.isEnabledFor(level):
        return
    label = LABELS.get(outcome, outcome)
    where = [job_type, f"queue {queue}"]
    if attempt is not None:
        where.append(f"attempt {attempt}")
    if check is not None:
        where.append(f"check {check}")
    if duration is not None:
        where.append(f"{duration:.3f}s")
    # redacted here, not only by the log filter: the JSON format prints `error` as a field of its own
    cause = redact_text(summary(error)) if outcome in FAILURES or outcome == "scheduled" else ""
    log.log(level, "job %s %s (%s)%s", job_id, label, ", ".join(where), f": {cause}" if cause else "",
            extra={"job_id": job_id, "job_type": job_type, "queue": queue, "attempt": attempt,
                   "outcome": outcome, "duration": duration, "error": cause or None})


def log_stale(*, job_id: str, job_type: str, queue: str, attempt: int, trigger: str) -> None:
    """A report the lease fence refused: the attempt lost its lease (another daemon's watchdog
    took the job over), so what this handler did is not the job's outcome."""
    log.warning("job %s: the %s of attempt %d (%s, queue %s) came after its lease was lost; not recorded",
                job_id, trigger, attempt, job_type, queue,
                extra={"job_id": job_id, "job_type": job_type, "queue": queue, "attempt": attempt,
                       "outcome": "stale"})


def handler_logger(job_type: str) -> logging.Logger:
    """The logger behind a handler's ``ctx.log``: ``jobvisor.handler.<type>``, so one type's
    level can be set on its own."""
    return logging.getLogger(f"jobvisor.handler.{job_type}")


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """``ctx.log``: a logger whose every record names the job, its type, the attempt and the
    phase running when the record was made (attributes, and a prefix of the message)."""

    def __init__(self, job_id: str, job_type: str, attempt: int,
                 phase: Callable[[], str | None] = lambda: None) -> None:
        super().__init__(handler_logger(job_type), {})
        self._fields = {"job_id": job_id, "job_type": job_type, "attempt": attempt}
        self._phase = phase

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        phase = self._phase()
        fields = {**self._fields, "phase": phase}
        kwargs["extra"] = {**fields, **(kwargs.get("extra") or {})}
        where = f"job {fields['job_id']} ({fields['job_type']} attempt {fields['attempt']}"
        where += f", phase {phase})" if phase else ")"
        return f"{where}: {msg}", kwargs
