"""The external service ``examples/app.py``'s ``transcode`` hands its work to.

    python -m examples.service --port 8765      # EXAMPLE_SERVICE_URL's default

Its status API lags behind its own progress, as the service of the production incident did:
``GET /jobs/<id>/progress`` says done as soon as the work is done, ``GET /jobs/<id>`` says
``completed`` (with a ``completed_at``) only ``lag`` seconds later. A job completed on the
progress alone would be notified with stale data; ``transcode``'s validator asks the status
API instead. ``jobvisor demo`` runs one of these on a free loopback port.

* ``POST /jobs`` ``{"job_id": ..., "work": seconds}``: takes the work, answers ``201 {"id": ...}``;
* ``GET /jobs/<service id or job id>``: ``{"status": "processing" | "completed", ...}``;
* ``GET /jobs/<id>/progress``: ``{"done": bool, "output": ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 64 * 1024


def iso(t: float) -> str:
    """``t`` (epoch seconds) as jobvisor writes timestamps: UTC, milliseconds, ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class Service:
    """The service's state. ``submissions`` counts, per jobvisor job id, how often the work
    was handed over (a handler run that reached the service)."""

    def __init__(self, lag: float = 0.5) -> None:
        self.lag = lag
        self.lock = threading.Lock()  # the HTTP server runs one thread per request
        self.jobs: dict[str, dict[str, Any]] = {}
        self.by_job: dict[str, str] = {}
        self.submissions: Counter[str] = Counter()

    def status_of(self, job_id: str) -> str:
        """What the status API says now of the work for jobvisor's ``job_id`` (``unknown``: none)."""
        with self.lock:
            sid = self.by_job.get(job_id)
            return self._view(self.jobs[sid])["status"] if sid else "unknown"

    def _view(self, work: dict[str, Any]) -> dict[str, Any]:
        done = time.time() >= work["done_at"] + self.lag
        return {"id": work["id"], "job_id": work["job_id"], "status": "completed" if done else "processing",
                "completed_at": iso(work["done_at"] + self.lag) if done else None,
                "output": work["output"] if done else None}

    def respond(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON body answering one request."""
        parts = path.strip("/").split("/")
        with self.lock:
            if method == "POST" and parts == ["jobs"]:
                try:
                    request = json.loads(body or b"{}")
                    job_id, work = str(request["job_id"]), float(request.get("work", 0.2))
                except (ValueError, KeyError, TypeError):
                    return 400, {"error": "expected {\"job_id\": ..., \"work\": seconds}"}
                sid = "svc-" + secrets.token_hex(4)
                self.jobs[sid] = {"id": sid, "job_id": job_id, "output": f"s3://demo/{sid}.mp4",
                                  "done_at": time.time() + work}
                self.by_job[job_id] = sid
                self.submissions[job_id] += 1
                return 201, {"id": sid}
            if method == "GET" and len(parts) >= 2 and parts[0] == "jobs":
                found = self.jobs.get(parts[1]) or self.jobs.get(self.by_job.get(parts[1], ""))
                if found is None:
                    return 404, {"error": "no such job"}
                if parts[2:] == ["progress"]:
                    return 200, {"done": time.time() >= found["done_at"], "output": found["output"]}
                return 200, self._view(found)
        return 404, {"error": "not found"}


def serve(service: Service, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server answering through ``service`` (port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            status, payload = service.respond(self.command, self.path, self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--lag", type=float, default=0.5, help="seconds the status API lags behind progress")
    args = parser.parse_args(argv)
    with serve(Service(args.lag), args.host, args.port) as server:
        print(f"listening on http://{args.host}:{server.server_address[1]}/", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
