"""Ready-made models for the embeddable machines.

Each holds the facts its machine's guards read (``retries_left``...), computed
by the machine's one facts function (:func:`~machines.job.job_facts`,
:func:`~machines.batch.batch_facts`, :func:`~machines.webhook.webhook_facts`)
that the store's Lua follows too, and performs every row effect that is not
store-only (``do_count_retry``...; one that takes an argument is given the
trigger). Phase changes go through the phase table's pure ``apply``, so a job
model's phases obey the same rules as the store's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .batch import BATCH, batch_facts, batch_total
from .job import JOB, job_facts
from .phase import PHASE, PhaseState, PhaseTrigger
from .webhook import webhook_facts

__all__ = ["JobModel", "BatchModel", "DeliveryModel"]


class JobModel:
    """A job as seen by the embeddable job machine.

    ``phases`` maps each declared phase, in order, to its state;
    ``phase_results`` keeps the results of completed phases.
    """

    def __init__(
        self,
        *,
        max_retries: int = 3,
        has_validator: bool = False,
        phases: Iterable[str] = (),
        state: str | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if state is not None:
            self.state = state
        self.max_retries = max_retries
        self.has_validator = has_validator
        self.retry_count = 0
        self.attempts = 0
        self.epoch = 0
        self.phases: dict[str, PhaseState] = {name: PhaseState.PENDING for name in phases}
        self.phase_results: dict[str, Any] = {}
        self.interrupted: list[str | None] = []
        self.outcomes: list[str] = []  # each ended attempt's outcome, in order
        self.leased = False
        self.finished = False
        self.reason = ""

    def _facts(self) -> dict[str, bool]:
        return job_facts(retry_count=self.retry_count, max_retries=self.max_retries,
                         has_validator=self.has_validator)

    @property
    def retries_left(self) -> bool:
        return self._facts()["retries_left"]

    # -- phases, driven by the handler while the job is active -------------

    def start_phase(self, name: str) -> None:
        self._phase(name, PhaseTrigger.START)

    def complete_phase(self, name: str, result: Any = None) -> None:
        """Complete a running phase with its result; a late result (absorbed) is discarded."""
        if self._phase(name, PhaseTrigger.COMPLETE):
            self.phase_results[name] = result

    def next_phase(self) -> str | None:
        """The first phase that is not completed: where an attempt resumes."""
        for name, state in self.phases.items():
            if state is not PhaseState.COMPLETED:
                return name
        return None

    def _phase(self, name: str, trigger: PhaseTrigger) -> bool:
        outcome = PHASE.apply(self.phases[name], trigger)
        self.phases[name] = outcome.dest
        if "drop_result" in outcome.effects:
            self.phase_results.pop(name, None)
        return outcome.changed

    def _each_phase(self, trigger: PhaseTrigger) -> None:
        allowed = PHASE.sources_of(trigger)
        for name, state in self.phases.items():
            if state in allowed:
                self._phase(name, trigger)

    # -- effects of the job table --------------------------------------------

    def do_new_attempt(self) -> None:
        self.attempts += 1
        self.leased = True

    def do_end_attempt(self, trigger: str) -> None:
        self.outcomes.append(JOB.outcomes[trigger])  # type: ignore[index]
        self.leased = False

    def do_record_reason(self, trigger: str) -> None:
        self.reason = JOB.reasons[trigger]  # type: ignore[index]

    def do_clear_reason(self) -> None:
        self.reason = ""

    def do_finish(self) -> None:
        self.finished = True

    def do_reopen(self) -> None:
        self.finished = False
        self.reason = ""

    def do_count_retry(self) -> None:
        self.retry_count += 1

    def do_reset_retries(self) -> None:
        self.retry_count = 0

    def do_new_epoch(self) -> None:
        self.epoch += 1

    def do_interrupt_phase(self) -> None:
        running = [n for n, s in self.phases.items() if s is PhaseState.RUNNING]
        self.interrupted.append(running[0] if running else None)
        self._each_phase_in(running, PhaseTrigger.FAIL)

    def do_cancel_phases(self) -> None:
        self._each_phase(PhaseTrigger.CANCEL)

    def do_resume_phases(self) -> None:
        self._each_phase(PhaseTrigger.RESET)

    def do_rewind_phases(self) -> None:
        self._each_phase(PhaseTrigger.REWIND)

    def _each_phase_in(self, names: Iterable[str], trigger: PhaseTrigger) -> None:
        for name in names:
            self._phase(name, trigger)


class BatchModel:
    """A batch as seen by the embeddable batch machine.

    ``total`` members are in it already (``closed``: membership is complete);
    ``expected`` is the total it was created with, if any. Add members with
    :meth:`add_members`: when it answers ``True`` the expected total is
    reached, and ``close`` is due (the store fires it itself). Counters are
    moved by :meth:`member_finished`, which also lists in ``progress_events``
    the completion counts at which ``batch.progress`` was due (every
    ``progress_every`` member completions); then fire ``member_done`` so the
    machine can try ``finalize``. The guards come from
    :func:`~machines.batch.batch_facts`, as the store's do.
    """

    def __init__(
        self,
        *,
        total: int = 0,
        expected: int | None = None,
        threshold: int = 100,
        progress_every: int = 0,
        closed: bool = True,
    ) -> None:
        if not 1 <= threshold <= 100:
            raise ValueError("threshold must be within 1..100")
        if expected is not None and not 0 <= total <= expected:
            raise ValueError("a batch never holds more members than its expected total")
        self.members = total
        self.expected = expected
        self.threshold = threshold
        self.progress_every = progress_every
        self.closed = closed
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.stuck = False
        self.touches = 0
        self.ended = False  # finish performed: the batch reached its end
        self.reason = ""
        self.progress_events: list[int] = []

    def add_members(self, n: int = 1) -> bool:
        """Count ``n`` new members; ``True`` when that reaches the expected total (fire ``close``)."""
        if self.closed or (self.expected is not None and self.members + n > self.expected):
            raise ValueError("no more members can be added")
        self.members += n
        return self.expected is not None and self.members == self.expected

    def member_finished(self, outcome: str) -> None:
        """Count one member's terminal outcome (``completed``, ``failed``...).

        Counters and progress move whatever the batch's state: they belong to
        the member's transition, not to the batch machine.
        """
        if outcome == "completed":
            self.completed += 1
            if self.progress_every and self.completed % self.progress_every == 0:
                self.progress_events.append(self.completed)
        elif outcome == "cancelled":
            self.cancelled += 1
        else:
            self.failed += 1

    @property
    def total(self) -> int:
        return batch_total(members=self.members, expected=self.expected, closed=self.closed)

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.cancelled

    def facts(self) -> dict[str, bool]:
        return batch_facts(members=self.members, expected=self.expected, closed=self.closed,
                           completed=self.completed, failed=self.failed, cancelled=self.cancelled,
                           threshold=self.threshold, stuck=self.stuck)

    @property
    def threshold_met(self) -> bool:
        return self.facts()["threshold_met"]

    @property
    def all_done(self) -> bool:
        return self.facts()["all_done"]

    @property
    def ready(self) -> bool:
        return self.facts()["ready"]

    def do_touch(self) -> None:
        self.touches += 1

    def do_mark_closed(self) -> None:
        self.closed = True

    def do_record_reason(self, trigger: str) -> None:
        self.reason = BATCH.reasons[trigger]  # type: ignore[index]

    def do_finish(self) -> None:
        self.ended = True


class DeliveryModel:
    """A webhook delivery as seen by the embeddable webhook machine."""

    def __init__(self, *, max_attempts: int = 5) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.attempts = 0

    @property
    def attempts_left(self) -> bool:
        return webhook_facts(attempts=self.attempts, max_attempts=self.max_attempts)["attempts_left"]

    def do_count_attempt(self) -> None:
        self.attempts += 1

    def do_reset_attempts(self) -> None:
        self.attempts = 0
