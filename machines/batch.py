"""The batch machine (SPEC.md, "Batch state machine").

Every way a batch can end funnels into one guarded ``finalize``: the
threshold being reached, every member being terminal, and the batch
monitor's stuck sweep. ``finalize`` moves to ``finalizing`` only when the
batch is ``ready``; ``settle`` then picks the terminal state:

* ``completed`` when every member is terminal (whatever their outcomes: the
  counters tell how many completed, failed or were cancelled);
* ``completed_partial`` when the threshold is met but members remain;
* ``failed`` otherwise: the stuck sweep found the batch under its threshold
  (reason ``stuck``).

The store runs ``finalize`` and ``settle`` in one atomic script, so exactly
one ``batch.completed`` (or ``batch.failed``) exists per batch however many
triggers race. ``member_done`` is internal: it records member activity (the
stuck timer restarts) and is what tries ``finalize``; a terminal batch absorbs
it. The member counters and ``batch.progress`` (every K member completions)
are not batch transitions: they belong to the member's own terminal
transition, so late completions after finalize change the counters (and may
report progress) but never the batch state.
"""

from __future__ import annotations

import enum

from ._table import MachineDef, Row

__all__ = ["BatchState", "BatchTrigger", "BATCH"]


class BatchState(enum.StrEnum):
    OPEN = "open"
    RUNNING = "running"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    COMPLETED_PARTIAL = "completed_partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchTrigger(enum.StrEnum):
    CLOSE = "close"
    MEMBER_DONE = "member_done"
    FINALIZE = "finalize"
    SETTLE = "settle"
    CANCEL = "cancel"


OPN, RUN, FIN = BatchState.OPEN, BatchState.RUNNING, BatchState.FINALIZING
DONE, PART, FAILED, CANC = (
    BatchState.COMPLETED,
    BatchState.COMPLETED_PARTIAL,
    BatchState.FAILED,
    BatchState.CANCELLED,
)
_t = BatchTrigger

BATCH: MachineDef[BatchState, BatchTrigger] = MachineDef(
    name="batch",
    states=BatchState,
    triggers=BatchTrigger,
    initial=((OPN, "create"),),
    terminal=frozenset({DONE, PART, FAILED, CANC}),
    guards={
        "ready": "threshold met (size known), or every member terminal (size known), or stuck",
        "all_done": "the size is known (closed, or an expected total) and every member is terminal",
        "threshold_met": "completed members * 100 >= threshold percent * total",
    },
    effects_doc={
        "touch": "member activity: the stuck timer starts again; then try finalize",
        "mark_closed": "membership is closed: no more members; the total is known",
        "cancel_members": "every unfinished member job is cancelled",
    },
    notifications={DONE: "batch.completed", PART: "batch.completed", FAILED: "batch.failed"},
    rows=(
        Row(_t.CLOSE, (OPN,), RUN, effects=("mark_closed",)),
        Row(_t.MEMBER_DONE, (OPN, RUN, FIN), None, effects=("touch",)),
        Row(_t.FINALIZE, (OPN, RUN), FIN, guard="ready"),
        Row(_t.SETTLE, (FIN,), DONE, guard="all_done"),
        Row(_t.SETTLE, (FIN,), PART, guard="threshold_met"),
        Row(_t.SETTLE, (FIN,), FAILED),
        Row(_t.CANCEL, (OPN, RUN), CANC, effects=("cancel_members",)),
    ),
)
