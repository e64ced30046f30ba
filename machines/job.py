"""The job machine (SPEC.md, "Job state machine").

A job is created ``queued`` (or ``scheduled`` when submitted with a delay).
Workers ``claim`` it under a fenced lease; the handler's outcome is reported
as ``complete``, ``fail`` or ``timeout``; the watchdog reports
``lease_expired``; the validator reports ``validation_passed`` or
``validation_exhausted``. A daemon shutting down ``release``s the jobs whose
handlers it had to interrupt: back to ``queued`` at once, the attempt
recorded as interrupted (naming the phase), no retry consumed. Automatic retries go through ``scheduled`` while
``retries_left``; the operator's ``retry`` is the only way out of a terminal
state, and ``completed`` absorbs even that.

Effects are names; the store's Lua scripts and the embeddable form perform
them. They are listed in :data:`JOB_EFFECTS` with what each one means.
"""

from __future__ import annotations

import enum

from ._table import MachineDef, Row

__all__ = ["JobState", "JobTrigger", "JOB", "JOB_EFFECTS", "JOB_GUARDS"]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    VALIDATING = "validating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    VALIDATION_FAILED = "validation_failed"


class JobTrigger(enum.StrEnum):
    CLAIM = "claim"
    WAKE = "wake"
    COMPLETE = "complete"
    FAIL = "fail"
    TIMEOUT = "timeout"
    LEASE_EXPIRED = "lease_expired"
    RELEASE = "release"
    CANCEL = "cancel"
    VALIDATION_PASSED = "validation_passed"
    VALIDATION_EXHAUSTED = "validation_exhausted"
    RETRY = "retry"
    RETRY_FROM_START = "retry_from_start"


JOB_GUARDS = {
    "has_validator": "the job type declares a validator (a Python one or the HTTP one)",
    "retries_left": "retry_count < max_retries",
}

JOB_EFFECTS = {
    "new_attempt": "append a new attempt record; take a new lease token",
    "resume_phases": "every failed, cancelled or interrupted phase goes back to pending",
    "end_attempt": "close the current attempt record with its outcome; drop the lease",
    "interrupt_phase": "a running phase fails and is named in the attempt record",
    "count_retry": "retry_count += 1 (never past max_retries: the guard comes first)",
    "arm_backoff": "due time = now + backoff(retry_count); the job waits in the due set",
    "cancel_phases": "every unfinished phase (pending, running, failed) becomes cancelled",
    "cancel_handler": "ask the daemon holding the lease to cancel the running handler",
    "reset_retries": "an operator retry starts a fresh retry budget: retry_count = 0",
    "new_epoch": "a new notification epoch: the next terminal event is a new outbox row",
    "rewind_phases": "every phase back to pending; earlier phase results are dropped",
}

Q, SCH, ACT, VAL = JobState.QUEUED, JobState.SCHEDULED, JobState.ACTIVE, JobState.VALIDATING
DONE, FAILED, CANC = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
TIMED, VFAIL = JobState.TIMED_OUT, JobState.VALIDATION_FAILED
_t = JobTrigger
_RETRY_OUT = ("count_retry", "end_attempt", "interrupt_phase", "arm_backoff")
_GIVE_UP = ("end_attempt", "interrupt_phase")

JOB: MachineDef[JobState, JobTrigger] = MachineDef(
    name="job",
    states=JobState,
    triggers=JobTrigger,
    initial=((Q, "submit"), (SCH, "submit with delay")),
    terminal=frozenset({DONE, FAILED, CANC, TIMED, VFAIL}),
    guards=JOB_GUARDS,
    effects_doc=JOB_EFFECTS,
    notifications={
        DONE: "job.completed",
        FAILED: "job.failed",
        CANC: "job.cancelled",
        TIMED: "job.timed_out",
        VFAIL: "job.validation_failed",
    },
    rows=(
        Row(_t.CLAIM, (Q,), ACT, effects=("new_attempt", "resume_phases")),
        Row(_t.WAKE, (SCH,), Q),
        Row(_t.COMPLETE, (ACT,), VAL, guard="has_validator", effects=("end_attempt",)),
        Row(_t.COMPLETE, (ACT,), DONE, effects=("end_attempt",)),
        Row(_t.FAIL, (ACT,), SCH, guard="retries_left", effects=_RETRY_OUT),
        Row(_t.FAIL, (ACT,), FAILED, effects=_GIVE_UP),
        Row(_t.TIMEOUT, (ACT,), SCH, guard="retries_left", effects=_RETRY_OUT),
        Row(_t.TIMEOUT, (ACT,), TIMED, effects=_GIVE_UP),
        Row(_t.LEASE_EXPIRED, (ACT,), SCH, guard="retries_left", effects=_RETRY_OUT),
        Row(_t.LEASE_EXPIRED, (ACT,), FAILED, effects=_GIVE_UP),
        Row(_t.RELEASE, (ACT,), Q, effects=("end_attempt", "interrupt_phase")),
        Row(_t.CANCEL, (Q, SCH, VAL), CANC, effects=("cancel_phases",)),
        Row(_t.CANCEL, (ACT,), CANC, effects=("end_attempt", "cancel_phases", "cancel_handler")),
        Row(_t.VALIDATION_PASSED, (VAL,), DONE),
        Row(_t.VALIDATION_EXHAUSTED, (VAL,), VFAIL),
        Row(_t.RETRY, (FAILED, CANC, TIMED), Q, effects=("reset_retries", "new_epoch")),
        Row(_t.RETRY, (VFAIL,), VAL, effects=("new_epoch",)),
        Row(
            _t.RETRY_FROM_START,
            (FAILED, CANC, TIMED, VFAIL),
            Q,
            effects=("reset_retries", "new_epoch", "rewind_phases"),
        ),
    ),
)
