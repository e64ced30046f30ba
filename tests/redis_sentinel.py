"""A real Sentinel set for the tests: 1 master, 1 replica (or more), 3 sentinels (``redis-server
--sentinel``), on free loopback ports, each in a temp dir of its own, stopped by pid.

``sentinel_set`` is started once per test session; ``sentinel_url`` names its primary
(``redis+sentinel://.../jv``) with every server flushed. ``replicated_sentinels`` starts a fresh
set with 2 replicas for one test, whose master it may SIGKILL (:meth:`SentinelSet.kill_primary`,
then :meth:`SentinelSet.wait_promoted`). With a single replica and ``durability=replica``
(``WAIT 1``), the promoted replica has no replica of its own and every write then waits in vain
(an outage until the old master comes back as its replica): hence 2 for a failover under load.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer, free_port, redis_server_binary

__all__ = ["SentinelSet", "sentinel_set", "sentinel_url", "replicated_sentinels"]

SERVICE = "jv"


class SentinelSet:
    def __init__(self, directory: Path, replicas: int = 1, down_after_ms: int = 1000) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.master = RedisServer(directory / "master", appendonly=False)
        self.replicas = [RedisServer(directory / f"replica{i}" if i else directory / "replica", appendonly=False)
                         for i in range(replicas)]
        self.replica = self.replicas[0]
        self.ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + f"/{SERVICE}"

    def start(self, timeout: float = 30.0) -> None:
        self.master.start()  # its port is final once it started (a taken one is replaced)
        for replica in self.replicas:
            replica.extra_args = ["--replicaof", "127.0.0.1", str(self.master.port)]
            replica.start()
        for i, port in enumerate(self.ports):
            folder = self.directory / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self.sentinels.append(subprocess.Popen(
                [redis_server_binary(), str(config), "--sentinel", "--logfile", str(folder / "sentinel.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the test sentinels did not agree on the primary and its replica")
            time.sleep(0.05)  # sentinels discover each other over pub/sub: no event to wait on

    def _ready(self) -> bool:
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
            try:
                info = client.execute_command("SENTINEL", "MASTER", SERVICE)
                fields = dict(zip(info[::2], info[1::2], strict=False)) if isinstance(info, list) else info
                if int(fields.get(b"num-slaves", 0)) < len(self.replicas) or int(
                        fields.get(b"num-other-sentinels", 0)) < 2:
                    return False
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
        return True

    def primary_port(self) -> int:
        client = redis.Redis(host="127.0.0.1", port=self.ports[0], socket_timeout=2)
        try:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(port)
        finally:
            client.close()

    def wait_replicated(self) -> None:
        """Until the replica has every write the primary took (``WAIT 1``)."""
        client = redis.Redis(host="127.0.0.1", port=self.primary_port(), socket_timeout=10)
        try:
            assert client.execute_command("WAIT", 1, 5000) >= 1
        finally:
            client.close()

    def failover(self, timeout: float = 30.0) -> int:
        """A controlled failover (``SENTINEL FAILOVER``); returns the new primary's port."""
        before = self.primary_port()
        client = redis.Redis(host="127.0.0.1", port=self.ports[0], socket_timeout=2)
        try:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        finally:
            client.close()
        deadline = time.monotonic() + timeout
        while True:
            after = self.primary_port()
            if after != before and self._role(after) == "master":
                return after
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not fail over")
            time.sleep(0.05)

    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers() if s.port == port)

    def kill_primary(self) -> int:
        """SIGKILL (by pid) the current primary; returns its port."""
        port = self.primary_port()
        self.server(port).kill()
        return port

    def wait_promoted(self, old: int, timeout: float = 30.0) -> int:
        """Until the Sentinels name another primary and it says it is one; returns its port.
        Polls the Sentinels' and the server's own view (no event to wait on)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                after = self.primary_port()
            except redis.exceptions.RedisError:
                after = old
            if after != old and self._role(after) == "master":
                return after
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinels promoted no replica within {timeout} s")
            time.sleep(0.05)

    def live_replicas(self) -> list[RedisServer]:
        primary = self.primary_port()
        return [s for s in self.servers() if s.port != primary and s.process is not None
                and s.process.poll() is None]

    @staticmethod
    def pause(servers: list[RedisServer]) -> None:
        """SIGSTOP ``servers`` (by pid): a replica stopped takes no more of its master's stream."""
        for server in servers:
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)

    @staticmethod
    def resume(servers: list[RedisServer]) -> None:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)

    @staticmethod
    def _role(port: int) -> str:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            role = client.execute_command("ROLE")[0]
            return role.decode() if isinstance(role, bytes) else str(role)
        except redis.exceptions.RedisError:
            return "unknown"
        finally:
            client.close()

    def flush(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.primary_port())
        try:
            client.flushall()
            client.function_flush()
        finally:
            client.close()

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        self.sentinels.clear()
        self.resume(self.servers())
        for server in self.servers():
            server.stop()


@pytest.fixture(scope="session")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    sentinels = SentinelSet(Path(tmp_path_factory.mktemp("sentinel")))
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.stop()


@pytest.fixture
def sentinel_url(sentinel_set: SentinelSet) -> str:
    sentinel_set.flush()
    return sentinel_set.url


@pytest.fixture
def replicated_sentinels(tmp_path: Path) -> Iterator[Callable[..., SentinelSet]]:
    """``replicated_sentinels(replicas=2)``: a fresh Sentinel set for this test only."""
    started: list[SentinelSet] = []

    def start(replicas: int = 2) -> SentinelSet:
        sentinels = SentinelSet(tmp_path / f"sentinel{len(started)}", replicas=replicas)
        started.append(sentinels)
        sentinels.start()
        return sentinels

    try:
        yield start
    finally:
        for sentinels in started:
            sentinels.stop()
