"""Webhook bodies and their Standard Webhooks signatures.

The body is the event (SPEC.md, "Webhook delivery state machine")::

    {"type": "job.completed", "timestamp": "2025-06-15T12:00:00.000Z",
     "data": {...the job as it was at the transition...}}

``data`` is the delivery's own snapshot, written by the same Lua step as the
transition, plus RFC 3339 forms of its times (``created_at``, ``finished_at``,
``completed_at``; ``completed_at`` is null unless the state is ``completed``).
It is built from the snapshot alone, never from the live job, so a job deleted
by retention mid-delivery changes nothing, and every attempt of one delivery
sends the very same bytes.

Signatures follow Standard Webhooks: ``webhook-id`` (the delivery id, the same
on every attempt), ``webhook-timestamp`` (this attempt, seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``, computed by
the ``standardwebhooks`` library with a ``whsec_`` secret. The secret never
appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from standardwebhooks.webhooks import Webhook

__all__ = ["WebhookSigner", "check_secret", "event_body", "rfc3339", "MIN_SECRET_BYTES"]

MIN_SECRET_BYTES = 16
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_COMPLETED = {"completed", "completed_partial"}


def rfc3339(ms: int | float | None) -> str | None:
    """Milliseconds since the epoch as ``2025-06-15T12:00:00.000Z`` (``None`` stays ``None``)."""
    if ms is None:
        return None
    seconds, millis = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def check_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; ``ValueError`` (never quoting it) otherwise."""
    text = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook_secret: not a whsec_ secret (whsec_ then base64)") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"webhook_secret: the key is {len(key)} bytes; at least {MIN_SECRET_BYTES} are needed")
    return key


class WebhookSigner:
    """Signs bodies with one secret (checked by :func:`check_secret`)."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(check_secret(secret))

    def __repr__(self) -> str:
        return "WebhookSigner(secret=***)"

    def headers(self, msg_id: str, timestamp: float, body: bytes) -> dict[str, str]:
        """The Standard Webhooks headers of one attempt sent at ``timestamp`` (epoch seconds)."""
        moment = datetime.fromtimestamp(int(timestamp), tz=UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": self._webhook.sign(msg_id, moment, body.decode("utf-8")),
            "content-type": "application/json",
        }


def event_body(event: str, created_at_ms: int, snapshot: str) -> bytes:
    """The body of a delivery: its event type, when the event happened, and its snapshot.

    ``ValueError`` when the snapshot is not JSON (the store never writes one that is not).
    """
    try:
        data: Any = _decode(snapshot) if snapshot else None
    except msgspec.DecodeError as exc:
        raise ValueError(f"the delivery's snapshot is not JSON ({exc})") from None
    if isinstance(data, dict):
        finished = data.get("finished_at_ms")
        data["created_at"] = rfc3339(data.get("created_at_ms"))
        data["finished_at"] = rfc3339(finished)
        data["completed_at"] = rfc3339(finished) if data.get("state") in _COMPLETED else None
    return _encode({"type": event, "timestamp": rfc3339(created_at_ms), "data": data})
