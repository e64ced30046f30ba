"""Real Redis Clusters for the tests: free loopback ports, temp dirs, stopped by pid.

Each node is a :class:`~tests.redis_server.RedisServer` started with ``--cluster-enabled yes``;
``redis-cli --cluster create`` splits the 16384 slots between the masters and attaches
``replicas`` replicas to each. ``redis_cluster`` (3 masters, no replicas) is started once per
test session; ``cluster_url`` empties it for each test (every master flushed, the Lua library
dropped, as ``redis_url`` does for the single server). ``replicated_cluster`` starts a fresh
cluster with replicas for one test (a failover test kills a master: nothing to share after it).

With one replica per master and ``durability=replica`` (``WAIT 1``), a failover leaves the
promoted master with no replica at all, and every write then waits for one in vain (an outage
until a replica is attached again): the failover tests use 2 replicas per master.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer, free_port

__all__ = ["RedisCluster", "redis_cluster", "cluster_url", "replicated_cluster"]


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, one redis-server process per node."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            RedisServer(directory / f"node{i}", appendonly=False,
                        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                    "--cluster-node-timeout", str(node_timeout_ms),
                                    # a replica cut off for a while may still be promoted
                                    "--cluster-replica-validity-factor", "0",
                                    # a free bus port of its own, not port + 10000 (which may be taken)
                                    "--cluster-port", str(free_port())])
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        deadline = time.monotonic() + timeout
        while not (all(self._ok(n) for n in self.nodes) and self._replicas_linked()):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok with its replicas linked")
            time.sleep(0.05)  # the nodes agree over their own bus: no event to wait on

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    @staticmethod
    def _info(node: RedisServer, section: str) -> dict[str, str]:
        client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
        try:
            raw = client.execute_command("CLUSTER", "INFO") if section == "cluster" else \
                client.execute_command("INFO", section)
            if isinstance(raw, dict):  # redis-py parses INFO
                return {str(k): str(v) for k, v in raw.items()}
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        except redis.exceptions.RedisError:
            return {}
        finally:
            client.close()

    def _ok(self, node: RedisServer) -> bool:
        return self._info(node, "cluster").get("cluster_state") == "ok"

    def _replicas_linked(self) -> bool:
        """Every master has its replicas, each with its link up."""
        roles = [self._info(n, "replication") for n in self.alive()]
        masters = [r for r in roles if r.get("role") == "master"]
        links = [r for r in roles if r.get("role") == "slave"]
        return len(masters) == self.masters and all(r.get("master_link_status") == "up" for r in links) and all(
            int(r.get("connected_slaves", 0)) >= self.replicas for r in masters)

    def clients(self) -> list[redis.Redis]:
        """One plain client per node (for flushing and per-node checks)."""
        return [redis.Redis(host="127.0.0.1", port=n.port) for n in self.nodes]

    def slots(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master's port) as a live node sees them."""
        for node in self.alive():
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
            try:
                return [(int(s), int(e), int(m[1])) for s, e, m, *_ in client.execute_command("CLUSTER", "SLOTS")]
            except redis.exceptions.RedisError:
                continue
            finally:
                client.close()
        raise RuntimeError("no cluster node answers")

    def master_of_slot(self, slot: int) -> int:
        """The index in :attr:`nodes` of the master serving ``slot``."""
        for start, end, port in self.slots():
            if start <= slot <= end:
                return next(i for i, n in enumerate(self.nodes) if n.port == port)
        raise LookupError(slot)

    def master_indices(self) -> list[int]:
        return sorted({next(i for i, n in enumerate(self.nodes) if n.port == port) for _, _, port in self.slots()})

    def replicas_of(self, index: int) -> list[RedisServer]:
        """The live replicas of the master at ``index``."""
        master = self.nodes[index]
        found = []
        for node in self.alive():
            info = self._info(node, "replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                found.append(node)
        return found

    def kill_master_of_slot(self, slot: int) -> int:
        """SIGKILL (by pid) the master serving ``slot``; returns its index."""
        index = self.master_of_slot(slot)
        self.nodes[index].kill()
        return index

    def wait_promoted(self, slot: int, old: int, timeout: float = 30.0) -> int:
        """Until a replica of the killed master ``old`` serves ``slot`` and the cluster is ok;
        returns the new master's index. Polls the nodes' own view (no event to wait on)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                index = self.master_of_slot(slot)
            except (RuntimeError, LookupError):
                index = old
            if index != old and self._info(self.nodes[index], "replication").get("role") == "master" and all(
                    self._ok(n) for n in self.alive()):
                return index
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica of node {old} was promoted within {timeout} s")
            time.sleep(0.05)

    def pause(self, nodes: list[RedisServer]) -> None:
        """SIGSTOP ``nodes`` (by pid): a replica stopped takes no more of its master's stream."""
        for node in nodes:
            assert node.process is not None
            node.process.send_signal(signal.SIGSTOP)

    def resume(self, nodes: list[RedisServer]) -> None:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        for index in self.master_indices():
            client = self.clients()[index]
            try:
                client.flushall()
                client.function_flush()
            finally:
                client.close()

    def stop(self) -> None:
        self.resume(self.nodes)
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The session cluster's URL, every master empty for this test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[Callable[..., RedisCluster]]:
    """``replicated_cluster(replicas=N)``: a fresh 3-master cluster with N replicas per master,
    for this test only (stopped by pid at its end)."""
    started: list[RedisCluster] = []

    def start(replicas: int = 2, node_timeout_ms: int = 1000) -> RedisCluster:
        cluster = RedisCluster(tmp_path / f"cluster{len(started)}", replicas=replicas,
                               node_timeout_ms=node_timeout_ms)
        started.append(cluster)
        cluster.start()
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
