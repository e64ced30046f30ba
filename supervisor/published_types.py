"""The job types a client submits by: read from what daemons publish, kept for a while.

A submit needs its type's defaults (queue, phases, timeout, retries, validator) before it
knows which queue, and so which Redis node, to write to. Reading them on every submit made
each submit two round trips; :class:`PublishedTypes` keeps the last read for ``ttl`` seconds
so that a submit is one round trip (the submit itself). A type the client has not seen, or
whose copy is older than ``ttl``, is read again at once: a type a daemon has just published
is never refused for being new. Defaults a redeployed daemon changes reach a client within
``ttl`` seconds (``types_ttl`` of :class:`~supervisor.client.Client`; 0 reads on every submit).
Types of an :class:`~supervisor.app.App` given to the client need no read at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["PublishedTypes", "DEFAULT_TTL"]

DEFAULT_TTL = 5.0
"""Seconds a client uses a read of the published types before it reads them again."""

Types = dict[str, dict[str, Any]]


class PublishedTypes:
    """The last read of the published types, and whether it still serves ``type``."""

    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0:
            raise ValueError(f"types_ttl: must be 0 or more seconds, not {ttl!r}")
        self.ttl = ttl
        self.clock = clock
        self.types: Types = {}
        self.read_at: float | None = None

    def serves(self, type: str) -> Types | None:
        """The types read last, when they know ``type`` and are not older than ``ttl``; else
        ``None``: read them again (and hand the read to :meth:`keep`)."""
        if self.read_at is None or type not in self.types or self.clock() - self.read_at >= self.ttl:
            return None
        return self.types

    def keep(self, types: Types) -> Types:
        self.types, self.read_at = types, self.clock()
        return types


def merged(published: Types, app_types: Types | None) -> Types:
    """The published types, with an app's own (given to the client) taking precedence."""
    return {**published, **(app_types or {})}
