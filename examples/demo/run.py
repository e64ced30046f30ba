"""The demo's scenario: the service, the receiver and three daemons; every job it submits; the
wait for all of them to end and be notified (see the package docstring for the story)."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import ThreadingHTTPServer
from typing import Any

import trio

from examples.app import make_app
from examples.receiver import Receiver
from examples.receiver import serve as serve_receiver
from examples.service import Service
from examples.service import serve as serve_service
from jobvisor import AsyncClient, DaemonConfig, load_config, run_daemon
from jobvisor.adapters.backend import MemoryServers
from jobvisor.adapters.errors import JobvisorError
from jobvisor.adapters.store import Store

from .live import LiveView, LogsToView
from .report import TERMINAL, DemoReport, Heard, JobRow, collect, print_report


def settings(url: str, worker: str, queues: list[str], secret: str, receiver: str) -> DaemonConfig:
    """A daemon tuned to tell the story in seconds: short leases, intervals and backoffs."""
    return load_config({
        "redis": url, "worker_id": worker, "queues": queues, "concurrency": 32, "lease": 1.0,
        "grace": 1.0, "idle_poll": 0.5, "watchdog_interval": 0.2, "batch_interval": 0.2,
        "validation_interval": 0.25, "validation_jitter": 0.0, "validation_attempts": 12,
        "validation_timeout": 2.0, "webhook_secret": secret, "webhook_url": receiver,
        "webhook_backoff": 0.2, "webhook_timeout": 2.0, "status_query_timeout": 1.0,
        "abandon_after": 1.0, "evaluator_interval": 1.0,
        # The receiver and the source of truth listen on loopback, which the destination
        # policy refuses by default: the demo turns the development switch on, explicitly.
        "allow_private_destinations": True,
    }, environ={})


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """``server`` answering in a thread while the block runs; its URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class DemoRun:
    """One run of the demo: its queues, servers, daemons and the jobs it submitted."""

    def __init__(self, redis: str | None, view: LiveView) -> None:
        self.redis = redis
        self.url = redis or "memory://demo"
        self.memory = MemoryServers()
        self.tag = secrets.token_hex(3)
        self.main_q, self.fragile_q = f"demo-{self.tag}", f"demo-{self.tag}-b"
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.service = Service(lag=1.0)  # longer than a loaded machine takes from done to first check
        self.receiver = Receiver(self.secret, handle=self._heard)
        self.view = view
        self.rows: dict[str, JobRow] = {}
        self.waiting = "the daemons to start"  # what the run waits for now: named if it times out
        self._lock = threading.Lock()  # the receiver calls _heard from its server's threads
        self._events: Counter[str] = Counter()
        self._stale = 0

    def _heard(self, webhook_id: str, event: dict[str, Any]) -> None:
        """A verified event, first delivery of its id: a ``job.completed`` is checked against
        the service at the moment it arrives."""
        data = event.get("data", {})
        stale = event.get("type") == "job.completed" and (
            data.get("state") != "completed" or not data.get("completed_at")
            or self.service.status_of(data.get("id", "")) not in ("completed", "unknown"))
        with self._lock:
            self._events[data.get("id", "")] += 1
            self._stale += stale

    def heard(self) -> Heard:
        with self._lock, self.receiver.lock:
            return Heard(handed_over=Counter(self.service.submissions), events=Counter(self._events),
                         stale=self._stale, answered=Counter(self.receiver.answered),
                         distinct_ids=len(self.receiver.seen))

    async def until(self, check: Callable[[], Awaitable[object]], what: str, *, every: float = 0.05) -> None:
        """Wait for ``check()`` to be truthy; the caller bounds the time."""
        self.waiting = what
        while True:  # the store is polled: its changes reach no event of ours
            if await check():
                return
            await trio.sleep(every)

    async def run(self, time_limit: float) -> DemoReport:
        started = time.monotonic()
        try:
            with (serving(serve_service(self.service, port=0)) as service_url,
                  serving(serve_receiver(self.receiver, port=0)) as receiver_url,
                  self.view, trio.fail_after(time_limit)):
                report = await self._story(make_app(service_url, queue=self.main_q), receiver_url + "/hooks")
        except trio.TooSlowError:
            raise JobvisorError(f"the demo did not finish within {time_limit:g} s: it was waiting for "
                                f"{self.waiting}") from None
        report.store = "embedded (memory://)" if self.redis is None else "redis-server"
        report.seconds = time.monotonic() - started
        return report

    def _daemon(self, name: str, queue: str, hooks: str) -> DaemonConfig:
        return settings(self.url, f"demo-{self.tag}-{name}", [queue], self.secret, hooks)

    async def _watch(self, store: Store) -> None:
        """Feed the live view: counts per state, webhooks, recent events."""
        after = {self.main_q: "-", self.fragile_q: "-"}
        while True:
            counts: Counter[str] = Counter()
            for q in after:
                with trio.move_on_after(1):
                    for e in await store.events(q, after[q], 200):
                        after[q] = e.stream_id
                        detail = " ".join(f"{k}={v}" for k, v in e.fields.items()
                                          if k in ("from", "to", "phase", "cause", "reason"))
                        self.view.events.append(f"{e.type:<24} {e.id[-10:]}  {detail}")
                    counts.update(await store.queue_counts(q))
            self.view.counts = dict(counts)
            answered = self.heard().answered
            self.view.webhooks = (sum(answered.values()), answered[204] + answered[200])
            self.view.update()
            await trio.sleep(0.2)

    async def _story(self, app: Any, hooks: str) -> DemoReport:
        view = self.view
        async with trio.open_nursery() as nursery:
            a = await nursery.start(partial(run_daemon, self._daemon("A", self.main_q, hooks), app,
                                            memory=self.memory, handle_signals=False, publish_types=False,
                                            wait_for_store=False))
            store: Store = a.store
            client = AsyncClient(store, app=app)
            nursery.start_soon(self._watch, store)

            async def submit(scenario: str, type: str, expected: str, queue: str = self.main_q,
                             **options: Any) -> str:
                job = await client.submit(type, options.pop("input", None), queue=queue, **options)
                self.rows[job] = JobRow(job, scenario, type, expected)
                return job

            # daemon B serves the second queue; it will be stopped dead mid-transcode
            view.phase = "a worker is about to be lost"
            b_scope = trio.CancelScope()

            async def daemon_b(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with b_scope:
                    await run_daemon(self._daemon("B", self.fragile_q, hooks), app, memory=self.memory,
                                     handle_signals=False, publish_types=False, task_status=task_status)

            await nursery.start(daemon_b)
            lost = await submit("worker lost, recovered by status query", "transcode", "completed",
                                queue=self.fragile_q, input={"work": 1.5}, notify=True)

            async def handed_over() -> bool:
                job = await store.get_job(lost)
                return bool(job.service_job_id) and job.phases.get("encode") == "running"

            await self.until(handed_over, "the lost worker handed its work over")
            b_scope.cancel()  # daemon B dies: no release, no report, its lease runs out
            view.events.append(f"{'(daemon B stopped dead)':<24} {lost[-10:]}")

            # daemon C replaces it; its watchdog asks the service instead of re-running the handler
            await nursery.start(partial(run_daemon, self._daemon("C", self.fragile_q, hooks), app,
                                        memory=self.memory, handle_signals=False, publish_types=False))

            view.phase = "running"
            for i in range(12):
                await submit("validated against a lagging source of truth", "transcode", "completed",
                             input={"work": 0.1 + 0.02 * i}, notify=True)
            for _ in range(4):
                await submit("phased", "report", "completed", notify=True)
            await submit("fails twice, then retried to success", "flaky", "completed", notify=True)
            await submit("times out", "slow", "timed_out", input={"seconds": 5}, notify=True)
            doomed = await submit("cancelled mid-phase", "report", "cancelled", input={"pause": 0.6},
                                  notify=True)

            batch = await client.create_batch(queue=self.main_q, expected=10, threshold=80, progress_every=5,
                                              stuck_after=5.0, notify=True)
            for i in range(10):  # held back a moment, so that none finishes before all have joined
                await submit("batch member", "echo", "completed", input={"member": i}, batch=batch, delay=0.3)
            await client.close_batch(batch)

            async def rendering() -> bool:
                return (await store.get_job(doomed)).phases.get("render") == "running"

            await self.until(rendering, "the doomed report reached its second phase")
            await client.cancel(doomed)

            async def batch_settled() -> bool:
                return (await store.get_batch(batch)).state not in ("open", "running", "finalizing")

            await self.until(batch_settled, "the batch finalized")
            await store.finalize_batch(batch)  # an operator's finalize, late: absorbed

            async def all_done() -> bool:
                for job_id, row in self.rows.items():
                    job = await store.get_job(job_id)
                    if job.state not in TERMINAL or (row.notifies and not job.notification):
                        return False
                return (await store.get_batch(batch)).notification is not None

            view.phase = "waiting for the last webhooks"
            await self.until(all_done, "every job finished and notified", every=0.1)
            view.phase = "done"
            view.update()
            report = await collect(store, self.rows, batch, (self.main_q, self.fragile_q), self.heard(), lost)
            nursery.cancel_scope.cancel()
        return report


async def run_demo(redis: str | None = None, *, view: LiveView | None = None,
                   time_limit: float = 90.0) -> DemoReport:
    """Run the whole demo and return its figures; bounded by ``time_limit`` seconds (a run that
    does not finish in time raises :class:`JobvisorError` naming what it was waiting for)."""
    return await DemoRun(redis, view or LiveView(False)).run(time_limit)


def main(redis: str | None, as_json: bool) -> int:
    """Run the demo; print the final table (or, with ``as_json``, the figures). Exit code 0
    when every guarantee held and every job ended as expected, else 1."""
    view = LiveView(not as_json and os.isatty(1))
    root = logging.getLogger("jobvisor")
    handler = LogsToView(view)
    root.addHandler(handler)
    root.propagate = False  # the daemons' log lines are part of the story, not noise on stderr
    try:
        report = trio.run(partial(run_demo, redis, view=view))
    finally:
        root.removeHandler(handler)
        root.propagate = True
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        print_report(report)
    return 0 if report.ok else 1
