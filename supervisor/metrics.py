"""Prometheus metrics and a health endpoint, one registry per daemon.

Served on ``--metrics-port`` (``/metrics`` in Prometheus text format,
``/healthz`` answering 200 while the daemon runs and its store answers,
503 otherwise) by a small WSGI server in a thread: serving a scrape never
waits on trio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from adapters.errors import JobvisorError
from adapters.records import Reply

__all__ = ["Metrics", "MetricsServer"]


class Metrics:
    """The daemon's instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.transitions = Counter(
            "jobvisor_transitions", "Store transitions by machine, trigger and outcome",
            ["machine", "trigger", "outcome"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "jobvisor_queue_depth", "Jobs per queue and state", ["queue", "state"], registry=self.registry
        )
        self.handler_duration = Histogram(
            "jobvisor_handler_duration_seconds", "Handler run time by job type", ["type"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        self.validation_checks = Counter(
            "jobvisor_validation_checks", "Checks against the source of truth by outcome",
            ["outcome"], registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "jobvisor_webhook_attempts", "Webhook delivery attempts by outcome (succeed, fail, reject)",
            ["outcome"], registry=self.registry,
        )
        self.actor_restarts = Counter(
            "jobvisor_actor_restarts", "Actor restarts after a crash", ["actor"], registry=self.registry
        )
        self.healthy = True

    def observe(self, replies: Sequence[Reply]) -> None:
        for r in replies:
            if r.trigger:
                self.transitions.labels("job", r.trigger, r.kind).inc()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` in a background thread."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        prometheus = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                ok = metrics.healthy
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"ok\n" if ok else b"unhealthy\n"]
            return prometheus(environ, start_response)  # type: ignore[no-any-return]

        try:
            self.server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        except OSError as exc:
            raise JobvisorError(f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="jobvisor-metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
