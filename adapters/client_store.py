"""A store for a client's own event loop: trio or asyncio alike.

The daemon's store actor is a trio task that batches every caller's calls into one pipeline.
A client embedded in an asyncio service (FastAPI, aiohttp...) has no trio run to host it, so
:func:`open_store` gives it a :class:`~adapters.store_ops.Store` over a
:class:`CoredisExecutor`: each call is one pipeline sent on a coredis client
(:mod:`adapters.redis_async`, built on anyio), awaited in whichever loop the caller runs.
coredis multiplexes concurrent callers on its pooled connections, so there is no actor and no
task of ours to host. The embedded store (``memory://``) is called inline, as everywhere.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from .backend import Backend, MemoryServers, open_backend
from .calls import Call
from .redis_async import AsyncRedis
from .store_core import DirectExecutor
from .store_ops import Store

__all__ = ["CoredisExecutor", "open_store"]


class CoredisExecutor:
    """Runs each caller's calls as one pipeline on a coredis client, under trio or asyncio.

    A round trip that started is finished even when its caller is cancelled (shielded, and
    bounded by the client's timeouts), so no connection is left half-way through a reply;
    the cancelled caller's answer is dropped. Nothing is re-sent: errors are the backend's
    (:class:`~adapters.errors.StoreUnavailable` naming the URL)."""

    def __init__(self, backend: Backend, connection: AsyncRedis, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.connection = connection
        self.now = clock

    async def execute(self, calls: Sequence[Call]) -> list[Any]:
        with anyio.CancelScope(shield=True):
            results = await self.backend.run_async(self.connection, calls, int(self.now() * 1000))
        return results


@asynccontextmanager
async def open_store(url: str, *, memory: MemoryServers | None = None, redis_timeout: float = 5.0,
                     **options: Any) -> AsyncIterator[Store]:
    """A :class:`Store` for ``url`` in the caller's loop for the duration of the context; a bad
    URL is :class:`~adapters.errors.BadInput`. Connects on first use; ``redis_timeout``: seconds
    one connect or round trip may take."""
    backend = open_backend(url, memory=memory, timeout=redis_timeout)
    try:
        if backend.inline:
            yield Store(DirectExecutor(backend), **options)
            return
        async with backend.async_client() as connection:
            yield Store(CoredisExecutor(backend, connection), **options)
    finally:
        backend.close()
