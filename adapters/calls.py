"""What a store call sends: a list of ops for one queue (one ``FCALL``), or a plain command.

Kept apart from :mod:`adapters.backend` so the store's op API names its calls without
loading a Redis client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Call", "CommandCall", "OpsCall"]


@dataclass(frozen=True, slots=True)
class OpsCall:
    """A list of ops for one queue (or the registry, ``keys.REGISTRY``): one FCALL."""

    queue: str
    ops: bytes  # JSON list
    count: int = 1  # how many ops the list holds


@dataclass(frozen=True, slots=True)
class CommandCall:
    """A plain Redis command (reads: HGETALL, XRANGE, ZCARD...)."""

    args: tuple[Any, ...]


Call = OpsCall | CommandCall
