"""Where the Lua library runs: a real redis-server, or the embedded store.

Both are a redis-py client object; only the URL differs:

* ``redis://host:port/db`` (or ``rediss://``, ``unix://``): redis-server. The
  synchronous store and the CLI use redis-py; the daemon's store actor and its
  pub/sub listener use trio-native connections (:mod:`adapters.resp`).
* ``memory://`` or ``memory://<name>``: fakeredis with lupa running the very
  same scripts, in process. It is called inline (no thread), which is what
  makes actor tests under ``trio.testing.MockClock`` deterministic.

One :meth:`Backend.run` is one pipeline, one round trip: every group of ops
for a queue becomes one ``FCALL`` of the Lua library and every read command
rides along. redis-py's own retrying is switched off: a connection error is
raised as :class:`StoreUnavailable` and nothing is re-sent, because whether
Redis applied the pipeline is unknown. "Function not found" (a new Redis, or
one that lost its functions) is different: nothing ran, so the library is
loaded and just those calls run again.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .calls import Call, CommandCall, OpsCall
from .errors import BadInput, StoreError, StoreUnavailable, redact, transient_reply
from .keys import script_keys
from .replies import Reply
from .scripts import LuaLibrary

if TYPE_CHECKING:  # trio only in the daemon: the synchronous store never loads it
    from .resp import TrioConnection

__all__ = ["Backend", "OpsCall", "CommandCall", "MemoryServers", "open_backend"]

STREAM_CAP = 100_000
"""Approximate cap of each queue's event stream (``XADD MAXLEN ~``)."""


_REPLIES = msgspec.json.Decoder(list[Reply])


class MemoryServers:
    """The embedded stores of this process, by name (``memory://<name>``)."""

    def __init__(self) -> None:
        self._servers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        import fakeredis

        with self._lock:
            if name not in self._servers:
                self._servers[name] = fakeredis.FakeServer()
            return self._servers[name]


class Backend:
    """A redis-py-compatible client plus the Lua library loaded on it."""

    def __init__(
        self, client: Any, url: str, *, inline: bool, stream_cap: int = STREAM_CAP, timeout: float = 5.0
    ) -> None:
        self.client = client
        self._url = url
        self.url = redact(url)
        self.timeout = timeout
        self.inline = inline
        self.library = LuaLibrary()
        self.stream_cap = stream_cap
        self.round_trips = 0

    def run(self, calls: Sequence[Call], now_ms: int) -> list[Any]:
        """Run ``calls`` in one pipeline; each result is a value or an exception.

        Raises :class:`StoreUnavailable` when Redis cannot be reached.
        """
        results = self._pipeline(calls, now_ms)
        missing = [i for i, r in enumerate(results) if _function_missing(r)]
        if missing:
            self._load_library()
            again = self._pipeline([calls[i] for i in missing], now_ms)
            for i, r in zip(missing, again, strict=True):
                results[i] = r
        return [self._decode(call, r) for call, r in zip(calls, results, strict=True)]

    async def run_async(self, connection: TrioConnection, calls: Sequence[Call], now_ms: int) -> list[Any]:
        """:meth:`run` over a trio-native connection (redis-server only): no thread hop."""
        results = await connection.pipeline(self._commands(calls, now_ms))
        self.round_trips += 1
        missing = [i for i, r in enumerate(results) if _function_missing(r)]
        if missing:
            replies = await connection.pipeline(_load_commands(self.library))
            stale = self._loaded(replies)
            if stale:
                await connection.pipeline([("FUNCTION", "DELETE", name) for name in stale])
            again = await connection.pipeline(self._commands([calls[i] for i in missing], now_ms))
            self.round_trips += 3 if stale else 2
            for i, r in zip(missing, again, strict=True):
                results[i] = r
        return [self._decode(call, r) for call, r in zip(calls, results, strict=True)]

    def _load_library(self) -> None:
        """Load (replace) this version's library and remove stale ones: see :class:`LuaLibrary`."""
        stale = self._loaded(self._send(_load_commands(self.library)))
        if stale:  # each reply is ignored: a concurrent loader may have deleted it first
            self._send([("FUNCTION", "DELETE", name) for name in stale])

    def _loaded(self, replies: list[Any]) -> list[str]:
        """Check the replies of ``_load_commands``; return the stale libraries to delete.

        A refused load (OOM, a script error) is raised as the error its reply maps to."""
        loaded, listed = replies
        if isinstance(loaded, Exception):
            error = self._decode(CommandCall(("FUNCTION", "LOAD")), loaded)
            raise error if isinstance(error, Exception) else StoreError(str(loaded))
        if isinstance(listed, Exception):
            return []  # nothing to prune is never a reason to fail the call that needed the library
        return self.library.stale(_library_names(listed))

    def connection(self) -> TrioConnection:
        """A new trio-native connection to this backend's redis-server (connects on first use)."""
        from .resp import TrioConnection

        return TrioConnection(self._url, timeout=self.timeout, callbacks=self.client.response_callbacks)

    def _commands(self, calls: Sequence[Call], now_ms: int) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        for call in calls:
            if isinstance(call, OpsCall):
                first, prefix = script_keys(call.queue)
                commands.append(("FCALL", self.library.function, 1, first, prefix, now_ms,
                                 call.ops, self.stream_cap))
            else:
                commands.append(call.args)
        return commands

    def _pipeline(self, calls: Sequence[Call], now_ms: int) -> list[Any]:
        return self._send(self._commands(calls, now_ms))

    def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in one pipeline (one round trip); each reply a value or an exception."""
        def send() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            self.round_trips += 1
            return list(pipe.execute(raise_on_error=False))

        replies: list[Any] = self._guard(send)
        return replies

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError,
                redis.exceptions.ResponseError) as exc:
            if isinstance(exc, redis.exceptions.ResponseError) and "DB index is out of range" in str(exc):
                # SELECT on connect: the URL names no database there
                raise BadInput(f"redis: {self.url}: no such database on this server ({exc})") from None
            raise self._mapped(exc) from exc

    def _mapped(self, exc: Exception) -> StoreError:
        """One redis-py error (raised, or a pipeline's reply) as ours: transient ones
        (connection, timeout, ``LOADING``, ``OOM``, ``BUSY``, ``TRYAGAIN``, failover...)
        :class:`StoreUnavailable`, the rest a permanent :class:`StoreError`."""
        if isinstance(exc, (redis.exceptions.ResponseError, redis.exceptions.ConnectionError)):
            transient = transient_reply(self.url, _reply_text(exc))
            if transient is not None:
                return transient
        if isinstance(exc, redis.exceptions.AuthenticationError):
            return StoreError(f"Redis at {self.url} refused the connection: {exc}")
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
            return StoreUnavailable(self.url, str(exc) or type(exc).__name__)
        return StoreError(f"Redis refused a command at {self.url}: {exc}")

    def _decode(self, call: Call, result: Any) -> Any:
        if isinstance(result, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                               redis.exceptions.ResponseError)):
            return self._mapped(result)
        if isinstance(result, Exception):
            return StoreError(f"{type(result).__name__}: {result}")
        if isinstance(call, OpsCall):
            try:
                return _REPLIES.decode(result)
            except msgspec.DecodeError as exc:  # a reply of no known kind, or malformed
                return StoreError(f"store protocol: a reply not understood ({exc})")
        return result

    def ping(self) -> None:
        self._guard(self.client.ping)

    def check_primary(self) -> None:
        """Refuse a server that is a replica (``ROLE``): a daemon pointed at one by mistake
        would wait forever on ``READONLY``, which during a failover is rightly transient."""
        if self.inline:
            return
        try:
            role = self._guard(lambda: self.client.execute_command("ROLE"))
        except StoreUnavailable:
            raise
        except StoreError:  # ROLE not allowed for this user (ACL): nothing to tell
            return
        kind = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
        if kind in ("slave", "replica"):
            raise StoreError(f"Redis at {self.url} is a read-only replica; point --redis at its primary")

    def close(self) -> None:
        self.client.close()


def _load_commands(library: LuaLibrary) -> list[tuple[Any, ...]]:
    return [("FUNCTION", "LOAD", "REPLACE", library.source), ("FUNCTION", "LIST")]


def _library_names(reply: Any) -> list[str]:
    """Library names in a ``FUNCTION LIST`` reply: per library a flat ``[key, value, ...]``
    list (RESP2) or a map (RESP3)."""
    names = []
    for entry in reply or []:
        fields = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=False))
        for key, value in fields.items():
            if key in (b"library_name", "library_name"):
                names.append(value.decode() if isinstance(value, bytes) else str(value))
    return names


# redis-py turns some error replies into classes and drops their code from the message
_CODE_OF = {
    "BusyLoadingError": "LOADING",
    "OutOfMemoryError": "OOM",
    "ReadOnlyError": "READONLY",
    "TryAgainError": "TRYAGAIN",
    "MasterDownError": "MASTERDOWN",
    "ClusterDownError": "CLUSTERDOWN",
}


def _reply_text(exc: Exception) -> str:
    """The error reply behind ``exc``, its code first (``LOADING ...``)."""
    text = str(exc)
    for cls in type(exc).__mro__:
        code = _CODE_OF.get(cls.__name__)
        if code is not None and not text.startswith(code):
            return f"{code} {text}"
    return text


def _function_missing(result: Any) -> bool:
    return isinstance(result, redis.exceptions.ResponseError) and "Function not found" in str(result)


def open_backend(url: str, *, memory: MemoryServers | None = None, timeout: float = 5.0) -> Backend:
    """A backend for ``url``; a bad URL is :class:`BadInput` naming it."""
    if url.startswith("memory://"):
        import fakeredis

        name = url[len("memory://") :] or "default"
        servers = memory if memory is not None else MemoryServers()
        client: redis.Redis = fakeredis.FakeRedis(server=servers.get(name))
        return Backend(client, url, inline=True)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise BadInput(f"redis: {redact(url)!r} is not a Redis URL (redis://host:port/db or memory://)")
    if any(c.isspace() or not c.isprintable() for c in url):  # urlsplit would drop a newline silently
        raise BadInput(f"redis: {redact(url)!r} contains whitespace or control characters")
    try:
        path = urlsplit(url).path
    except ValueError as exc:
        raise BadInput(f"redis: {redact(url)!r} is not a valid Redis URL ({exc})") from None
    if url.startswith(("redis://", "rediss://")) and not _DB_PATH.fullmatch(path):
        raise BadInput(f"redis: {redact(url)!r}: the database must be a number after the port (redis://host:port/0)")
    try:
        client = redis.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
        )
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)  # unknown ?options fail here, before any I/O
    except (ValueError, TypeError) as exc:
        raise BadInput(f"redis: {redact(url)!r} is not a valid Redis URL ({exc})") from None
    if int(pool.connection_kwargs.get("db") or 0) < 0:
        raise BadInput(f"redis: {redact(url)!r}: the database must be a number from 0")
    return Backend(client, url, inline=False, timeout=timeout)


_DB_PATH = re.compile(r"(/[0-9]{0,9})?")
"""The path of a redis:// URL: nothing, ``/`` or ``/<db>`` (redis-py would read ``/1/2`` as 12)."""
