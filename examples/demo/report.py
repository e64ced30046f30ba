"""The demo's figures: every job's end, the batch, and the counts that prove the guarantees,
read back from the store's event streams and from what the service and the receiver saw."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from jobvisor.adapters.store import Store
from jobvisor.machines import JOB

TERMINAL = frozenset(s.value for s in JOB.terminal)

EXPECTED_GUARANTEES = {
    "completion_webhooks_with_stale_data": 0,
    "duplicate_completion_events": 0,
    "jobs_with_more_than_one_terminal_event": 0,
    "batch_finalize_events": 1,
    "lost_worker_handler_reruns": 0,
}


@dataclass
class JobRow:
    """One submitted job: what it is for, where it should end, and what happened to it."""

    id: str
    scenario: str
    type: str
    expected: str
    state: str = ""
    attempts: int = 0
    checks: int = 0
    handed_over: int = 0
    webhooks: int = 0

    @property
    def notifies(self) -> bool:
        return self.scenario != "batch member"


@dataclass
class Heard:
    """What the service and the receiver saw, as the report needs it."""

    handed_over: Counter[str]  # job id -> times the work reached the service
    events: Counter[str]  # object id -> verified webhook events accepted (first delivery of an id)
    stale: int  # job.completed webhooks whose data the service contradicted on arrival
    answered: Counter[int]  # the receiver's answers: 204 new, 200 repeated, 400 refused
    distinct_ids: int


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


async def _all_events(store: Store, queue: str) -> list[Any]:
    events: list[Any] = []
    after = "-"
    while page := await store.events(queue, after, 1000):
        events += page
        after = page[-1].stream_id
    return events


async def collect(store: Store, rows: dict[str, JobRow], batch: str, queues: tuple[str, ...], heard: Heard,
                  lost: str) -> DemoReport:
    """Every row filled in from the store, and the guarantee counts checked against their promise."""
    events = [e for q in queues for e in await _all_events(store, q)]
    completed_events = Counter(e.id for e in events if e.type == "job.completed")
    terminal_events = Counter(e.id for e in events if e.type in JOB.notifications.values())
    problems: list[str] = []
    for job_id, row in rows.items():
        job = await store.get_job(job_id)
        row.state, row.attempts = job.state, job.attempts
        row.checks = len(job.validation_checks)
        row.handed_over = heard.handed_over.get(job_id, 0)
        row.webhooks = heard.events.get(job_id, 0)
        if row.state != row.expected:
            problems.append(f"{job_id} ({row.scenario}) ended {row.state}, expected {row.expected}")
    b = await store.get_batch(batch)
    guarantees = {
        "completion_webhooks_with_stale_data": heard.stale,
        "duplicate_completion_events": sum(n - 1 for n in completed_events.values() if n > 1),
        "jobs_with_more_than_one_terminal_event": sum(1 for n in terminal_events.values() if n > 1),
        "batch_finalize_events": sum(1 for e in events if e.id == batch
                                     and e.type in ("batch.completed", "batch.failed")),
        "webhooks_received": sum(heard.answered.values()),
        "webhooks_verified": heard.answered[204] + heard.answered[200],
        "distinct_webhook_ids": heard.distinct_ids,
        "lost_worker_handler_reruns": heard.handed_over.get(lost, 0) - 1,
        "batch_progress_events": sum(1 for e in events if e.id == batch and e.type == "batch.progress"),
    }
    for name, want in EXPECTED_GUARANTEES.items():
        if guarantees[name] != want:
            problems.append(f"{name}: {guarantees[name]}, expected {want}")
    if guarantees["webhooks_verified"] != guarantees["webhooks_received"]:
        problems.append("some webhooks failed signature verification")
    if b.state != "completed_partial":  # the threshold (8 of 10) is met before the last two finish
        problems.append(f"batch ended {b.state}, expected completed_partial")
    return DemoReport(
        store="", seconds=0.0, jobs=sorted(rows.values(), key=lambda r: (r.scenario, r.id)),
        batch={"id": batch, "state": b.state, "members": b.members, "completed": b.completed,
               "webhooks": heard.events.get(batch, 0)},
        guarantees=guarantees, ok=not problems, problems=problems,
    )


def print_report(report: DemoReport) -> None:
    """The final tables (rich), as the README shows them."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if os.isatty(1) else 130)
    title = f"jobvisor demo on the {report.store} store: {len(report.jobs)} jobs in {report.seconds:.1f} s"
    jobs = Table(title=title)
    jobs.add_column("job")
    jobs.add_column("scenario")
    jobs.add_column("final state")
    for name in ("attempts", "checks", "handed over", "webhooks"):
        jobs.add_column(name, justify="right")
    for row in report.jobs:
        handed_over = str(row.handed_over) if row.type == "transcode" else "-"
        jobs.add_row(row.id.split(".", 1)[1][-10:], row.scenario, row.state, str(row.attempts),
                     str(row.checks), handed_over, str(row.webhooks))
    console.print(jobs)
    b = report.batch
    console.print(f"batch {b['id']}: {b['state']}, {b['completed']}/{b['members']} members completed, "
                  f"{b['webhooks']} webhook(s)")
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
