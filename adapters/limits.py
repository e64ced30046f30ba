"""The limits on what callers give: size, nesting, ids, durations.

Every check raises ``ValueError`` naming the field (``input: nested more than 100 levels
deep``); :mod:`adapters.records` turns it into :class:`~adapters.errors.BadInput`, the one
line the CLI prints with exit code 2. README's "Bad input" lists these limits.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .keys import queue_of

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_INPUT_DEPTH",
    "RESOLUTION",
    "check_input",
    "check_object_id",
    "check_resolution",
    "input_depth_exceeded",
]

MAX_INPUT_BYTES = 1 << 20
"""Default input size limit (1 MiB), checked on the encoded JSON (and on the raw text the CLI reads)."""
MAX_INPUT_DEPTH = 100
"""How deep input may nest (arrays and objects). Far beyond any real payload, and far below what
would exhaust the interpreter's stack in a decoder, an encoder or the sanitizer."""
RESOLUTION = 0.001
"""The store keeps times and durations in whole milliseconds: a non-zero duration below this
would be stored as 0 (no time limit, no wait), so it is refused instead."""


def check_resolution(field: str, seconds: float) -> None:
    """A ``ValueError`` naming ``field`` for a duration the store would round down to 0."""
    if 0 < seconds < RESOLUTION:
        raise ValueError(f"{field}: {seconds:g} s is below the store's resolution of 1 ms (give 0 or at least 0.001)")


def check_object_id(field: str, value: str) -> str:
    """``value`` if it reads ``<queue>.<id>``, else a ``ValueError`` naming ``field``."""
    try:
        queue_of(value)
    except ValueError:
        raise ValueError(f"{field}: {value!r} is not a jobvisor id (<queue>.<id>)") from None
    return value


def input_depth_exceeded(value: Any, limit: int = MAX_INPUT_DEPTH) -> bool:
    """Whether ``value`` nests arrays/objects more than ``limit`` deep. Iterative, and it stops
    at ``limit``: a value too deep (or containing itself) for any recursive walk is measured safely."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def check_input(value: Any) -> None:
    """A ``ValueError`` naming ``input`` for a value that nests too deep or is not JSON-encodable
    (a lone surrogate in a string, an object msgspec cannot encode)."""
    if input_depth_exceeded(value):
        raise ValueError(f"input: nested more than {MAX_INPUT_DEPTH} levels deep")
    try:
        msgspec.json.encode(value)
    except UnicodeEncodeError:
        raise ValueError("input: contains text that is not valid UTF-8 (a lone surrogate)") from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"input: cannot be encoded as JSON ({exc})") from None
