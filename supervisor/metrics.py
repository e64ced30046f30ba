"""Prometheus metrics and a health endpoint, one registry per daemon.

Served on ``--metrics-port`` by a small WSGI server in a thread:

* ``/metrics``: Prometheus text format. Counters and the handler-duration
  histogram are kept as things happen; the queue-depth gauges are read from
  the store at scrape time (one pipeline of ``ZCARD`` per queue), so they are
  exact when scraped and cost nothing between scrapes; so are the unserved
  gauges (queued jobs of a type no live daemon serves: one read of the
  registry, one per-type count per queue), which the evaluator also refreshes
  every pass. When the store does
  not answer, the scrape still succeeds with the depths last read.
* ``/healthz``: 200 ``ok`` when the daemon's store answers a round trip
  within :data:`PROBE_TIMEOUT` seconds; 503 ``unhealthy: <why>`` otherwise,
  one line naming the condition (Redis unreachable, loading, out of memory,
  refusing; the daemon shutting down).

Both reach the store through the daemon's trio loop
(``trio.from_thread.run``); the server is stopped from a worker thread
before the loop ends, so a request in flight never waits on a loop that is
gone.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from jobvisor.adapters.errors import JobvisorError
from jobvisor.adapters.filing import CATEGORY_OF
from jobvisor.adapters.replies import Claimed, Moved, Reply, Woken
from jobvisor.adapters.store import Store

__all__ = ["Metrics", "MetricsServer", "PROBE_TIMEOUT"]

PROBE_TIMEOUT = 2.0
"""Seconds the store has to answer a scrape's or a health check's round trip."""


class _Children(dict[tuple[str, ...], Any]):
    """A labelled metric's children by label values, each looked up in the metric once (a
    ``labels()`` call validates and locks every time; these metrics never drop a child)."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key: tuple[str, ...]) -> Any:
        child = self[key] = self.metric.labels(*key)
        return child


class Metrics:
    """The daemon's instruments."""

    def __init__(self) -> None:
        self.problem = ""  # why the store did not answer the last refresh (``/healthz``)
        self.registry = CollectorRegistry(auto_describe=True)
        self.transitions = Counter(
            "jobvisor_transitions", "Store transitions by machine, trigger and outcome",
            ["machine", "trigger", "outcome"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "jobvisor_queue_depth", "Jobs per queue and state", ["queue", "state"], registry=self.registry
        )
        self.handler_duration = Histogram(
            "jobvisor_handler_duration_seconds",
            "Handler run time by job type and how the handler ended (complete, fail, timeout, unstorable, "
            "crashed, interrupted)", ["type", "outcome"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        self.watchdog_decisions = Counter(
            "jobvisor_watchdog_decisions", "Watchdog decisions on expired leases by decision and cause",
            ["decision", "cause"], registry=self.registry,
        )
        self.workers_lost = Counter(
            "jobvisor_workers_lost", "Daemons this daemon declared lost (their heartbeat stopped)",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "jobvisor_event_loop_lag_seconds",
            "How much later than asked the daemon's event loop woke (a blocked loop shows here)",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=self.registry)
        self.abandoned_handlers = Gauge(
            "jobvisor_abandoned_handlers", "Handlers that ignored cancellation, abandoned, not yet returned",
            registry=self.registry,
        )
        self.validation_checks = Counter(
            "jobvisor_validation_checks", "Checks against the source of truth by outcome",
            ["outcome"], registry=self.registry,
        )
        self.queue_wait = Histogram(
            "jobvisor_queue_wait_seconds",
            "From submit to the first claim, by job type (a delayed job's delay included)", ["type"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
        self.validation_checks_per_job = Histogram(
            "jobvisor_validation_checks_per_job",
            "Checks a job's validation took, by how it ended (completed, validation_failed)",
            ["outcome"], registry=self.registry, buckets=(1, 2, 3, 5, 8, 13, 21, 50, 100))
        self.webhook_latency = Histogram(
            "jobvisor_webhook_delivery_latency_seconds",
            "From the transition that made a webhook event to the receiver's 2xx (retries included)",
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600))
        self.webhook_attempts = Counter(
            "jobvisor_webhook_attempts", "Webhook delivery attempts by outcome (succeed, fail, reject)",
            ["outcome"], registry=self.registry,
        )
        self.outbound_refused = Counter(
            "jobvisor_outbound_refused", "Outbound requests refused by the destination policy, by client "
            "(webhook, validator) and check (name: the URL's host; address: what it resolved to)",
            ["client", "check"], registry=self.registry,
        )
        self.actor_restarts = Counter(
            "jobvisor_actor_restarts", "Actor restarts after a crash", ["actor"], registry=self.registry
        )
        self.filed = Gauge(
            "jobvisor_filed_jobs", "Filed jobs still stored, by queue, category and problem",
            ["queue", "category", "problem"], registry=self.registry,
        )
        self.unfiled = Gauge(
            "jobvisor_unfiled_jobs", "Finished jobs waiting to be filed", ["queue"], registry=self.registry
        )
        self.unserved = Gauge(
            "jobvisor_unserved_jobs",
            "Queued jobs whose type no live daemon serves, by queue and type (they wait, never fail)",
            ["queue", "type"], registry=self.registry,
        )
        self._unserved_labels: set[tuple[str, str]] = set()
        # The per-job instruments' children, by label values (job type, outcome...).
        self.transition_counts = _Children(self.transitions)
        self.handler_durations = _Children(self.handler_duration)
        self.queue_waits = _Children(self.queue_wait)
        self.deleted = Counter(
            "jobvisor_jobs_deleted", "Finished jobs deleted by retention, by queue and state",
            ["queue", "state"], registry=self.registry,
        )

    async def refresh(self, store: Store, queues: Iterable[str], *, at_most: float = PROBE_TIMEOUT) -> bool:
        """Read every queue's depths into the gauges; False when the store did not answer,
        and then :attr:`problem` says why (one line, for ``/healthz``)."""
        with trio.move_on_after(at_most):
            try:
                names = tuple(queues)
                for queue in names:
                    for state, count in (await store.queue_counts(queue)).items():
                        self.queue_depth.labels(queue, state).set(count)
                if names:
                    self.set_unserved(await store.unserved(names))
                if not names:  # still one round trip: the answer is whether the store answers
                    await store.queues()
            except JobvisorError as exc:  # unavailable, loading, refused, or closed at shutdown
                self.problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                return False
            self.problem = ""
            return True
        self.problem = f"the store did not answer within {at_most:g}s"
        return False

    def set_filing(self, queue: str, counts: dict[tuple[str, str], int], waiting: int) -> None:
        """The filing gauges of ``queue`` (every category/problem pair, zeros included)."""
        for problem, category in CATEGORY_OF.items():
            self.filed.labels(queue, category.value, problem.value).set(
                counts.get((category.value, problem.value), 0)
            )
        self.unfiled.labels(queue).set(waiting)

    def set_unserved(self, per_queue: dict[str, dict[str, int]]) -> None:
        """The unserved gauges: one per (queue, type) waiting now; a pair no longer waiting
        (served again, or drained) is removed, so the exposition lists only live problems."""
        now = {(q, t): n for q, types in per_queue.items() for t, n in types.items()}
        for gone in self._unserved_labels - now.keys():
            if gone[0] in per_queue:
                self.unserved.remove(*gone)
        for labels, n in now.items():
            self.unserved.labels(*labels).set(n)
        self._unserved_labels = {k for k in self._unserved_labels if k[0] not in per_queue} | now.keys()

    def observe(self, replies: Sequence[Reply]) -> None:
        """Count the transitions in the store's replies, by machine, trigger and outcome: job
        triggers (worker, operator, watchdog), phase, batch and webhook moves, and the list
        answers' claims (queued → active) and wakes (scheduled → queued)."""
        counts = self.transition_counts
        for r in replies:
            if isinstance(r, Moved):
                counts[r.machine, r.trigger, r.kind].inc()
            elif isinstance(r, Claimed) and r.n:
                counts["job", "claim", "moved"].inc(r.n)
            elif isinstance(r, Woken) and r.n:
                counts["job", "wake", "moved"].inc(r.n)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``host:port`` in a background thread.

    Create it inside the daemon's trio run: ``refresh`` (a coroutine function
    answering whether the store answered, e.g. a bound :meth:`Metrics.refresh`)
    runs in that run for every request. Stop it with ``await
    trio.to_thread.run_sync(server.stop)``, never from the trio thread itself.
    """

    def __init__(self, metrics: Metrics, host: str, port: int,
                 refresh: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.metrics = metrics
        self._refresh = refresh
        self._token = trio.lowlevel.current_trio_token() if refresh is not None else None
        self._stopping = False
        prometheus = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            answered = self._store_answers()
            if environ.get("PATH_INFO") == "/healthz":
                start_response("200 OK" if answered else "503 Service Unavailable",
                               [("Content-Type", "text/plain")])
                why = self.metrics.problem or "the daemon is stopping"
                return [b"ok\n" if answered else f"unhealthy: {why}\n".encode()]
            return prometheus(environ, start_response)  # type: ignore[no-any-return]

        try:
            self.server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        except OSError as exc:
            raise JobvisorError(f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="jobvisor-metrics", daemon=True)

    def _store_answers(self) -> bool:
        if self._refresh is None:
            return True
        if self._stopping:
            return False
        try:
            return trio.from_thread.run(self._refresh, trio_token=self._token)
        except trio.RunFinishedError:
            return False

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop serving (blocks until a request in flight is answered)."""
        self._stopping = True
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
