"""What the exhaustive tables leave implicit, pinned by hand: a definition built anew answers as
the imported one, the guards' facts functions, the ready-made models' every field after each
step, their constructors, the embeddable machine's wiring, the lazy exports and the diagrams.

Each test here was written against a mutant of ``machines/`` that the other tests let live
(bench/MUTATION.md): removing any of the behaviour below fails at least one of them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from enum import StrEnum
from typing import Any

import pytest

import jobvisor.machines as machines
from jobvisor.machines import (
    BATCH,
    JOB,
    PHASE,
    WEBHOOK,
    BatchModel,
    DeliveryModel,
    JobModel,
    MachineDef,
    Row,
    to_mermaid,
)
from jobvisor.machines._table import Start
from jobvisor.machines.batch import batch_facts, batch_total
from jobvisor.machines.embed import BatchMachine, EmbeddedMachine, JobMachine, WebhookMachine, _takes_trigger
from jobvisor.machines.job import job_facts
from tests.machines.test_machine_tables import ALL_ROWS, DEFS, EXACT_EFFECTS, NOTIFY_CHECKS, _facts_for

# -- a definition built anew (not the one built at import) answers as the hand tables ---------


def _rebuilt(machine: str) -> Any:
    return dataclasses.replace(DEFS[machine])


@pytest.mark.parametrize("machine", list(DEFS))
def test_a_rebuilt_definition_answers_every_hand_row(machine: str) -> None:
    definition = _rebuilt(machine)
    checked = 0
    for name, (state, trigger, when, outcome, dest) in ALL_ROWS:
        if name != machine or outcome == "invalid":
            continue
        for facts in _facts_for(machine, when):
            result = definition.apply(state, trigger, facts)
            assert (str(result.kind), str(result.source), str(result.trigger)) == (outcome, state, trigger)
            assert str(result.dest) == (dest if outcome == "moved" else state)
            if outcome == "moved":
                assert result.effects == EXACT_EFFECTS[(machine, state, trigger, when)]
                assert result.internal is ((machine, trigger) == ("batch", "member_done"))
            else:
                assert (result.effects, result.notify, result.internal) == ((), None, False)
            checked += 1
    assert checked > 0


def test_a_rebuilt_definition_notifies_as_the_hand_checks() -> None:
    for machine, state, trigger, facts, notify in NOTIFY_CHECKS:
        assert _rebuilt(machine).apply(state, trigger, facts).notify == notify


# Terminal states and the guards each trigger may read, by hand (SPEC.md).
TERMINAL = {
    "job": {"completed", "failed", "timed_out", "cancelled", "validation_failed"},
    "phase": {"completed", "cancelled"},  # a failed phase runs again
    "batch": {"completed", "completed_partial", "failed", "cancelled"},
    "webhook": {"delivered", "dead"},
}
GUARDS_NEEDED = {
    ("job", "complete"): {"has_validator"},
    ("job", "fail"): {"retries_left"},
    ("job", "timeout"): {"retries_left"},
    ("job", "lease_expired"): {"retries_left"},
    ("batch", "finalize"): {"ready"},
    ("batch", "settle"): {"all_done", "threshold_met"},
    ("webhook", "send"): {"attempts_left"},
    ("webhook", "fail"): {"attempts_left"},
}


@pytest.mark.parametrize("machine", list(TERMINAL))
def test_terminal_states_and_guards_needed(machine: str) -> None:
    definition = DEFS[machine]
    assert {str(s) for s in definition.states if definition.is_terminal(s)} == TERMINAL[machine]
    for trigger in definition.triggers:
        assert definition.guards_needed(trigger) == GUARDS_NEEDED.get((machine, str(trigger)), set())


def test_apply_refuses_what_it_cannot_answer() -> None:
    with pytest.raises(KeyError) as caught:
        JOB.apply("active", "fail")  # a guarded pair and no facts: an error, never "false"
    assert caught.value.args == ("job: guard 'retries_left' needs a fact, none given",)
    with pytest.raises(ValueError, match="unknown state") as unknown_state:
        JOB.apply("nowhere", "claim")
    assert str(unknown_state.value) == "job: unknown state 'nowhere'"
    with pytest.raises(ValueError, match="unknown trigger") as unknown_trigger:
        JOB.apply("queued", "teleport")
    assert str(unknown_trigger.value) == "job: unknown trigger 'teleport'"


def test_initial_state_follows_the_facts() -> None:
    assert str(JOB.initial_state().state) == "queued"
    assert str(JOB.initial_state({}).state) == "queued"  # an absent fact is false
    assert str(JOB.initial_state({"delayed": False}).state) == "queued"
    assert str(JOB.initial_state({"delayed": True}).state) == "scheduled"


# -- the facts functions -----------------------------------------------------------------------

# (members, expected, closed, completed, failed, cancelled, threshold, stuck) -> (ready, all_done,
# threshold_met), worked out by hand from SPEC's batch rules.
BATCH_FACTS = [
    ((3, None, True, 3, 0, 0, 100, False), (True, True, True)),
    ((3, None, True, 1, 1, 1, 100, False), (True, True, False)),    # every member terminal
    ((4, None, True, 1, 1, 1, 100, False), (False, False, False)),  # one still running
    ((4, None, True, 2, 0, 0, 50, False), (True, False, True)),     # 200 >= 200: met at equality
    ((3, None, True, 2, 0, 0, 67, False), (False, False, False)),   # 200 < 201
    ((1, None, True, 1, 0, 0, 100, False), (True, True, True)),
    ((1, None, True, 0, 0, 0, 1, False), (False, False, False)),
    ((0, None, True, 0, 0, 0, 100, False), (True, True, False)),    # an empty closed batch is done
    ((2, 5, False, 2, 0, 0, 100, False), (False, False, False)),    # size 5 until closed
    ((2, 5, False, 1, 1, 0, 40, False), (False, False, False)),     # 100 < 200: not met
    ((2, 5, True, 1, 1, 0, 50, False), (True, True, True)),         # closed: size is its members
    ((2, None, False, 2, 0, 0, 100, False), (False, False, True)),  # size unknown: not ready
    ((2, None, False, 2, 0, 0, 100, True), (True, False, True)),    # ... unless stuck
    ((3, 3, False, 2, 0, 2, 100, False), (True, True, False)),      # terminal counts: 4 >= 3
]


@pytest.mark.parametrize(("counters", "expected"), BATCH_FACTS)
def test_batch_facts(counters: tuple[Any, ...], expected: tuple[bool, bool, bool]) -> None:
    members, total, closed, completed, failed, cancelled, threshold, stuck = counters
    facts = batch_facts(members=members, expected=total, closed=closed, completed=completed,
                        failed=failed, cancelled=cancelled, threshold=threshold, stuck=stuck)
    assert facts == dict(zip(("ready", "all_done", "threshold_met"), expected, strict=True))


def test_batch_facts_are_not_stuck_unless_told() -> None:
    facts = batch_facts(members=2, expected=None, closed=False, completed=0, failed=0, cancelled=0,
                        threshold=100)
    assert facts == {"ready": False, "all_done": False, "threshold_met": False}


def test_batch_total() -> None:
    assert batch_total(members=2, expected=5, closed=False) == 5
    assert batch_total(members=2, expected=5, closed=True) == 2
    assert batch_total(members=2, expected=None, closed=False) == 2


def test_job_facts() -> None:
    assert job_facts(retry_count=0, max_retries=1, has_validator=True) == {
        "has_validator": True, "retries_left": True}
    assert job_facts(retry_count=1, max_retries=1, has_validator=False) == {
        "has_validator": False, "retries_left": False}


# -- the ready-made models: every field after every step ---------------------------------------

JOB_FIELDS = ("state", "max_retries", "has_validator", "retry_count", "attempts", "epoch", "phases",
              "phase_results", "interrupted", "outcomes", "leased", "finished", "reason")


def _job(model: JobModel) -> dict[str, Any]:
    seen = {name: getattr(model, name) for name in JOB_FIELDS}
    seen["phases"] = {k: str(v) for k, v in model.phases.items()}
    return seen


def test_a_job_model_through_retries_timeout_retry_and_completion() -> None:
    machine = JobMachine()
    job = machine.attach(JobModel(max_retries=1, phases=("fetch", "store")))
    want: dict[str, Any] = {
        "state": "queued", "max_retries": 1, "has_validator": False, "retry_count": 0, "attempts": 0,
        "epoch": 0, "phases": {"fetch": "pending", "store": "pending"}, "phase_results": {},
        "interrupted": [], "outcomes": [], "leased": False, "finished": False, "reason": "",
    }
    assert _job(job) == want

    def step(trigger: str, **changes: Any) -> None:
        assert machine.fire(job, trigger)
        want.update(changes)
        assert _job(job) == want, trigger

    step("claim", state="active", attempts=1, leased=True)
    job.start_phase("fetch")
    job.complete_phase("fetch", {"rows": 3})
    job.start_phase("store")
    want.update(phases={"fetch": "completed", "store": "running"}, phase_results={"fetch": {"rows": 3}})
    step("fail", state="scheduled", phases={"fetch": "completed", "store": "failed"}, interrupted=["store"],
         outcomes=["failed"], leased=False, retry_count=1, reason="handler_error")
    step("wake", state="queued", reason="")
    step("claim", state="active", attempts=2, leased=True, phases={"fetch": "completed", "store": "pending"})
    step("timeout", state="timed_out", interrupted=["store", None], outcomes=["failed", "timed_out"],
         leased=False, reason="timed_out", finished=True)
    step("retry", state="queued", retry_count=0, epoch=1, finished=False, reason="")
    step("claim", state="active", attempts=3, leased=True)
    step("lease_expired", state="scheduled", interrupted=["store", None, None],
         outcomes=["failed", "timed_out", "worker_lost"], leased=False, retry_count=1, reason="worker_lost")
    step("wake", state="queued", reason="")
    step("claim", state="active", attempts=4, leased=True)
    step("complete", state="completed", outcomes=["failed", "timed_out", "worker_lost", "succeeded"],
         leased=False, finished=True)
    assert not machine.fire(job, "complete")  # absorbed: nothing moves
    assert _job(job) == want


def test_a_job_model_through_validation_cancel_and_release() -> None:
    machine = JobMachine()
    job = machine.attach(JobModel(has_validator=True, max_retries=0))
    assert machine.fire(job, "claim")
    assert machine.fire(job, "release")
    assert (job.state, job.outcomes, job.leased, job.attempts, job.reason) == (
        "queued", ["interrupted"], False, 1, "")
    assert machine.fire(job, "claim")
    assert machine.fire(job, "complete")
    assert (job.state, job.outcomes, job.leased, job.finished, job.reason) == (
        "validating", ["interrupted", "succeeded"], False, False, "")
    assert machine.fire(job, "validation_exhausted")
    assert (job.state, job.finished, job.reason) == ("validation_failed", True, "validation_failed")
    assert machine.fire(job, "retry")  # validation again: no new attempt, the same retries
    assert (job.state, job.finished, job.reason, job.epoch, job.attempts) == ("validating", False, "", 1, 2)
    assert machine.fire(job, "validation_passed")
    assert (job.state, job.finished, job.reason) == ("completed", True, "")
    other = machine.attach(JobModel(max_retries=0))
    assert machine.fire(other, "claim")
    assert machine.fire(other, "cancel")
    assert (other.state, other.outcomes, other.leased, other.finished, other.reason) == (
        "cancelled", ["cancelled"], False, True, "cancelled")
    assert machine.fire(other, "retry_from_start")
    assert (other.state, other.finished, other.reason, other.epoch) == ("queued", False, "", 1)


def test_a_job_model_retries_left_until_max_retries() -> None:
    job = JobModel(max_retries=2)
    assert job.retries_left
    job.retry_count = 2
    assert not job.retries_left
    assert JobModel(has_validator=True)._facts() == {"has_validator": True, "retries_left": True}


BATCH_FIELDS = ("state", "members", "expected", "threshold", "progress_every", "closed", "completed",
                "failed", "cancelled", "stuck", "touches", "ended", "reason", "progress_events")


def _batch(model: BatchModel) -> dict[str, Any]:
    return {name: getattr(model, name) for name in BATCH_FIELDS}


def test_a_batch_model_with_an_expected_total_through_partial_completion() -> None:
    machine = BatchMachine()
    batch = machine.attach(BatchModel(expected=3, closed=False, threshold=60, progress_every=2))
    want: dict[str, Any] = {
        "state": "open", "members": 0, "expected": 3, "threshold": 60, "progress_every": 2, "closed": False,
        "completed": 0, "failed": 0, "cancelled": 0, "stuck": False, "touches": 0, "ended": False,
        "reason": "", "progress_events": [],
    }
    assert _batch(batch) == want
    assert batch.add_members(2) is False
    assert batch.add_members(1) is True  # the expected total is reached: close is due
    with pytest.raises(ValueError, match="no more members") as full:
        batch.add_members(1)
    assert str(full.value) == "no more members can be added"
    want["members"] = 3
    assert _batch(batch) == want
    assert (batch.total, batch.ready) == (3, False)
    assert machine.fire(batch, "close")
    want.update(state="running", closed=True)
    for outcome, changes in (("completed", {"completed": 1}), ("failed", {"failed": 1}),
                             ("completed", {"completed": 2, "progress_events": [2]})):
        batch.member_finished(outcome)
        assert machine.fire(batch, "member_done")
        want.update(changes, touches=want["touches"] + 1)
        assert _batch(batch) == want
    assert (batch.finished, batch.all_done, batch.threshold_met, batch.ready) == (3, True, True, True)
    assert machine.fire(batch, "finalize")
    assert machine.fire(batch, "settle")
    want.update(state="completed", ended=True)
    assert _batch(batch) == want


def test_a_batch_model_failing_its_threshold_and_a_cancelled_one() -> None:
    machine = BatchMachine()
    batch = machine.attach(BatchModel(total=3, threshold=100))
    batch.member_finished("cancelled")
    batch.member_finished("completed")
    assert (batch.completed, batch.cancelled, batch.failed, batch.progress_events) == (1, 1, 0, [])
    assert not machine.fire(batch, "finalize")  # one member still running
    batch.stuck = True  # the stuck sweep
    assert machine.fire(batch, "finalize")
    assert machine.fire(batch, "settle")
    assert (batch.state, batch.reason, batch.ended) == ("failed", "stuck", True)
    other = machine.attach(BatchModel(total=1))
    assert machine.fire(other, "cancel")
    assert (other.state, other.reason, other.ended) == ("cancelled", "cancelled", True)


def test_a_batch_model_refuses_members_once_closed() -> None:
    batch = BatchModel(total=1)
    with pytest.raises(ValueError, match="no more members") as closed:
        batch.add_members()
    assert str(closed.value) == "no more members can be added"
    growing = BatchModel(closed=False)
    assert growing.add_members() is False
    assert growing.add_members(2) is False
    assert growing.members == 3


def test_a_delivery_model_counts_and_resets_its_attempts() -> None:
    machine = WebhookMachine()
    delivery = machine.attach(DeliveryModel(max_attempts=2))
    assert (delivery.max_attempts, delivery.attempts, delivery.attempts_left) == (2, 0, True)
    assert machine.fire(delivery, "send")
    assert machine.fire(delivery, "fail")
    assert machine.fire(delivery, "send")
    assert machine.fire(delivery, "fail")
    assert (delivery.state, delivery.attempts, delivery.attempts_left) == ("dead", 2, False)
    assert machine.fire(delivery, "redeliver")
    assert (delivery.state, delivery.attempts, delivery.attempts_left) == ("pending", 0, True)


def test_model_defaults() -> None:
    job = JobModel()
    assert (job.max_retries, job.has_validator, job.attempts, job.phases) == (3, False, 0, {})
    batch = BatchModel()
    assert (batch.members, batch.expected, batch.threshold, batch.progress_every, batch.closed) == (
        0, None, 100, 0, True)
    assert DeliveryModel().max_attempts == 5


@pytest.mark.parametrize(("make", "message"), [
    (lambda: JobModel(max_retries=-1), "max_retries must be >= 0"),
    (lambda: BatchModel(threshold=0), "threshold must be within 1..100"),
    (lambda: BatchModel(threshold=101), "threshold must be within 1..100"),
    (lambda: BatchModel(total=4, expected=3), "a batch never holds more members than its expected total"),
    (lambda: BatchModel(total=-1, expected=3), "a batch never holds more members than its expected total"),
    (lambda: DeliveryModel(max_attempts=0), "max_attempts must be >= 1"),
])
def test_model_constructors_refuse_bad_values(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        make()
    assert str(caught.value) == message


def test_model_constructors_accept_the_bounds() -> None:
    assert BatchModel(threshold=100).threshold == 100
    assert BatchModel(threshold=1).threshold == 1
    assert BatchModel(total=0, expected=3).members == 0
    assert BatchModel(total=3, expected=3).members == 3
    assert JobModel(max_retries=0).max_retries == 0
    assert DeliveryModel(max_attempts=1).max_attempts == 1


# -- the embeddable machine's wiring -----------------------------------------------------------


class Order:
    """A model keeping its state under another name, declaring its trigger placeholders."""

    def __init__(self) -> None:
        self.status = "pending"
        self.attempts_left = True

    def send(self) -> bool:  # a placeholder transitions overrides with the trigger
        raise AssertionError("not bound")


def test_an_embedded_machine_binds_only_what_it_is_told() -> None:
    machine = EmbeddedMachine(WEBHOOK, model_attribute="status", model_override=True)
    assert machine.definition is WEBHOOK
    assert machine._machine.models == []  # no model until one is attached (not the machine itself)
    order = machine.attach(Order())
    assert machine.state_of(order) == "pending"
    assert not hasattr(order, "state")
    assert order.send() is True
    assert order.status == "sending"
    assert not hasattr(order, "fail")  # model_override: only the declared placeholders are bound
    machine.detach(order)
    assert machine._machine.models == []


def test_absorption_is_logged_with_the_machine_and_trigger(caplog: pytest.LogCaptureFixture) -> None:
    machine = JobMachine()
    job = machine.attach(JobModel(), initial="completed")
    with caplog.at_level(logging.INFO, logger="jobvisor.machines.embed"):
        assert not machine.fire(job, "cancel")
    assert [r.getMessage() for r in caplog.records] == [
        "job: 'cancel' absorbed in terminal state 'completed' (no change)"]


def test_a_callable_without_a_signature_is_called_with_no_argument() -> None:
    class NoSignature:
        __signature__ = "not a signature"  # inspect.signature raises TypeError on it

        def __call__(self, *args: Any) -> None:
            return None

    assert _takes_trigger(NoSignature()) is False


# -- the package's lazy exports ----------------------------------------------------------------


def test_the_package_exports_the_embeddable_forms_lazily() -> None:
    from jobvisor.machines import embed

    for name in ("EmbeddedMachine", "JobMachine", "PhaseMachine", "BatchMachine", "WebhookMachine"):
        assert getattr(machines, name) is getattr(embed, name)
        assert name in dir(machines)
    assert {"JOB", "to_mermaid", "MACHINES"} <= set(dir(machines))
    assert dir(machines) == sorted(dir(machines))
    with pytest.raises(AttributeError) as caught:
        _ = machines.NoSuchMachine  # type: ignore[attr-defined]
    assert str(caught.value) == f"module {machines.__name__!r} has no attribute 'NoSuchMachine'"


# -- diagrams with effects ---------------------------------------------------------------------

# The batch machine's diagram with effects, written from its table (SPEC.md's batch rules).
BATCH_WITH_EFFECTS = """stateDiagram-v2
    direction LR
    [*] --> open: create / touch
    open --> running: close / mark_closed
    open --> open: member_done / touch
    running --> running: member_done / touch
    finalizing --> finalizing: member_done / touch
    open --> finalizing: finalize [ready]
    running --> finalizing: finalize [ready]
    finalizing --> completed: settle [all_done] / finish, notify
    finalizing --> completed_partial: settle [threshold_met] / finish, notify
    finalizing --> failed: settle / record_reason, finish, notify
    open --> cancelled: cancel / record_reason, finish, cancel_members
    running --> cancelled: cancel / record_reason, finish, cancel_members
    completed --> [*]
    completed_partial --> [*]
    failed --> [*]
    cancelled --> [*]
    note right of completed
        terminal, absorbing every other trigger: completed, completed_partial, failed, cancelled
    end note"""


def test_the_diagram_with_effects() -> None:
    assert to_mermaid(BATCH, effects=True) == BATCH_WITH_EFFECTS
    job = to_mermaid(JOB, effects=True).splitlines()
    assert "    [*] --> scheduled: submit with delay / arm_delay" in job
    assert "    [*] --> queued: submit / wake_workers" in job
    retry = "interrupt_phase, end_attempt, record_error, count_retry, arm_backoff, record_reason"
    assert (f"    active --> scheduled: fail [retries_left] / {retry} | timeout [retries_left] / {retry}"
            f" | lease_expired [retries_left] / {retry}") in job
    plain = to_mermaid(PHASE).splitlines()
    assert "    [*] --> pending: job submitted" in plain


def test_a_start_with_several_effects_lists_them_in_the_diagram() -> None:
    start = dataclasses.replace(JOB.initial[-1], effects=("wake_workers", "arm_delay"))
    definition = dataclasses.replace(JOB, initial=(*JOB.initial[:-1], start))
    assert "    [*] --> queued: submit / wake_workers, arm_delay" in to_mermaid(definition, effects=True)


def test_a_batch_model_judges_its_expected_total_until_closed() -> None:
    batch = BatchModel(expected=3, closed=False)
    batch.add_members(2)
    batch.member_finished("completed")
    batch.member_finished("completed")
    assert batch.facts() == {"ready": False, "all_done": False, "threshold_met": False}


# -- MachineDef accepts a table whose maps name every state and trigger ------------------------


class Light(StrEnum):
    OFF = "off"
    ON = "on"


class Switch(StrEnum):
    FLIP = "flip"


def test_a_table_may_name_every_state_and_trigger() -> None:
    """Each map may cover the whole machine (a subset, not a proper one): no refusal."""
    definition = MachineDef(
        name="light", states=Light, triggers=Switch, terminal=frozenset({Light.ON}),
        initial=(Start(Light.OFF, "installed"),),
        rows=(Row(Switch.FLIP, (Light.OFF, Light.ON), Light.ON, effects=("notify",)),),
        effects_doc={"notify": "say so"}, notifications={Light.OFF: "light.off", Light.ON: "light.on"},
        unfenced=frozenset(Switch), reasons={Switch.FLIP: "flipped"}, outcomes={Switch.FLIP: "flipped"},
    )
    assert definition.apply("off", "flip").notify == "light.on"
    assert definition.apply("on", "flip").dest == Light.ON
