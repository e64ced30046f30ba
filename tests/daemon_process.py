"""``jobvisor run`` subprocesses against a real Redis, and reading from outside what they did."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import redis

from jobvisor import Client
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobView
from jobvisor.adapters.store import SyncStore
from jobvisor.machines import JOB
from tests.cli_support import ROOT, cli_env
from tests.daemon_app import app, executions_key

TERMINAL_EVENTS = frozenset(JOB.notifications.values())
T = TypeVar("T")




class DaemonProcess:
    """One ``jobvisor run --app tests.daemon_app:app`` subprocess (or ``app``); its stderr goes to a file."""

    def __init__(self, url: str, directory: Path, name: str, *, grace: float, lease: float,
                 extra: tuple[str, ...] = (), app: str = "tests.daemon_app:app",
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = directory / f"{name}.stderr"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobvisor", "run", "--redis", url, "--app", app,
             "--grace", str(grace), "--lease", str(lease), "--worker-id", name,
             "--idle-poll", "0.2", "--watchdog-interval", "0.2", *extra],
            cwd=ROOT, env=cli_env({"JOBVISOR_REDIS": url, **(env or {})}),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
        )

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon {self.name} still running after {timeout}s:\n{self.stderr()}") from None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon {self.name} exited {self.process.returncode}:\n{self.stderr()}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@contextmanager
def daemon(url: str, directory: Path, name: str, *, grace: float = 5.0, lease: float = 5.0,
           extra: tuple[str, ...] = (), app: str = "tests.daemon_app:app",
           env: dict[str, str] | None = None) -> Iterator[DaemonProcess]:
    process = DaemonProcess(url, directory, name, grace=grace, lease=lease, extra=extra, app=app, env=env)
    try:
        yield process
    finally:
        process.close()


def wait_until(condition: Callable[[], T], *, timeout: float, what: str,
               alive: DaemonProcess | None = None) -> T:
    """Poll ``condition`` until truthy, at most ``timeout`` seconds; fail at once if ``alive`` died."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"\n{alive.stderr()}" if alive else ""))
        time.sleep(0.02)  # another process's progress: nothing to await but its effects in Redis


# -- reading what happened ------------------------------------------------------------------------


def executions(url: str, job_id: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {p: int(client.get(executions_key(job_id, p)) or 0) for p in ("fetch", "render", "publish", "run")}
    finally:
        client.close()


def jobs(url: str, ids: list[str]) -> list[JobView]:
    with SyncStore(open_backend(url)) as store:
        return [store.get_job(i) for i in ids]


def finished(url: str, queue: str = "default") -> int:
    """How many jobs of ``queue`` are finished (the queue's counts)."""
    with SyncStore(open_backend(url)) as store:
        return store.queue_counts(queue)["finished"]


def events_of(url: str, job_id: str) -> list[Any]:
    with SyncStore(open_backend(url)) as store:
        return [e for e in store.events("default") if e.id == job_id]


def terminal_events(url: str, job_id: str) -> list[str]:
    return [e.type for e in events_of(url, job_id) if e.type in TERMINAL_EVENTS]


def submit(url: str, n: int, type_: str, job_input: Any) -> list[str]:
    with Client(url, app=app) as client:
        return [client.submit(type_, job_input) for _ in range(n)]


