"""A real Sentinel set for the tests: 1 master, 1 replica, 3 sentinels (``redis-server --sentinel``),
on free loopback ports, each in a temp dir of its own, stopped by pid.

``sentinel_set`` is started once per test session; ``sentinel_url`` names its primary
(``redis+sentinel://.../jv``) with every server flushed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer, free_port, redis_server_binary

__all__ = ["SentinelSet", "sentinel_set", "sentinel_url"]

SERVICE = "jv"


class SentinelSet:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master = RedisServer(directory / "master", appendonly=False)
        self.replica = RedisServer(directory / "replica", appendonly=False,
                                   extra_args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + f"/{SERVICE}"

    def start(self, timeout: float = 30.0) -> None:
        self.master.start()
        self.replica.start()
        for i, port in enumerate(self.ports):
            folder = self.directory / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
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
                if int(fields.get(b"num-slaves", 0)) < 1 or int(fields.get(b"num-other-sentinels", 0)) < 2:
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
        self.replica.stop()
        self.master.stop()


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
