"""Pub/sub: how one process hears that another queued work or cancelled a job.

For redis-server, :func:`listen` subscribes with coredis (:mod:`adapters.redis_async`, on
anyio: no thread hop) and hands each message to ``deliver`` in the trio thread; it
reconnects with backoff when Redis goes away and pings an idle connection so a dead one
is noticed. Under a Cluster the subscription is plain pub/sub on one node: a ``PUBLISH``
from a script on any primary reaches every node over the cluster bus (ARCHITECTURE.md
says what that costs). The embedded
store has no other process to hear from; its messages are polled inline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import trio

from .backend import Backend
from .errors import StoreUnavailable

__all__ = ["listen", "InlinePoller"]

log = logging.getLogger("jobvisor.notify")

Deliver = Callable[[str, str], None]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def listen(backend: Backend, channels: Sequence[str], deliver: Deliver, *, idle: float = 15.0) -> None:
    """Subscribe and call ``deliver(channel, data)`` per message, until cancelled."""
    backoff = 0.05
    down_since: float | None = None  # one warning when the connection is lost, one line when back
    while True:
        try:
            async with backend.async_client() as client, client.subscription(channels, keepalive=idle) as messages:
                backoff = 0.05
                if down_since is not None:
                    log.info("pub/sub reconnected to %s after %.1fs", backend.url, trio.current_time() - down_since)
                    down_since = None
                async for channel, data in messages:
                    deliver(channel, data)
        except StoreUnavailable as exc:
            # Cancelled (the daemon stopping): the connection coredis closed on the way out is
            # not an outage, so nothing is logged.
            await trio.lowlevel.checkpoint_if_cancelled()
            if down_since is None:
                down_since = trio.current_time()
                log.warning("pub/sub lost its connection to %s (%s); reconnecting", backend.url, exc.detail)
            await trio.sleep(backoff)
            backoff = min(2.0, backoff * 2)


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
