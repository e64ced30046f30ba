"""``jobvisor demo``: the whole story in one process, on the embedded store (or ``--redis``).

What runs, all on loopback:

* a **service** (the external system the ``transcode`` handler hands work to, and the source
  of truth its validator asks): its progress says "done" a moment before its status API says
  ``completed``, the lag behind the production incident SPEC.md opens with;
* a **receiver** that verifies every webhook's Standard Webhooks signature and checks each
  ``job.completed`` against the service (a completion webhook with stale data is counted);
* three in-process daemons running ``examples/app.py``'s handlers: **A** serves the main
  queue; **B** serves a second queue and is stopped dead (no release, no report: as if its
  process were killed) while it runs a ``transcode``; **C**, a replacement, recovers that job
  through the status query instead of running the handler again.

The jobs: transcodes (validated, notified), phased reports, one that fails twice and retries,
one that times out, one cancelled mid-phase, the lost worker's, and a batch of ten whose
finalize triggers all fire (threshold at the 8th, all members terminal, the batch monitor's
sweeps, and an operator's explicit finalize): one ``batch.completed`` all the same.

It ends with a table of every job and the counts that prove the guarantees; ``--json``
prints them instead. With ``--redis`` it uses queues of its own (``demo-<tag>``) and does not
publish its job types; its three daemons (``demo-<tag>-A/B/C``) stay in the daemon registry
as stopped or lost, like any daemon that ran there. The exit code is 0 when every guarantee held and every job ended in
its expected state.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobvisor.adapters.backend import MemoryServers
from jobvisor.adapters.errors import JobvisorError
from jobvisor.adapters.store import Store

from .app import App
from .client import AsyncClient
from .config import load_config
from .daemon import Daemon, run_daemon

__all__ = ["DemoReport", "run_demo"]

TERMINAL = {"completed", "failed", "cancelled", "timed_out", "validation_failed"}


# ------------------------------------------------------------------------------------------
# The service and the receiver: small threaded HTTP servers on loopback
# ------------------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class _Server:
    """A ThreadingHTTPServer on a free loopback port, answering through ``respond``."""

    def __init__(self, respond: Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = respond(self.command, self.path, dict(self.headers.items()), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Service:
    """The external service. ``POST /jobs`` takes work (``work`` seconds of it); its progress
    (``GET /jobs/<id>/progress``) says done when the work is done, its status
    (``GET /jobs/<service id or job id>``) says ``completed`` only ``lag`` seconds later."""

    def __init__(self, lag: float = 0.5) -> None:
        self.lag = lag
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.by_job: dict[str, str] = {}
        self.submissions: Counter[str] = Counter()  # job id -> work handed over (handler runs)
        self.server = _Server(self._respond)

    def status_of(self, job_id: str) -> str:
        with self.lock:
            sid = self.by_job.get(job_id)
            return self._view(self.jobs[sid])["status"] if sid else "unknown"

    def _view(self, work: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        done = now >= work["done_at"] + self.lag
        return {"id": work["id"], "job_id": work["job_id"], "status": "completed" if done else "processing",
                "completed_at": _iso(work["done_at"] + self.lag) if done else None,
                "output": work["output"] if done else None}

    def _respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        with self.lock:
            if method == "POST" and parts == ["jobs"]:
                request = json.loads(body or b"{}")
                sid = "svc-" + secrets.token_hex(4)
                self.jobs[sid] = {"id": sid, "job_id": request["job_id"], "output": f"s3://demo/{sid}.mp4",
                                  "done_at": time.time() + float(request.get("work", 0.2))}
                self.by_job[request["job_id"]] = sid
                self.submissions[request["job_id"]] += 1
                return 201, {"id": sid}
            if method == "GET" and len(parts) >= 2 and parts[0] == "jobs":
                work = self.jobs.get(parts[1]) or self.jobs.get(self.by_job.get(parts[1], ""), None)
                if work is None:
                    return 404, {"error": "no such job"}
                if parts[2:] == ["progress"]:
                    return 200, {"done": time.time() >= work["done_at"], "output": work["output"]}
                return 200, self._view(work)
        return 404, {"error": "not found"}


@dataclass
class Received:
    webhook_id: str
    type: str
    object_id: str
    state: str
    verified: bool
    stale: bool


class Receiver:
    """A webhook receiver that verifies every signature (``standardwebhooks``) and checks
    each ``job.completed`` against the service at the moment it arrives."""

    def __init__(self, secret: str, service: Service) -> None:
        self.verifier = Webhook(secret)
        self.service = service
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.server = _Server(self._respond)

    def _respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            event = self.verifier.verify(body, lowered)
            verified = True
        except WebhookVerificationError:
            event, verified = json.loads(body or b"{}"), False
        data = event.get("data", {})
        stale = False
        if event.get("type") == "job.completed":
            stale = (data.get("state") != "completed" or not data.get("completed_at")
                     or self.service.status_of(data.get("id", "")) not in ("completed", "unknown"))
        with self.lock:
            self.received.append(Received(lowered.get("webhook-id", ""), event.get("type", ""),
                                          data.get("id", ""), data.get("state", ""), verified, stale))
        return (204 if verified else 400), {}

    def of(self, object_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.object_id == object_id]


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


@dataclass
class JobRow:
    id: str
    scenario: str
    type: str
    expected: str
    state: str = ""
    attempts: int = 0
    checks: int = 0
    handed_over: int = 0
    webhooks: int = 0
    verified: int = 0


@dataclass
class DemoReport:
    store: str
    seconds: float
    jobs: list[JobRow]
    batch: dict[str, Any]
    guarantees: dict[str, int]
    ok: bool
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store, "seconds": round(self.seconds, 2), "ok": self.ok, "problems": self.problems,
            "guarantees": self.guarantees, "batch": self.batch,
            "jobs": [vars(j) for j in self.jobs],
        }


def _settings(url: str, worker: str, queues: list[str], secret: str, receiver: str) -> Any:
    return load_config({
        "redis": url, "worker_id": worker, "queues": queues, "concurrency": 32, "lease": 1.0,
        "grace": 1.0, "idle_poll": 0.5, "watchdog_interval": 0.2, "batch_interval": 0.2,
        "validation_interval": 0.25, "validation_jitter": 0.0, "validation_attempts": 8,
        "validation_timeout": 2.0, "webhook_secret": secret, "webhook_url": receiver,
        "webhook_backoff": 0.2, "webhook_timeout": 2.0, "status_query_timeout": 1.0,
        "abandon_after": 1.0, "evaluator_interval": 1.0,
        # The receiver and the source of truth listen on loopback, which the destination
        # policy refuses by default: the demo turns the development switch on, explicitly.
        "allow_private_destinations": True,
    }, environ={})


_WAITING = ["the daemons to start"]  # what the demo waits for now: named if it times out


async def _until(check: Callable[[], Any], what: str, *, every: float = 0.05) -> Any:
    """Wait for ``check()`` (an async function) to be truthy; the caller bounds the time."""
    _WAITING[0] = what
    while True:
        value = await check()
        if value:
            return value
        await trio.sleep(every)


class _Live:
    """The live terminal view: jobs per state, webhooks, recent events (rich)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.events: list[str] = []
        self.counts: dict[str, int] = {}
        self.webhooks = (0, 0)
        self.phase = "starting"
        self._live: Any = None

    def __enter__(self) -> _Live:
        if self.enabled:
            from rich.live import Live

            self._live = Live(self._render(), refresh_per_second=8, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        states = Table(title=f"jobvisor demo: {self.phase}", expand=False)
        for name in ("queued", "scheduled", "active", "validating", "finished", "outbox"):
            states.add_column(name, justify="right")
        states.add_row(*(str(self.counts.get(n, 0)) for n in
                         ("queued", "scheduled", "active", "validating", "finished", "outbox")))
        recent = Table(title=f"webhooks received {self.webhooks[0]}, verified {self.webhooks[1]}; recent events",
                       show_header=False, expand=False)
        recent.add_column("event")
        for line in self.events[-10:]:
            recent.add_row(line)
        return Group(states, recent)


async def run_demo(redis: str | None = None, *, live: bool = False, timeout: float = 90.0,
                   logs: list[str] | None = None) -> DemoReport:
    """Run the whole demo (see the module docstring) and return its figures; bounded by ``timeout``."""
    started = time.monotonic()
    memory = MemoryServers()
    url = redis or "memory://demo"
    tag = secrets.token_hex(3)
    main_q, fragile_q = f"demo-{tag}", f"demo-{tag}-b"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    service = Service(lag=0.5)
    receiver = Receiver(secret, service)
    from examples.app import make_app

    app: App = make_app(service.server.url, queue=main_q)
    rows: dict[str, JobRow] = {}
    view = _Live(live)
    if logs is not None:
        view.events = logs  # log lines and events share the live view

    try:
        return await _run(redis, url, memory, tag, main_q, fragile_q, secret, service, receiver, app, rows,
                          view, started, timeout)
    except trio.TooSlowError:
        raise JobvisorError(f"the demo did not finish within {timeout:g} s: it was waiting for "
                            f"{_WAITING[0]}") from None


async def _run(redis: str | None, url: str, memory: MemoryServers, tag: str, main_q: str, fragile_q: str,
               secret: str, service: Service, receiver: Receiver, app: App, rows: dict[str, JobRow],
               view: _Live, started: float, timeout: float) -> DemoReport:
    with service.server, receiver.server, view, trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            # daemon A: the main queue
            a: Daemon = await nursery.start(partial(
                run_daemon, _settings(url, f"demo-{tag}-A", [main_q], secret, receiver.server.url + "/hooks"), app,
                memory=memory, handle_signals=False, publish_types=False, wait_for_store=False))
            store: Store = a.store
            client = AsyncClient(store, app=app)

            async def watch() -> None:
                after = {main_q: "-", fragile_q: "-"}
                while True:
                    counts: Counter[str] = Counter()
                    for q in (main_q, fragile_q):
                        with trio.move_on_after(1):
                            for e in await store.events(q, after[q], 200):
                                after[q] = e.stream_id
                                detail = " ".join(f"{k}={v}" for k, v in e.fields.items() if k in ("from", "to", "phase", "cause", "reason"))
                                view.events.append(f"{e.type:<24} {e.id[-10:]}  {detail}")
                            counts.update(await store.queue_counts(q))
                    view.counts = dict(counts)
                    received = list(receiver.received)
                    view.webhooks = (len(received), sum(r.verified for r in received))
                    view.update()
                    await trio.sleep(0.2)

            nursery.start_soon(watch)

            async def submit(scenario: str, type: str, expected: str, queue: str = main_q, **options: Any) -> str:
                job = await client.submit(type, options.pop("input", None), queue=queue, **options)
                rows[job] = JobRow(job, scenario, type, expected)
                return job

            # daemon B serves the second queue; it will be stopped dead mid-transcode
            view.phase = "a worker is about to be lost"
            b_scope = trio.CancelScope()

            async def daemon_b(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with b_scope:
                    await run_daemon(_settings(url, f"demo-{tag}-B", [fragile_q], secret, receiver.server.url + "/hooks"),
                                     app, memory=memory, handle_signals=False, publish_types=False,
                                     task_status=task_status)

            await nursery.start(daemon_b)
            lost = await submit("worker lost, recovered by status query", "transcode", "completed",
                                queue=fragile_q, input={"work": 1.5}, notify=True)

            async def handed_over() -> bool:
                job = await store.get_job(lost)
                return bool(job.service_job_id) and job.phases.get("encode") == "running"

            await _until(handed_over, "the lost worker handed its work over")
            b_scope.cancel()  # daemon B dies: no release, no report, its lease runs out
            view.events.append(f"{'(daemon B stopped dead)':<24} {lost[-10:]}")

            # daemon C replaces it; its watchdog asks the service instead of re-running the handler
            await nursery.start(partial(
                run_daemon, _settings(url, f"demo-{tag}-C", [fragile_q], secret, receiver.server.url + "/hooks"), app,
                memory=memory, handle_signals=False, publish_types=False))

            view.phase = "running"
            for i in range(12):
                await submit("validated against a lagging source of truth", "transcode", "completed",
                             input={"work": 0.1 + 0.02 * i}, notify=True)
            for _ in range(4):
                await submit("phased", "report", "completed", notify=True)
            await submit("fails twice, then retried to success", "flaky", "completed", notify=True)
            await submit("times out", "slow", "timed_out", input={"seconds": 5}, notify=True)
            doomed = await submit("cancelled mid-phase", "report", "cancelled", input={"pause": 0.6}, notify=True)

            batch = await client.create_batch(queue=main_q, expected=10, threshold=80, progress_every=5,
                                              stuck_after=5.0, notify=True)
            for i in range(10):  # held back a moment, so that none finishes before all have joined
                await submit("batch member", "echo", "completed", input={"member": i}, batch=batch, delay=0.3)
            await client.close_batch(batch)

            async def rendering() -> bool:
                return (await store.get_job(doomed)).phases.get("render") == "running"

            await _until(rendering, "the doomed report reached its second phase")
            await client.cancel(doomed)

            async def batch_settled() -> bool:
                return (await store.get_batch(batch)).state not in ("open", "running", "finalizing")

            await _until(batch_settled, "the batch finalized")
            await store.finalize_batch(batch)  # an operator's finalize, late: absorbed

            async def all_done() -> bool:
                for job_id, row in rows.items():
                    job = await store.get_job(job_id)
                    if job.state not in TERMINAL:
                        return False
                    row.state = job.state
                    if job_id != batch and job.state in TERMINAL and _notifies(row) and not job.notification:
                        return False
                return (await store.get_batch(batch)).notification is not None

            view.phase = "waiting for the last webhooks"
            await _until(all_done, "every job finished and notified", every=0.1)
            view.phase = "done"
            view.update()

            report = await _report(store, client, rows, batch, (main_q, fragile_q), service, receiver, lost)
            report.store = "embedded (memory://)" if redis is None else "redis-server"
            report.seconds = time.monotonic() - started
            nursery.cancel_scope.cancel()
    return report


def _notifies(row: JobRow) -> bool:
    return row.scenario != "batch member"


async def _report(store: Store, client: AsyncClient, rows: dict[str, JobRow], batch: str,
                  queues: tuple[str, ...], service: Service, receiver: Receiver, lost: str) -> DemoReport:
    events = []
    for q in queues:
        after = "-"
        while True:
            page = await store.events(q, after, 1000)
            if not page:
                break
            events += page
            after = page[-1].stream_id
    completed_events = Counter(e.id for e in events if e.type == "job.completed")
    terminal_events = Counter(e.id for e in events if e.type in {f"job.{s}" for s in TERMINAL})
    finalize_events = sum(1 for e in events if e.id == batch and e.type in ("batch.completed", "batch.failed"))
    problems: list[str] = []
    for job_id, row in rows.items():
        job = await store.get_job(job_id)
        row.state, row.attempts = job.state, job.attempts
        row.checks = len(job.validation_checks)
        row.handed_over = service.submissions.get(job_id, 0)
        received = receiver.of(job_id)
        row.webhooks, row.verified = len(received), sum(r.verified for r in received)
        if row.state != row.expected:
            problems.append(f"{job_id} ({row.scenario}) ended {row.state}, expected {row.expected}")
    b = await store.get_batch(batch)
    batch_hooks = receiver.of(batch)
    received = list(receiver.received)
    guarantees = {
        "completion_webhooks_with_stale_data": sum(r.stale for r in received),
        "duplicate_completion_events": sum(n - 1 for n in completed_events.values() if n > 1),
        "jobs_with_more_than_one_terminal_event": sum(1 for n in terminal_events.values() if n > 1),
        "batch_finalize_events": finalize_events,
        "webhooks_received": len(received),
        "webhooks_verified": sum(r.verified for r in received),
        "distinct_webhook_ids": len({r.webhook_id for r in received}),
        "lost_worker_handler_reruns": service.submissions.get(lost, 0) - 1,
        "batch_progress_events": sum(1 for e in events if e.id == batch and e.type == "batch.progress"),
    }
    expected = {"completion_webhooks_with_stale_data": 0, "duplicate_completion_events": 0,
                "jobs_with_more_than_one_terminal_event": 0, "batch_finalize_events": 1,
                "lost_worker_handler_reruns": 0}
    for name, want in expected.items():
        if guarantees[name] != want:
            problems.append(f"{name}: {guarantees[name]}, expected {want}")
    if guarantees["webhooks_verified"] != guarantees["webhooks_received"]:
        problems.append("some webhooks failed signature verification")
    if b.state != "completed_partial":  # the threshold (8 of 10) is met before the last two finish
        problems.append(f"batch ended {b.state}, expected completed_partial")
    return DemoReport(
        store="", seconds=0.0, jobs=sorted(rows.values(), key=lambda r: (r.scenario, r.id)),
        batch={"id": batch, "state": b.state, "members": b.members, "completed": b.completed,
               "webhooks": len(batch_hooks), "verified": sum(r.verified for r in batch_hooks)},
        guarantees=guarantees, ok=not problems, problems=problems,
    )


def print_report(report: DemoReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if os.isatty(1) else 130)
    jobs = Table(title=f"jobvisor demo on the {report.store} store: {len(report.jobs)} jobs in {report.seconds:.1f} s")
    for name, justify in (("job", "left"), ("scenario", "left"), ("final state", "left"), ("attempts", "right"),
                          ("checks", "right"), ("handed over", "right"), ("webhooks / verified", "right")):
        jobs.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in report.jobs:
        jobs.add_row(row.id.split(".", 1)[1][-10:], row.scenario, row.state, str(row.attempts), str(row.checks),
                     str(row.handed_over) if row.type == "transcode" else "-", f"{row.webhooks} / {row.verified}")
    console.print(jobs)
    b = report.batch
    console.print(f"batch {b['id']}: {b['state']}, {b['completed']}/{b['members']} members completed, "
                  f"{b['webhooks']} webhook(s), {b['verified']} verified")
    proof = Table(title="the guarantees")
    proof.add_column("count")
    proof.add_column("value", justify="right")
    for name, value in report.guarantees.items():
        proof.add_row(name.replace("_", " "), str(value))
    console.print(proof)
    if report.ok:
        console.print("every guarantee held; every job ended in its expected state")
    else:
        for problem in report.problems:
            console.print(f"[red]{problem}[/red]")


class _ToView(logging.Handler):
    """The daemons' log lines, shown among the live view's recent events."""

    def __init__(self, view: list[str]) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        self.view.append(f"[log] {record.getMessage()}"[:110])


def main(redis: str | None, as_json: bool) -> int:
    """Run the demo; print the final table (or, with ``as_json``, the figures). Exit code 0
    when every guarantee held and every job ended as expected, else 1."""
    live = not as_json and os.isatty(1)
    logs: list[str] = []
    root = logging.getLogger("jobvisor")
    handler = _ToView(logs)
    root.addHandler(handler)
    root.propagate = False  # the daemons' log lines are part of the story, not noise on stderr
    try:
        report = trio.run(partial(run_demo, redis, live=live, logs=logs))
    finally:
        root.removeHandler(handler)
        root.propagate = True
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        print_report(report)
    return 0 if report.ok else 1
