"""A webhook receiver for jobvisor's deliveries: verify, drop duplicates, print.

    JOBVISOR_WEBHOOK_SECRET=whsec_... python -m examples.receiver --port 8000

then point jobs at it: ``jobvisor submit echo --webhook-url http://127.0.0.1:8000/hooks``
(loopback is refused by the destination policy unless allowed: export
``JOBVISOR_ALLOW_DESTINATIONS=127.0.0.1`` for the daemon and the submitter).
It prints one line per event it accepts and answers:

* ``204`` a verified event, seen for the first time: printed;
* ``200`` a verified event whose ``webhook-id`` it has already handled (delivery is at
  least once: a retry after a lost answer carries the same id): not printed again;
* ``400`` a forged, altered or stale delivery (signature or timestamp wrong): refused.

Any non-2xx answer makes jobvisor retry, so a receiver that cannot handle an event yet
should answer 5xx, not 2xx. This one keeps the ids it has seen in memory; a real one
keeps them in its own database, next to what the event changes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY = 4 * 1024 * 1024  # jobvisor's events are far smaller; refuse anything huge unread


class Receiver:
    """Verifies each delivery with the ``whsec_`` secret, drops ids already handled.

    ``handle(webhook_id, event)`` is what is done with a verified event seen for the first
    time (by default: print one line through ``emit``); ``answered`` counts the answers given
    (204 new, 200 repeated, 400 refused)."""

    def __init__(self, secret: str, emit: Callable[[str], None] = print,
                 handle: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.verifier = Webhook(secret)
        self.emit = emit
        self.handle = handle or self._print
        self.seen: set[str] = set()
        self.answered: Counter[int] = Counter()
        self.lock = threading.Lock()  # the HTTP server runs one thread per request

    def receive(self, body: bytes, headers: Mapping[str, str]) -> int:
        """The HTTP status to answer for one delivery."""
        status = self._receive(body, headers)
        with self.lock:
            self.answered[status] += 1
        return status

    def _receive(self, body: bytes, headers: Mapping[str, str]) -> int:
        try:
            event: dict[str, Any] = self.verifier.verify(body, dict(headers))
        except (WebhookVerificationError, ValueError):  # ValueError: a malformed signature header
            return 400
        webhook_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        with self.lock:
            if webhook_id in self.seen:
                return 200
            self.seen.add(webhook_id)
        self.handle(webhook_id, event)
        return 204

    def _print(self, webhook_id: str, event: dict[str, Any]) -> None:
        data = event.get("data", {})
        self.emit(f"{event['type']:<22} {data.get('id')}  state={data.get('state')}  webhook-id={webhook_id}")


def serve(receiver: Receiver, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server passing every POST's body and headers to ``receiver`` (port 0: a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            status = receiver.receive(self.rfile.read(length), dict(self.headers.items()))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # the printed events are the log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    args = parser.parse_args(argv)
    secret = os.environ.get("JOBVISOR_WEBHOOK_SECRET", "")
    if not secret:
        print("receiver: set JOBVISOR_WEBHOOK_SECRET to the daemon's whsec_ secret", file=sys.stderr)
        return 2
    try:
        receiver = Receiver(secret, emit=lambda line: print(line, flush=True))
    except Exception:  # noqa: BLE001 - the library raises several kinds for a bad secret
        print("receiver: JOBVISOR_WEBHOOK_SECRET is not a whsec_ secret (whsec_ then base64)",
              file=sys.stderr)
        return 2
    with serve(receiver, args.host, args.port) as server:
        print(f"listening on http://{args.host}:{server.server_address[1]}/", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
