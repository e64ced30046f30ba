"""Effects are the contract between the tables, the Lua library and the embeddable models.

* every effect a machine's rows (and starts) name is an ``EFFECT`` function of the Lua library,
  and the library has no effect function no row names;
* every effect that is not store-only is a ``do_<effect>`` method of the machine's ready-made
  model, and the model has no ``do_`` method for an effect its machine lacks;
* ``MachineDef`` refuses tables that contradict themselves, naming what is wrong;
* the embeddable machines offer no ``to_<state>`` shortcut around the guards;
* the Lua branches on no state name outside the generated tables and the effect functions.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from jobvisor.adapters.scripts import LUA_FILES, lua_source
from jobvisor.machines import BATCH, JOB, PHASE, WEBHOOK, BatchModel, DeliveryModel, JobModel, MachineDef, Row
from jobvisor.machines.embed import EmbeddedMachine
from jobvisor.machines.job import JobState, JobTrigger
from jobvisor.machines.schedule import SCHEDULE

DEFS: dict[str, MachineDef[Any, Any]] = {
    "job": JOB, "phase": PHASE, "batch": BATCH, "webhook": WEBHOOK, "schedule": SCHEDULE,
}
MODELS: dict[str, type] = {"job": JobModel, "batch": BatchModel, "webhook": DeliveryModel}
# How each machine's effect table is spelled in the Lua files.
LUA_ALIAS = {"job": "J", "batch": "B", "webhook": "W", "schedule": "SC"}


def lua_effects(machine: str) -> set[str]:
    text = lua_source()
    names = set(re.findall(rf"^EFFECT\.{machine}\.(\w+) = function", text, re.M))
    alias = LUA_ALIAS.get(machine)
    if alias:
        names |= set(re.findall(rf"^function {alias}\.(\w+)\(", text, re.M))
    return names


@pytest.mark.parametrize("machine", list(DEFS))
def test_the_tables_effects_are_the_lua_effect_functions(machine: str) -> None:
    assert lua_effects(machine) == set(DEFS[machine].effect_names())


@pytest.mark.parametrize("machine", list(MODELS))
def test_every_effect_not_store_only_is_a_model_method(machine: str) -> None:
    d = DEFS[machine]
    methods = {n[3:] for n in dir(MODELS[machine]) if n.startswith("do_")}
    assert methods == set(d.effect_names()) - d.store_only
    assert d.store_only <= set(d.effect_names()), "a store-only effect no row performs"


def test_the_phase_effects_are_the_job_models_phase_handling() -> None:
    # The phase machine's effects are performed by JobModel's phase methods (complete_phase
    # keeps the result, a rewind drops it), not by do_ methods of a model of their own.
    assert set(PHASE.effect_names()) == {"store_result", "drop_result"}
    job = JobModel(phases=["a"])
    job._phase("a", "start")  # type: ignore[arg-type]
    job.complete_phase("a", 7)
    assert job.phase_results == {"a": 7}
    job._phase("a", "rewind")  # type: ignore[arg-type]
    assert job.phase_results == {}


def test_the_lua_branches_on_no_state_name() -> None:
    """No comparison of a record's state (or a phase's) with a state name anywhere in the
    library's files: what a state means comes from the generated tables (its row, its index
    `at`, `terminal`, `kept`, `notifications`). The daemon registry (`live`, `lost`,
    `stopped`) is no machine and is left out."""
    states = {s.value for d in DEFS.values() for s in d.states}
    branch = re.compile(r"(\.state|p\[2\]|v\[1\]|\bd\b|\bto\b)\s*[~=]=\s*'(" + "|".join(sorted(states)) + r")'")
    found = []
    for name in LUA_FILES:
        if name == "registry.lua":
            continue
        text = lua_source().split(f"-- {name}\n", 1)[1].split("\n-- registry.lua\n", 1)[0]
        found += [(name, line.strip()) for line in text.splitlines() if branch.search(line.split("--", 1)[0])]
    assert found == []


# -- MachineDef refuses malformed tables --------------------------------------------------------


def _job(**changes: Any) -> MachineDef[Any, Any]:
    fields = {f.name: getattr(JOB, f.name) for f in dataclasses.fields(JOB) if f.init}
    fields.update(changes)
    return MachineDef(**fields)


def _rows(*extra: Row[Any, Any]) -> tuple[Row[Any, Any], ...]:
    return (*JOB.rows, *extra)


Q, ACT, DONE = JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED
MALFORMED = {
    "undocumented effect": ({"rows": _rows(Row(JobTrigger.WAKE, (Q,), Q, effects=("teleport",)))},
                            "job: effect 'teleport' is not documented"),
    "undocumented guard": ({"rows": (Row(JobTrigger.CLAIM, (Q,), ACT, guard="lucky"), *JOB.rows)},
                           "job: guard 'lucky' is not documented"),
    "unreachable row": ({"rows": _rows(Row(JobTrigger.CLAIM, (Q,), ACT))}, "job: row claim from queued is unreachable"),
    "notifying row without notify": (
        {"rows": tuple(r if r.dest is not DONE else dataclasses.replace(
            r, effects=tuple(e for e in r.effects if e != "notify")) for r in JOB.rows)},
        "job: row complete -> completed must perform 'notify' exactly when it enters a notifying state"),
    "notify into a silent state": (
        {"rows": tuple(r if r.trigger is not JobTrigger.CLAIM else dataclasses.replace(
            r, effects=(*r.effects, "notify")) for r in JOB.rows)},
        "job: row claim -> active must perform 'notify' exactly when it enters a notifying state"),
    "end_attempt without an outcome": ({"outcomes": {}},
                                       "job: row complete ends an attempt with no outcome for its trigger"),
    "record_reason without a reason": ({"reasons": {}}, "job: row fail records a reason its trigger lacks"),
    "effect twice in a row": (
        {"rows": tuple(r if r.trigger is not JobTrigger.CLAIM else dataclasses.replace(
            r, effects=(*r.effects, "new_attempt")) for r in JOB.rows)},
        "job: an effect is listed twice in one row"),
    "index missing a state": ({"index": {Q: "queued"}}, "job: the index map must name every state"),
    "unfenced names a trigger of another machine": ({"unfenced": frozenset({"settle"})},
                                                     "job: unfenced names a trigger the machine lacks"),
    "outcomes name a trigger of another machine": ({"outcomes": {**JOB.outcomes, "settle": "x"}},
                                                    "job: outcomes names a trigger the machine lacks"),
    "reasons name a trigger of another machine": ({"reasons": {**JOB.reasons, "settle": "x"}},
                                                   "job: reasons names a trigger the machine lacks"),
    "terminal state of another machine": ({"terminal": JOB.terminal | {"settled"}},
                                          "job: terminal states must be states of the machine"),
    "notification for a state of another machine": (
        {"notifications": {**JOB.notifications, "settled": "x.y"}},
        "job: notifications name a state the machine lacks"),
    "row with a trigger of another machine": ({"rows": _rows(Row("settle", (Q,), Q))},
                                              "job: trigger 'settle' is not a trigger of the machine"),
    "conditional last start": ({"initial": (dataclasses.replace(JOB.initial[0]),)},
                               "job: the last initial state must have no condition"),
    "terminal initial state": ({"initial": (dataclasses.replace(JOB.initial[-1], state=DONE),)},
                               "job: initial state 'completed' is not a live state"),
    "undocumented store-only effect": ({"store_only": frozenset({"teleport"})},
                                       "job: a store-only effect is not documented"),
    "guarded terminal row": (
        {"rows": tuple(r if r.trigger is not JobTrigger.RETRY or r.dest is not Q else dataclasses.replace(
            r, guard="retries_left") for r in JOB.rows)},
        "job: terminal rows may not be guarded"),
    "row naming a foreign state": ({"rows": _rows(Row(JobTrigger.WAKE, ("nowhere",), Q))},
                                   "job: row wake names a state the machine lacks"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_machinedef_rejects_a_malformed_table(case: str) -> None:
    changes, message = MALFORMED[case]
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        _job(**changes)
    assert str(caught.value) == message  # the whole message: what is wrong and where


def test_the_real_tables_are_well_formed() -> None:
    for d in DEFS.values():
        _ = MachineDef(**{f.name: getattr(d, f.name) for f in dataclasses.fields(d) if f.init})


# -- no shortcuts around the guards ----------------------------------------------------------------


@pytest.mark.parametrize("machine", list(DEFS))
def test_no_to_state_shortcuts_on_the_embeddable_machines(machine: str) -> None:
    embedded = EmbeddedMachine(DEFS[machine])
    model = embedded.attach(type("Model", (), {})())
    for state in DEFS[machine].states:
        assert not hasattr(model, f"to_{state.value}")
    assert not any(name.startswith("to_") for name in embedded._machine.events)


def test_every_hand_mutant_of_the_lua_still_finds_its_text_once() -> None:
    """A change to adapters/lua/ that moves a mutant's line leaves the mutant stale (it would
    mutate nothing): each one's text is in its file exactly once."""
    from bench.lua_mutants import LUA, MUTANTS

    stale = [m[0] for m in MUTANTS if (LUA / m[1]).read_text().count(m[2]) != 1]
    assert stale == []
