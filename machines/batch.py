"""The batch machine (SPEC.md, "Batch state machine").

A batch is ``open`` while members are still being added. ``close`` says
membership is complete: the operator's ``batch close``, or, for a batch
created with an expected total, the store itself once that many members have
been added; either way the batch is ``running`` and its size is known.

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

The guards' facts come from the batch's counters through :func:`batch_facts`,
the one definition the embeddable model and the store's Lua both follow.
"""

from __future__ import annotations

import enum

from ._table import MachineDef, Row, Start

__all__ = ["BatchState", "BatchTrigger", "BATCH", "batch_facts", "batch_total"]


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


def batch_total(*, members: int, expected: int | None, closed: bool) -> int:
    """The batch's size: its members once membership is closed (or no total was expected),
    else the expected total."""
    return members if closed or expected is None else expected


def batch_facts(
    *, members: int, expected: int | None, closed: bool, completed: int, failed: int,
    cancelled: int, threshold: int, stuck: bool = False,
) -> dict[str, bool]:
    """The batch machine's guard facts from its counters (the store's Lua computes the same).

    The size is known once membership is closed or an expected total was given; until then
    neither the threshold nor "every member terminal" makes the batch ready, only the stuck
    sweep does (and then the threshold is judged against the members so far).
    """
    total = batch_total(members=members, expected=expected, closed=closed)
    known = closed or expected is not None
    all_done = known and completed + failed + cancelled >= total
    threshold_met = total > 0 and completed * 100 >= threshold * total
    return {"ready": (known and threshold_met) or all_done or stuck, "all_done": all_done,
            "threshold_met": threshold_met}


BATCH: MachineDef[BatchState, BatchTrigger] = MachineDef(
    name="batch",
    states=BatchState,
    triggers=BatchTrigger,
    initial=(Start(OPN, "create", effects=("touch",)),),
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
        "record_reason": "reason = the trigger's reason (BATCH.reasons)",
        "finish": "finished_at = now",
        "notify": "the transition's notification becomes an outbox row (when the batch asked for them)",
    },
    store_only=frozenset({"cancel_members", "notify"}),
    notifications={DONE: "batch.completed", PART: "batch.completed", FAILED: "batch.failed"},
    index={OPN: "batches", RUN: "batches", FIN: "batches", DONE: "", PART: "", FAILED: "", CANC: ""},
    reasons={_t.SETTLE: "stuck", _t.CANCEL: "cancelled"},
    rows=(
        Row(_t.CLOSE, (OPN,), RUN, effects=("mark_closed",)),
        Row(_t.MEMBER_DONE, (OPN, RUN, FIN), None, effects=("touch",)),
        Row(_t.FINALIZE, (OPN, RUN), FIN, guard="ready"),
        Row(_t.SETTLE, (FIN,), DONE, guard="all_done", effects=("finish", "notify")),
        Row(_t.SETTLE, (FIN,), PART, guard="threshold_met", effects=("finish", "notify")),
        Row(_t.SETTLE, (FIN,), FAILED, effects=("record_reason", "finish", "notify")),
        Row(_t.CANCEL, (OPN, RUN), CANC, effects=("record_reason", "finish", "cancel_members")),
    ),
)
