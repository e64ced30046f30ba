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

from ._table import MachineDef, Row

__all__ = ["DeliveryState", "DeliveryTrigger", "WEBHOOK"]


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

WEBHOOK: MachineDef[DeliveryState, DeliveryTrigger] = MachineDef(
    name="webhook",
    states=DeliveryState,
    triggers=DeliveryTrigger,
    initial=((P, "outbox row written"),),
    terminal=frozenset({OK, DEAD}),
    guards={"attempts_left": "attempts < max_attempts"},
    effects_doc={
        "count_attempt": "attempts += 1",
        "arm_backoff": "next try = now + backoff(attempts) with jitter, or Retry-After",
        "reset_attempts": "an operator's re-send starts a fresh attempt budget: attempts = 0, due now",
    },
    rows=(
        Row(_t.SEND, (P, W), S, guard="attempts_left", effects=("count_attempt",)),
        Row(_t.SEND, (P, W), DEAD),
        Row(_t.SUCCEED, (S,), OK),
        Row(_t.FAIL, (S,), W, guard="attempts_left", effects=("arm_backoff",)),
        Row(_t.FAIL, (S,), DEAD),
        Row(_t.REJECT, (S,), DEAD),
        Row(_t.RELEASE, (S,), P),
        Row(_t.REDELIVER, (DEAD,), P, effects=("reset_attempts",)),
    ),
)
