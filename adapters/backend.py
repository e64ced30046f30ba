"""Where the Lua library runs: redis-server (one, a Cluster, a Sentinel set), or the embedded store.

The URL says which (:mod:`adapters.redis_urls`):

* ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``, ``redis+sentinel://``:
  redis-server. The synchronous store and the CLI use redis-py (its ``RedisCluster`` and
  ``Sentinel`` for those topologies); the daemon's store actor, its pub/sub listener and the
  event followers use coredis on anyio (:mod:`adapters.redis_async`), with no thread hop.
* ``memory://`` or ``memory://<name>``: fakeredis with lupa running the very
  same scripts, in process. It is called inline (no thread), which is what
  makes actor tests under ``trio.testing.MockClock`` deterministic.

One :meth:`Backend.run` is one pipeline, one round trip (one per node under a Cluster): every
group of ops for a queue becomes one ``FCALL`` of the Lua library and every read command
rides along. The clients' own retrying is switched off: a connection error is
raised as :class:`StoreUnavailable` and nothing is re-sent, because whether
Redis applied the pipeline is unknown. "Function not found" (a new Redis, a failed-over one,
or one that lost its functions) is different: nothing ran, so the library is
loaded (on every primary of a Cluster) and just those calls run again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .calls import Call, CommandCall, OpsCall
from .errors import BadInput, StoreError, StoreUnavailable, redact
from .keys import script_keys
from .redis_errors import function_missing, is_client_error, mapped
from .redis_sync import ClusterPipeline
from .redis_urls import RedisTarget, parse_redis_url
from .replies import Reply
from .scripts import LuaLibrary

if TYPE_CHECKING:  # coredis only in the daemon: the synchronous store never loads it
    from contextlib import AbstractAsyncContextManager

    from .redis_async import AsyncRedis

__all__ = ["Backend", "OpsCall", "CommandCall", "MemoryServers", "open_backend"]

STREAM_CAP = 100_000
"""Approximate cap of each queue's event stream (``XADD MAXLEN ~``)."""


_REPLIES = msgspec.json.Decoder(list[Reply], strict=False)
"""Not strict: a number may come as its digits in a string (the Lua sends a stored number as it
is stored, rather than convert it twice)."""

LOAD_ROUNDS = 3
"""Loads of the library one synchronous call makes at most on "Function not found" (during a
failover, the primary that took the load may no longer be the one that runs the call)."""


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
        self, client: Any, url: str, *, inline: bool, stream_cap: int = STREAM_CAP, timeout: float = 5.0,
        target: RedisTarget | None = None,
    ) -> None:
        self.client = client
        self.target = target
        self.cluster = target is not None and target.kind == "cluster"
        self._cluster = ClusterPipeline(client) if self.cluster else None
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
        for _ in range(LOAD_ROUNDS):  # a failover between the load and the call: load again
            missing = [i for i, r in enumerate(results) if function_missing(r)]
            if not missing:
                break
            self._load_library()
            again = self._pipeline([calls[i] for i in missing], now_ms)
            for i, r in zip(missing, again, strict=True):
                results[i] = r
        return [self._decode(call, r) for call, r in zip(calls, results, strict=True)]

    async def run_async(self, connection: AsyncRedis, calls: Sequence[Call], now_ms: int) -> list[Any]:
        """:meth:`run` over the daemon's coredis client (redis-server only): no thread hop."""
        results = self._replicated(calls, await self._pipeline_async(
            connection, self._commands(calls, now_ms), self._wait(calls)))
        self.round_trips += 1
        missing = [i for i, r in enumerate(results) if function_missing(r)]
        if missing:
            stale = self._loaded(await self._guard_async(connection.function_load(self.library.source)))
            if stale:
                await self._guard_async(connection.function_delete(stale))
            retry = [calls[i] for i in missing]
            again = self._replicated(retry, await self._pipeline_async(
                connection, self._commands(retry, now_ms), self._wait(retry)))
            self.round_trips += 3 if stale else 2
            for i, r in zip(missing, again, strict=True):
                results[i] = r
        return [self._decode(call, self._shaped(call, r)) for call, r in zip(calls, results, strict=True)]

    async def run_commands(self, connection: AsyncRedis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Plain commands over the daemon's client, shaped and mapped as :meth:`run_async` does."""
        calls = [CommandCall(c) for c in commands]
        results = await self._pipeline_async(connection, list(commands))
        return [self._decode(call, self._shaped(call, r)) for call, r in zip(calls, results, strict=True)]

    async def _pipeline_async(self, connection: AsyncRedis, commands: list[tuple[Any, ...]],
                              wait: tuple[Any, ...] | None = None) -> list[Any]:
        results: list[Any] = await self._guard_async(connection.pipeline(commands, wait=wait))
        return results

    async def _guard_async(self, awaitable: Any) -> Any:
        from .redis_async import cx

        try:
            return await awaitable
        except (cx.RedisError, TimeoutError, OSError) as exc:
            raise self._mapped(exc) from exc

    def _shaped(self, call: Call, reply: Any) -> Any:
        """A plain command's reply shaped as redis-py's client shapes it (so both paths agree)."""
        if isinstance(call, OpsCall) or isinstance(reply, BaseException):
            return reply
        name = str(call.args[0]).upper()
        callback = _callbacks().get(name)
        return callback(reply) if callback is not None else reply

    def _load_library(self) -> None:
        """Load (replace) this version's library and remove stale ones: see :class:`LuaLibrary`."""
        if self.cluster:  # on every primary: a queue's slot may be on any of them
            for node in self.client.get_primaries():
                def on_node(*command: Any, node: Any = node) -> Any:
                    return self.client.execute_command(*command, target_nodes=node)

                self._guard(lambda on_node=on_node: on_node("FUNCTION", "LOAD", "REPLACE", self.library.source))
            return
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

    def async_client(self) -> AbstractAsyncContextManager[AsyncRedis]:
        """The daemon's coredis client for this backend (an async context; connects on first use)."""
        from .redis_async import open_async

        assert self.target is not None, "the embedded store is called inline"
        return open_async(self.target, limit=self.timeout)

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
        commands = self._commands(calls, now_ms)
        return self._replicated(calls, self._send(commands, self._wait(calls)))

    def _wait(self, calls: Sequence[Call]) -> tuple[Any, ...] | None:
        """``WAIT 1`` after the round trip's writes (on each node of a Cluster), when the URL
        asks for ``durability=replica``."""
        if self.target is None or self.target.durability != "replica" or not any(
                isinstance(c, OpsCall) for c in calls):
            return None
        return ("WAIT", 1, max(1, int(self.timeout * 1000)))

    def _replicated(self, calls: Sequence[Call], results: list[Any]) -> list[Any]:
        """Drop the ``WAIT`` replies (per command, its node's); a write no replica confirmed is
        an outage (applied on its primary, maybe lost at a failover: its outcome is unknown)."""
        if len(results) == len(calls):
            return results
        confirmed = results.pop()
        lost = StoreUnavailable(self.url, f"no replica confirmed the writes within {self.timeout:g} s",
                                condition="not replicated")
        return [lost if isinstance(c, OpsCall) and not isinstance(r, BaseException)
                and not (isinstance(n, int) and n >= 1) else r
                for c, r, n in zip(calls, results, confirmed, strict=True)]

    def _send(self, commands: list[tuple[Any, ...]], wait: tuple[Any, ...] | None = None) -> list[Any]:
        """``commands`` in one pipeline (one round trip, one per master of a Cluster); each
        reply a value or an exception; with ``wait``, its replies per command last."""
        def send() -> list[Any]:
            self.round_trips += 1
            if self._cluster is not None:
                return self._cluster.run(commands, wait)
            pipe = self.client.pipeline(transaction=False)
            for command in (*commands, *((wait,) if wait else ())):
                pipe.execute_command(*command)
            replies = list(pipe.execute(raise_on_error=False))
            if wait:
                replies[-1] = [replies[-1]] * len(commands)
            return replies

        replies: list[Any] = self._guard(send)
        return replies

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:
            if not is_client_error(exc):
                raise
            if "DB index is out of range" in str(exc):  # SELECT on connect: the URL names no database there
                raise BadInput(f"redis: {self.url}: no such database on this server ({exc})") from None
            raise self._mapped(exc) from exc

    def _mapped(self, exc: BaseException) -> StoreError:
        return mapped(self.url, exc)

    def _decode(self, call: Call, result: Any) -> Any:
        if isinstance(result, StoreError):  # already ours (a write no replica confirmed)
            return result
        if isinstance(result, Exception):
            return self._mapped(result) if is_client_error(result) else StoreError(
                f"{type(result).__name__}: {result}")
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
        would wait forever on ``READONLY``, which during a failover is rightly transient. A
        Cluster's or a Sentinel's client finds the primaries by itself: nothing to check."""
        if self.inline or (self.target is not None and self.target.kind != "single"):
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


def _callbacks() -> dict[str, Any]:
    """redis-py's reply shapes by command name (``XRANGE`` rows as (id, fields) pairs...)."""
    global _CALLBACKS
    if _CALLBACKS is None:
        _CALLBACKS = dict(redis.Redis().response_callbacks)
    return _CALLBACKS


_CALLBACKS: dict[str, Any] | None = None


def open_backend(url: str, *, memory: MemoryServers | None = None, timeout: float = 5.0) -> Backend:
    """A backend for ``url``; a bad URL is :class:`BadInput` naming it."""
    if url.startswith("memory://"):
        import fakeredis

        name = url[len("memory://") :] or "default"
        servers = memory if memory is not None else MemoryServers()
        client: redis.Redis = fakeredis.FakeRedis(server=servers.get(name))
        return Backend(client, url, inline=True)
    target = parse_redis_url(url)
    try:
        client = _sync_client(target, timeout)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"redis: {redact(url)!r} is not a valid Redis URL ({exc})") from None
    return Backend(client, url, inline=False, timeout=timeout, target=target)


def _sync_client(target: RedisTarget, timeout: float) -> Any:
    """redis-py's client for ``target``: ``Redis``, ``RedisCluster`` or a Sentinel's primary;
    none retries by itself, none connects before its first command."""
    common: dict[str, Any] = dict(
        username=target.username, password=target.password, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), **target.tls_options())
    if target.tls:
        common["ssl"] = True
    if target.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], **common)  # type: ignore[no-untyped-call]
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if target.sentinel_password is not None:
            sentinel_kwargs["password"] = target.sentinel_password
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        return sentinel.master_for(target.service or "", db=target.db, **common)  # type: ignore[no-untyped-call]
    if target.unix_path is not None:
        common = {k: v for k, v in common.items() if not k.startswith("ssl")}
        return redis.Redis(unix_socket_path=target.unix_path, db=target.db, retry_on_error=[],
                           health_check_interval=0, **common)
    host, port = target.nodes[0]
    return redis.Redis(host=host, port=port, db=target.db, retry_on_error=[], health_check_interval=0, **common)
