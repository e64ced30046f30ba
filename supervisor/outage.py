"""Waiting out a store outage: backoff, and two log lines per outage instead of one per retry.

Every actor talks to the store through :class:`~adapters.store.Store`; when
Redis is away (connection lost, ``LOADING``, ``OOM``, a failover: every
transient condition is a :class:`~adapters.errors.StoreUnavailable`) the
actor keeps its state and tries again after a backoff. A
:class:`StoreOutage` per actor (or per loop) keeps that backoff and does the
logging: one WARNING when the actor first loses the store, naming the
condition, and one INFO when a call succeeds again, with how long it lasted.
Retries in between log nothing (DEBUG only).

Time comes from trio (``trio.current_time``); nothing here blocks except
:meth:`StoreOutage.wait`, which is a plain ``trio.sleep`` (cancellable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from jobvisor.adapters.errors import StoreUnavailable

__all__ = ["StoreOutage"]


class StoreOutage:
    """One actor's view of the store: up, or down since when (see the module docstring)."""

    def __init__(self, actor: str, log: logging.Logger, *, min_backoff: float = 0.05,
                 max_backoff: float = 2.0, clock: Callable[[], float] = trio.current_time) -> None:
        self.actor = actor
        self.log = log
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self.since: float | None = None  # when the store was lost; None while it answers
        self.retries = 0
        self._backoff = min_backoff

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: StoreUnavailable) -> float:
        """Record a failed call; returns how long to wait before the next try."""
        if self.since is None:
            self.since = self.clock()
            self.retries = 0
            self._backoff = self.min_backoff
            self.log.warning("%s: lost the store (%s); waiting for it", self.actor, exc)
        else:
            self.log.debug("%s: store still away (%s)", self.actor, exc)
        self.retries += 1
        delay = self._backoff
        self._backoff = min(self.max_backoff, self._backoff * 2)
        return delay

    def reached(self) -> None:
        """Record a call that succeeded: logs the end of the outage, if there was one."""
        if self.since is not None:
            self.log.info("%s: the store is back after %.1fs", self.actor, self.clock() - self.since)
            self.since = None
            self._backoff = self.min_backoff

    async def wait(self, exc: StoreUnavailable) -> None:
        """:meth:`failed`, then sleep its backoff."""
        await trio.sleep(self.failed(exc))
