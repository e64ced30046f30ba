"""The daemon's Redis connections: coredis, for one server, a Cluster or a Sentinel set.

coredis is built on anyio, so these connections run in the daemon's trio run with no thread
hop (and would run under asyncio unchanged). It knows a Cluster's slot map, follows ``MOVED``
and ``ASK``, and asks the Sentinels where the primary is: none of that is written here.

:func:`open_async` opens a client for a :class:`~adapters.redis_urls.RedisTarget` (an async
context: coredis runs each connection as a task of its own). :meth:`AsyncRedis.pipeline` sends
plain commands (``("FCALL", ...)``, ``("HGETALL", key)``) in one pipeline per node, all nodes
at once, and returns one value or one exception per command, in order.

Nothing is re-sent by coredis on our behalf: its retry policy is off, so a connection that
breaks mid-pipeline is an error for the caller (whether Redis applied it is unknown). Under a
Cluster the commands are grouped by master here (coredis's slot map says which), one pipeline
per master, all at once; what is re-sent is only what a node refused without running
(``MOVED``, ``ASK``, ``TRYAGAIN``); a node that could not be reached makes the slot map be
read again before the next round trip (coredis would keep routing its slots to the dead node).
Replies are shaped the way redis-py's client shapes them, so the synchronous and asynchronous
paths hand the store the same values.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

# Loaded with this module, before the daemon's trio run starts, rather than at the first
# connection inside it (an import in the event loop holds the loop; on a busy machine these take
# a while): anyio's trio backend, which anyio loads lazily, and coredis's pipelines.
import anyio._backends._trio  # noqa: F401
import coredis
import coredis.exceptions as cx
import coredis.patterns.pipeline  # noqa: F401
from coredis.cluster._node import ClusterNodeLocation
from coredis.commands.request import CommandRequest
from coredis.connection import TCPLocation
from coredis.response._callbacks import NoopCallback
from coredis.retry import NoRetryPolicy
from coredis.typing import Key

from .errors import JobvisorError, StoreError, StoreUnavailable
from .keys import command_keys, key_slot
from .redis_errors import is_client_error, mapped
from .redis_urls import RedisTarget

# coredis logs its connections' failures itself (with tracebacks, at ERROR, even for a connect
# that a shutdown cancelled); they reach us as exceptions, mapped and reported once by the actor
# that met them (README "Redis outages"), so its own lines would only repeat them.
logging.getLogger("coredis").setLevel(logging.CRITICAL)

_REDIRECTS = 3  # rounds of MOVED/ASK/TRYAGAIN followed in one round trip at most

__all__ = ["AsyncRedis", "open_async", "command_keys", "innermost_client_error", "cx"]

def _request(client: Any, args: Sequence[Any]) -> Any:
    keys = set(command_keys(args))
    name = args[0].encode() if isinstance(args[0], str) else args[0]
    arguments = [Key(a) if i in keys else a for i, a in enumerate(args) if i > 0]
    return client.create_request(name.upper(), *arguments, callback=NoopCallback())


def _command(args: Sequence[Any]) -> CommandRequest[Any]:
    name = args[0].encode() if isinstance(args[0], str) else args[0]
    return CommandRequest(name.upper(), *args[1:], execution_parameters={})


class AsyncRedis:
    """One coredis client (a pool of multiplexed connections, per node under a Cluster)."""

    def __init__(self, client: Any, target: RedisTarget, timeout: float) -> None:
        self.client = client
        self.target = target
        self.timeout = timeout
        self.cluster = target.kind == "cluster"
        self._stale = False  # a Cluster node failed: read the slot map before the next round trip
        # One server (not a Sentinel set, whose pool picks the current primary for each round
        # trip): one connection is kept for every round trip while it is usable, rather than
        # leased from the pool for each (a lease costs about as much as the rest of the trip).
        self._keep = target.kind == "single"
        self._kept: Any = None

    async def pipeline(self, commands: Sequence[tuple[Any, ...]], *, wait: tuple[Any, ...] | None = None) -> list[Any]:
        """Every command in one round trip per node; each result a value or a coredis exception.

        With ``wait`` (``("WAIT", 1, ms)``), it ends each node's pipeline and one more item
        follows the results: per command, the ``WAIT`` reply of the node that ran it.

        Raises coredis's ``ConnectionError``/``TimeoutError`` when a single server cannot be
        reached; under a Cluster, each command whose node could not be reached gets that
        error as its result (the other nodes' results stand), and the slot map is read again
        before the next round trip."""
        if not commands:
            return []
        if self.cluster:
            return await self._cluster_pipeline(commands, wait)
        # One server: the batch goes straight onto the kept connection (a blocking read, or a
        # Sentinel set's round trip, onto one leased from the pool, released before its replies
        # are awaited); coredis multiplexes it: replies come back in order. Each bound is
        # coredis's: the pool's wait, the connect and the reply timeouts.
        requests = [_command(command) for command in (*commands, *((wait,) if wait else ()))]
        kept = self._kept
        if self._keep and not any(_blocks(command) for command in commands):
            if kept is None or not kept.usable:
                kept = await self._keep_connection()
            batch = kept.create_request_batch(requests, timeout=self.timeout)
        else:
            async with self.client.connection_pool.acquire() as connection:
                batch = connection.create_request_batch(requests, timeout=self.timeout)
        replies = list(await batch)
        if wait:
            replies[-1] = [replies[-1]] * len(commands)
        return replies

    async def _keep_connection(self) -> Any:
        pool = self.client.connection_pool
        fresh = await pool.get_connection()
        kept = self._kept
        if kept is not None and kept.usable:  # another round trip kept one meanwhile
            pool.release(fresh)
            return kept
        self._kept = fresh
        return fresh

    async def _cluster_pipeline(self, commands: Sequence[tuple[Any, ...]], wait: tuple[Any, ...] | None) -> list[Any]:
        """One pipeline per master, all at once (``WAIT`` at the end of each); what a node
        refused without running (``MOVED``, ``ASK``, ``TRYAGAIN``) is sent again, nothing else."""
        if self._stale:
            await self._refresh()
        layout = self.client.connection_pool.cluster_layout
        results: list[Any] = [None] * len(commands)
        confirmed: list[Any] = [None] * len(commands)
        pending, asking = list(range(len(commands))), dict[int, Any]()
        for _ in range(_REDIRECTS + 1):
            groups: dict[str, tuple[Any, list[int]]] = {}
            for i in pending:
                try:
                    node = asking.get(i) or self._node_for(layout, commands[i])
                except cx.RedisClusterError as exc:  # no node serves its slot in this map
                    self._stale = True
                    results[i] = confirmed[i] = cx.ConnectionError(f"no Cluster node for this key yet ({exc})")
                    continue
                groups.setdefault(node.name, (node, []))[1].append(i)
            async with anyio.create_task_group() as group:
                for node, indices in groups.values():
                    group.start_soon(self._on_node, node, [(i, commands[i], i in asking) for i in indices], wait,
                                     results, confirmed)
            again, asking = [], {}
            for node, indices in groups.values():
                for i in indices:
                    reply = results[i]
                    if isinstance(reply, cx.MovedError):
                        layout.report_errors(node, reply)
                    elif isinstance(reply, cx.AskError):
                        location = TCPLocation(reply.host, reply.port)
                        asking[i] = layout.node_for_location(location) or ClusterNodeLocation(
                            reply.host, reply.port, server_type="primary")
                    elif not isinstance(reply, cx.TryAgainError):
                        continue
                    again.append(i)
            if not again:
                break
            pending = again
        for i, reply in enumerate(results):
            if isinstance(reply, cx.AskError):  # still redirected (MOVED too): the map is in flux
                self._stale = True
                results[i] = confirmed[i] = cx.ConnectionError(f"still redirected ({reply})")
        if wait:
            return [*results, confirmed]
        return results

    @staticmethod
    def _node_for(layout: Any, command: tuple[Any, ...]) -> Any:
        keys = command_keys(command)
        if not keys:
            return layout.random_node(True)
        return layout.node_for_slot(key_slot(command[keys[0]]), True)

    async def _on_node(self, node: Any, commands: list[tuple[int, tuple[Any, ...], bool]],
                       wait: tuple[Any, ...] | None, results: list[Any], confirmed: list[Any]) -> None:
        requests: list[CommandRequest[Any]] = []
        for _, command, asking in commands:
            if asking:
                requests.append(_command(("ASKING",)))
            requests.append(_command(command))
        if wait:
            requests.append(_command(wait))
        blocking = any(_blocks(command) for _, command, _ in commands)
        try:
            async with self.client.connection_pool.acquire(node=node) as connection:
                batch = connection.create_request_batch(requests, timeout=self.timeout)
                if blocking:  # held until answered: no other request queues behind the block
                    replies = list(await batch)
            if not blocking:
                replies = list(await batch)
        except Exception as exc:  # the node could not be reached or went away: outcome unknown
            if not is_client_error(exc):
                raise
            self._stale = True
            for i, _, _ in commands:
                results[i] = confirmed[i] = exc
            return
        if any(_gone(r) for r in replies):
            self._stale = True
        verdict = replies[-1] if wait else None
        at = 0
        for i, _, asking in commands:
            at += 1 if asking else 0
            results[i], confirmed[i] = replies[at], verdict
            at += 1

    async def _refresh(self) -> None:
        """The slot map read again from the nodes (a node failed since the last one: coredis
        would keep routing its slots to it)."""
        try:
            await self.client.connection_pool.cluster_layout.initialize()
        except cx.RedisError as exc:
            raise cx.ConnectionError(f"the Cluster's slot map could not be read ({exc})") from exc
        self._stale = False

    async def command(self, *args: Any) -> Any:
        """One command on a connection of its own while it runs (a blocking ``XREAD``)."""
        return await _request(self.client, args)

    async def function_load(self, source: str) -> list[Any]:
        """``FUNCTION LOAD REPLACE`` then ``FUNCTION LIST`` on every primary (one on a single
        server): each reply a value or an exception."""
        commands = [("FUNCTION", "LOAD", "REPLACE", source), ("FUNCTION", "LIST")]
        if not self.cluster:
            return await self.pipeline(commands)
        replies: list[Any] = [None, []]
        for node in self.client.connection_pool.cluster_layout.primaries:
            async with self.client.connection_pool.acquire(node=node) as connection:
                loaded = connection.create_request(b"FUNCTION LOAD", b"REPLACE", source, raise_exceptions=False)
                listed = connection.create_request(b"FUNCTION LIST", raise_exceptions=False)
            one, names = await loaded, await listed
            if replies[0] is None or isinstance(one, Exception):
                replies[0] = one
            if isinstance(names, Exception):
                replies[1] = names
            elif isinstance(replies[1], list):
                replies[1].extend(names)
        return replies

    async def function_delete(self, names: Sequence[str]) -> None:
        """``FUNCTION DELETE`` of each of ``names`` on every primary; each reply ignored."""
        nodes = list(self.client.connection_pool.cluster_layout.primaries) if self.cluster else [None]
        for node in nodes:
            if node is None:
                await self.pipeline([("FUNCTION", "DELETE", name) for name in names])
                continue
            async with self.client.connection_pool.acquire(node=node) as connection:
                requests = [connection.create_request(b"FUNCTION DELETE", n, raise_exceptions=False) for n in names]
            for request in requests:
                await request

    @contextlib.asynccontextmanager
    async def subscription(self, channels: Sequence[str], *, keepalive: float) -> AsyncIterator[_Messages]:
        """A subscription to ``channels`` (plain pub/sub: under a Cluster a PUBLISH reaches every
        node); iterate it for (channel, data). Its connection is pinged after ``keepalive`` quiet
        seconds, so a dead one is noticed. Trouble is ours: :class:`StoreUnavailable` when
        Redis cannot be reached or goes away, :class:`StoreError` when it refuses."""
        options: dict[str, Any] = {"max_idle_seconds": keepalive, "subscription_timeout": self.timeout}
        try:
            async with self.client.pubsub(ignore_subscribe_messages=True, retry_policy=NoRetryPolicy(),
                                          **options) as pubsub:
                await _subscribe(pubsub, channels)
                yield _Messages(pubsub)
        except BaseException as exc:
            error = innermost_client_error(exc)
            if error is None:
                raise
            ours = mapped(self.target.shown, error)
            if not isinstance(ours, StoreUnavailable):  # e.g. an ACL without SUBSCRIBE: not transient
                ours = StoreError(f"Redis refused pub/sub at {self.target.shown}: {error}")
            raise ours from error


async def _subscribe(pubsub: Any, channels: Sequence[str]) -> None:
    """``SUBSCRIBE``, acknowledged, or the error Redis answered instead (an ACL without
    ``SUBSCRIBE``: a reply no request waits for, which coredis leaves in the connection's
    stream of unsolicited replies) at once, rather than a wait for the acknowledgement."""
    async with anyio.create_task_group() as group:

        async def refused() -> None:
            async for reply in pubsub.connection.streamed_messages:
                if isinstance(reply, Exception):
                    raise reply

        group.start_soon(refused)
        await pubsub.subscribe(*channels)
        group.cancel_scope.cancel()


class _Messages:
    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> tuple[str, str]:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True)
            if message is not None and message.get("type") == "message":
                return _text(message["channel"]), _text(message["data"])


def _blocks(command: tuple[Any, ...]) -> bool:
    """A command that may wait on the server (``XREAD BLOCK``): its connection is its own."""
    name = command[0].decode() if isinstance(command[0], bytes) else str(command[0])
    return name.upper() in ("XREAD", "XREADGROUP") and any(a in ("BLOCK", b"BLOCK") for a in command[1:])


def _gone(reply: Any) -> bool:
    """A reply that says the connection failed (rather than Redis refusing the command)."""
    return isinstance(reply, BaseException) and not isinstance(reply, cx.ResponseError) and is_client_error(reply)


def innermost_client_error(exc: BaseException) -> BaseException | None:
    """The Redis client's error inside ``exc`` (coredis runs connections in task groups, so
    what leaves one may be an exception group around it), or ``None``."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = innermost_client_error(inner)
            if found is not None:
                return found
        return None
    return exc if is_client_error(exc) else None


def _warm_up() -> None:
    """redis-py's reply shapes, read once now (their first read imports more of redis-py)."""
    from .backend import _callbacks

    _callbacks()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.asynccontextmanager
async def open_async(target: RedisTarget, *, limit: float) -> AsyncIterator[AsyncRedis]:
    """A coredis client for ``target`` for the duration of the context (connects on first use)."""
    common: dict[str, Any] = dict(
        username=target.username, password=target.password, stream_timeout=limit, connect_timeout=limit,
        retry_policy=NoRetryPolicy(), verify_version=False, decode_responses=False)
    tls: dict[str, Any] = {"ssl": True, **target.tls_options()} if target.tls else {}
    client: Any
    if target.kind == "cluster":
        client = coredis.RedisCluster(
            startup_nodes=[TCPLocation(h, p) for h, p in target.nodes], pool_timeout=limit,
            max_connections=64, **common, **tls)
    elif target.kind == "sentinel":
        sentinel_options: dict[str, Any] = {"connect_timeout": limit, "stream_timeout": limit}
        if target.sentinel_password is not None:
            sentinel_options["password"] = target.sentinel_password
        if target.tls:
            sentinel_options.update(tls)
        connection = {k: v for k, v in common.items()
                      if k not in ("retry_policy", "decode_responses", "verify_version")}
        sentinel = coredis.Sentinel([TCPLocation(h, p) for h, p in target.nodes], sentinel_kwargs=sentinel_options,
                                    retry_policy=NoRetryPolicy(), **connection, **tls)
        async with _ours(target), sentinel:
            client = sentinel.primary_for(target.service or "", db=target.db)
            async with client:
                yield AsyncRedis(client, target, limit)
            return
    elif target.unix_path is not None:
        client = coredis.Redis(unix_socket_path=target.unix_path, db=target.db, pool_timeout=limit, **common)
    else:
        host, port = target.nodes[0]
        client = coredis.Redis(host, port, db=target.db, pool_timeout=limit, **common, **tls)
    async with _ours(target), client:
        yield AsyncRedis(client, target, limit)


@contextlib.asynccontextmanager
async def _ours(target: RedisTarget) -> AsyncIterator[None]:
    """Errors leaving a coredis client are ours, never an exception group: coredis runs its
    connections in a task group, which wraps what passes through it (ours included)."""
    try:
        yield
    except BaseExceptionGroup as group:
        ours = _leaves(group, JobvisorError)
        if ours:
            raise ours[0] from group
        error = innermost_client_error(group)
        if error is not None:
            raise mapped(target.shown, error) from group
        raise


def _leaves(group: BaseExceptionGroup[Any], kind: type[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            found += _leaves(inner, kind)
        elif isinstance(inner, kind):
            found.append(inner)
    return found


_warm_up()
