"""A fake external service on 127.0.0.1, for status queries: a real HTTP server in a thread.

Handlers hand work to it (``POST /jobs`` with ``{"job": <jobvisor id>}`` answers
``{"id": <service job id>}``, status ``running``) and poll it; status queries ask it
(``GET /jobs/<service job id>`` answers ``{"status": ..., "result": ...}``). The test
decides what each job's status is, and how the service misbehaves when asked about it:

* ``hang``: the answer never comes (the request is held until the server stops);
* ``error``: ``500 Internal Server Error``;
* ``garbage``: ``200`` with a body that is not JSON;
* ``reset``: the connection is closed without an answer.

Every ``GET`` is counted per service job id, so a test can tell whether, and how often,
a status query asked.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ExternalService"]


class ExternalService:
    """The service's state, and the server that exposes it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}  # service id -> {"job", "status", "result"}
        self.modes: dict[str, str] = {}  # service id -> hang | error | garbage | reset
        self.default_mode: str | None = None
        self.initial: tuple[str, Any] = ("running", None)  # status and result of new jobs
        self.asked: Counter[str] = Counter()
        self.released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="external-service", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ExternalService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    # -- what the test controls ----------------------------------------------------------------

    def set(self, service_id: str, status: str, result: Any = None) -> None:
        with self.lock:
            self.jobs[service_id].update(status=status, result=result)

    def start_new_jobs_as(self, status: str, result: Any = None) -> None:
        """Jobs handed over from now on start in ``status`` (``completed``: done at once)."""
        with self.lock:
            self.initial = (status, result)

    def misbehave(self, service_id: str | None, mode: str | None) -> None:
        """``mode`` for ``service_id``'s status, or for every job (``service_id=None``)."""
        with self.lock:
            if service_id is None:
                self.default_mode = mode
            elif mode is None:
                self.modes.pop(service_id, None)
            else:
                self.modes[service_id] = mode

    def ids_of(self, job_id: str) -> list[str]:
        """The service jobs created for a jobvisor job, oldest first."""
        with self.lock:
            return [sid for sid, j in self.jobs.items() if j["job"] == job_id]

    # -- the HTTP side ---------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
                pass

            def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                data = json.loads(self.rfile.read(length) or b"{}")
                with service.lock:
                    sid = f"svc-{len(service.jobs) + 1}"
                    status, result = service.initial
                    service.jobs[sid] = {"job": data.get("job"), "status": status, "result": result}
                self._send(201, json.dumps({"id": sid}).encode())

            def do_GET(self) -> None:  # noqa: N802 - stdlib's name
                sid = self.path.rsplit("/", 1)[-1]
                with service.lock:
                    service.asked[sid] += 1
                    mode = service.modes.get(sid, service.default_mode)
                    job = dict(service.jobs.get(sid) or {})
                if mode == "hang":
                    service.released.wait()
                    return
                if mode == "error":
                    self._send(500, b'{"error": "internal"}')
                    return
                if mode == "garbage":
                    self._send(200, b"<html>not json", "text/html")
                    return
                if mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if not job:
                    self._send(404, b'{"error": "no such job"}')
                    return
                self._send(200, json.dumps({"status": job["status"], "result": job["result"]}).encode())

        return Handler
