"""The phase machine: one instance per declared phase of a phased job.

A phase runs ``pending → running → completed`` during an attempt. When the
attempt ends badly the running phase ``fail``s (it is named in the attempt
record). The job's effects drive the rest: ``cancel`` marks every unfinished
phase cancelled, ``reset`` puts failed, cancelled or interrupted phases back
to pending when the next attempt starts (completed phases and their results
stay), and ``rewind`` (an operator retry ``--from-start``) puts every phase
back to pending.

``completed`` and ``cancelled`` absorb the automatic triggers; only the
explicit ``reset``/``rewind`` rows leave them.
"""

from __future__ import annotations

import enum

from ._table import MachineDef, Row, Start

__all__ = ["PhaseState", "PhaseTrigger", "PHASE"]


class PhaseState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PhaseTrigger(enum.StrEnum):
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    RESET = "reset"
    REWIND = "rewind"


P, R, C, F, X = (
    PhaseState.PENDING,
    PhaseState.RUNNING,
    PhaseState.COMPLETED,
    PhaseState.FAILED,
    PhaseState.CANCELLED,
)
_t = PhaseTrigger

PHASE: MachineDef[PhaseState, PhaseTrigger] = MachineDef(
    name="phase",
    states=PhaseState,
    triggers=PhaseTrigger,
    initial=(Start(P, "job submitted"),),
    terminal=frozenset({C, X}),
    effects_doc={
        "store_result": "the phase's result is stored with the job",
        "drop_result": "the phase's stored result is removed",
    },
    rows=(
        Row(_t.START, (P,), R),
        Row(_t.COMPLETE, (R,), C, effects=("store_result",)),
        Row(_t.FAIL, (R,), F),
        Row(_t.CANCEL, (P, R, F), X),
        Row(_t.RESET, (R, F, X), P),
        Row(_t.REWIND, (R, C, F, X), P, effects=("drop_result",)),
    ),
)
