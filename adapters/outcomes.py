"""What a handler's attempt ended with, made safe to store whatever the handler did.

A handler is user code: it may raise an exception whose ``__str__`` raises,
whose message is 10 MB, an exception group nested in exception groups, a
``SystemExit``; it may return a value nested 5,000 deep, an object JSON has
no form for, or 100 MB. None of that may escape into the daemon. These
functions never raise (bar ``MemoryError`` itself): they turn any of it into
a bounded error record, or the result's JSON, or the reason it cannot be
stored.

They are pure and have no trio in them, so the child process of a
process-isolated handler uses them too (its result crosses the process
boundary as JSON bytes already checked here).
"""

from __future__ import annotations

import traceback
from typing import Any

import msgspec

__all__ = ["MESSAGE_LIMIT", "TRACEBACK_LIMIT", "Unstorable", "encode_result", "error_record", "safe_text"]

MESSAGE_LIMIT = 2000
"""Characters of an error message kept in the attempt record."""

TRACEBACK_LIMIT = 4000
"""Characters of the traceback summary kept (its end: the innermost frames)."""

_GROUP_MEMBERS = 8  # members of an exception group named in its message, at most
_encode = msgspec.json.Encoder().encode


class Unstorable(Exception):
    """A result that cannot be stored; ``reason`` is one line for the attempt record."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def safe_text(render: Any, obj: Any, limit: int) -> str | None:
    """``render(obj)`` (``str`` or ``repr``) cut to ``limit`` characters, or None when it raises."""
    try:
        text = render(obj)
        if not isinstance(text, str):
            return None
    except BaseException:  # noqa: BLE001 - user code: a broken __str__ is a fact to record, not a crash
        return None
    return text if len(text) <= limit else text[:limit] + f"…[{len(text) - limit} more characters]"


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    name = safe_text(lambda k: k.__qualname__, kind, 200) or "Exception"
    module = getattr(kind, "__module__", "") or ""
    return name if module in ("builtins", "") else f"{module}.{name}"


def _message(exc: BaseException, depth: int = 0) -> str:
    text = safe_text(str, exc, MESSAGE_LIMIT)
    if text is None:
        text = safe_text(repr, exc, MESSAGE_LIMIT)
    if text is None:
        text = f"<{_type_name(exc)}: its message could not be rendered>"
    if isinstance(exc, BaseExceptionGroup) and depth < 3:
        members = [f"{_type_name(e)}: {_message(e, depth + 1)}" for e in exc.exceptions[:_GROUP_MEMBERS]]
        more = len(exc.exceptions) - _GROUP_MEMBERS
        text += " [" + "; ".join(members) + (f"; and {more} more" if more > 0 else "") + "]"
    return text[:MESSAGE_LIMIT * 2]


def _traceback(exc: BaseException, limit: int) -> str:
    try:
        frames = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=limit)
        return "".join(frames)[-TRACEBACK_LIMIT:]
    except BaseException:  # noqa: BLE001 - a traceback that cannot be rendered is left out
        try:
            return "".join(traceback.format_tb(exc.__traceback__, limit=limit))[-TRACEBACK_LIMIT:]
        except BaseException:  # noqa: BLE001
            return ""


def error_record(exc: BaseException, *, limit: int = 8) -> dict[str, Any]:
    """An exception as stored: type, message and a short traceback summary. Never raises.

    A message that cannot be rendered (its ``__str__`` and ``__repr__`` raise)
    is replaced by a note saying so; long messages and tracebacks are cut;
    an exception group names its first members.
    """
    return {"type": _type_name(exc), "message": _message(exc), "traceback": _traceback(exc, limit)}


def encode_result(value: Any, *, max_bytes: int) -> bytes:
    """``value`` as JSON, or :class:`Unstorable` naming why not (unsupported type, too deep,
    over ``max_bytes``). Never raises anything else."""
    try:
        raw = _encode(value)
    except RecursionError:
        raise Unstorable("the handler's result is nested too deeply to encode as JSON") from None
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        detail = safe_text(str, exc, 300) or type(exc).__name__
        raise Unstorable(f"the handler's result cannot be encoded as JSON: {detail}") from None
    except Exception as exc:  # noqa: BLE001 - a user type's hook raised while being encoded
        raise Unstorable(f"the handler's result cannot be encoded as JSON: {_type_name(exc)} "
                         f"{safe_text(str, exc, 300) or ''}".rstrip()) from None
    if len(raw) > max_bytes:
        raise Unstorable(f"the handler's result is {len(raw):,} bytes of JSON, over the limit of "
                         f"{max_bytes:,} (max_result_bytes)")
    return raw
