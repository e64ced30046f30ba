"""The webhook delivery machine (SPEC.md, "Webhook delivery state machine").

One instance per outbox event. ``send`` takes it from ``pending`` or
``retry_wait`` to ``sending``; the receiver's answer decides: 2xx
``succeed``; 5xx, 429, timeouts and connection errors ``fail`` (back to
``retry_wait`` while ``attempts_left``, else ``dead``); any other 4xx
``reject`` (``dead`` at once). ``release`` returns an in-flight delivery to
``pending`` (shutdown, or a daemon that died mid-send); the attempt it used
stays counted, so a ``send`` with no attempts left goes ``dead`` instead:
attempts never exceed ``max_attempts``. Every attempt of one event carries
the same ``webhook-id``. ``redeliver`` is the operator's: a ``dead`` delivery goes
back to ``pending`` with a fresh attempt budget (the only way out of a terminal
state); from ``delivered`` it is absorbed, from a state still on its way refused.
"""

from __future__ import annotations

import enum

from ._table import MachineDef, Row, Start

__all__ = ["DeliveryState", "DeliveryTrigger", "WEBHOOK", "webhook_facts"]


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    RETRY_WAIT = "retry_wait"
    DELIVERED = "delivered"
    DEAD = "dead"


class DeliveryTrigger(enum.StrEnum):
    SEND = "send"
    SUCCEED = "succeed"
    FAIL = "fail"
    REJECT = "reject"
    RELEASE = "release"
    REDELIVER = "redeliver"


P, S, W = DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.RETRY_WAIT
OK, DEAD = DeliveryState.DELIVERED, DeliveryState.DEAD
_t = DeliveryTrigger



def webhook_facts(*, attempts: int, max_attempts: int) -> dict[str, bool]:
    """The delivery machine's guard facts (the store's Lua computes the same)."""
    return {"attempts_left": attempts < max_attempts}


_SETTLE = ("record_response", "settle_notification")

WEBHOOK: MachineDef[DeliveryState, DeliveryTrigger] = MachineDef(
    name="webhook",
    states=DeliveryState,
    triggers=DeliveryTrigger,
    initial=(Start(P, "outbox row written"),),
    terminal=frozenset({OK, DEAD}),
    guards={"attempts_left": "attempts < max_attempts"},
    effects_doc={
        "count_attempt": "attempts += 1, under a new send token; due again when the send lease ends",
        "drop_token": "no send token: a late report of the last attempt is stale",
        "record_response": "the status and error the op reports (the receiver's, or why a send was given back) "
        "are kept with the delivery",
        "arm_backoff": "next try = now + backoff(attempts) with jitter, or Retry-After",
        "reset_attempts": "an operator's re-send starts a fresh attempt budget: attempts = 0, no token, due now",
        "settle_notification": "the job or batch records where its notification stands (delivered, dead, pending)",
    },
    store_only=frozenset({"drop_token", "record_response", "arm_backoff", "settle_notification"}),
    index={P: "outbox", S: "outbox", W: "outbox", OK: "", DEAD: ""},
    rows=(
        Row(_t.SEND, (P, W), S, guard="attempts_left", effects=("count_attempt",)),
        Row(_t.SEND, (P, W), DEAD, effects=("drop_token", "settle_notification")),
        Row(_t.SUCCEED, (S,), OK, effects=_SETTLE),
        Row(_t.FAIL, (S,), W, guard="attempts_left", effects=("record_response", "arm_backoff")),
        Row(_t.FAIL, (S,), DEAD, effects=_SETTLE),
        Row(_t.REJECT, (S,), DEAD, effects=_SETTLE),
        Row(_t.RELEASE, (S,), P, effects=("record_response",)),
        Row(_t.REDELIVER, (DEAD,), P, effects=("reset_attempts", "settle_notification")),
    ),
)
