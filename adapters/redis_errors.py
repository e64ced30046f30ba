"""Redis clients' errors as ours: one mapping for redis-py (the synchronous paths) and coredis
(the daemon's), so both paths raise the same :mod:`adapters.errors` for the same trouble.

Errors are told apart by class name along the class's bases (both libraries name them alike:
``ConnectionError``, ``ResponseError``, ``BusyLoadingError``...), so the synchronous paths
never import coredis to classify an error.
"""

from __future__ import annotations

from typing import Any

from .errors import StoreError, StoreUnavailable, transient_reply

__all__ = ["mapped", "function_missing", "is_client_error"]

# Both clients turn some error replies into classes and drop their code from the message
_CODE_OF = {
    "BusyLoadingError": "LOADING",
    "OutOfMemoryError": "OOM",
    "ReadOnlyError": "READONLY",
    "TryAgainError": "TRYAGAIN",
    "MasterDownError": "MASTERDOWN",
    "ClusterDownError": "CLUSTERDOWN",
    "MovedError": "MOVED",
    "AskError": "ASK",
    "ClusterCrossSlotError": "CROSSSLOT",
}


# A stream that closed under a client's task (anyio's names): the connection is gone
_STREAM_GONE = frozenset({"ClosedResourceError", "BrokenResourceError", "EndOfStream"})


def _names(exc: BaseException) -> set[str]:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _STREAM_GONE:
        names.add("ConnectionError")
    return names


def is_client_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis client's error (or a socket's): what :func:`mapped` maps."""
    names = _names(exc)
    return (isinstance(exc, OSError | TimeoutError) or "RedisError" in names or "ResponseError" in names
            or "ConnectionError" in names or type(exc).__module__.split(".")[0] in ("redis", "coredis"))


def _reply_text(exc: BaseException) -> str:
    """The error reply behind ``exc``, its code first (``LOADING ...``)."""
    text = str(exc)
    for cls in type(exc).__mro__:
        code = _CODE_OF.get(cls.__name__)
        if code is not None and not text.startswith(code):
            return f"{code} {text}"
    return text


def mapped(url: str, exc: BaseException) -> StoreError:
    """One client error (raised, or a pipeline's reply) as ours: transient ones
    (connection, timeout, ``LOADING``, ``OOM``, ``BUSY``, ``TRYAGAIN``, failover...)
    :class:`StoreUnavailable`, the rest a permanent :class:`StoreError`."""
    names = _names(exc)
    text = _reply_text(exc)
    if "ResponseError" in names or "ConnectionError" in names:
        transient = transient_reply(url, text)
        if transient is not None:
            return transient
    if any(n.startswith("Authentication") for n in names):
        return StoreError(f"Redis at {url} refused the connection: {exc}")
    if text.startswith(("MOVED", "ASK")):
        return StoreError(f"Redis at {url} is a Cluster node ({text}); name its nodes as "
                          "redis+cluster://host:port,host:port")
    if "ConnectionError" in names or "TimeoutError" in names or isinstance(exc, OSError):
        cause = exc.__cause__
        detail = str(exc) or ("connection lost" if _names(exc) & _STREAM_GONE else type(exc).__name__)
        if cause is not None and str(cause) and str(cause) not in detail:
            detail = f"{detail} ({cause})"
        return StoreUnavailable(url, detail)
    return StoreError(f"Redis refused a command at {url}: {exc}")


def function_missing(result: Any) -> bool:
    return isinstance(result, Exception) and "Function not found" in str(result)
