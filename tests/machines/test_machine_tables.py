"""Every (state, trigger) pair of every machine, written by hand from SPEC.md.

Theory of operation
-------------------
The tables below are the contract, typed out again by a reader of SPEC.md
(and of the design decisions in the machines' module docstrings: the phase,
batch and webhook trigger names, the job's ``release``). They are literal
strings on purpose: nothing here is read from ``machines/``, so a row changed
in the machine's table and not here is a failing test, not a silent drift
(h11's warning). Only the coverage test reads the enums, to prove that the
hand tables name every pair and nothing else.

Semantic rules the rows follow:

* a terminal state absorbs every trigger that has no row leaving it
  (``completed`` absorbs even the operator's ``retry``);
* a non-terminal state with no row for a trigger is invalid: the trigger
  raises ``InvalidTransition`` naming machine, state and trigger, and the
  state stays as it was;
* a guarded pair is written once per outcome, with the guard facts that
  select it (``if retries_left then scheduled else failed`` is two rows).

Each pair is then checked three ways: the pure form (``DEF.apply``), the
embeddable ``transitions`` form (``EmbeddedMachine(DEF).fire``) on a small
model that records every effect it is asked to perform, and the two forms
against each other for every combination of guard facts.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobvisor.machines import BATCH, JOB, PHASE, WEBHOOK, InvalidTransition, JobModel
from jobvisor.machines.embed import BatchMachine, EmbeddedMachine, JobMachine, PhaseMachine, WebhookMachine

# ---------------------------------------------------------------------------
# The hand tables.
#
# Notation, one row per line:
#   (state, trigger, when, outcome, dest)
#   when     "-"              no guard is involved: the outcome holds whatever the facts
#            "retries_left"   the row applies when that guard fact is true
#            "!retries_left"  ... when it is false; several facts are space-separated
#   outcome  moved            a row matched; the state is now `dest`
#                             (dest == state: an internal row, effects but no move)
#            absorbed         terminal state, no row leaves it: no change, no effect
#            blocked          rows exist but every guard is false: no change
#            invalid          InvalidTransition, no change
#   dest     the state afterwards for moved rows, "-" otherwise
# ---------------------------------------------------------------------------

Row = tuple[str, str, str, str, str]

# Job: SPEC.md "Job state machine". 10 states x 14 triggers. `release` is the
# shutdown decision documented in machines/job.py (an interrupted attempt goes
# back to queued, no retry consumed); SPEC.md's shutdown ladder needs it.
JOB_TABLE: list[Row] = [
    # state               trigger                 when              outcome     dest
    # waiting: a job whose dependencies are not yet done; released (deps_done), failed by a
    # dependency under policy `fail` (dependency_failed), or cancelled.
    ("waiting",           "claim",                "-",              "invalid",  "-"),
    ("waiting",           "wake",                 "-",              "invalid",  "-"),
    ("waiting",           "complete",             "-",              "invalid",  "-"),
    ("waiting",           "fail",                 "-",              "invalid",  "-"),
    ("waiting",           "timeout",              "-",              "invalid",  "-"),
    ("waiting",           "lease_expired",        "-",              "invalid",  "-"),
    ("waiting",           "release",              "-",              "invalid",  "-"),
    ("waiting",           "cancel",               "-",              "moved",    "cancelled"),
    ("waiting",           "validation_passed",    "-",              "invalid",  "-"),
    ("waiting",           "validation_exhausted", "-",              "invalid",  "-"),
    ("waiting",           "retry",                "-",              "invalid",  "-"),
    ("waiting",           "retry_from_start",     "-",              "invalid",  "-"),
    ("waiting",           "deps_done",            "-",              "moved",    "queued"),
    ("waiting",           "dependency_failed",    "-",              "moved",    "failed"),

    ("queued",            "claim",                "-",              "moved",    "active"),
    ("queued",            "wake",                 "-",              "invalid",  "-"),
    ("queued",            "complete",             "-",              "invalid",  "-"),
    ("queued",            "fail",                 "-",              "invalid",  "-"),
    ("queued",            "timeout",              "-",              "invalid",  "-"),
    ("queued",            "lease_expired",        "-",              "invalid",  "-"),
    ("queued",            "release",              "-",              "invalid",  "-"),
    ("queued",            "cancel",               "-",              "moved",    "cancelled"),
    ("queued",            "validation_passed",    "-",              "invalid",  "-"),
    ("queued",            "validation_exhausted", "-",              "invalid",  "-"),
    ("queued",            "retry",                "-",              "invalid",  "-"),
    ("queued",            "retry_from_start",     "-",              "invalid",  "-"),
    ("queued",            "deps_done",            "-",              "invalid",  "-"),
    ("queued",            "dependency_failed",    "-",              "invalid",  "-"),

    ("scheduled",         "claim",                "-",              "invalid",  "-"),
    ("scheduled",         "wake",                 "-",              "moved",    "queued"),
    ("scheduled",         "complete",             "-",              "invalid",  "-"),
    ("scheduled",         "fail",                 "-",              "invalid",  "-"),
    ("scheduled",         "timeout",              "-",              "invalid",  "-"),
    ("scheduled",         "lease_expired",        "-",              "invalid",  "-"),
    ("scheduled",         "release",              "-",              "invalid",  "-"),
    ("scheduled",         "cancel",               "-",              "moved",    "cancelled"),
    ("scheduled",         "validation_passed",    "-",              "invalid",  "-"),
    ("scheduled",         "validation_exhausted", "-",              "invalid",  "-"),
    ("scheduled",         "retry",                "-",              "invalid",  "-"),
    ("scheduled",         "retry_from_start",     "-",              "invalid",  "-"),
    ("scheduled",         "deps_done",            "-",              "invalid",  "-"),
    ("scheduled",         "dependency_failed",    "-",              "invalid",  "-"),

    ("active",            "claim",                "-",              "invalid",  "-"),
    ("active",            "wake",                 "-",              "invalid",  "-"),
    ("active",            "complete",             "has_validator",  "moved",    "validating"),
    ("active",            "complete",             "!has_validator", "moved",    "completed"),
    ("active",            "fail",                 "retries_left",   "moved",    "scheduled"),
    ("active",            "fail",                 "!retries_left",  "moved",    "failed"),
    ("active",            "timeout",              "retries_left",   "moved",    "scheduled"),
    ("active",            "timeout",              "!retries_left",  "moved",    "timed_out"),
    ("active",            "lease_expired",        "retries_left",   "moved",    "scheduled"),
    ("active",            "lease_expired",        "!retries_left",  "moved",    "failed"),
    ("active",            "release",              "-",              "moved",    "queued"),
    ("active",            "cancel",               "-",              "moved",    "cancelled"),
    ("active",            "validation_passed",    "-",              "invalid",  "-"),
    ("active",            "validation_exhausted", "-",              "invalid",  "-"),
    ("active",            "retry",                "-",              "invalid",  "-"),
    ("active",            "retry_from_start",     "-",              "invalid",  "-"),
    ("active",            "deps_done",            "-",              "invalid",  "-"),
    ("active",            "dependency_failed",    "-",              "invalid",  "-"),

    ("validating",        "claim",                "-",              "invalid",  "-"),
    ("validating",        "wake",                 "-",              "invalid",  "-"),
    ("validating",        "complete",             "-",              "invalid",  "-"),
    ("validating",        "fail",                 "-",              "invalid",  "-"),
    ("validating",        "timeout",              "-",              "invalid",  "-"),
    ("validating",        "lease_expired",        "-",              "invalid",  "-"),
    ("validating",        "release",              "-",              "invalid",  "-"),
    ("validating",        "cancel",               "-",              "moved",    "cancelled"),
    ("validating",        "validation_passed",    "-",              "moved",    "completed"),
    ("validating",        "validation_exhausted", "-",              "moved",    "validation_failed"),
    ("validating",        "retry",                "-",              "invalid",  "-"),
    ("validating",        "retry_from_start",     "-",              "invalid",  "-"),
    ("validating",        "deps_done",            "-",              "invalid",  "-"),
    ("validating",        "dependency_failed",    "-",              "invalid",  "-"),

    # completed is absorbing for everything, the operator's retries included.
    ("completed",         "claim",                "-",              "absorbed", "-"),
    ("completed",         "wake",                 "-",              "absorbed", "-"),
    ("completed",         "complete",             "-",              "absorbed", "-"),
    ("completed",         "fail",                 "-",              "absorbed", "-"),
    ("completed",         "timeout",              "-",              "absorbed", "-"),
    ("completed",         "lease_expired",        "-",              "absorbed", "-"),
    ("completed",         "release",              "-",              "absorbed", "-"),
    ("completed",         "cancel",               "-",              "absorbed", "-"),
    ("completed",         "validation_passed",    "-",              "absorbed", "-"),
    ("completed",         "validation_exhausted", "-",              "absorbed", "-"),
    ("completed",         "retry",                "-",              "absorbed", "-"),
    ("completed",         "retry_from_start",     "-",              "absorbed", "-"),
    ("completed",         "deps_done",            "-",              "absorbed", "-"),
    ("completed",         "dependency_failed",    "-",              "absorbed", "-"),

    ("failed",            "claim",                "-",              "absorbed", "-"),
    ("failed",            "wake",                 "-",              "absorbed", "-"),
    ("failed",            "complete",             "-",              "absorbed", "-"),
    ("failed",            "fail",                 "-",              "absorbed", "-"),
    ("failed",            "timeout",              "-",              "absorbed", "-"),
    ("failed",            "lease_expired",        "-",              "absorbed", "-"),
    ("failed",            "release",              "-",              "absorbed", "-"),
    ("failed",            "cancel",               "-",              "absorbed", "-"),
    ("failed",            "validation_passed",    "-",              "absorbed", "-"),
    ("failed",            "validation_exhausted", "-",              "absorbed", "-"),
    ("failed",            "retry",                "-",              "moved",    "queued"),
    ("failed",            "retry_from_start",     "-",              "moved",    "queued"),
    ("failed",            "deps_done",            "-",              "absorbed", "-"),
    ("failed",            "dependency_failed",    "-",              "absorbed", "-"),

    ("cancelled",         "claim",                "-",              "absorbed", "-"),
    ("cancelled",         "wake",                 "-",              "absorbed", "-"),
    ("cancelled",         "complete",             "-",              "absorbed", "-"),
    ("cancelled",         "fail",                 "-",              "absorbed", "-"),
    ("cancelled",         "timeout",              "-",              "absorbed", "-"),
    ("cancelled",         "lease_expired",        "-",              "absorbed", "-"),
    ("cancelled",         "release",              "-",              "absorbed", "-"),
    ("cancelled",         "cancel",               "-",              "absorbed", "-"),
    ("cancelled",         "validation_passed",    "-",              "absorbed", "-"),
    ("cancelled",         "validation_exhausted", "-",              "absorbed", "-"),
    ("cancelled",         "retry",                "-",              "moved",    "queued"),
    ("cancelled",         "retry_from_start",     "-",              "moved",    "queued"),
    ("cancelled",         "deps_done",            "-",              "absorbed", "-"),
    ("cancelled",         "dependency_failed",    "-",              "absorbed", "-"),

    ("timed_out",         "claim",                "-",              "absorbed", "-"),
    ("timed_out",         "wake",                 "-",              "absorbed", "-"),
    ("timed_out",         "complete",             "-",              "absorbed", "-"),
    ("timed_out",         "fail",                 "-",              "absorbed", "-"),
    ("timed_out",         "timeout",              "-",              "absorbed", "-"),
    ("timed_out",         "lease_expired",        "-",              "absorbed", "-"),
    ("timed_out",         "release",              "-",              "absorbed", "-"),
    ("timed_out",         "cancel",               "-",              "absorbed", "-"),
    ("timed_out",         "validation_passed",    "-",              "absorbed", "-"),
    ("timed_out",         "validation_exhausted", "-",              "absorbed", "-"),
    ("timed_out",         "retry",                "-",              "moved",    "queued"),
    ("timed_out",         "retry_from_start",     "-",              "moved",    "queued"),
    ("timed_out",         "deps_done",            "-",              "absorbed", "-"),
    ("timed_out",         "dependency_failed",    "-",              "absorbed", "-"),

    # retry from validation_failed only re-runs validation; --from-start re-runs the job.
    ("validation_failed", "claim",                "-",              "absorbed", "-"),
    ("validation_failed", "wake",                 "-",              "absorbed", "-"),
    ("validation_failed", "complete",             "-",              "absorbed", "-"),
    ("validation_failed", "fail",                 "-",              "absorbed", "-"),
    ("validation_failed", "timeout",              "-",              "absorbed", "-"),
    ("validation_failed", "lease_expired",        "-",              "absorbed", "-"),
    ("validation_failed", "release",              "-",              "absorbed", "-"),
    ("validation_failed", "cancel",               "-",              "absorbed", "-"),
    ("validation_failed", "validation_passed",    "-",              "absorbed", "-"),
    ("validation_failed", "validation_exhausted", "-",              "absorbed", "-"),
    ("validation_failed", "retry",                "-",              "moved",    "validating"),
    ("validation_failed", "retry_from_start",     "-",              "moved",    "queued"),
    ("validation_failed", "deps_done",            "-",              "absorbed", "-"),
    ("validation_failed", "dependency_failed",    "-",              "absorbed", "-"),
]

# Phase: SPEC.md "Phases" plus machines/phase.py. Terminal: completed, cancelled.
# `reset` (next attempt) revives failed, cancelled and interrupted (running)
# phases and keeps completed ones; `rewind` (--from-start) revives every phase
# that is not already pending.
PHASE_TABLE: list[Row] = [
    # state       trigger     when  outcome     dest
    ("pending",   "start",    "-",  "moved",    "running"),
    ("pending",   "complete", "-",  "invalid",  "-"),
    ("pending",   "fail",     "-",  "invalid",  "-"),
    ("pending",   "cancel",   "-",  "moved",    "cancelled"),
    ("pending",   "reset",    "-",  "invalid",  "-"),
    ("pending",   "rewind",   "-",  "invalid",  "-"),

    ("running",   "start",    "-",  "invalid",  "-"),
    ("running",   "complete", "-",  "moved",    "completed"),
    ("running",   "fail",     "-",  "moved",    "failed"),
    ("running",   "cancel",   "-",  "moved",    "cancelled"),
    ("running",   "reset",    "-",  "moved",    "pending"),
    ("running",   "rewind",   "-",  "moved",    "pending"),

    ("completed", "start",    "-",  "absorbed", "-"),
    ("completed", "complete", "-",  "absorbed", "-"),
    ("completed", "fail",     "-",  "absorbed", "-"),
    ("completed", "cancel",   "-",  "absorbed", "-"),
    ("completed", "reset",    "-",  "absorbed", "-"),
    ("completed", "rewind",   "-",  "moved",    "pending"),

    ("failed",    "start",    "-",  "invalid",  "-"),
    ("failed",    "complete", "-",  "invalid",  "-"),
    ("failed",    "fail",     "-",  "invalid",  "-"),
    ("failed",    "cancel",   "-",  "moved",    "cancelled"),
    ("failed",    "reset",    "-",  "moved",    "pending"),
    ("failed",    "rewind",   "-",  "moved",    "pending"),

    ("cancelled", "start",    "-",  "absorbed", "-"),
    ("cancelled", "complete", "-",  "absorbed", "-"),
    ("cancelled", "fail",     "-",  "absorbed", "-"),
    ("cancelled", "cancel",   "-",  "absorbed", "-"),
    ("cancelled", "reset",    "-",  "moved",    "pending"),
    ("cancelled", "rewind",   "-",  "moved",    "pending"),
]

# Batch: SPEC.md "Batch state machine" plus machines/batch.py. Every ending
# funnels into the guarded `finalize`; `settle` picks completed (all done),
# completed_partial (threshold met, members remain) or failed. `member_done`
# is internal while the batch lives and absorbed once it is terminal (late
# member completions never change the batch state).
BATCH_TABLE: list[Row] = [
    # state               trigger        when                        outcome     dest
    ("open",              "close",       "-",                        "moved",    "running"),
    ("open",              "member_done", "-",                        "moved",    "open"),
    ("open",              "finalize",    "ready",                    "moved",    "finalizing"),
    ("open",              "finalize",    "!ready",                   "blocked",  "-"),
    ("open",              "settle",      "-",                        "invalid",  "-"),
    ("open",              "cancel",      "-",                        "moved",    "cancelled"),

    ("running",           "close",       "-",                        "invalid",  "-"),
    ("running",           "member_done", "-",                        "moved",    "running"),
    ("running",           "finalize",    "ready",                    "moved",    "finalizing"),
    ("running",           "finalize",    "!ready",                   "blocked",  "-"),
    ("running",           "settle",      "-",                        "invalid",  "-"),
    ("running",           "cancel",      "-",                        "moved",    "cancelled"),

    ("finalizing",        "close",       "-",                        "invalid",  "-"),
    ("finalizing",        "member_done", "-",                        "moved",    "finalizing"),
    ("finalizing",        "finalize",    "-",                        "invalid",  "-"),
    ("finalizing",        "settle",      "all_done",                 "moved",    "completed"),
    ("finalizing",        "settle",      "!all_done threshold_met",  "moved",    "completed_partial"),
    ("finalizing",        "settle",      "!all_done !threshold_met", "moved",    "failed"),
    ("finalizing",        "cancel",      "-",                        "invalid",  "-"),

    ("completed",         "close",       "-",                        "absorbed", "-"),
    ("completed",         "member_done", "-",                        "absorbed", "-"),
    ("completed",         "finalize",    "-",                        "absorbed", "-"),
    ("completed",         "settle",      "-",                        "absorbed", "-"),
    ("completed",         "cancel",      "-",                        "absorbed", "-"),

    ("completed_partial", "close",       "-",                        "absorbed", "-"),
    ("completed_partial", "member_done", "-",                        "absorbed", "-"),
    ("completed_partial", "finalize",    "-",                        "absorbed", "-"),
    ("completed_partial", "settle",      "-",                        "absorbed", "-"),
    ("completed_partial", "cancel",      "-",                        "absorbed", "-"),

    ("failed",            "close",       "-",                        "absorbed", "-"),
    ("failed",            "member_done", "-",                        "absorbed", "-"),
    ("failed",            "finalize",    "-",                        "absorbed", "-"),
    ("failed",            "settle",      "-",                        "absorbed", "-"),
    ("failed",            "cancel",      "-",                        "absorbed", "-"),

    ("cancelled",         "close",       "-",                        "absorbed", "-"),
    ("cancelled",         "member_done", "-",                        "absorbed", "-"),
    ("cancelled",         "finalize",    "-",                        "absorbed", "-"),
    ("cancelled",         "settle",      "-",                        "absorbed", "-"),
    ("cancelled",         "cancel",      "-",                        "absorbed", "-"),
]

# Webhook delivery: SPEC.md "Webhook delivery state machine" plus
# machines/webhook.py. 2xx succeed; 5xx/429/timeouts fail (retry while
# attempts_left, else dead); other 4xx reject; release returns an in-flight
# delivery to pending; a send with no attempts left goes dead (attempts never
# exceed max_attempts, even after a release); an operator's redeliver takes a
# dead delivery back to pending (absorbed once delivered, refused on its way).
WEBHOOK_TABLE: list[Row] = [
    # state        trigger    when              outcome     dest
    ("pending",    "send",    "attempts_left",  "moved",    "sending"),
    ("pending",    "send",    "!attempts_left", "moved",    "dead"),
    ("pending",    "succeed", "-",              "invalid",  "-"),
    ("pending",    "fail",    "-",              "invalid",  "-"),
    ("pending",    "reject",  "-",              "invalid",  "-"),
    ("pending",    "release", "-",              "invalid",  "-"),
    ("pending",    "redeliver", "-",            "invalid",  "-"),

    ("sending",    "send",    "-",              "invalid",  "-"),
    ("sending",    "succeed", "-",              "moved",    "delivered"),
    ("sending",    "fail",    "attempts_left",  "moved",    "retry_wait"),
    ("sending",    "fail",    "!attempts_left", "moved",    "dead"),
    ("sending",    "reject",  "-",              "moved",    "dead"),
    ("sending",    "release", "-",              "moved",    "pending"),
    ("sending",    "redeliver", "-",            "invalid",  "-"),

    ("retry_wait", "send",    "attempts_left",  "moved",    "sending"),
    ("retry_wait", "send",    "!attempts_left", "moved",    "dead"),
    ("retry_wait", "succeed", "-",              "invalid",  "-"),
    ("retry_wait", "fail",    "-",              "invalid",  "-"),
    ("retry_wait", "reject",  "-",              "invalid",  "-"),
    ("retry_wait", "release", "-",              "invalid",  "-"),
    ("retry_wait", "redeliver", "-",            "invalid",  "-"),

    ("delivered",  "send",    "-",              "absorbed", "-"),
    ("delivered",  "succeed", "-",              "absorbed", "-"),
    ("delivered",  "fail",    "-",              "absorbed", "-"),
    ("delivered",  "reject",  "-",              "absorbed", "-"),
    ("delivered",  "release", "-",              "absorbed", "-"),
    ("delivered",  "redeliver", "-",            "absorbed", "-"),

    ("dead",       "send",    "-",              "absorbed", "-"),
    ("dead",       "succeed", "-",              "absorbed", "-"),
    ("dead",       "fail",    "-",              "absorbed", "-"),
    ("dead",       "reject",  "-",              "absorbed", "-"),
    ("dead",       "release", "-",              "absorbed", "-"),
    ("dead",       "redeliver", "-",            "moved",    "pending"),
]

HAND: dict[str, list[Row]] = {
    "job": JOB_TABLE,
    "phase": PHASE_TABLE,
    "batch": BATCH_TABLE,
    "webhook": WEBHOOK_TABLE,
}

# Every guard each machine reads, by hand (SPEC.md's conditions, the machines' names).
GUARDS: dict[str, tuple[str, ...]] = {
    "job": ("has_validator", "retries_left"),
    "phase": (),
    "batch": ("ready", "all_done", "threshold_met"),
    "webhook": ("attempts_left",),
}

# states x triggers. The job machine has 14 triggers (SPEC's 11, `release`, and the two that
# end `waiting`: `deps_done`, `dependency_failed`).
PAIR_COUNTS = {"job": 10 * 14, "phase": 5 * 6, "batch": 7 * 5, "webhook": 5 * 6}

DEFS: dict[str, Any] = {"job": JOB, "phase": PHASE, "batch": BATCH, "webhook": WEBHOOK}
EMBEDDED: dict[str, Callable[[], EmbeddedMachine]] = {
    "job": JobMachine,
    "phase": PhaseMachine,
    "batch": BatchMachine,
    "webhook": WebhookMachine,
}
OUTCOMES = ("moved", "absorbed", "blocked", "invalid")


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def _when(text: str) -> dict[str, bool]:
    """``"!all_done threshold_met"`` -> ``{"all_done": False, "threshold_met": True}``."""
    if text == "-":
        return {}
    return {word.lstrip("!"): not word.startswith("!") for word in text.split()}


def _all_facts(machine: str) -> Iterator[dict[str, bool]]:
    """Every combination of the machine's guard facts (one empty dict when it has none)."""
    names = GUARDS[machine]
    for values in itertools.product((False, True), repeat=len(names)):
        yield dict(zip(names, values, strict=True))


def _facts_for(machine: str, when: str) -> list[dict[str, bool]]:
    """Every full set of facts under which the row with this ``when`` applies."""
    needed = _when(when)
    return [f for f in _all_facts(machine) if all(f[k] == v for k, v in needed.items())]


def _pairs(machine: str) -> list[tuple[str, str]]:
    """The hand table's (state, trigger) pairs, in table order, without repeats."""
    return list(dict.fromkeys((state, trigger) for state, trigger, *_ in HAND[machine]))


def _row_id(machine: str, row: Row) -> str:
    state, trigger, when, _, _ = row
    return f"{machine}:{state}-{trigger}" + ("" if when == "-" else f"[{when}]")


ALL_ROWS = [(m, row) for m, rows in HAND.items() for row in rows]
ALL_PAIRS = [(m, s, t) for m in HAND for s, t in _pairs(m)]


class Probe:
    """A model for the embeddable form: guard facts as plain attributes.

    Every ``do_<effect>`` the machine asks for is recorded in ``performed``
    (rebinding a tuple, so a shallow snapshot of ``vars()`` is a faithful
    one). Any effect name is accepted, so an effect the table does not list
    still shows up in the record instead of being skipped.
    """

    def __init__(self, facts: dict[str, bool]) -> None:
        for name, value in facts.items():
            setattr(self, name, value)
        self.performed: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            effect = name[3:]

            def perform() -> None:
                self.performed = (*self.performed, effect)

            return perform
        raise AttributeError(name)


class Fired:
    """What firing one trigger on a fresh :class:`Probe` did, seen from outside."""

    def __init__(self, machine: str, state: str, trigger: str, facts: dict[str, bool],
                 caplog: pytest.LogCaptureFixture, embedded: EmbeddedMachine) -> None:
        self.model = Probe(facts)
        embedded.attach(self.model, initial=state)
        try:
            self.before = dict(vars(self.model))
            caplog.clear()
            self.error: InvalidTransition | None = None
            self.result: bool | None = None
            try:
                self.result = embedded.fire(self.model, trigger)
            except InvalidTransition as exc:
                self.error = exc
            self.after = dict(vars(self.model))
            self.absorbed_logs = [
                r for r in caplog.records
                if r.name == "jobvisor.machines.embed" and r.levelno == logging.INFO
                and "absorbed" in r.getMessage()
            ]
        finally:
            embedded.detach(self.model)

    @property
    def kind(self) -> str:
        if self.error is not None:
            return "invalid"
        if self.result:
            return "moved"
        return "absorbed" if self.absorbed_logs else "blocked"

    @property
    def state(self) -> str:
        return str(self.after["state"])


@pytest.fixture
def info_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="jobvisor.machines.embed")
    return caplog


# ---------------------------------------------------------------------------
# 1. The hand tables are complete and well formed.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("machine", list(HAND))
def test_hand_table_covers_every_pair(machine: str) -> None:
    definition = DEFS[machine]
    every_pair = {(s.value, t.value) for s in definition.states for t in definition.triggers}
    written = set(_pairs(machine))
    print(f"{machine}: {len(written)} pairs ({len(HAND[machine])} rows)")
    assert written - every_pair == set(), "hand table names pairs the machine does not have"
    assert every_pair - written == set(), "hand table misses pairs"
    assert len(written) == len(every_pair) == PAIR_COUNTS[machine]


def test_pair_counts() -> None:
    counts = {m: len(_pairs(m)) for m in HAND}
    print("pairs per machine:", counts)
    assert counts == {"job": 140, "phase": 30, "batch": 35, "webhook": 30}


@pytest.mark.parametrize("machine", list(HAND))
def test_hand_guards_are_the_machines_guards(machine: str) -> None:
    assert set(GUARDS[machine]) == set(DEFS[machine].guards)


@pytest.mark.parametrize("machine", list(HAND))
def test_hand_table_is_unambiguous(machine: str) -> None:
    """For every pair and every combination of facts, exactly one hand row applies."""
    states = {s for s, _ in _pairs(machine)}
    for row in HAND[machine]:
        state, trigger, when, outcome, dest = row
        assert outcome in OUTCOMES, row
        assert set(_when(when)) <= set(GUARDS[machine]), row
        if outcome == "moved":
            assert dest in states, row
        else:
            assert dest == "-", row
        if outcome in ("absorbed", "invalid"):
            assert when == "-", f"{row}: only moved/blocked rows depend on guards"
    for state, trigger in _pairs(machine):
        rows = [r for r in HAND[machine] if r[:2] == (state, trigger)]
        for facts in _all_facts(machine):
            matching = [r for r in rows if facts in _facts_for(machine, r[2])]
            assert len(matching) == 1, (state, trigger, facts, matching)


# ---------------------------------------------------------------------------
# 2. The pure form, every hand row, every combination of facts the row allows.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("machine", "row"), ALL_ROWS, ids=[_row_id(m, r) for m, r in ALL_ROWS])
def test_pure_form(machine: str, row: Row) -> None:
    state, trigger, when, outcome, dest = row
    definition = DEFS[machine]
    for facts in _facts_for(machine, when):
        if outcome == "invalid":
            with pytest.raises(InvalidTransition) as caught:
                definition.apply(state, trigger, facts)
            exc = caught.value
            assert (exc.machine, exc.state, exc.trigger) == (machine, state, trigger)
            message = str(exc)
            assert machine in message
            assert f"'{state}'" in message
            assert f"'{trigger}'" in message
            continue
        result = definition.apply(state, trigger, facts)
        assert str(result.kind) == outcome, facts
        assert (str(result.source), str(result.trigger)) == (state, trigger)
        assert str(result.dest) == (dest if outcome == "moved" else state), facts
        assert result.changed is (outcome == "moved")
        if outcome != "moved":
            assert result.effects == ()
            assert result.notify is None


# ---------------------------------------------------------------------------
# 3. The embeddable form, the same rows.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("machine", "row"), ALL_ROWS, ids=[_row_id(m, r) for m, r in ALL_ROWS])
def test_embedded_form(machine: str, row: Row, info_log: pytest.LogCaptureFixture) -> None:
    state, trigger, when, outcome, dest = row
    embedded = EMBEDDED[machine]()
    for facts in _facts_for(machine, when):
        fired = Fired(machine, state, trigger, facts, info_log, embedded)
        assert fired.before["state"] == state
        if outcome == "moved":
            assert fired.error is None, facts
            assert fired.result is True, facts
            assert fired.state == dest
            # Guard facts are read, never written.
            assert {k: fired.after[k] for k in facts} == facts
            assert fired.absorbed_logs == []
            continue
        # absorbed, blocked, invalid: nothing about the model changes, no effect runs.
        assert fired.after == fired.before, facts
        assert fired.model.performed == ()
        if outcome == "invalid":
            assert fired.error is not None, facts
            assert (fired.error.machine, fired.error.state, fired.error.trigger) == (
                machine, state, trigger)
            assert fired.absorbed_logs == []
        elif outcome == "absorbed":
            assert fired.error is None
            assert fired.result is False
            assert len(fired.absorbed_logs) == 1
            message = fired.absorbed_logs[0].getMessage()
            assert state in message
            assert trigger in message
        else:
            assert fired.error is None
            assert fired.result is False
            assert fired.absorbed_logs == []


# ---------------------------------------------------------------------------
# 4. The two forms agree on every pair, for every combination of guard facts.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("machine", "state", "trigger"), ALL_PAIRS,
                         ids=[f"{m}:{s}-{t}" for m, s, t in ALL_PAIRS])
def test_forms_agree(machine: str, state: str, trigger: str,
                     info_log: pytest.LogCaptureFixture) -> None:
    definition = DEFS[machine]
    embedded = EMBEDDED[machine]()
    for facts in _all_facts(machine):
        fired = Fired(machine, state, trigger, facts, info_log, embedded)
        try:
            pure = definition.apply(state, trigger, facts)
        except InvalidTransition:
            assert fired.kind == "invalid", facts
            continue
        assert fired.kind == str(pure.kind), facts
        assert fired.state == str(pure.dest), facts
        assert fired.model.performed == pure.effects, facts


# ---------------------------------------------------------------------------
# 5. Effects (every row, exactly) and notifications.
# ---------------------------------------------------------------------------


def _effects(machine: str, state: str, trigger: str, facts: dict[str, bool],
             caplog: pytest.LogCaptureFixture) -> tuple[str, ...]:
    """The row's effects from the pure form, checked to be what the embedded form performs."""
    pure = DEFS[machine].apply(state, trigger, facts)
    fired = Fired(machine, state, trigger, facts, caplog, EMBEDDED[machine]())
    assert fired.model.performed == pure.effects
    return tuple(str(e) for e in pure.effects)


JOB_FACTS = {"has_validator": False, "retries_left": True}
NO_RETRIES = {"has_validator": False, "retries_left": False}
BATCH_FACTS = {"ready": True, "all_done": False, "threshold_met": False}

# The EXACT effects of every moved hand row, in the order they are performed: (machine, state,
# trigger, when) -> effects. Written by hand from SPEC.md and the machines' docstrings: what each
# transition writes beyond its state, index and event, and how the daemons react to it. An effect
# added to, dropped from or moved within a row fails here.
EXACT_EFFECTS: dict[tuple[str, str, str, str], tuple[str, ...]] = {
    # job
    ("job", "queued", "claim", "-"): ("new_attempt", "resume_phases"),
    ("job", "waiting", "cancel", "-"): (
        "cancel_phases", "record_reason", "finish", "mark_unfiled", "notify", "count_member", "release_dependents",
        "cancel_children",
    ),
    ("job", "waiting", "deps_done", "-"): ("wake_workers",),
    ("job", "waiting", "dependency_failed", "-"): (
        "record_reason", "finish", "mark_unfiled", "notify", "count_member", "release_dependents",
    ),
    ("job", "queued", "cancel", "-"): (
        "cancel_phases", "record_reason", "finish", "mark_unfiled", "notify", "count_member", "release_dependents",
        "cancel_children",
    ),
    ("job", "scheduled", "wake", "-"): ("clear_reason", "wake_workers"),
    ("job", "scheduled", "cancel", "-"): (
        "cancel_phases", "record_reason", "finish", "mark_unfiled", "notify", "count_member", "release_dependents",
        "cancel_children",
    ),
    ("job", "active", "complete", "has_validator"): (
        "end_attempt", "store_result", "record_error", "start_validation",
    ),
    ("job", "active", "complete", "!has_validator"): (
        "end_attempt", "store_result", "clear_error", "clear_reason", "finish", "mark_unfiled", "notify",
        "count_member", "release_dependents",
    ),
    ("job", "active", "fail", "retries_left"): (
        "interrupt_phase", "end_attempt", "record_error", "count_retry", "arm_backoff", "record_reason",
    ),
    ("job", "active", "fail", "!retries_left"): (
        "interrupt_phase", "end_attempt", "record_error", "record_reason", "finish", "mark_unfiled", "notify",
        "count_member", "release_dependents",
    ),
    ("job", "active", "timeout", "retries_left"): (
        "interrupt_phase", "end_attempt", "record_error", "count_retry", "arm_backoff", "record_reason",
    ),
    ("job", "active", "timeout", "!retries_left"): (
        "interrupt_phase", "end_attempt", "record_error", "record_reason", "finish", "mark_unfiled", "notify",
        "count_member", "release_dependents",
    ),
    ("job", "active", "lease_expired", "retries_left"): (
        "interrupt_phase", "end_attempt", "record_error", "count_retry", "arm_backoff", "record_reason",
    ),
    ("job", "active", "lease_expired", "!retries_left"): (
        "interrupt_phase", "end_attempt", "record_error", "record_reason", "finish", "mark_unfiled", "notify",
        "count_member", "release_dependents",
    ),
    ("job", "active", "release", "-"): ("interrupt_phase", "end_attempt", "record_error", "wake_workers"),
    ("job", "active", "cancel", "-"): (
        "end_attempt", "cancel_phases", "cancel_handler", "record_reason", "finish", "mark_unfiled", "notify",
        "count_member", "release_dependents", "cancel_children",
    ),
    ("job", "validating", "cancel", "-"): (
        "cancel_phases", "record_reason", "finish", "mark_unfiled", "notify", "count_member", "release_dependents",
        "cancel_children",
    ),
    ("job", "validating", "validation_passed", "-"): (
        "record_status", "clear_error", "clear_reason", "finish", "mark_unfiled", "notify", "count_member",
        "release_dependents",
    ),
    ("job", "validating", "validation_exhausted", "-"): (
        "record_status", "record_error", "record_reason", "finish", "mark_unfiled", "notify", "count_member",
        "release_dependents",
    ),
    ("job", "failed", "retry", "-"): ("reset_retries", "new_epoch", "reopen", "wake_workers"),
    ("job", "failed", "retry_from_start", "-"): (
        "reset_retries", "new_epoch", "rewind_phases", "reopen", "wake_workers",
    ),
    ("job", "cancelled", "retry", "-"): ("reset_retries", "new_epoch", "reopen", "wake_workers"),
    ("job", "cancelled", "retry_from_start", "-"): (
        "reset_retries", "new_epoch", "rewind_phases", "reopen", "wake_workers",
    ),
    ("job", "timed_out", "retry", "-"): ("reset_retries", "new_epoch", "reopen", "wake_workers"),
    ("job", "timed_out", "retry_from_start", "-"): (
        "reset_retries", "new_epoch", "rewind_phases", "reopen", "wake_workers",
    ),
    ("job", "validation_failed", "retry", "-"): ("new_epoch", "reopen", "start_validation"),
    ("job", "validation_failed", "retry_from_start", "-"): (
        "reset_retries", "new_epoch", "rewind_phases", "reopen", "wake_workers",
    ),
    # phase
    ("phase", "pending", "start", "-"): (),
    ("phase", "pending", "cancel", "-"): (),
    ("phase", "running", "complete", "-"): ("store_result",),
    ("phase", "running", "fail", "-"): (),
    ("phase", "running", "cancel", "-"): (),
    ("phase", "running", "reset", "-"): (),
    ("phase", "running", "rewind", "-"): ("drop_result",),
    ("phase", "completed", "rewind", "-"): ("drop_result",),
    ("phase", "failed", "cancel", "-"): (),
    ("phase", "failed", "reset", "-"): (),
    ("phase", "failed", "rewind", "-"): ("drop_result",),
    ("phase", "cancelled", "reset", "-"): (),
    ("phase", "cancelled", "rewind", "-"): ("drop_result",),
    # batch
    ("batch", "open", "close", "-"): ("mark_closed",),
    ("batch", "open", "member_done", "-"): ("touch",),
    ("batch", "open", "finalize", "ready"): (),
    ("batch", "open", "cancel", "-"): ("record_reason", "finish", "cancel_members"),
    ("batch", "running", "member_done", "-"): ("touch",),
    ("batch", "running", "finalize", "ready"): (),
    ("batch", "running", "cancel", "-"): ("record_reason", "finish", "cancel_members"),
    ("batch", "finalizing", "member_done", "-"): ("touch",),
    ("batch", "finalizing", "settle", "all_done"): ("finish", "notify"),
    ("batch", "finalizing", "settle", "!all_done threshold_met"): ("finish", "notify"),
    ("batch", "finalizing", "settle", "!all_done !threshold_met"): ("record_reason", "finish", "notify"),
    # webhook
    ("webhook", "pending", "send", "attempts_left"): ("count_attempt",),
    ("webhook", "pending", "send", "!attempts_left"): ("drop_token", "settle_notification"),
    ("webhook", "sending", "succeed", "-"): ("record_response", "settle_notification"),
    ("webhook", "sending", "fail", "attempts_left"): ("record_response", "arm_backoff"),
    ("webhook", "sending", "fail", "!attempts_left"): ("record_response", "settle_notification"),
    ("webhook", "sending", "reject", "-"): ("record_response", "settle_notification"),
    ("webhook", "sending", "release", "-"): ("record_response",),
    ("webhook", "retry_wait", "send", "attempts_left"): ("count_attempt",),
    ("webhook", "retry_wait", "send", "!attempts_left"): ("drop_token", "settle_notification"),
    ("webhook", "dead", "redeliver", "-"): ("reset_attempts", "settle_notification"),
}

MOVED_ROWS = [(m, r) for m, r in ALL_ROWS if r[3] == "moved"]


def test_every_moved_row_has_its_exact_effects() -> None:
    assert set(EXACT_EFFECTS) == {(m, *r[:3]) for m, r in MOVED_ROWS}


@pytest.mark.parametrize(("machine", "row"), MOVED_ROWS, ids=[_row_id(m, r) for m, r in MOVED_ROWS])
def test_exact_effects(machine: str, row: Row, info_log: pytest.LogCaptureFixture) -> None:
    state, trigger, when, _, _ = row
    for facts in _facts_for(machine, when):
        assert _effects(machine, state, trigger, facts, info_log) == EXACT_EFFECTS[(machine, state, trigger, when)]


def test_unmoved_pairs_perform_nothing(info_log: pytest.LogCaptureFixture) -> None:
    for machine, (state, trigger, when, outcome, _) in ALL_ROWS:
        if outcome in ("absorbed", "blocked"):
            for facts in _facts_for(machine, when):
                assert _effects(machine, state, trigger, facts, info_log) == ()


# (machine, state, trigger, facts, notify): the outbound event type, or None.
NOTIFY_CHECKS = [
    ("job", "active", "complete", {"has_validator": False, "retries_left": True}, "job.completed"),
    ("job", "active", "complete", {"has_validator": True, "retries_left": True}, None),
    ("job", "validating", "validation_passed", JOB_FACTS, "job.completed"),
    ("job", "validating", "validation_exhausted", JOB_FACTS, "job.validation_failed"),
    ("job", "active", "fail", NO_RETRIES, "job.failed"),
    ("job", "active", "fail", JOB_FACTS, None),
    ("job", "active", "timeout", NO_RETRIES, "job.timed_out"),
    ("job", "active", "timeout", JOB_FACTS, None),
    ("job", "active", "lease_expired", NO_RETRIES, "job.failed"),
    ("job", "active", "cancel", JOB_FACTS, "job.cancelled"),
    ("job", "queued", "cancel", JOB_FACTS, "job.cancelled"),
    ("job", "waiting", "cancel", JOB_FACTS, "job.cancelled"),
    ("job", "waiting", "dependency_failed", JOB_FACTS, "job.failed"),
    ("job", "waiting", "deps_done", JOB_FACTS, None),
    ("job", "queued", "claim", JOB_FACTS, None),
    ("job", "scheduled", "wake", JOB_FACTS, None),
    ("job", "active", "release", JOB_FACTS, None),
    ("job", "failed", "retry", JOB_FACTS, None),
    ("job", "validation_failed", "retry", JOB_FACTS, None),
    ("job", "completed", "complete", JOB_FACTS, None),  # absorbed: no second event
    ("job", "cancelled", "cancel", JOB_FACTS, None),    # absorbed: no second event
    ("batch", "finalizing", "settle", {"ready": True, "all_done": True, "threshold_met": True},
     "batch.completed"),
    ("batch", "finalizing", "settle", {"ready": True, "all_done": False, "threshold_met": True},
     "batch.completed"),
    ("batch", "finalizing", "settle", {"ready": True, "all_done": False, "threshold_met": False},
     "batch.failed"),
    ("batch", "running", "finalize", BATCH_FACTS, None),
    ("batch", "running", "member_done", BATCH_FACTS, None),
    ("batch", "running", "cancel", BATCH_FACTS, None),  # SPEC lists no batch.cancelled event
    ("batch", "completed", "finalize", BATCH_FACTS, None),
    ("webhook", "sending", "succeed", {"attempts_left": True}, None),
    ("phase", "running", "complete", {}, None),
]


@pytest.mark.parametrize(
    ("machine", "state", "trigger", "facts", "notify"),
    NOTIFY_CHECKS,
    ids=[f"{m}:{s}-{t}-{n}" for m, s, t, _, n in NOTIFY_CHECKS],
)
def test_notify(machine: str, state: str, trigger: str, facts: dict[str, bool],
                notify: str | None) -> None:
    assert DEFS[machine].apply(state, trigger, facts).notify == notify


def test_member_done_is_internal() -> None:
    for state in ("open", "running", "finalizing"):
        result = BATCH.apply(state, "member_done", BATCH_FACTS)
        assert result.internal
        assert str(result.dest) == state


def test_ready_made_job_model_never_exceeds_max_retries() -> None:
    job = JobMachine().attach(JobModel(max_retries=1))
    assert job.claim()
    assert job.fail()
    assert (job.state, job.retry_count) == ("scheduled", 1)
    assert job.wake()
    assert job.claim()
    assert job.fail()
    assert (job.state, job.retry_count) == ("failed", 1)
    assert job.retry()
    assert (job.state, job.retry_count, job.epoch) == ("queued", 0, 1)


# ---------------------------------------------------------------------------
# 6. An illegal trigger leaves the state untouched (h11 style), in both forms:
#    the error changes nothing, and the next legal trigger works as if it
#    had never been fired.
# ---------------------------------------------------------------------------

# (machine, state, illegal trigger, legal trigger, where the legal one lands)
ILLEGAL = [
    ("job", "queued", "complete", "claim", "active"),
    ("job", "scheduled", "claim", "wake", "queued"),
    ("job", "active", "retry", "release", "queued"),
    ("job", "validating", "fail", "validation_passed", "completed"),
    ("phase", "pending", "complete", "start", "running"),
    ("phase", "failed", "start", "reset", "pending"),
    ("batch", "running", "close", "cancel", "cancelled"),
    ("batch", "finalizing", "cancel", "settle", "completed"),
    ("webhook", "pending", "succeed", "send", "sending"),
    ("webhook", "retry_wait", "release", "send", "sending"),
    ("webhook", "pending", "redeliver", "send", "sending"),
]
ILLEGAL_FACTS = {
    "job": JOB_FACTS,
    "phase": {},
    "batch": {"ready": True, "all_done": True, "threshold_met": True},
    "webhook": {"attempts_left": True},
}


@pytest.mark.parametrize(("machine", "state", "illegal", "legal", "dest"), ILLEGAL,
                         ids=[f"{m}:{s}-{i}" for m, s, i, _, _ in ILLEGAL])
def test_illegal_trigger_leaves_state_untouched_pure(
        machine: str, state: str, illegal: str, legal: str, dest: str) -> None:
    definition = DEFS[machine]
    facts = ILLEGAL_FACTS[machine]
    current = state
    with pytest.raises(InvalidTransition):
        current = str(definition.apply(current, illegal, facts).dest)
    assert current == state
    current = str(definition.apply(current, legal, facts).dest)
    assert current == dest


@pytest.mark.parametrize(("machine", "state", "illegal", "legal", "dest"), ILLEGAL,
                         ids=[f"{m}:{s}-{i}" for m, s, i, _, _ in ILLEGAL])
def test_illegal_trigger_leaves_state_untouched_embedded(
        machine: str, state: str, illegal: str, legal: str, dest: str) -> None:
    model = Probe(ILLEGAL_FACTS[machine])
    embedded = EMBEDDED[machine]()
    embedded.attach(model, initial=state)
    before = dict(vars(model))
    with pytest.raises(InvalidTransition):
        getattr(model, illegal)()
    assert dict(vars(model)) == before
    assert embedded.state_of(model) == state
    assert embedded.fire(model, legal) is True
    assert embedded.state_of(model) == dest
