"""Stateful property tests of the machines' invariants (SPEC.md, the three state machines).

Theory of operation
-------------------
``tests/test_machine_tables.py`` checks every (state, trigger) pair once. The
invariants of SPEC.md are about *sequences*: a retry after a cancel after a
half-finished phase, ten finalize attempts racing a late member completion.
Here hypothesis drives each machine with random triggers, and after every step
checks what SPEC.md promises, for both forms:

* the pure form, ``JOB.apply(state, trigger, facts)``, driving a small job
  record kept by this file (:class:`PureJob`), which performs the outcome's
  effects by name and moves its phases with ``PHASE.apply``;
* the embeddable form, ``JobMachine().attach(JobModel(...))``, triggers called
  by name with ``.fire(model, trigger)``.

A simulated worker works on phases only while the job is ``active``, in order,
and reports ``complete`` only once every phase is completed; everything else
(``fail``, ``cancel``, ``lease_expired``, operator retries...) fires at random,
in any state. The sets below (terminal states, operator triggers...) are typed
out from SPEC.md, not read from ``machines/``.

Bugs of ``machines/`` these tests found are pinned at the end of the file as
regression tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from jobvisor.machines import (
    JOB,
    PHASE,
    BatchModel,
    DeliveryModel,
    InvalidTransition,
    JobModel,
    Kind,
)
from jobvisor.machines.embed import BatchMachine, JobMachine, WebhookMachine, _takes_trigger
from jobvisor.machines.job import JOB_EFFECTS

# ---------------------------------------------------------------------------
# The contract, typed out from SPEC.md.
# ---------------------------------------------------------------------------

JOB_TRIGGERS = (
    "claim",
    "wake",
    "complete",
    "fail",
    "timeout",
    "lease_expired",
    "release",
    "cancel",
    "validation_passed",
    "validation_exhausted",
    "retry",
    "retry_from_start",
)
JOB_TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out", "validation_failed"})
OPERATOR = frozenset({"retry", "retry_from_start"})
# Left by an operator retry; `completed` absorbs even that.
RETRYABLE = frozenset({"failed", "cancelled", "timed_out", "validation_failed"})
# A failed attempt: retried (to `scheduled`) while retries are left, else this terminal state.
AUTOMATIC_RETRY = {"fail": "failed", "timeout": "timed_out", "lease_expired": "failed"}
UNFINISHED_PHASE = frozenset({"pending", "running", "failed"})
# What the actors plausibly do next in each non-terminal state (`active` is the worker's).
_PLAUSIBLE = {
    "queued": ["claim"] * 5 + ["cancel"],
    "scheduled": ["wake"] * 5 + ["cancel"],
    "validating": ["validation_passed"] + ["validation_exhausted"] * 3 + ["cancel"],
}

BATCH_TERMINAL = frozenset({"completed", "completed_partial", "failed", "cancelled"})
BATCH_SETTLED = frozenset({"completed", "completed_partial", "failed"})
DELIVERY_TERMINAL = frozenset({"delivered", "dead"})

# Bounded runs: the whole file takes a few seconds.
STATEFUL = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class JobView(NamedTuple):
    """Everything a trigger may change, in plain strings and dicts (comparable)."""

    state: str
    retry_count: int
    max_retries: int
    phases: dict[str, str]
    results: dict[str, Any]
    epoch: int


class Step(NamedTuple):
    """What one trigger call did: events produced (0 or 1), effects performed."""

    events: int
    effects: tuple[str, ...]
    invalid: bool = False
    internal: bool = False


# ---------------------------------------------------------------------------
# The job machine: invariants shared by both forms.
# ---------------------------------------------------------------------------


class _JobInvariants(RuleBasedStateMachine):
    """Random triggers on one job; the subclass binds them to a form of the machine."""

    # -- the form under test (subclasses) ------------------------------------

    def setup(
        self, *, max_retries: int, has_validator: bool, phases: list[str], start: str
    ) -> None:
        raise NotImplementedError

    def fire(self, trigger: str) -> Step:
        raise NotImplementedError

    def start_phase(self, name: str) -> None:
        raise NotImplementedError

    def complete_phase(self, name: str, result: Any) -> None:
        raise NotImplementedError

    def view(self) -> JobView:
        raise NotImplementedError

    # -- rules ---------------------------------------------------------------

    @initialize(
        max_retries=st.integers(0, 3),
        has_validator=st.sampled_from([True, True, False]),
        n_phases=st.integers(0, 3),
        start=st.sampled_from(["queued", "scheduled"]),
    )
    def init_job(self, max_retries: int, has_validator: bool, n_phases: int, start: str) -> None:
        self.phase_names = [f"p{i}" for i in range(n_phases)]
        self.setup(
            max_retries=max_retries,
            has_validator=has_validator,
            phases=self.phase_names,
            start=start,
        )
        # What the simulated worker produced and the job must still hold.
        self.expected_results: dict[str, Any] = {}
        self.work_done = 0

    @rule(data=st.data())
    def any_trigger(self, data: st.DataObject) -> None:
        """Any trigger, in any state: late, duplicate and impossible ones included."""
        triggers = JOB_TRIGGERS
        if self._worker_busy():
            # The simulated worker reports success only after its last phase.
            triggers = tuple(t for t in JOB_TRIGGERS if t != "complete")
        self._step(data.draw(st.sampled_from(triggers), label="trigger"))

    @precondition(lambda self: self.view().state not in JOB_TERMINAL)
    @rule(data=st.data())
    def drive(self, data: st.DataObject) -> None:
        """What the actors would plausibly do next, so runs reach deep states."""
        state = self.view().state
        if state == "active":
            choices = ["work"] * 8 if self._worker_busy() else ["complete"] * 4
            choices += ["fail", "timeout", "lease_expired", "release", "cancel"]
        else:
            choices = _PLAUSIBLE[state]
        choice = data.draw(st.sampled_from(choices), label="next")
        if choice == "work":
            self._work_on_phase()
        else:
            self._step(choice)

    @precondition(lambda self: self.view().state in JOB_TERMINAL)
    @rule(from_start=st.booleans())
    def operator_retry(self, from_start: bool) -> None:
        self._step("retry_from_start" if from_start else "retry")

    def _worker_busy(self) -> bool:
        return self.view().state == "active" and bool(self._unfinished())

    def _work_on_phase(self) -> None:
        """The worker advances the first unfinished phase: start it, or complete it."""
        before = self.view()
        name = self._unfinished()[0]
        self.work_done += 1
        if before.phases[name] == "pending":
            self.start_phase(name)
            expected_state = "running"
        else:
            assert before.phases[name] == "running", before
            result = f"{name}-result-{self.work_done}"
            self.complete_phase(name, result)
            self.expected_results[name] = result
            expected_state = "completed"
        after = self.view()
        assert after.phases[name] == expected_state
        assert after._replace(phases=before.phases, results=before.results) == before

    # -- per-step checks -----------------------------------------------------

    def _unfinished(self) -> list[str]:
        phases = self.view().phases
        return [n for n in self.phase_names if phases[n] != "completed"]

    def _step(self, trigger: str) -> None:
        before = self.view()
        step = self.fire(trigger)
        after = self.view()
        moved = after.state != before.state

        # One transition, one event; no event, no change.
        assert step.events in (0, 1)
        assert step.events == int(moved or step.internal), (trigger, before, after, step)
        if step.events == 0:
            assert after == before, (trigger, before, after)
            assert step.effects == (), (trigger, step)

        if step.invalid:
            assert before.state not in JOB_TERMINAL, (trigger, before)

        # Terminal states absorb every automatic trigger; `completed` absorbs everything.
        absorbing = trigger not in OPERATOR or before.state == "completed"
        if before.state in JOB_TERMINAL and absorbing:
            assert not step.invalid, (trigger, before, step)
            assert step.events == 0, (trigger, before, step)

        # Operator retry: the only way out of failed/cancelled/timed_out/validation_failed.
        if trigger in OPERATOR:
            if before.state in RETRYABLE:
                assert step.events == 1, (trigger, before)
            elif before.state not in JOB_TERMINAL:
                assert step.invalid, (trigger, before)
        if step.events and trigger in OPERATOR:
            assert before.state in RETRYABLE
            assert after.epoch == before.epoch + 1
            if trigger == "retry" and before.state == "validation_failed":
                # The handler already succeeded: only validation runs again.
                assert after.state == "validating"
                assert after.phases == before.phases
                assert after.results == before.results
                assert after.retry_count == before.retry_count
            elif trigger == "retry":
                assert after.state == "queued"
                assert after.retry_count == 0
                assert after.results == before.results
            else:
                assert after.state == "queued"
                assert after.retry_count == 0
                assert after.results == {}
                assert set(after.phases.values()) <= {"pending"}
                self.expected_results = {}
        else:
            assert after.epoch == before.epoch, (trigger, before, after)
        if moved and before.state in JOB_TERMINAL:
            assert trigger in OPERATOR, (trigger, before, after)

        # Automatic retries: within max_retries, one at a time.
        if before.state == "active" and trigger in AUTOMATIC_RETRY:
            if before.retry_count < before.max_retries:
                assert after.state == "scheduled"
                assert after.retry_count == before.retry_count + 1
            else:
                assert after.state == AUTOMATIC_RETRY[trigger]
                assert after.retry_count == before.retry_count
        if after.retry_count > before.retry_count:
            assert after.retry_count == before.retry_count + 1
            assert trigger in AUTOMATIC_RETRY, (trigger, before, after)
            assert (before.state, after.state) == ("active", "scheduled"), (trigger, before, after)
        if after.retry_count < before.retry_count:
            assert trigger in OPERATOR, (trigger, before, after)
            assert after.retry_count == 0, (trigger, before, after)

        # Phase results survive every transition but retry_from_start.
        if trigger != "retry_from_start":
            assert after.results == before.results, (trigger, before, after)

        # Cancel marks every unfinished phase cancelled.
        if trigger == "cancel" and step.events:
            assert after.state == "cancelled"
            assert not UNFINISHED_PHASE & set(after.phases.values()), after

        # A new attempt resumes at the first unfinished phase, earlier results kept.
        if trigger == "claim" and step.events:
            assert after.state == "active"
            assert set(after.phases.values()) <= {"pending", "completed"}, after
            for name in self.phase_names:
                if before.phases[name] == "completed":
                    assert after.phases[name] == "completed"

        # A job without a validator goes from active straight to completed.
        if trigger == "complete" and before.state == "active":
            assert after.state == ("validating" if self.has_validator else "completed")

    # -- invariants after every step -----------------------------------------

    @invariant()
    def retry_count_within_limit(self) -> None:
        v = self.view()
        assert 0 <= v.retry_count <= v.max_retries, v

    @invariant()
    def results_are_the_completed_phases(self) -> None:
        v = self.view()
        assert v.results == self.expected_results, v
        assert set(v.results) == {n for n, s in v.phases.items() if s == "completed"}, v

    @invariant()
    def completed_phases_form_a_prefix(self) -> None:
        """Phases run in order, so an attempt resumes at the first unfinished one."""
        states = [self.view().phases[n] for n in self.phase_names]
        first_unfinished = next((i for i, s in enumerate(states) if s != "completed"), len(states))
        assert "completed" not in states[first_unfinished:], states

    @invariant()
    def phases_consistent_with_job(self) -> None:
        v = self.view()
        running = [n for n, s in v.phases.items() if s == "running"]
        assert len(running) <= 1, v
        if v.state != "active":
            # queued/scheduled in particular: no phase runs outside an attempt.
            assert not running, v
        if v.state == "cancelled":
            assert not UNFINISHED_PHASE & set(v.phases.values()), v
        if v.state in ("validating", "validation_failed", "completed"):
            # The worker reports complete only after every phase completed.
            assert set(v.phases.values()) <= {"completed"}, v


# ---------------------------------------------------------------------------
# The pure form: JOB.apply and a job record kept here.
# ---------------------------------------------------------------------------

# Job effects that move phases, as phase-table triggers applied to every phase
# (a phase with no row for the trigger is left alone).
_PHASE_EFFECTS = {
    "resume_phases": "reset",
    "interrupt_phase": "fail",
    "cancel_phases": "cancel",
    "rewind_phases": "rewind",
}
# Effects with nothing to keep in this record (leases, timers, handlers, the store's data and
# indexes, reasons and finish times).
_BOOKKEEPING = frozenset(JOB_EFFECTS) - {"new_attempt", "count_retry", "reset_retries", "new_epoch",
                                         *_PHASE_EFFECTS}


class PureJob:
    """A job record moved only by ``JOB.apply`` outcomes and ``PHASE.apply``."""

    def __init__(self, *, max_retries: int, has_validator: bool, phases: list[str], start: str):
        self.state = start
        self.max_retries = max_retries
        self.has_validator = has_validator
        self.retry_count = 0
        self.attempts = 0
        self.epoch = 0
        self.phases = {name: "pending" for name in phases}
        self.results: dict[str, Any] = {}

    def facts(self) -> dict[str, bool]:
        return {
            "retries_left": self.retry_count < self.max_retries,
            "has_validator": self.has_validator,
        }

    def perform(self, effect: str) -> None:
        if effect == "new_attempt":
            self.attempts += 1
        elif effect == "count_retry":
            self.retry_count += 1
        elif effect == "reset_retries":
            self.retry_count = 0
        elif effect == "new_epoch":
            self.epoch += 1
        elif effect in _PHASE_EFFECTS:
            for name in self.phases:
                self.phase(name, _PHASE_EFFECTS[effect])
        else:
            assert effect in _BOOKKEEPING, f"effect {effect!r} is not in SPEC's vocabulary"

    def phase(self, name: str, trigger: str, result: Any = None) -> bool:
        try:
            outcome = PHASE.apply(self.phases[name], trigger)
        except InvalidTransition:
            return False
        self.phases[name] = str(outcome.dest)
        if "drop_result" in outcome.effects:
            self.results.pop(name, None)
        if "store_result" in outcome.effects:
            self.results[name] = result
        return outcome.changed


class PureJobMachine(_JobInvariants):
    def setup(
        self, *, max_retries: int, has_validator: bool, phases: list[str], start: str
    ) -> None:
        self.has_validator = has_validator
        self.job = PureJob(
            max_retries=max_retries, has_validator=has_validator, phases=phases, start=start
        )

    def fire(self, trigger: str) -> Step:
        job = self.job
        source = job.state
        try:
            outcome = JOB.apply(source, trigger, job.facts())
        except InvalidTransition as exc:
            assert (exc.machine, exc.state, exc.trigger) == ("job", source, trigger)
            assert source in str(exc)
            assert trigger in str(exc)
            return Step(0, (), invalid=True)
        assert (outcome.source, outcome.trigger) == (source, trigger)
        if outcome.changed:
            assert outcome.kind is Kind.MOVED
        else:
            # Jobs have no guard without a fallback row: nothing is ever blocked.
            assert outcome.kind is Kind.ABSORBED, outcome
            assert source in JOB_TERMINAL, outcome
            assert outcome.dest == source
            assert outcome.effects == ()
            assert outcome.notify is None
        # The one event of a transition into a terminal state names it.
        if outcome.changed and outcome.dest in JOB_TERMINAL:
            assert outcome.notify == f"job.{outcome.dest}", outcome
        else:
            assert outcome.notify is None, outcome
        for effect in outcome.effects:
            job.perform(effect)
        job.state = str(outcome.dest)
        return Step(int(outcome.changed), outcome.effects, internal=outcome.internal)

    def start_phase(self, name: str) -> None:
        assert self.job.phase(name, "start")

    def complete_phase(self, name: str, result: Any) -> None:
        assert self.job.phase(name, "complete", result)

    def view(self) -> JobView:
        j = self.job
        return JobView(
            j.state, j.retry_count, j.max_retries, dict(j.phases), dict(j.results), j.epoch
        )


TestPureJob = PureJobMachine.TestCase
TestPureJob.settings = STATEFUL


# ---------------------------------------------------------------------------
# The embeddable form: JobMachine().attach(JobModel(...)), triggers by name.
# ---------------------------------------------------------------------------


class RecordingJobModel(JobModel):
    """A JobModel that also lists every effect the machine asks it to perform."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.performed: list[str] = []


def _recording(effect: str) -> Any:
    def do(self: RecordingJobModel, trigger: str) -> None:
        self.performed.append(effect)
        base = getattr(super(RecordingJobModel, self), f"do_{effect}", None)
        if base is not None:
            base(trigger) if _takes_trigger(base) else base()

    return do


for _effect in JOB_EFFECTS:
    setattr(RecordingJobModel, f"do_{_effect}", _recording(_effect))


class EmbeddedJobMachine(_JobInvariants):
    def setup(
        self, *, max_retries: int, has_validator: bool, phases: list[str], start: str
    ) -> None:
        self.has_validator = has_validator
        self.machine = JobMachine()
        self.model = self.machine.attach(
            RecordingJobModel(
                max_retries=max_retries, has_validator=has_validator, phases=phases, state=start
            )
        )
        assert self.model.state == start

    def fire(self, trigger: str) -> Step:
        model = self.model
        source = model.state
        running = [n for n, s in model.phases.items() if s == "running"]
        interrupted = list(model.interrupted)
        model.performed.clear()
        try:
            fired = self.machine.fire(model, trigger)
        except InvalidTransition as exc:
            assert (exc.machine, exc.state, exc.trigger) == ("job", source, trigger)
            assert model.performed == []
            return Step(0, (), invalid=True)
        performed = tuple(model.performed)
        if "interrupt_phase" in performed:
            # The attempt record names the phase that was running (or none).
            assert model.interrupted == [*interrupted, running[0] if running else None]
        else:
            assert model.interrupted == interrupted
        # Both forms read the same table: the same outcome, the same effects.
        facts = {"retries_left": self._before_retries_left, "has_validator": self.has_validator}
        outcome = JOB.apply(source, trigger, facts)
        assert fired is outcome.changed, (source, trigger)
        assert model.state == outcome.dest, (source, trigger)
        assert performed == outcome.effects
        return Step(int(fired), performed)

    def _step(self, trigger: str) -> None:
        self._before_retries_left = self.model.retries_left
        super()._step(trigger)

    def start_phase(self, name: str) -> None:
        self.model.start_phase(name)

    def complete_phase(self, name: str, result: Any) -> None:
        self.model.complete_phase(name, result)
        assert self.model.next_phase() == next(iter(self._unfinished()), None)

    def view(self) -> JobView:
        m = self.model
        return JobView(
            str(m.state),
            m.retry_count,
            m.max_retries,
            {n: str(s) for n, s in m.phases.items()},
            dict(m.phase_results),
            m.epoch,
        )

    def teardown(self) -> None:
        if hasattr(self, "model"):
            self.machine.detach(self.model)


TestEmbeddedJob = EmbeddedJobMachine.TestCase
TestEmbeddedJob.settings = STATEFUL


# ---------------------------------------------------------------------------
# Scripted runs of the same checks: the paths SPEC.md names, every run, whatever
# hypothesis happens to draw.
# ---------------------------------------------------------------------------

JOB_FORMS = pytest.mark.parametrize(
    "form", [PureJobMachine, EmbeddedJobMachine], ids=["pure", "embedded"]
)


def scripted(
    form: type[_JobInvariants], *, max_retries: int, has_validator: bool, phases: int
) -> tuple[_JobInvariants, Callable[..., JobView]]:
    """A job in ``form``, and a function running steps on it with the stateful test's checks."""
    job = form()
    job.init_job(
        max_retries=max_retries, has_validator=has_validator, n_phases=phases, start="queued"
    )

    def run(*steps: str) -> JobView:
        """Each step is a trigger or "work" (the worker advances a phase); checks after each."""
        for step in steps:
            if step == "work":
                job._work_on_phase()
            else:
                job._step(step)
            job.retry_count_within_limit()
            job.results_are_the_completed_phases()
            job.completed_phases_form_a_prefix()
            job.phases_consistent_with_job()
        return job.view()

    return job, run


@JOB_FORMS
def test_partial_retry_resumes_at_first_unfinished_phase(form: type[_JobInvariants]) -> None:
    job, run = scripted(form, max_retries=1, has_validator=False, phases=3)
    v = run("claim", "work", "work", "work", "fail")  # p0 completed, p1 was running
    assert (v.state, v.retry_count) == ("scheduled", 1)
    assert v.phases == {"p0": "completed", "p1": "failed", "p2": "pending"}
    v = run("wake", "claim")
    assert v.phases == {"p0": "completed", "p1": "pending", "p2": "pending"}
    assert v.results == {"p0": "p0-result-2"}
    v = run("work", "lease_expired")  # no retries left
    assert (v.state, v.retry_count) == ("failed", 1)
    v = run("retry", "claim", "work", "work", "work", "work", "complete")
    assert v.state == "completed"
    assert v.results == {
        "p0": "p0-result-2",
        "p1": "p1-result-6",
        "p2": "p2-result-8",
    }


@JOB_FORMS
def test_cancel_then_retry_keeps_results_and_from_start_drops_them(
    form: type[_JobInvariants],
) -> None:
    job, run = scripted(form, max_retries=2, has_validator=False, phases=3)
    v = run("claim", "work", "work", "work", "cancel")
    assert v.phases == {"p0": "completed", "p1": "cancelled", "p2": "cancelled"}
    v = run("cancel", "complete", "fail", "retry")
    assert (v.state, v.results) == ("queued", {"p0": "p0-result-2"})
    v = run("claim", "timeout", "wake", "cancel", "retry_from_start")
    assert v.state == "queued"
    assert v.results == {}
    assert set(v.phases.values()) == {"pending"}


@JOB_FORMS
def test_cancelling_a_pending_job_cancels_its_phases(form: type[_JobInvariants]) -> None:
    job, run = scripted(form, max_retries=0, has_validator=False, phases=2)
    v = run("cancel")
    assert v.phases == {"p0": "cancelled", "p1": "cancelled"}


@JOB_FORMS
def test_validation_failed_retry_validates_again_keeping_results(
    form: type[_JobInvariants],
) -> None:
    job, run = scripted(form, max_retries=1, has_validator=True, phases=2)
    v = run("claim", "fail", "wake", "claim", "work", "work", "work", "work", "complete")
    assert (v.state, v.retry_count) == ("validating", 1)
    v = run("validation_exhausted", "validation_passed", "retry")
    assert (v.state, v.retry_count, v.epoch) == ("validating", 1, 1)
    assert v.results == {"p0": "p0-result-2", "p1": "p1-result-4"}
    v = run("validation_passed", "retry", "retry_from_start", "cancel")
    assert (v.state, v.epoch) == ("completed", 1)


# ---------------------------------------------------------------------------
# The batch machine, embeddable form with BatchModel.
# ---------------------------------------------------------------------------


class BatchLifecycle(RuleBasedStateMachine):
    """Members finishing, progress every K, threshold, stuck sweeps, close, cancel, finalize.

    Finalize attempts race: each one runs ``finalize`` and, when it moved, ``settle``
    at once, as the store's script does in one atomic step.
    """

    @initialize(
        total=st.integers(0, 8),
        threshold=st.sampled_from([1, 34, 50, 80, 100]),
        progress_every=st.integers(0, 3),
    )
    def init_batch(self, total: int, threshold: int, progress_every: int) -> None:
        self.machine = BatchMachine()
        self.model = self.machine.attach(
            BatchModel(
                total=total, threshold=threshold, progress_every=progress_every, closed=False
            )
        )
        assert self.model.state == "open"
        self.settles: list[str] = []
        self.terminal_state: str | None = None

    # -- oracles, from SPEC.md ---------------------------------------------

    def _threshold_met(self) -> bool:
        m = self.model
        return m.total > 0 and m.completed * 100 >= m.threshold * m.total

    def _all_finished(self) -> bool:
        return self.model.closed and self.model.finished >= self.model.total

    # -- rules ---------------------------------------------------------------

    @rule()
    def close(self) -> None:
        before = self.model.state
        try:
            fired = self.machine.fire(self.model, "close")
        except InvalidTransition:
            assert before not in BATCH_TERMINAL, before
            assert before != "open", before
            assert self.model.state == before
            return
        if before in BATCH_TERMINAL:
            assert not fired
            assert self.model.state == before
        else:
            assert fired
            assert self.model.state == "running"
            assert self.model.closed  # the close row's mark_closed effect

    @precondition(lambda self: self.model.finished < self.model.total)
    @rule(outcome=st.sampled_from(["completed", "completed", "failed", "cancelled", "timed_out"]))
    def member_finishes(self, outcome: str) -> None:
        m = self.model
        before = (m.state, m.touches)
        counters = (m.completed, m.failed, m.cancelled)
        m.member_finished(outcome)
        after_counters = (m.completed, m.failed, m.cancelled)
        assert sum(after_counters) == sum(counters) + 1
        assert all(a >= b for a, b in zip(after_counters, counters, strict=True))
        fired = self.machine.fire(m, "member_done")
        if before[0] in BATCH_TERMINAL:
            # Late completion: counters only, never the state; no activity recorded.
            assert not fired
            assert (m.state, m.touches) == before
        else:
            # Internal row: one event (activity), no move.
            assert fired
            assert (m.state, m.touches) == (before[0], before[1] + 1)
            self._finalize_once()

    @rule(attempts=st.integers(1, 4))
    def finalize(self, attempts: int) -> None:
        """Every-K, threshold, all-done and concurrent sweeps, all at once."""
        for _ in range(attempts):
            self._finalize_once()

    @precondition(lambda self: not self.model.stuck)
    @rule()
    def stuck_sweep(self) -> None:
        self.model.stuck = True
        self._finalize_once()

    @rule()
    def cancel(self) -> None:
        before = self.model.state
        fired = self.machine.fire(self.model, "cancel")
        if before in BATCH_TERMINAL:
            assert not fired
            assert self.model.state == before
        else:
            assert fired
            assert self.model.state == "cancelled"

    def _finalize_once(self) -> None:
        m = self.model
        before = m.state
        assert before != "finalizing"  # finalize and settle are one atomic step
        if before in BATCH_TERMINAL:
            assert not self.machine.fire(m, "finalize")
            assert m.state == before
            return
        # SPEC: an open batch is still being added to; until its size is known (closed, or an
        # expected total) only the stuck sweep makes it ready.
        known = m.closed or m.expected is not None
        ready = (known and self._threshold_met()) or self._all_finished() or m.stuck
        fired = self.machine.fire(m, "finalize")
        assert fired is ready, (before, ready, vars(m))
        if not fired:
            assert m.state == before
            return
        assert m.state == "finalizing"
        assert self.machine.fire(m, "settle")
        if self._all_finished():
            expected = "completed"  # every member terminal, whatever the threshold (SPEC)
        elif self._threshold_met():
            expected = "completed_partial"
        else:
            expected = "failed"  # the stuck sweep, under the threshold
        assert m.state == expected, (expected, vars(m))
        self.settles.append(m.state)

    # -- invariants ----------------------------------------------------------

    @invariant()
    def exactly_one_settle(self) -> None:
        state = self.model.state
        assert len(self.settles) <= 1, self.settles
        assert (len(self.settles) == 1) is (state in BATCH_SETTLED), (state, self.settles)

    @invariant()
    def terminal_state_is_final(self) -> None:
        state = self.model.state
        if self.terminal_state is not None:
            assert state == self.terminal_state
        elif state in BATCH_TERMINAL:
            self.terminal_state = state

    @invariant()
    def progress_every_k(self) -> None:
        """Every K member completions (failed and cancelled members are not completions)."""
        m = self.model
        k = m.progress_every
        expected = [k * i for i in range(1, m.completed // k + 1)] if k else []
        assert m.progress_events == expected, (m.progress_events, m.finished, k)

    def teardown(self) -> None:
        if hasattr(self, "model"):
            self.machine.detach(self.model)


TestBatch = BatchLifecycle.TestCase
TestBatch.settings = STATEFUL


# ---------------------------------------------------------------------------
# The webhook delivery machine, embeddable form with DeliveryModel.
# ---------------------------------------------------------------------------


class DeliveryLifecycle(RuleBasedStateMachine):
    @initialize(max_attempts=st.integers(1, 4))
    def init_delivery(self, max_attempts: int) -> None:
        self.machine = WebhookMachine()
        self.model = self.machine.attach(DeliveryModel(max_attempts=max_attempts))
        assert self.model.state == "pending"
        self.sends = 0
        self.terminal_state: str | None = None

    @rule(trigger=st.sampled_from(["send", "succeed", "fail", "reject"]))
    def answer(self, trigger: str) -> None:
        self._step(trigger)

    @rule()
    def release(self) -> None:
        self._step("release")

    def _step(self, trigger: str) -> None:
        m = self.model
        before = (m.state, m.attempts)
        try:
            fired = self.machine.fire(m, trigger)
        except InvalidTransition as exc:
            assert before[0] not in DELIVERY_TERMINAL
            assert (exc.machine, exc.state, exc.trigger) == ("webhook", before[0], trigger)
            assert (m.state, m.attempts) == before
            return
        if before[0] in DELIVERY_TERMINAL:
            assert not fired
            assert (m.state, m.attempts) == before
            return
        assert fired, (before, trigger)
        if trigger == "send":
            if before[1] >= m.max_attempts:  # no attempt left (after a release): dead, not sent
                assert (m.state, m.attempts) == ("dead", before[1])
                return
            self.sends += 1
            assert (m.state, m.attempts) == ("sending", before[1] + 1)
            return
        assert m.attempts == before[1]
        expected = {
            "succeed": "delivered",
            "reject": "dead",
            "release": "pending",
            "fail": "retry_wait" if before[1] < m.max_attempts else "dead",
        }[trigger]
        assert m.state == expected, (before, trigger, m.state)

    @invariant()
    def attempts_within_limit(self) -> None:
        assert 0 <= self.model.attempts <= self.model.max_attempts
        assert self.model.attempts == self.sends

    @invariant()
    def delivered_and_dead_absorb(self) -> None:
        state = self.model.state
        if self.terminal_state is not None:
            assert state == self.terminal_state
        elif state in DELIVERY_TERMINAL:
            self.terminal_state = state

    def teardown(self) -> None:
        if hasattr(self, "model"):
            self.machine.detach(self.model)


TestDelivery = DeliveryLifecycle.TestCase
TestDelivery.settings = STATEFUL


# ---------------------------------------------------------------------------
# Regressions: bugs these property tests found in machines/.
# ---------------------------------------------------------------------------


def test_release_at_last_attempt_does_not_exceed_max_attempts() -> None:
    machine = WebhookMachine()
    delivery = machine.attach(DeliveryModel(max_attempts=1))
    assert machine.fire(delivery, "send")  # attempt 1 of 1
    assert machine.fire(delivery, "release")  # shutdown mid-send: back to pending
    machine.fire(delivery, "send")
    assert delivery.attempts == delivery.max_attempts == 1
    assert delivery.state == "dead"


def test_batch_close_sets_the_closed_fact() -> None:
    machine = BatchMachine()
    batch = machine.attach(BatchModel(total=2, closed=False))
    assert machine.fire(batch, "close")
    batch.member_finished("completed")
    batch.member_finished("failed")
    # Every member is terminal and membership is closed: finalize is ready.
    assert batch.closed
    assert machine.fire(batch, "finalize")


@pytest.mark.parametrize("late_after", ["completed", "cancelled"])
def test_late_phase_result_is_discarded(late_after: str) -> None:
    machine = JobMachine()
    job = machine.attach(JobModel(phases=["a"]))
    machine.fire(job, "claim")
    job.start_phase("a")
    if late_after == "completed":
        job.complete_phase("a", "first")
        kept: dict[str, Any] = {"a": "first"}
    else:
        machine.fire(job, "cancel")
        kept = {}
    job.complete_phase("a", "late")  # absorbed by the phase machine
    assert job.phase_results == kept


def test_absorbed_embedded_triggers_log_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """Absorption says so in the log and nothing else (the embed module's promise)."""
    machine = JobMachine()
    job = machine.attach(JobModel(state="completed"))
    with caplog.at_level(logging.INFO, logger="jobvisor.machines.embed"):
        assert not machine.fire(job, "retry")
    assert job.state == "completed"
    assert any("absorbed" in r.getMessage() for r in caplog.records)
