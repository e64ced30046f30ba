"""A real ``redis-server`` for the tests: free loopback port, own temporary directory.

Never the developer's own Redis: every server is started here, on 127.0.0.1,
with its data in a directory of its own, and stopped when the test run ends.
``restart()`` stops and starts the same server on the same port and
directory (with AOF on, what was acknowledged survives).

A port found free can be taken before the server binds it (another test's
client connection gets it as its ephemeral source port): the first start
then tries again on fresh ports, and a server answering on the port is only
taken for ours when its ``process_id`` is our child's pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        raise RuntimeError("redis-server is not installed; run the README's test command")
    return found


BIND_ATTEMPTS = 5


class PortTaken(Exception):
    """The port found free was bound by someone else before the server bound it."""


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _fresh_bus_port(args: list[str]) -> list[str]:
    """``args`` with a fresh ``--cluster-port`` (the bus port can be the taken one)."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--cluster-port":
            out[i + 1] = str(free_port())
    return out


class RedisServer:
    """One ``redis-server`` process the tests own."""

    def __init__(self, directory: Path, *, appendonly: bool = True, extra_args: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.extra_args = list(extra_args)  # e.g. a --tls-port and its certificates
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False  # once started, the port is the server's: clients know it

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0, *, wait: bool = True) -> None:
        """Start the server; with ``wait``, until it answers a PING (its dataset loaded)."""
        for _ in range(BIND_ATTEMPTS - 1):
            try:
                return self._start(timeout, wait=wait)
            except PortTaken:
                self.stop()
                self.port = free_port()
                self.extra_args = _fresh_bus_port(self.extra_args)
        return self._start(timeout, wait=wait)

    def _start(self, timeout: float, *, wait: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        log_offset = log.stat().st_size if log.exists() else 0
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(log),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait:
            self._started = True
            return
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    said = _read_from(log, log_offset)
                    if not self._started and "Address already in use" in said:
                        raise PortTaken(self.port)
                    tail = " | ".join(said.strip().splitlines()[-5:])
                    raise RuntimeError(f"redis-server exited at start: {err.strip()} {tail}".strip())
                try:
                    if client.ping() and int(client.info("server")["process_id"]) == self.process.pid:
                        self._started = True
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)  # waiting for a foreign process to bind: no event to wait on
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what AOF already holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()
