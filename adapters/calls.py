"""What a store call sends: a list of ops for one queue (one ``FCALL``), or a plain command.

The ops are the typed Structs of :mod:`adapters.ops`, encoded once here into the JSON list
the Lua library reads. Kept apart from :mod:`adapters.backend` so the store's op API names
its calls without loading a Redis client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .ops import Op

__all__ = ["Call", "CommandCall", "OpsCall"]


@dataclass(frozen=True, slots=True)
class OpsCall:
    """A list of ops for one queue (or the registry, ``keys.REGISTRY``): one FCALL."""

    queue: str
    ops: bytes  # JSON list
    count: int = 1  # how many ops the list holds

    @classmethod
    def of(cls, queue: str, ops: Sequence[Op[Any]]) -> OpsCall:
        """The call that runs ``ops`` on ``queue``, in order."""
        return cls(queue, _encode(ops), len(ops))


_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class CommandCall:
    """A plain Redis command (reads: HGETALL, XRANGE, ZCARD...)."""

    args: tuple[Any, ...]


Call = OpsCall | CommandCall
