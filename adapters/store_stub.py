"""The type stub of :mod:`adapters.store_sync`, rendered from :class:`~adapters.store_ops.Store`.

:class:`~adapters.store_sync.SyncStore` is generated when its module is imported, which a
type checker cannot follow, so ``store_sync.pyi`` states the same operations with their real
signatures and return types. It is rendered from ``Store`` by this module, never written by
hand; a test checks that the committed stub is the rendered one. After changing an operation::

    python -m jobvisor.adapters.store_stub > adapters/store_sync.pyi
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from typing import Any, get_args

from .store_sync import store_operations

__all__ = ["render"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUILTIN = frozenset({"None", "Any", "str", "int", "float", "bool", "bytes", "dict", "list", "tuple", "set",
                      "frozenset", "object", "type"})


def _annotation(value: Any) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _parameter(param: inspect.Parameter) -> str:
    text = param.name
    if param.kind is param.VAR_POSITIONAL:
        text = "*" + text
    elif param.kind is param.VAR_KEYWORD:
        text = "**" + text
    if param.annotation is not param.empty:
        text += f": {_annotation(param.annotation)}"
    if param.default is not param.empty:
        text += " = ..."
    return text


def _signature(fn: Callable[..., Any]) -> tuple[str, str, list[str]]:
    """``(parameters, return type, every annotation)`` of a Store method, as the blocking form
    states them."""
    sig = inspect.signature(fn)
    parts: list[str] = []
    annotations = [_annotation(p.annotation) for p in sig.parameters.values() if p.annotation is not p.empty]
    star_done = False
    for param in sig.parameters.values():
        if param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if param.kind is param.VAR_POSITIONAL:
            star_done = True
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"Store.{fn.__name__}: positional-only parameters are not rendered")
        parts.append(_parameter(param))
    returns = "Any" if sig.return_annotation is sig.empty else _annotation(sig.return_annotation)
    return ", ".join(parts), returns, [*annotations, returns]


def _imports(texts: list[str], operations: dict[str, Callable[..., Any]]) -> list[str]:
    """``from <module> import <names>`` for every name the signatures use, found where the
    operations themselves were defined."""
    wanted = {name for text in texts for name in _NAME.findall(text)} - _BUILTIN
    found: dict[str, set[str]] = {}
    for name in sorted(wanted):
        for fn in operations.values():
            value = fn.__globals__.get(name)
            if value is None:
                continue
            module = getattr(value, "__module__", None)
            if module == "types":  # a union alias: where it is defined, else where it is used
                module = _alias_home(name, value, fn)
            if module is None or module == "builtins":
                break
            found.setdefault(module if module != "_collections_abc" else "collections.abc", set()).add(name)
            break
        else:
            raise TypeError(f"the store stub cannot find where {name!r} comes from")
    return [f"from {module} import {', '.join(sorted(names))}" for module, names in sorted(found.items())]


def _alias_home(name: str, value: Any, fn: Callable[..., Any]) -> str:
    """The module that defines union alias ``name``: one of its members' modules, or ``fn``'s."""
    for member in get_args(value):
        module = sys.modules.get(getattr(member, "__module__", ""))
        if module is not None and getattr(module, name, None) is value:
            return module.__name__
    return fn.__module__


def render() -> str:
    """The text of ``store_sync.pyi``."""
    operations = store_operations()
    lines: list[str] = []
    texts: list[str] = []
    for name, fn in operations.items():
        params, returns, annotations = _signature(fn)
        texts += annotations
        lines.append(f"    def {name}({params}) -> {returns}: ...")
    imports = _imports(texts, operations)
    header = [
        "# The blocking store's operations as the type checker sees them. Rendered from Store by",
        "# `python -m jobvisor.adapters.store_stub`; never edit by hand (a test compares).",
        "from collections.abc import Callable, Coroutine",
        "from typing import Any, TypeVar",
        "",
        "from jobvisor.adapters.backend import Backend",
        "from jobvisor.adapters.store_ops import Store",
        *(line for line in imports if line != "from typing import Any"),
        "",
        '__all__ = ["SyncStore", "drive", "store_operations"]',
        "",
        'T = TypeVar("T")',
        "",
        "def store_operations() -> dict[str, Callable[..., Any]]: ...",
        "def drive(coro: Coroutine[Any, Any, T]) -> T: ...",
        "",
        "class SyncStore:",
        "    backend: Backend",
        "    store: Store",
        "    def __init__(self, backend: Backend, clock: Callable[[], float] = ..., **kwargs: Any) -> None: ...",
        "    def close(self) -> None: ...",
        "    def __enter__(self) -> SyncStore: ...",
        "    def __exit__(self, *exc: object) -> None: ...",
    ]
    return "\n".join(header + lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
