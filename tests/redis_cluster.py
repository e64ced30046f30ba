"""A real 3-master Redis Cluster for the tests: free loopback ports, temp dirs, stopped by pid.

Each node is a :class:`~tests.redis_server.RedisServer` started with ``--cluster-enabled yes``;
``redis-cli --cluster create`` splits the 16384 slots between them. The cluster is started
once per test session (``redis_cluster``); ``cluster_url`` empties it for each test (every
master flushed, the Lua library dropped, as ``redis_url`` does for the single server).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer, free_port

__all__ = ["RedisCluster", "redis_cluster", "cluster_url"]


class RedisCluster:
    """``masters`` redis-server processes forming one cluster (no replicas)."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(directory / f"node{i}", appendonly=False,
                        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                    "--cluster-node-timeout", "2000",
                                    # a free bus port of its own, not port + 10000 (which may be taken)
                                    "--cluster-port", str(free_port())])
            for i in range(masters)
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
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        deadline = time.monotonic() + timeout
        while not all(self._ok(n) for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.05)  # the nodes agree over their own bus: no event to wait on

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
        try:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text
        finally:
            client.close()

    def clients(self) -> list[redis.Redis]:
        """One plain client per master (for flushing and per-node checks)."""
        return [redis.Redis(host="127.0.0.1", port=n.port) for n in self.nodes]

    def master_of_slot(self, slot: int) -> int:
        """The index in :attr:`nodes` of the master serving ``slot``."""
        client = self.clients()[0]
        try:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(i for i, n in enumerate(self.nodes) if n.port == port)
        finally:
            client.close()
        raise LookupError(slot)

    def flush(self) -> None:
        for client in self.clients():
            try:
                client.flushall()
                client.function_flush()
            finally:
                client.close()

    def stop(self) -> None:
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
