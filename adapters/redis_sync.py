"""The synchronous paths' Cluster pipeline: one plain pipeline per master, over redis-py.

redis-py's own cluster pipeline sends again, one by one, every command whose node answered
with a connection error or a timeout; whether that node ran it is unknown, so a Lua step could
run twice (a job run twice after a failover). Here the commands are grouped by master (redis-py's
slot map says which), each group is one plain pipeline on that node's client, and what is sent
again is only what a node refused without running it (``MOVED``, ``ASK``, ``TRYAGAIN``). A node
that could not be reached, or whose reply never came, leaves each of its commands that error
(the caller's outage), and the slot map is read again before the next round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import AskError, MovedError, RedisClusterException, TryAgainError

from .keys import command_keys, key_slot

__all__ = ["ClusterPipeline"]

_REDIRECTS = 3  # rounds of MOVED/ASK/TRYAGAIN followed in one round trip at most


class ClusterPipeline:
    """Per-master pipelines over one redis-py ``RedisCluster``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stale = False

    def run(self, commands: Sequence[tuple[Any, ...]], wait: tuple[Any, ...] | None = None) -> list[Any]:
        """Each command's reply or error, in order; with ``wait``, one more item: per command,
        the ``WAIT`` reply of its node (``wait`` ends each node's pipeline)."""
        if self.stale:
            self._refresh()
        results: list[Any] = [None] * len(commands)
        confirmed: list[Any] = [None] * len(commands)
        pending, asking = list(range(len(commands))), dict[int, Any]()
        for _ in range(_REDIRECTS + 1):
            groups: dict[str, tuple[Any, list[int]]] = {}
            for i in pending:
                try:
                    node = asking.get(i) or self._node_for(commands[i])
                except RedisClusterException as exc:  # no node serves its slot in this map
                    self.stale = True
                    results[i] = confirmed[i] = redis.ConnectionError(f"no Cluster node for this key yet ({exc})")
                    continue
                groups.setdefault(node.name, (node, []))[1].append(i)
            for node, indices in groups.values():
                self._on_node(node, [(i, commands[i], i in asking) for i in indices], wait, results, confirmed)
            again, asking, moved = [], {}, False
            for i in pending:
                reply = results[i]
                if isinstance(reply, MovedError):
                    moved = True
                elif isinstance(reply, AskError):
                    target = self.client.nodes_manager.get_node(host=reply.host, port=reply.port)
                    if target is None:
                        continue
                    asking[i] = target
                elif not isinstance(reply, TryAgainError):
                    continue
                again.append(i)
            if not again:
                break
            if moved:
                try:
                    self._refresh()
                except redis.ConnectionError as exc:  # refused without running: an outage, re-sent later
                    for i in again:
                        results[i] = confirmed[i] = exc
                    break
            pending = again
        for i, reply in enumerate(results):
            if isinstance(reply, AskError):  # still redirected (MOVED too): the map is in flux
                self.stale = True
                results[i] = confirmed[i] = redis.ConnectionError(f"still redirected ({reply})")
        return [*results, confirmed] if wait else results

    def _refresh(self) -> None:
        """The slot map read again from the nodes; when it cannot be, an outage (the map stays
        stale: the next round trip tries again)."""
        self.stale = True
        try:
            self.client.nodes_manager.initialize()
        except (RedisClusterException, redis.RedisError) as exc:
            raise redis.ConnectionError(f"the Cluster's slot map could not be read ({exc})") from exc
        self.stale = False

    def _node_for(self, command: tuple[Any, ...]) -> Any:
        keys = command_keys(command)
        if not keys:
            return self.client.get_random_node()
        return self.client.nodes_manager.get_node_from_slot(key_slot(command[keys[0]]))

    def _on_node(self, node: Any, commands: list[tuple[int, tuple[Any, ...], bool]],
                 wait: tuple[Any, ...] | None, results: list[Any], confirmed: list[Any]) -> None:
        pipe = self.client.get_redis_connection(node).pipeline(transaction=False)
        for _, command, asking in commands:
            if asking:
                pipe.execute_command("ASKING")
            pipe.execute_command(*command)
        if wait:
            pipe.execute_command(*wait)
        try:
            replies = list(pipe.execute(raise_on_error=False))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:  # outcome unknown
            self.stale = True
            for i, _, _ in commands:
                results[i] = confirmed[i] = exc
            return
        verdict = replies[-1] if wait else None
        at = 0
        for i, _, asking in commands:
            at += 1 if asking else 0
            results[i], confirmed[i] = replies[at], verdict
            at += 1
