"""Deliveries survive a daemon killed with SIGKILL: real ``jobvisor run`` subprocesses,
the session's real Redis, a real loopback receiver.

SPEC.md: the outbox is in Redis and delivery is at least once with a stable id. A
daemon killed between a job's completion and its webhook leaves the delivery either
``pending`` (not taken yet) or ``sending`` (taken, request in flight); after a restart
it is sent exactly once more, with the same ``webhook-id``, and never lost.

Waiting on another process has nothing to await but its effects: each wait polls
Redis (or the receiver's request log) in a loop bounded by a deadline, and fails at
once, with the daemon's stderr, if the daemon died. Every daemon is killed in a
``finally``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import DeliveryView, JobSpec
from jobvisor.adapters.store import SyncStore
from tests.daemon_process import wait_until
from tests.http_servers import HANG, ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

pytestmark = pytest.mark.slow


class Daemon:
    """One ``jobvisor run --app tests.webhook_app:app`` subprocess; stderr to a file."""

    def __init__(self, url: str, directory: Path, name: str, *, secret: bool, timeout: float) -> None:
        self.name = name
        self.log_path = directory / f"{name}.stderr"
        self._log = self.log_path.open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBVISOR_")}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "jobvisor-test-pycache")
        if secret:
            env["JOBVISOR_WEBHOOK_SECRET"] = SECRET
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobvisor", "run", "--redis", url, "--app", "tests.webhook_app:app",
             "--worker-id", name, "--idle-poll", "0.2", "--webhook-timeout", str(timeout),
             "--webhook-backoff", "0.1", "--grace", "2",
             "--allow-private-destinations"],  # the receiver is on loopback: allowed explicitly
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
        )

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon {self.name} exited {self.process.returncode}:\n{self.stderr()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon {self.name} did not stop:\n{self.stderr()}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@contextmanager
def daemon(url: str, directory: Path, name: str, *, secret: bool = True, timeout: float = 5.0) -> Iterator[Daemon]:
    process = Daemon(url, directory, name, secret=secret, timeout=timeout)
    try:
        yield process
    finally:
        process.close()


def delivery(url: str, job_id: str) -> DeliveryView | None:
    with SyncStore(open_backend(url)) as store:
        found = store.job_deliveries(job_id, 0)
    return found[0] if found else None


def submit(url: str, receiver: ScriptedServer) -> str:
    with SyncStore(open_backend(url)) as store:
        return store.submit(JobSpec(type="notify_me", max_retries=0, webhook_url=receiver.url_for("/in"))).id


def test_a_daemon_killed_mid_send_is_followed_by_exactly_one_more_send(redis_url: str, tmp_path: Path) -> None:
    with ScriptedServer([HANG]) as receiver:
        with daemon(redis_url, tmp_path, "doomed") as doomed:
            job = submit(redis_url, receiver)
            wait_until(lambda: receiver.requests, timeout=30, what="the first attempt", alive=doomed)
            doomed.kill()  # the request is still held by the receiver: the send is under way
        taken = delivery(redis_url, job)
        assert taken is not None
        assert (taken.state, taken.attempts) == ("sending", 1)
        with daemon(redis_url, tmp_path, "rescuer") as rescuer:
            done = wait_until(lambda: (d := delivery(redis_url, job)) is not None and d.state == "delivered" and d,
                              timeout=60, what="the delivery after the send lease ran out", alive=rescuer)
            assert rescuer.stop() == 0, rescuer.stderr()
        first, second = receiver.requests
    did = f"{job}~job.completed~0"
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == did
    assert first.body == second.body
    for request in (first, second):
        assert Webhook(SECRET).verify(request.body, request.headers)["data"]["state"] == "completed"
    assert (done.attempts, done.last_status) == (2, 200)


def test_a_daemon_killed_before_sending_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    with ScriptedServer() as receiver:
        with daemon(redis_url, tmp_path, "unsigned", secret=False) as unsigned:  # holds its deliveries
            job = submit(redis_url, receiver)
            wait_until(lambda: (d := delivery(redis_url, job)) is not None and d.state == "pending",
                       timeout=30, what="the job completed, its delivery in the outbox", alive=unsigned)
            unsigned.kill()
        with daemon(redis_url, tmp_path, "signing") as signing:
            done = wait_until(lambda: (d := delivery(redis_url, job)) is not None and d.state == "delivered" and d,
                              timeout=30, what="the delivery", alive=signing)
            assert signing.stop() == 0, signing.stderr()
        [request] = receiver.requests
    assert request.headers["webhook-id"] == f"{job}~job.completed~0"
    assert Webhook(SECRET).verify(request.body, request.headers)["type"] == "job.completed"
    assert (done.attempts, done.last_status) == (1, 200)
