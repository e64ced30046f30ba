"""``jobvisor web`` figures, against a redis-server and one ``jobvisor web`` process started here.

* API submit throughput: N submits of a no-op job (``POST /api/v1/jobs``) over HTTP/1.1
  keep-alive, one connection in sequence and 16 connections at once, next to the Python
  client's ``Client.submit`` in sequence (its own connection, no HTTP). Each figure is jobs
  per second over the whole run; every answer is checked (201). The load comes from
  a lean keep-alive client (requests written as bytes, answers framed by Content-Length, as a
  service's HTTP client would), so the figure is the server's; the same runs with httpx (about
  as much CPU per request as the server itself) are shown too.
* SSE fan-out: 20 clients follow ``/api/v1/events?queue=fanout``; M jobs are submitted
  (``submit_many``, 500 at a time); the figure is events delivered per second to all the
  clients together, from the first submit to the last event received by the slowest one.

Product defaults (no tokens: the server listens on loopback). min/median/max of RUNS runs.
Run: .venv/bin/python bench/web.py [N] [M]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.supervisor.client import Client  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.web_app import app  # noqa: E402
from tests.web_support import WebProcess  # noqa: E402

RUNS = 3
CLIENTS = 20


async def http_submits(base: str, n: int, connections: int) -> float:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        await client.get("/api/v1/health")
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                answer = await client.post("/api/v1/jobs", json={"type": "echo", "input": {"i": i}})
                assert answer.status_code == 201, answer.text

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker)
        return n / (time.perf_counter() - started)


async def lean_submits(base: str, n: int, connections: int) -> float:
    """Like :func:`http_submits`, over raw keep-alive connections (reopened when the server
    answers ``connection: close``)."""
    host, _, port = base.removeprefix("http://").rpartition(":")
    counter = iter(range(n))

    async def worker() -> None:
        stream: trio.SocketStream | None = None
        buffer = bytearray()
        try:
            for i in counter:
                if stream is None:
                    stream, buffer = await trio.open_tcp_stream(host, int(port)), bytearray()
                body = json.dumps({"type": "echo", "input": {"i": i}}).encode()
                await stream.send_all(b"POST /api/v1/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                                      b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                while (end := buffer.find(b"\r\n\r\n")) < 0:
                    buffer += await stream.receive_some(65536)
                head = bytes(buffer[:end]).lower()
                assert head.startswith(b"http/1.1 201"), head
                length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                while len(buffer) < end + 4 + length:
                    buffer += await stream.receive_some(65536)
                del buffer[:end + 4 + length]
                if b"connection: close" in head:
                    await stream.aclose()
                    stream = None
        finally:
            if stream is not None:
                await stream.aclose()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return n / (time.perf_counter() - started)


def client_submits(url: str, n: int) -> float:
    with Client(url, app=app) as client:
        client.submit("echo", {"i": -1})
        started = time.perf_counter()
        for i in range(n):
            client.submit("echo", {"i": i})
        return n / (time.perf_counter() - started)


async def fan_out(base: str, url: str, m: int) -> float:
    counts = [0] * CLIENTS
    ready = [trio.Event() for _ in range(CLIENTS)]
    done = trio.Event()

    async def follow(k: int) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=120)) as client, \
                client.stream("GET", f"{base}/api/v1/events", params={"queue": "fanout"}) as response:
            async for line in response.aiter_lines():
                if line.startswith("id: ") and not ready[k].is_set():
                    ready[k].set()  # the connect position: following from here
                elif line.startswith("data: "):
                    counts[k] += 1
                    if all(c >= m for c in counts):
                        done.set()
                    if counts[k] >= m:
                        return

    async with trio.open_nursery() as nursery:
        for k in range(CLIENTS):
            nursery.start_soon(follow, k)
        for event in ready:
            await event.wait()
        started = time.perf_counter()
        with Client(url, app=app) as client:
            specs = [JobSpec(type="echo", input={"i": i}, queue="fanout") for i in range(m)]
            for i in range(0, m, 500):
                await trio.to_thread.run_sync(client.store.submit_many, specs[i:i + 500])
        with trio.fail_after(120):
            await done.wait()
        elapsed = time.perf_counter() - started
    return CLIENTS * m / elapsed


def spread(values: list[float]) -> str:
    return f"min {min(values):8.0f}  median {statistics.median(values):8.0f}  max {max(values):8.0f}"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    figures: dict[str, list[float]] = {"http 1 conn": [], "http 16 conns": [], "httpx 1 conn": [],
                                       "httpx 16 conns": [], "python client": [], "sse": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        web = WebProcess(server.url, tokens=None)
        try:
            for _ in range(RUNS):
                figures["http 1 conn"].append(trio.run(lean_submits, web.url, n, 1))
                figures["http 16 conns"].append(trio.run(lean_submits, web.url, n, 16))
                figures["httpx 1 conn"].append(trio.run(http_submits, web.url, n, 1))
                figures["httpx 16 conns"].append(trio.run(http_submits, web.url, n, 16))
                figures["python client"].append(client_submits(server.url, n))
                figures["sse"].append(trio.run(fan_out, web.url, server.url, m))
        finally:
            web.close()
            server.stop()
    print(f"jobvisor web, one process; {RUNS} runs; {n} submits per run; {m} events to {CLIENTS} SSE clients")
    print(f"  API submit, 1 keep-alive connection   jobs/s    {spread(figures['http 1 conn'])}")
    print(f"  API submit, 16 keep-alive connections jobs/s    {spread(figures['http 16 conns'])}")
    print(f"  the same with httpx as the client, 1  jobs/s    {spread(figures['httpx 1 conn'])}")
    print(f"  the same with httpx as the client, 16 jobs/s    {spread(figures['httpx 16 conns'])}")
    print(f"  Python client submit (no HTTP)        jobs/s    {spread(figures['python client'])}")
    print(f"  SSE fan-out to {CLIENTS} clients            events/s  {spread(figures['sse'])}")


if __name__ == "__main__":
    main()
