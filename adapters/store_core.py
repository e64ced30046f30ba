"""The store's plumbing: executors, and the core every group of operations builds on.

An *executor* runs calls (:mod:`adapters.calls`) and answers one result per call:
:class:`DirectExecutor` at once on the calling thread (the embedded store inline,
redis-server blocking), :class:`~adapters.store_actor.StoreActor` batched by one trio
task. :class:`StoreCore` holds what every operation shares (sanitizing, id making,
refusals) and knows nothing of trio or of a Redis client.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import msgspec

from . import replies
from .calls import Call, CommandCall, OpsCall
from .errors import BadInput, NotFound, Rejected, StoreError
from .ids import IdGenerator
from .keys import queue_of
from .ops import Op, answers
from .records import MAX_INPUT_BYTES
from .replies import Reply, ScriptError
from .sanitize import Sanitizer

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["Due", "DirectExecutor", "Executor", "IDEMPOTENCY_TTL", "MAX_BATCH_ADD", "StoreCore"]

IDEMPOTENCY_TTL = 86400.0
"""How long an idempotency key keeps returning the same job (seconds)."""

MAX_BATCH_ADD = 1000
"""Jobs one ``add_to_batch`` call may add: the call is one script, and a script holds Redis."""

json_encode = msgspec.json.Encoder().encode
json_decode = msgspec.json.Decoder().decode
T = TypeVar("T")
R = TypeVar("R")
DEFAULT_SANITIZER = Sanitizer()


@dataclass(frozen=True, slots=True)
class Due(Generic[T]):
    """Work taken from an index, and when the next item there falls due (epoch seconds)."""

    items: list[T]
    next_due: float | None


def next_due(ms: float | None) -> float | None:
    """A reply's ``next_due`` (ms) in epoch seconds."""
    return ms / 1000 if ms is not None else None


class Executor(Protocol):
    """Runs calls; one result (or exception instance) per call, in order."""

    async def execute(self, calls: Sequence[Call]) -> list[Any]: ...

    def now(self) -> float: ...


class DirectExecutor:
    """Runs each call at once, blocking, on the caller's thread."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.now = clock

    async def execute(self, calls: Sequence[Call]) -> list[Any]:
        return self.backend.run(calls, int(self.now() * 1000))


def one(result: Any) -> Any:
    """A call's result, raised when it is an exception."""
    if isinstance(result, Exception):
        raise result
    return result


class StoreCore:
    """What every group of store operations shares (see :class:`adapters.store.Store`)."""

    def __init__(
        self,
        executor: Executor,
        *,
        max_input_bytes: int = MAX_INPUT_BYTES,
        sanitizer: Sanitizer | None = DEFAULT_SANITIZER,
        randbytes: Callable[[int], bytes] = os.urandom,
        rng: random.Random | None = None,
        observers: Sequence[Callable[[Sequence[Reply]], None]] = (),
    ) -> None:
        self.executor = executor
        self.observers = list(observers)
        self._known_queues: set[str] = set()
        self.max_input_bytes = max_input_bytes
        self.sanitizer = sanitizer
        self.randbytes = randbytes
        self.ids = IdGenerator(randbytes)
        self.rng = rng or random.Random()

    # -- plumbing -----------------------------------------------------------

    async def _ops(self, queue: str, ops: Sequence[Op[R]]) -> list[R]:
        """Run ``ops`` on ``queue`` in one call; each reply is of a kind its op answers."""
        return self._answers(ops, one((await self.executor.execute([OpsCall.of(queue, ops)]))[0]))

    async def _op(self, queue: str, op: Op[R]) -> R:
        return (await self._ops(queue, [op]))[0]

    def _answers(self, ops: Sequence[Op[R]], got: list[Reply]) -> list[R]:
        """Check the replies of ``ops`` and show them to the observers. A script error is
        raised, and so is a refusal the op does not answer (``rejected``, ``not_found``:
        :class:`Rejected`, :class:`NotFound`); any other kind it cannot answer is a protocol
        error."""
        for reply in got:
            if isinstance(reply, ScriptError):
                raise StoreError(f"store script failed: {reply.error}")
        for observe in self.observers:
            observe(got)
        for op, reply in zip(ops, got, strict=True):
            if not isinstance(reply, answers(type(op))):
                if isinstance(reply, replies.Rejected):
                    raise Rejected(reply.error)
                if isinstance(reply, replies.NotFound):
                    raise NotFound(f"{reply.what} {reply.id} not found")
                raise StoreError(f"store protocol: {type(op).__name__} answered {reply.kind!r}")
        return cast(list[R], got)

    async def _command(self, *args: Any) -> Any:
        return one((await self.executor.execute([CommandCall(args)]))[0])

    async def _commands(self, calls: Iterable[tuple[Any, ...]]) -> list[Any]:
        return [one(r) for r in await self.executor.execute([CommandCall(c) for c in calls])]

    def _now_ms(self) -> int:
        return int(self.executor.now() * 1000)

    @staticmethod
    def _queue_of(object_id: str) -> str:
        try:
            return queue_of(object_id)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    def _clean(self, value: Any) -> str:
        """``value`` as the JSON that is stored: sanitized (unless the sanitizer is off)."""
        if self.sanitizer is not None:
            value = self.sanitizer.sanitize(value)
        return json_encode(value).decode()

    def _clean_raw(self, raw: bytes) -> str:
        return (raw if self.sanitizer is None else self.sanitizer.sanitize_json(raw)).decode()


