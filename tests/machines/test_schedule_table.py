"""The schedule machine, every (state, trigger) pair against a table written here by hand (never
read from machines/schedule.py), with the guard both ways where a row has one; and the same
pairs through the store's Lua on the embedded store, which must agree with the pure form."""

from __future__ import annotations

from typing import Any

import pytest

from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Moved
from jobvisor.adapters.schedules import ScheduleSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.adapters.timing import Plan
from jobvisor.machines import MACHINES, InvalidTransition, Kind
from jobvisor.machines.schedule import SCHEDULE, schedule_facts

STATES = ("active", "paused", "removed")
TRIGGERS = ("add", "fire", "skip", "pause", "resume", "remove")

# (state, trigger) -> outcome: "moved:<to>:<effects>", "blocked", "absorbed", "invalid";
# a guarded pair has one entry per truth of new_tick.
TABLE: dict[tuple[str, str], Any] = {
    ("active", "add"): "moved:active:define,arm",
    ("active", "fire"): {True: "moved:active:record_tick,submit_job,arm", False: "blocked"},
    ("active", "skip"): {True: "moved:active:record_tick,arm", False: "blocked"},
    ("active", "pause"): "moved:paused:",
    ("active", "resume"): "invalid",
    ("active", "remove"): "moved:removed:",
    ("paused", "add"): "moved:paused:define",
    ("paused", "fire"): "invalid",
    ("paused", "skip"): "invalid",
    ("paused", "pause"): "invalid",
    ("paused", "resume"): "moved:active:arm",
    ("paused", "remove"): "moved:removed:",
    ("removed", "add"): "moved:active:define,arm",
    ("removed", "fire"): "absorbed",
    ("removed", "skip"): "absorbed",
    ("removed", "pause"): "absorbed",
    ("removed", "resume"): "absorbed",
    ("removed", "remove"): "absorbed",
}


def cases() -> list[tuple[str, str, bool]]:
    out = []
    for (state, trigger), expected in TABLE.items():
        for fact in ((True, False) if isinstance(expected, dict) else (True,)):
            out.append((state, trigger, fact))
    return out


def pure(state: str, trigger: str, new_tick: bool) -> str:
    try:
        got = SCHEDULE.apply(state, trigger, {"new_tick": new_tick})
    except InvalidTransition:
        return "invalid"
    if got.kind is Kind.MOVED:
        return f"moved:{got.dest}:{','.join(got.effects)}"
    return str(got.kind)


def expected(state: str, trigger: str, new_tick: bool) -> str:
    entry = TABLE[(state, trigger)]
    return str(entry[new_tick] if isinstance(entry, dict) else entry)


def test_the_table_names_every_pair_of_the_machine() -> None:
    assert tuple(s.value for s in SCHEDULE.states) == STATES
    assert tuple(t.value for t in SCHEDULE.triggers) == TRIGGERS
    assert set(TABLE) == {(s, t) for s in STATES for t in TRIGGERS}
    assert MACHINES["schedule"] is SCHEDULE
    assert SCHEDULE.initial_state().state == "active"
    assert SCHEDULE.initial_state().effects == ("define", "arm")


@pytest.mark.parametrize(("state", "trigger", "new_tick"), cases())
def test_every_pair_of_the_pure_form(state: str, trigger: str, new_tick: bool) -> None:
    assert pure(state, trigger, new_tick) == expected(state, trigger, new_tick)


def test_the_guard_fact() -> None:
    assert schedule_facts(tick=5, last_tick=None) == {"new_tick": True}
    assert schedule_facts(tick=5, last_tick=4) == {"new_tick": True}
    assert schedule_facts(tick=5, last_tick=5) == {"new_tick": False}
    assert schedule_facts(tick=4, last_tick=5) == {"new_tick": False}


def _in_state(store: SyncStore, state: str) -> None:
    store.add_schedule(ScheduleSpec(name="s", job=JobSpec(type="t"), every=1))
    store.tick_schedule(store.get_schedule("s"), Plan([], 1000, 2000))  # last tick 1000
    if state == "paused":
        store.pause_schedule("s")
    elif state == "removed":
        store.remove_schedule("s")


def _store_outcome(store: SyncStore, trigger: str, new_tick: bool) -> str:
    view = store.get_schedule("s")
    tick = 5000 if new_tick else 1000
    if trigger == "add":
        got: Any = store.add_schedule(ScheduleSpec(name="s", job=JobSpec(type="t"), every=2))
    elif trigger in ("fire", "skip"):
        plan = Plan([tick], None, 9000) if trigger == "fire" else Plan([], tick, 9000)
        [got] = store.tick_schedule(view, plan)
    else:
        got = getattr(store, f"{trigger}_schedule")("s")
    if isinstance(got, Moved):
        assert store.get_schedule("s").state == got.to
        return f"moved:{got.to}:{','.join(e for e in got.effects if e != 'wake_workers')}"
    assert store.get_schedule("s").state == view.state  # nothing written
    return got.kind


@pytest.mark.parametrize(("state", "trigger", "new_tick"), cases())
def test_every_pair_through_the_store(state: str, trigger: str, new_tick: bool) -> None:
    store = SyncStore(open_backend("memory://schedule-table", memory=MemoryServers()), clock=lambda: 1.0)
    _in_state(store, state)
    assert store.get_schedule("s").state == state
    assert _store_outcome(store, trigger, new_tick) == expected(state, trigger, new_tick)
