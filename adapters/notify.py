"""Pub/sub: how one process hears that another queued work or cancelled a job.

For redis-server a blocking subscriber runs in a worker thread and hands
each message to trio with ``trio.from_thread.run_sync``. It reconnects with
backoff when Redis goes away, and ends within ``poll`` seconds of ``stop``.
The embedded store has no other process to hear from; its messages are
polled inline.
"""

from __future__ import annotations

import logging
import threading

from collections.abc import Callable, Sequence

import redis

from .backend import Backend

__all__ = ["listen_blocking", "InlinePoller"]

log = logging.getLogger("jobvisor.notify")

Deliver = Callable[[str, str], None]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def listen_blocking(
    backend: Backend, channels: Sequence[str], deliver: Deliver, stop: threading.Event, *, poll: float = 0.5
) -> None:
    """Subscribe and call ``deliver(channel, data)`` per message until ``stop`` is set."""
    backoff = 0.05
    while not stop.is_set():
        pubsub = backend.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(*channels)
            backoff = 0.05
            while not stop.is_set():
                message = pubsub.get_message(timeout=poll)
                if message is not None and message.get("type") == "message":
                    deliver(_text(message["channel"]), _text(message["data"]))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            log.warning("pub/sub lost its connection to %s (%s); reconnecting", backend.url, exc)
            stop.wait(backoff)
            backoff = min(2.0, backoff * 2)
        finally:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass


class InlinePoller:
    """The embedded store's subscriber, polled from the trio thread (no blocking)."""

    def __init__(self, backend: Backend, channels: Sequence[str]) -> None:
        self.pubsub = backend.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*channels)

    def drain(self, deliver: Deliver) -> None:
        while True:
            message = self.pubsub.get_message(timeout=0)
            if message is None:
                return
            if message.get("type") == "message":
                deliver(_text(message["channel"]), _text(message["data"]))

    def close(self) -> None:
        self.pubsub.close()
