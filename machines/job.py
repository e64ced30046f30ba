"""The job machine (SPEC.md, "Job state machine").

A job is created ``queued`` (or ``scheduled`` when submitted with a delay, or
``waiting`` when it depends on jobs not yet terminal: ``deps_done`` queues it once its
dependencies allow, ``dependency_failed`` fails it when one failed under its policy).
Workers ``claim`` it under a fenced lease; the handler's outcome is reported
as ``complete``, ``fail`` or ``timeout``; the watchdog reports
``lease_expired``; the validator reports ``validation_passed`` or
``validation_exhausted``. A daemon shutting down ``release``s the jobs whose
handlers it had to interrupt: back to ``queued`` at once, the attempt
recorded as interrupted (naming the phase), no retry consumed. Automatic retries go through ``scheduled`` while
``retries_left``; the operator's ``retry`` is the only way out of a terminal
state, and ``completed`` absorbs even that.

Every write a transition makes beyond its state, index and event, and every
reaction a daemon has to it, is a named effect of its row, listed in
:data:`JOB_EFFECTS` and performed in the row's order: the store's Lua library
runs each, the embeddable :class:`~machines.models.JobModel` performs those
that are not store-only. So ``active -complete-> completed`` reads, in full:
end the attempt (outcome ``succeeded``), store the result, clear the error and
the reason, stamp the finish time, queue the job for filing, write the
notification, count the batch member.
"""

from __future__ import annotations

import enum

from ._table import MachineDef, Row, Start

__all__ = ["JobState", "JobTrigger", "JOB", "JOB_EFFECTS", "JOB_GUARDS", "job_facts"]


class JobState(enum.StrEnum):
    WAITING = "waiting"
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
    DEPS_DONE = "deps_done"
    DEPENDENCY_FAILED = "dependency_failed"


JOB_GUARDS = {
    "has_validator": "the job type declares a validator (a Python one or the HTTP one)",
    "retries_left": "retry_count < max_retries",
}


def job_facts(*, retry_count: int, max_retries: int, has_validator: bool) -> dict[str, bool]:
    """The job machine's guard facts from the job's fields (the Lua computes the same)."""
    return {"has_validator": has_validator, "retries_left": retry_count < max_retries}


JOB_EFFECTS = {
    "new_attempt": "append a new attempt record; take a new lease token (the job sits in `active` until its end)",
    "resume_phases": "every failed, cancelled or interrupted phase goes back to pending",
    "interrupt_phase": "a running phase fails and is named in the attempt record",
    "end_attempt": "close the current attempt record with the trigger's outcome; drop the lease",
    "count_retry": "retry_count += 1 (never past max_retries: the guard comes first)",
    "arm_backoff": "due time = now + backoff(retry_count); the job waits in the due set",
    "arm_delay": "due time = now + the submit's delay; the job waits in the due set",
    "cancel_phases": "every unfinished phase (pending, running, failed) becomes cancelled",
    "cancel_handler": "the daemon holding the lease cancels the running handler (published on `cancel`)",
    "reset_retries": "an operator retry starts a fresh retry budget: retry_count = 0",
    "new_epoch": "a new notification epoch: the next terminal event is a new outbox row",
    "rewind_phases": "every phase back to pending; earlier phase results are dropped",
    "store_result": "the result the op reports becomes the job's result",
    "record_error": "the error the op reports (if any) becomes the job's error",
    "clear_error": "a completed job has no error (earlier attempts keep theirs in their records)",
    "start_validation": "the validator's check count starts at 0; validators are woken",
    "record_status": "the status the source of truth reported becomes the job's validation status",
    "record_reason": "reason = the op's reason, else the trigger's reason (JOB.reasons)",
    "clear_reason": "the job has no reason",
    "finish": "finished_at = now",
    "reopen": "out of a terminal state: no finish time, no reason; a batch member is unfinished again",
    "mark_unfiled": "the job waits in `unfiled` for the evaluator to file its outcome",
    "notify": "the transition's notification becomes an outbox row (when the job asked for them)",
    "count_member": "a batch member finished: the batch's counters move and it tries finalize",
    "wake_workers": "daemons are told there is work to claim (published on `wake`)",
    "release_dependents": "each job waiting on this one counts it as finished and, as its policy says, is queued "
                          "(`deps_done`) or failed (`dependency_failed`) in the same step; once per dependency",
    "cancel_children": "every unfinished job of the flow this job is the parent of is cancelled in the same step",
}

WAIT = JobState.WAITING
Q, SCH, ACT, VAL = JobState.QUEUED, JobState.SCHEDULED, JobState.ACTIVE, JobState.VALIDATING
DONE, FAILED, CANC = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
TIMED, VFAIL = JobState.TIMED_OUT, JobState.VALIDATION_FAILED
_t = JobTrigger
_FINISH = ("finish", "mark_unfiled", "notify", "count_member", "release_dependents")
_RETRY_OUT = ("interrupt_phase", "end_attempt", "record_error", "count_retry", "arm_backoff", "record_reason")
_GIVE_UP = ("interrupt_phase", "end_attempt", "record_error", "record_reason", *_FINISH)

JOB: MachineDef[JobState, JobTrigger] = MachineDef(
    name="job",
    states=JobState,
    triggers=JobTrigger,
    initial=(
        Start(WAIT, "submit with pending dependencies", when="dependencies_pending"),
        Start(SCH, "submit with delay", when="delayed", effects=("arm_delay",)),
        Start(Q, "submit", effects=("wake_workers",)),
    ),
    terminal=frozenset({DONE, FAILED, CANC, TIMED, VFAIL}),
    succeeded=frozenset({DONE}),
    guards=JOB_GUARDS,
    effects_doc=JOB_EFFECTS,
    store_only=frozenset({
        "arm_backoff", "arm_delay", "cancel_handler", "store_result", "record_error", "clear_error",
        "start_validation", "record_status", "mark_unfiled", "notify", "count_member", "wake_workers",
        "release_dependents", "cancel_children",
    }),
    notifications={
        DONE: "job.completed",
        FAILED: "job.failed",
        CANC: "job.cancelled",
        TIMED: "job.timed_out",
        VFAIL: "job.validation_failed",
    },
    index={WAIT: "waiting", Q: "queued", SCH: "due", ACT: "active", VAL: "validating",
           DONE: "finished", FAILED: "finished", CANC: "finished", TIMED: "finished", VFAIL: "finished"},
    unfenced=frozenset({_t.CANCEL, _t.RETRY, _t.RETRY_FROM_START, _t.VALIDATION_PASSED, _t.VALIDATION_EXHAUSTED}),
    outcomes={_t.COMPLETE: "succeeded", _t.FAIL: "failed", _t.TIMEOUT: "timed_out",
              _t.LEASE_EXPIRED: "worker_lost", _t.CANCEL: "cancelled", _t.RELEASE: "interrupted"},
    reasons={_t.FAIL: "handler_error", _t.TIMEOUT: "timed_out", _t.LEASE_EXPIRED: "worker_lost",
             _t.CANCEL: "cancelled", _t.VALIDATION_EXHAUSTED: "validation_failed",
             _t.DEPENDENCY_FAILED: "dependency_failed"},
    rows=(
        Row(_t.CLAIM, (Q,), ACT, effects=("new_attempt", "resume_phases")),
        Row(_t.WAKE, (SCH,), Q, effects=("clear_reason", "wake_workers")),
        Row(_t.COMPLETE, (ACT,), VAL, guard="has_validator",
            effects=("end_attempt", "store_result", "record_error", "start_validation")),
        Row(_t.COMPLETE, (ACT,), DONE,
            effects=("end_attempt", "store_result", "clear_error", "clear_reason", *_FINISH)),
        Row(_t.FAIL, (ACT,), SCH, guard="retries_left", effects=_RETRY_OUT),
        Row(_t.FAIL, (ACT,), FAILED, effects=_GIVE_UP),
        Row(_t.TIMEOUT, (ACT,), SCH, guard="retries_left", effects=_RETRY_OUT),
        Row(_t.TIMEOUT, (ACT,), TIMED, effects=_GIVE_UP),
        Row(_t.LEASE_EXPIRED, (ACT,), SCH, guard="retries_left", effects=_RETRY_OUT),
        Row(_t.LEASE_EXPIRED, (ACT,), FAILED, effects=_GIVE_UP),
        Row(_t.RELEASE, (ACT,), Q, effects=("interrupt_phase", "end_attempt", "record_error", "wake_workers")),
        Row(_t.CANCEL, (WAIT, Q, SCH, VAL), CANC,
            effects=("cancel_phases", "record_reason", *_FINISH, "cancel_children")),
        Row(_t.CANCEL, (ACT,), CANC,
            effects=("end_attempt", "cancel_phases", "cancel_handler", "record_reason", *_FINISH, "cancel_children")),
        Row(_t.DEPS_DONE, (WAIT,), Q, effects=("wake_workers",)),
        Row(_t.DEPENDENCY_FAILED, (WAIT,), FAILED, effects=("record_reason", *_FINISH)),
        Row(_t.VALIDATION_PASSED, (VAL,), DONE, effects=("record_status", "clear_error", "clear_reason", *_FINISH)),
        Row(_t.VALIDATION_EXHAUSTED, (VAL,), VFAIL,
            effects=("record_status", "record_error", "record_reason", *_FINISH)),
        Row(_t.RETRY, (FAILED, CANC, TIMED), Q, effects=("reset_retries", "new_epoch", "reopen", "wake_workers")),
        Row(_t.RETRY, (VFAIL,), VAL, effects=("new_epoch", "reopen", "start_validation")),
        Row(
            _t.RETRY_FROM_START,
            (FAILED, CANC, TIMED, VFAIL),
            Q,
            effects=("reset_retries", "new_epoch", "rewind_phases", "reopen", "wake_workers"),
        ),
    ),
)
