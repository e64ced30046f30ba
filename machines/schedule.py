"""The schedule machine: a cron (or fixed-interval) schedule that submits a job per tick.

A schedule is created ``active`` by ``add``. ``fire`` submits the tick's job and records
the tick as the last one fired; ``skip`` records a tick that passed without a submit (a
missed tick the schedule's policy does not catch up). Both are guarded by ``new_tick``:
the tick is later than the last one recorded, so a tick, however many daemons offer it,
moves the schedule once; a tick at or before the last recorded one is ``blocked`` and
writes nothing. ``pause`` takes it out of the due index (ticks that pass while paused are
never fired), ``resume`` puts it back, due at the first tick after the resume. ``remove``
ends it; its record stays (with its last tick), so ``add`` under the same name brings it
back without firing a tick it fired before. ``add`` on a live schedule redefines it (a paused
one stays paused).
"""

from __future__ import annotations

import enum

from ._table import MachineDef, Row, Start

__all__ = ["ScheduleState", "ScheduleTrigger", "SCHEDULE", "schedule_facts"]


class ScheduleState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REMOVED = "removed"


class ScheduleTrigger(enum.StrEnum):
    ADD = "add"
    FIRE = "fire"
    SKIP = "skip"
    PAUSE = "pause"
    RESUME = "resume"
    REMOVE = "remove"


def schedule_facts(*, tick: int, last_tick: int | None) -> dict[str, bool]:
    """The schedule machine's guard facts (the store's Lua computes the same): ``tick`` and
    ``last_tick`` in epoch ms, ``None`` when no tick was recorded yet."""
    return {"new_tick": last_tick is None or tick > last_tick}


ACT, PAU, REM = ScheduleState.ACTIVE, ScheduleState.PAUSED, ScheduleState.REMOVED
_t = ScheduleTrigger

SCHEDULE: MachineDef[ScheduleState, ScheduleTrigger] = MachineDef(
    name="schedule",
    states=ScheduleState,
    triggers=ScheduleTrigger,
    initial=(Start(ACT, "add", effects=("define", "arm")),),
    terminal=frozenset({REM}),
    guards={"new_tick": "the tick is later than the last tick recorded (or none was)"},
    effects_doc={
        "define": "the op's definition (cron or interval, time zone, policy, job template) becomes the schedule's",
        "arm": "due again at the op's next tick (computed from the definition, after now)",
        "record_tick": "the tick becomes the last tick recorded (never earlier than it was: the guard comes first)",
        "submit_job": "the tick's job is submitted from the template, as a client's submit",
    },
    store_only=frozenset({"define", "arm", "record_tick", "submit_job"}),
    index={ACT: "schedules", PAU: "", REM: ""},
    rows=(
        Row(_t.ADD, (ACT, REM), ACT, effects=("define", "arm")),
        Row(_t.ADD, (PAU,), PAU, effects=("define",)),
        Row(_t.FIRE, (ACT,), ACT, guard="new_tick", effects=("record_tick", "submit_job", "arm")),
        Row(_t.SKIP, (ACT,), ACT, guard="new_tick", effects=("record_tick", "arm")),
        Row(_t.PAUSE, (ACT,), PAU),
        Row(_t.RESUME, (PAU,), ACT, effects=("arm",)),
        Row(_t.REMOVE, (ACT, PAU), REM),
    ),
)
