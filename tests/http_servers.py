"""Loopback HTTP servers that misbehave on purpose: sources of truth and webhook receivers.

:class:`ScriptedServer` listens on ``127.0.0.1`` on a free port and answers from
threads (real sockets, real clock). Each request gets the next :class:`Step` of
its script, then ``then`` for every request after that, and is recorded as a
:class:`Request` (method, path, headers, body, arrival time) *before* it is
answered, so a test can wait for "the third request arrived" and then look at
it. A step can answer with any status, headers (``Retry-After``) and body, hang
(hold the connection until the server closes), reset the connection (RST, no
answer), or send bytes that are not HTTP at all.

Waiting is event-driven: :meth:`ScriptedServer.wait_for` blocks on a condition
until ``n`` requests have arrived, bounded by a timeout; :meth:`wait_for_async`
does the same from trio (in a worker thread it may abandon). Closing the server
releases every hanging handler.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio

__all__ = ["Step", "Request", "ScriptedServer", "source_of_truth", "HANG", "RESET", "GARBAGE", "refused_url"]

_UNSET: Any = object()


@dataclass(frozen=True)
class Step:
    """How to answer one request."""

    status: int = 200
    json: Any = _UNSET
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the server closes)
    reset: bool = False  # close with RST, no answer
    raw: bytes | None = None  # these bytes instead of an HTTP answer, then close


HANG = Step(hang=True)
RESET = Step(reset=True)
GARBAGE = Step(raw=b"SPLAT\x00\xff not http at all\r\n\r\n")


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    index: int
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.time() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.owner._handle(self)

    do_POST = do_GET  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once are queued, not reset
    owner: ScriptedServer


class ScriptedServer:
    """A scripted loopback HTTP server (see the module docstring); a context manager."""

    def __init__(self, steps: Sequence[Step] = (), then: Step = Step()) -> None:
        self.steps = list(steps)
        self.then = then
        self._requests: list[Request] = []
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"scripted-http-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        return self.url + path

    @property
    def requests(self) -> list[Request]:
        with self._changed:
            return list(self._requests)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Request]:
        """Block until at least ``n`` requests arrived; ``AssertionError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self._requests)} request(s) arrived at {self.url}, expected {n}")
                self._changed.wait(left)
            return list(self._requests)

    async def wait_for_async(self, n: int, timeout: float = 30.0) -> list[Request]:  # noqa: ASYNC109
        """:meth:`wait_for` from trio (a worker thread it abandons if cancelled)."""
        return await trio.to_thread.run_sync(partial(self.wait_for, n, timeout), abandon_on_cancel=True)

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving (handler threads) --------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._changed:
            index = len(self._requests)
            self._requests.append(Request(
                index=index, method=handler.command, path=handler.path,
                headers={k.lower(): v for k, v in handler.headers.items()}, body=body, at=time.time()))
            self._changed.notify_all()
        step = self.steps[index] if index < len(self.steps) else self.then
        if step.hang:
            self._closing.wait(120)
            handler.close_connection = True
            return
        if step.reset:
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return
        if step.raw is not None:
            handler.wfile.write(step.raw)
            handler.close_connection = True
            return
        payload = step.body if step.json is _UNSET else json.dumps(step.json).encode()
        handler.send_response(step.status)
        handler.send_header("Content-Type", "text/plain" if step.json is _UNSET else "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in step.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


def source_of_truth(processing: int, *, then_status: str = "completed") -> ScriptedServer:
    """A system of record that says ``processing`` (``completed_at: null``) for the first
    ``processing`` checks, then ``then_status`` with a ``completed_at``."""
    busy = Step(json={"status": "processing", "completed_at": None})
    done = Step(json={"status": then_status, "completed_at": "2025-06-15T12:00:00Z"})
    return ScriptedServer([busy] * processing, then=done)


def refused_url() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
