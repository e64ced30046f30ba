"""Real processes for the web tests: ``jobvisor web`` and ``jobvisor run`` subprocesses, and an
SSE reader that waits for a job's state by its events (no polling, bounded by a timeout)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-token-0123456789abcdef"
READER = "read-token-0123456789abcdef"
TOKENS = f"admin:{ADMIN},read:{READER}"


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items()
               if (not k.startswith("JOBVISOR_") or k == "JOBVISOR_STRICT_INVARIANTS")
               and k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "jobvisor-test-pycache")
    environ.update(extra or {})
    return environ


class WebProcess:
    """``jobvisor web --port 0``; :attr:`url` is read from its "serving on" line."""

    def __init__(self, redis_url: str, *, tokens: str | None = TOKENS, args: tuple[str, ...] = ()) -> None:
        extra = {"JOBVISOR_WEB_TOKENS": tokens} if tokens else {}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobvisor", "web", "--redis", redis_url, "--port", "0",
             "--app", "tests.web_app:app", *args],
            cwd=ROOT, env=env(extra), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        stdout = self.process.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            self.close()
            raise AssertionError("jobvisor web did not start within 30 s") from None
        if "serving on" not in first:
            self.close()
            raise AssertionError(f"jobvisor web: {first}{self.stderr()}")
        self.url = first.strip().rsplit(" ", 1)[-1]

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        return self.process.stderr.read() if self.process.stderr else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def web_server(redis_url: str, **kwargs: Any) -> Iterator[WebProcess]:
    server = WebProcess(redis_url, **kwargs)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def daemon(redis_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``jobvisor run --app tests.web_app:app`` with short intervals; killed at the end."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobvisor", "run", "--redis", redis_url, "--app", "tests.web_app:app",
             "--idle-poll", "0.2", "--watchdog-interval", "0.5", "--lease", "5", "--grace", "2",
             "--evaluator-interval", "0.5"],
            cwd=ROOT, env=env({"JOBVISOR_REDIS": redis_url}), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=out,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class SseReader:
    """One SSE connection read in a thread: ``(id, data)`` per message, in order."""

    def __init__(self, url: str, *, headers: dict[str, str], params: dict[str, str] | None = None) -> None:
        self.messages: queue.Queue[tuple[str | None, Any]] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=60))
        self._response = self._client.send(self._client.build_request("GET", url, headers=headers, params=params),
                                           stream=True)
        assert self._response.status_code == 200, self._response.read()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event_id: str | None = None
        data: list[str] = []
        try:
            for line in self._response.iter_lines():
                if line == "":
                    if event_id is not None or data:
                        self.messages.put((event_id, json.loads("\n".join(data)) if data else None))
                    event_id, data = None, []
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data.append(line[6:])
        except (httpx.HTTPError, ValueError):
            pass  # closed by close()

    def next(self, timeout: float = 15.0) -> tuple[str | None, Any]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SSE message within {timeout} s") from None

    def next_event(self, timeout: float = 15.0) -> tuple[str, dict[str, Any]]:
        """The next message that carries an event (position-only messages are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            event_id, data = self.next(max(0.01, deadline - time.monotonic()))
            if data is not None:
                assert event_id is not None
                return event_id, data

    def close(self) -> None:
        self._response.close()
        self._client.close()


def wait_for_state(base: str, job_id: str, states: set[str], timeout: float = 30.0) -> dict[str, Any]:
    """The job once it is in one of ``states``: its events (SSE, filtered by job) say when."""
    reader = SseReader(f"{base}/api/v1/events", headers=auth(), params={"job": job_id})
    try:
        reader.next()  # the position at connect: everything after it will be seen
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=auth()).json()
            if job["state"] in states:
                return job
            _, event = reader.next_event(max(0.01, deadline - time.monotonic()))
            if event["fields"].get("to") in states:
                continue  # read the job again: now in the wanted state
    finally:
        reader.close()
