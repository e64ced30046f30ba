"""``examples/receiver.py``, the receiver the README points at: it accepts what is signed
with the secret, refuses forgeries, and drops a ``webhook-id`` it has already handled.

It runs as a user runs it (``python -m examples.receiver --port 0``, a subprocess on a free
loopback port) and is sent bodies signed with the ``standardwebhooks`` library, then real
deliveries from a daemon. Every request's answer is awaited before the next is sent, and
the printed lines are read once the process has ended, so nothing waits by sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from standardwebhooks.webhooks import Webhook

from examples.receiver import Receiver
from jobvisor import App
from jobvisor.adapters.records import JobSpec
from tests.harness import running_daemon

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW9mLTMyLWJ5dGVzLi4uLi4="


@dataclass
class RunningReceiver:
    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def stop(self) -> list[str]:
        """End the process; every line it printed after ``listening on``."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return self.lines + out.splitlines()


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBVISOR_")}
    return subprocess.Popen([sys.executable, "-m", "examples.receiver", "--port", "0"], cwd=ROOT,
                            env={**environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def receiver() -> Iterator[RunningReceiver]:
    process = _start({"JOBVISOR_WEBHOOK_SECRET": SECRET})
    first: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: first.put(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        line = first.get(timeout=20)
        assert line.startswith("listening on http://127.0.0.1:"), (line, process.poll())
        reader.join(timeout=5)
        yield RunningReceiver(line.split()[-1], process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def signed(event_type: str, job: str, *, secret: str = SECRET, webhook_id: str | None = None,
           at: datetime | None = None) -> tuple[bytes, dict[str, str]]:
    """An event body and the Standard Webhooks headers that sign it."""
    body = json.dumps({"type": event_type, "timestamp": "2025-06-15T12:00:00.000Z",
                       "data": {"id": job, "state": event_type.split(".", 1)[1]}}).encode()
    webhook_id = webhook_id or f"{job}~{event_type}~0"
    at = at or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(webhook_id, at, body.decode())
    return body, {"webhook-id": webhook_id, "webhook-timestamp": str(int(at.timestamp())),
                  "webhook-signature": signature, "content-type": "application/json"}


def test_accepts_what_is_signed_refuses_forgeries_and_drops_a_seen_webhook_id(receiver: RunningReceiver) -> None:
    job, other = "default.01JOBA", "default.01JOBB"
    body, headers = signed("job.completed", job)
    altered = body.replace(b"completed", b"cancelled")
    forged = [
        ("altered body", altered, headers),
        ("signed with another secret", *signed("job.completed", job, secret=OTHER_SECRET)),
        ("a stale timestamp", *signed("job.completed", other, at=datetime.now(tz=UTC) - timedelta(minutes=10))),
        ("a malformed signature", body, {**headers, "webhook-signature": "garbage"}),
        ("no signature", body,
         {"webhook-id": headers["webhook-id"], "webhook-timestamp": headers["webhook-timestamp"]}),
    ]
    with httpx.Client(base_url=receiver.url, timeout=10) as http:
        first = http.post("/hooks", content=body, headers=headers)
        # a retry of the same delivery: same id and body, signed again with its own timestamp
        retry_body, retry_headers = signed("job.completed", job)
        again = http.post("/hooks", content=retry_body, headers=retry_headers)
        refused = {name: http.post("/hooks", content=b, headers=h).status_code for name, b, h in forged}
        next_body, next_headers = signed("job.failed", other)
        second = http.post("/hooks", content=next_body, headers=next_headers)
    printed = receiver.stop()
    assert (first.status_code, again.status_code, second.status_code) == (204, 200, 204)
    assert refused == dict.fromkeys(refused, 400)
    assert len(printed) == 2, printed
    assert printed[0].split()[:2] == ["job.completed", job]
    assert f"webhook-id={job}~job.completed~0" in printed[0]
    assert printed[1].split()[:2] == ["job.failed", other]
    assert "state=failed" in printed[1]


@pytest.mark.parametrize(("secret", "message"), [
    ("", "set JOBVISOR_WEBHOOK_SECRET"),
    ("whsec_not base64!", "is not a whsec_ secret"),
])
def test_without_a_usable_secret_it_says_so_in_one_line_and_exits_2(secret: str, message: str) -> None:
    process = _start({"JOBVISOR_WEBHOOK_SECRET": secret})
    out, err = process.communicate(timeout=20)
    assert process.returncode == 2
    assert out == "", err
    assert len(err.splitlines()) == 1, err
    assert message in err, err


def test_one_webhook_id_sent_at_once_by_many_senders_is_handled_once() -> None:
    printed: list[str] = []
    lock = threading.Lock()

    def emit(line: str) -> None:
        with lock:
            printed.append(line)

    rounds, senders = 50, 8
    statuses: list[int] = []
    receiver = Receiver(SECRET, emit=emit)
    for n in range(rounds):
        body, headers = signed("job.completed", f"default.J{n}")
        start = threading.Barrier(senders)

        def send() -> None:
            start.wait(timeout=10)
            status = receiver.receive(body, headers)
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=send) for _ in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    assert statuses.count(204) == rounds
    assert statuses.count(200) == rounds * (senders - 1)
    assert sorted(line.split()[1] for line in printed) == sorted(f"default.J{n}" for n in range(rounds))


async def test_it_verifies_a_daemons_real_deliveries(receiver: RunningReceiver) -> None:
    app = App()

    @app.handler("echo", max_retries=0)
    async def echo(ctx: Any) -> Any:
        return ctx.input

    @app.handler("boom", max_retries=0)
    async def boom(ctx: Any) -> Any:
        raise RuntimeError("on purpose")

    hooks = receiver.url + "hooks"
    async with running_daemon(app, redis=f"memory://{uuid.uuid4().hex}", webhook_secret=SECRET,
                              webhook_url=hooks, webhook_backoff=0.05, idle_poll=0.2,
                              allow_private_destinations=True) as (daemon, watcher):  # a loopback receiver
        done = (await daemon.store.submit(JobSpec(type="echo", input={"n": 1}, max_retries=0, notify=True))).id
        failed = (await daemon.store.submit(JobSpec(type="boom", max_retries=0, webhook_url=hooks))).id
        ids = {f"{done}~job.completed~0", f"{failed}~job.failed~0"}
        with trio.fail_after(30):
            await watcher.until(lambda: ids <= {r.id for r in watcher.moves if r.to == "delivered"})
    printed = receiver.stop()
    assert sorted(line.split()[:2] for line in printed) == sorted([["job.completed", done], ["job.failed", failed]])
    assert all("state=completed" in line or "state=failed" in line for line in printed)
