"""Webhook deliveries/s from one daemon to a local receiver, against a redis-server started here.

N no-op jobs that notify are run first by a daemon without a webhook secret, so their
``job.completed`` deliveries wait in the outbox. Then one daemon with the secret
(``jobvisor run``, its default ``--webhook-concurrency`` and a larger one) drains it to a
receiver on 127.0.0.1 that answers 200 at once (trio and h11 in a thread of this
process, so the receiver is not what is measured); the figure is deliveries per second
from the first request received to the last, every one signed (a sample is verified)
and recorded ``delivered`` in Redis.

Run: .venv/bin/python bench/webhooks.py [N]
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h11
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from standardwebhooks.webhooks import Webhook  # noqa: E402

from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import SyncStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """A keep-alive HTTP/1.1 receiver answering 200 to everything; records (time, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=trio.run, args=(self._main,), daemon=True).start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/in"

    async def _main(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=1024)
        self.port = listeners[0].socket.getsockname()[1]
        self._ready.set()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        headers: dict[str, str] = {}
        body: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                body = []
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.requests.append((time.time(), headers, b"".join(body)))
                await stream.send_all(
                    conn.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
                    + conn.send(h11.Data(data=b"ok")) + conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            else:  # ConnectionClosed, PAUSED
                return


def start_daemon(url: str, *, secret: bool, concurrency: int = 16) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBVISOR_")}
    env["PYTHONPATH"] = str(ROOT)
    if secret:
        env["JOBVISOR_WEBHOOK_SECRET"] = SECRET
    return subprocess.Popen(
        [sys.executable, "-m", "jobvisor", "run", "--redis", url, "--app", "bench.noop_app:app",
         "--concurrency", "64", "--webhook-concurrency", str(concurrency), "--worker-id", "bench",
         # the bench's receiver is on loopback: allowed explicitly (the default refuses it)
         "--allow-private-destinations", "--log-level", "error"],
        cwd=ROOT, env=env,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait(condition, what: str, deadline: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def fill_outbox(url: str, n: int, receiver: Receiver) -> None:
    """N completed jobs whose deliveries wait in the outbox (a daemon without the secret ran them)."""
    store = SyncStore(open_backend(url))
    client = store.backend.client
    client.flushall()
    proc = start_daemon(url, secret=False)
    try:
        for i in range(0, n, 500):
            store.submit_many([JobSpec(type="noop", max_retries=0, webhook_url=receiver.url)
                               for _ in range(min(500, n - i))])
        finished = Keys("default").finished
        wait(lambda: client.zcard(finished) >= n, "the jobs to complete")
        assert client.zcard(Keys("default").outbox) == n
    finally:
        stop(proc)
        store.close()


def drain(url: str, n: int, concurrency: int) -> tuple[float, int]:
    receiver = Receiver()
    fill_outbox(url, n, receiver)
    store = SyncStore(open_backend(url))
    proc = start_daemon(url, secret=True, concurrency=concurrency)
    try:
        wait(lambda: len(receiver.requests) >= n, "every delivery")
        outbox = Keys("default").outbox
        wait(lambda: store.backend.client.zcard(outbox) == 0, "every delivery recorded")
        failed = sum(1 for e in store.events("default", count=10 * n) if e.type == "webhook.fail")
    finally:
        stop(proc)
        store.close()
    requests = list(receiver.requests)
    assert len(requests) == n, f"{len(requests)} requests for {n} deliveries"
    assert len({headers["webhook-id"] for _, headers, _ in requests}) == n
    for _, headers, body in random.Random(1).sample(requests, 20):
        Webhook(SECRET).verify(body, headers)
    span = requests[-1][0] - requests[0][0]
    return (n - 1) / span, failed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            print(f"N={n} job.completed deliveries, one daemon, one local redis-server, "
                  "a receiver on 127.0.0.1 answering 200 (trio + h11, in a thread of the bench)\n")
            for concurrency in (16, 64):
                rate, failed = drain(server.url, n, concurrency)
                print(f"webhook concurrency {concurrency:>3}: {rate:,.0f} deliveries/s (signed, recorded delivered;"
                      f" {failed} attempts failed and were retried)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
