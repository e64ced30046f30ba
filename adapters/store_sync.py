"""The synchronous client: :class:`SyncStore`, generated from :class:`~adapters.store_ops.Store`.

Every public method of :class:`Store` gets a counterpart of the same name and
signature here, made when this module is imported: a coroutine method is driven over a
:class:`~adapters.store_core.DirectExecutor`, where it never suspends, and returns its
result; a plain method is passed through. Nothing is listed by hand, so an operation
added to :class:`Store` is in the synchronous client at once. A type checker reads the
operations from ``store_sync.pyi``, rendered from :class:`Store` by :mod:`adapters.store_stub`.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from .store_core import DirectExecutor
from .store_ops import Store

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["SyncStore", "drive", "store_operations"]

T = TypeVar("T")


def store_operations() -> dict[str, Callable[..., Any]]:
    """The public methods of :class:`Store`, by name: what :class:`SyncStore` offers."""
    members = inspect.getmembers(Store, inspect.isfunction)
    return {name: fn for name, fn in members if not name.startswith("_")}


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of a store over a direct executor (it never suspends) to its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("a store call over a direct executor tried to suspend")


def _blocking(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        def call(self: SyncStore, *args: Any, **kwargs: Any) -> Any:
            return drive(method(self.store, *args, **kwargs))
    else:
        @functools.wraps(method)
        def call(self: SyncStore, *args: Any, **kwargs: Any) -> Any:
            return method(self.store, *args, **kwargs)
    return call


class SyncStore:
    """The plain synchronous client: the same operations as :class:`Store`, blocking."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        self.backend = backend
        self.store = Store(DirectExecutor(backend, clock), **kwargs)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def _generate() -> None:
    own = set(vars(SyncStore)) | {"backend", "store"}
    for name, method in store_operations().items():
        if name in own:
            raise TypeError(f"SyncStore: Store.{name} would hide the synchronous client's own {name}")
        setattr(SyncStore, name, _blocking(method))


_generate()
