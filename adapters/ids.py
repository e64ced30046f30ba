"""Job and batch ids: ``<queue>.<ULID>``.

The queue is part of the id because every key of a job carries its queue's
hash tag; the ULID part sorts by creation time (48 bits of milliseconds,
then 80 random bits), so ids in one millisecond are still unique.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .keys import check_queue_name

__all__ = ["new_token", "IdGenerator"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_token(randbytes: Callable[[int], bytes] = os.urandom) -> str:
    """A short random nonce; lease tokens are ``<nonce>.<attempt>``."""
    return randbytes(6).hex()


class IdGenerator:
    """Monotonic ULIDs: within one millisecond each id is the previous one plus one,
    so ids (and the FIFO order of jobs submitted in one millisecond) follow submit order."""

    def __init__(self, randbytes: Callable[[int], bytes] = os.urandom) -> None:
        self.randbytes = randbytes
        self._last_ms = -1
        self._last_random = 0

    def new_id(self, queue: str, now_ms: int) -> str:
        check_queue_name(queue)
        if now_ms <= self._last_ms:
            now_ms = self._last_ms
            self._last_random = (self._last_random + 1) & ((1 << 80) - 1)
        else:
            self._last_ms = now_ms
            self._last_random = int.from_bytes(self.randbytes(10), "big") >> 1  # room to count up
        value = (now_ms & ((1 << 48) - 1)) << 80 | self._last_random
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return f"{queue}.{''.join(reversed(chars))}"


def created_ms(object_id: str) -> int | None:
    """When the job or batch ``object_id`` was made (epoch ms, the submitter's clock), read from
    its ULID; ``None`` for an id that is not ``<queue>.<ULID>``."""
    _, _, ulid = object_id.rpartition(".")
    if len(ulid) != 26:
        return None
    value = 0
    for char in ulid[:10]:
        digit = _CROCKFORD.find(char)
        if digit < 0:
            return None
        value = value << 5 | digit
    return value
