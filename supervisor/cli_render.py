"""How the command line shows what it read: text for people, ``--json`` for programs.

Every function here is pure (data in, text out) but :func:`emit`, which prints. URLs in any
output are shown redacted (webhook and validator URLs are stored as given, credentials too).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import msgspec

from jobvisor.adapters.records import BatchView, DeliveryView, Event, JobView, WorkerView
from jobvisor.adapters.redaction import redact_text

__all__ = [
    "batch_text", "emit", "error_text", "event_line", "job_json", "job_text", "queues_text", "when",
    "workers_text",
]


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON (``--json``) or ``text``; URLs in either are shown redacted."""
    if getattr(args, "json", False):
        print(redact_text(msgspec.json.encode(data).decode()))
    else:
        print(redact_text(text))


def when(ts: float | None) -> str:
    """A timestamp as UTC ISO 8601 with milliseconds, ``-`` for none."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def ago(now: float, ts: float | None) -> str:
    return "-" if ts is None else f"{max(0.0, now - ts):.1f}s ago"


def error_text(error: Any) -> str:
    """A stored error on one line: ``Type: message``, at most 200 characters."""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        text = f"{kind}: {message}" if kind and message is not None else str(
            message if message is not None else error)
    else:
        text = str(error)
    return text.replace("\n", " ")[:200]


def event_line(e: Event) -> str:
    extra = " ".join(f"{k}={v}" for k, v in e.fields.items())
    return f"{when(e.at)}  {e.queue:<10} {e.type:<22} {e.id}  {extra}"


def job_json(job: JobView, deliveries: list[DeliveryView]) -> str:
    data = msgspec.to_builtins(job)
    data.pop("raw", None)
    data["deliveries"] = msgspec.to_builtins(deliveries)
    return redact_text(json.dumps(data))


def job_text(job: JobView, deliveries: list[DeliveryView]) -> str:
    """``jobvisor status``: the job, its checks, deliveries, filing and every attempt."""
    lines = [
        f"job        {job.id}",
        f"type       {job.type}    queue {job.queue}    priority {job.priority}",
        f"state      {job.state}" + (f"    reason {job.reason}" if job.reason else ""),
        f"retries    {job.retry_count}/{job.max_retries}    attempts {job.attempts}"
        f"    timeout {job.timeout:g}s",
        f"created    {when(job.created_at)}    finished {when(job.finished_at)}",
    ]
    if job.phases:
        lines.append("phases     " + ", ".join(f"{n}={s}" for n, s in job.phases.items()))
    if job.service_job_id:
        lines.append(f"service id {job.service_job_id}")
    if job.validation_status:
        lines.append(f"validation {job.validation_status}")
    for c in job.validation_checks:
        verdict = "passed" if c.ok else "failed"
        lines.append(f"check {c.n}" + (f" (retry {c.epoch})" if c.epoch else "")
                     + f"  {verdict}  {when(c.at)}"
                     + (f"  status {c.status}" if c.status else "") + (f"  {c.reason}" if c.reason else ""))
    for d in deliveries:
        lines.append(f"webhook    {d.event} {d.state}, {d.attempts} attempt(s)"
                     + (f", last HTTP {d.last_status}" if d.last_status else "")
                     + (f", last error {d.last_error}" if d.last_error else "")
                     + f"  -> {d.url or '(default URL)'}  [{d.id}]")
    if job.category:
        lines.append(f"filed      {job.category} / {job.problem}    at {when(job.filed_at)}")
    if job.redrives:
        lines.append("re-driven  " + ", ".join(f"{kind} {n}x" for kind, n in sorted(job.redrives.items())))
    if job.rerun_of:
        lines.append(f"re-run of  {job.rerun_of}")
    if job.rerun:
        lines.append(f"re-run as  {job.rerun}")
    lines.append(f"input      {json.dumps(job.input)[:200]}")
    if job.result is not None:
        lines.append(f"result     {json.dumps(job.result)[:200]}")
    if job.error is not None:
        lines.append(f"error      {error_text(job.error)}")
    for a in job.attempt_records:
        lines.append(
            f"attempt {a.n}  {a.outcome or 'running'}  worker {a.worker or '-'}"
            f"  started {when(a.started_at)}  finished {when(a.finished_at)}"
            + (f"  by {a.by}" if a.by and a.by != "worker" else "")
        )
        if a.resumed_at_phase and a.n > 1:
            lines.append(f"    resumed at phase {a.resumed_at_phase}")
        if a.interrupted_phase:
            lines.append(f"    interrupted in phase {a.interrupted_phase}")
        if a.service_job_id:
            lines.append(f"    service id {a.service_job_id}")
        for name, value in a.phase_results.items():
            lines.append(f"    phase {name}: {json.dumps(value)[:160]}")
        if a.error is not None:
            lines.append(f"    error {error_text(a.error)}")
    return redact_text("\n".join(lines))


def batch_text(view: BatchView) -> str:
    return "\n".join([
        f"batch      {view.id}",
        f"state      {view.state}" + (f"    reason {view.reason}" if view.reason else ""),
        f"members    {view.members}" + (f" of {view.expected} expected" if view.expected is not None else "")
        + ("    closed" if view.closed else ""),
        f"completed  {view.completed}    failed {view.failed}    cancelled {view.cancelled}"
        f"    threshold {view.threshold}%",
    ])


def _rate_text(limit: dict[str, Any] | None) -> str:
    """``, one start every 100 ms per customer`` for a queued type's rate limit; ``""`` for none."""
    if limit is None:
        return ""
    per = f" per {limit['key']}" if limit.get("key") else ""
    return f", one start every {limit['interval'] * 1000:g} ms{per}"


def queues_text(data: dict[str, dict[str, Any]]) -> str:
    """``jobvisor queues``: one row per queue (paused or running), then its queued jobs by type."""
    lines = [f"{'queue':<16}{'queued':>8}{'waiting':>8}{'scheduled':>10}{'active':>8}{'validating':>11}{'finished':>10}"
             f"{'outbox':>8}{'unserved':>10}  state"]
    for q, c in data.items():
        lines.append(f"{q:<16}{c['queued']:>8}{c.get('waiting', 0):>8}{c['scheduled']:>10}{c['active']:>8}"
                     f"{c['validating']:>11}"
                     f"{c['finished']:>10}{c['outbox']:>8}{c['unserved']:>10}"
                     f"  {'paused since ' + when(c['paused_since']) if c.get('paused') else 'running'}")
        waiting = [f"{t} {v['queued']} ({v['daemons']} live daemon{'s' if v['daemons'] != 1 else ''}"
                   f"{_rate_text(v.get('rate_limit'))})"
                   if v["daemons"] else f"{t} {v['queued']} (no live daemon serves it{_rate_text(v.get('rate_limit'))})"
                   for t, v in c["types"].items()]
        if c["untyped"]:
            waiting.append(f"{c['untyped']} from an earlier version, typed at the next claim")
        if waiting:
            lines.append(f"  queued by type: {', '.join(waiting)}")
    return "\n".join(lines)


def report_text(rows: list[tuple[str, str, int]], categories: dict[str, int], unfiled: int) -> str:
    """``jobvisor report``: (category, problem, jobs) rows, the totals per category, the unfiled."""
    lines = [f"{'category':<12}{'problem':<22}{'jobs':>8}"]
    lines += [f"{category:<12}{problem:<22}{n:>8}" for category, problem, n in rows]
    lines.append(f"{'':<12}{'':<22}{'--------':>8}")
    lines += [f"{category:<12}{'(all)':<22}{n:>8}" for category, n in categories.items()]
    lines.append(f"{'unfiled':<12}{'(waiting)':<22}{unfiled:>8}")
    return "\n".join(lines)


def workers_text(daemons: list[WorkerView], *, all_shown: bool, now: float) -> str:
    """``jobvisor workers``: each daemon, the types it serves, its busy slots and abandoned handlers."""
    if not daemons:
        return "no live daemons" + ("" if all_shown else " (--all shows stopped and lost ones)")
    lines = []
    for d in daemons:
        state = "late" if d.late else d.state
        busy = f"{len(d.slots)}/{d.concurrency} busy" if d.state == "live" else f"gone {ago(now, d.gone_at)}"
        lines.append(f"{d.id}  {state}  host {d.host or '-'} pid {d.pid or '-'}"
                     f"  queues {','.join(d.queues) or '-'}  "
                     f"{busy}  heartbeat {ago(now, d.heartbeat_at)}  started {when(d.started_at)}")
        lines.append(f"  types {','.join(d.types) or '-'}")  # the only ones it claims
        for slot in d.slots:
            lines.append(f"  slot {slot.slot:<4} {slot.job}  {slot.type}  attempt {slot.attempt}  "
                         f"running {max(0.0, now - slot.since):.1f}s")
        for slot in d.abandoned:
            lines.append(f"  abandoned  {slot.job}  {slot.type}  attempt {slot.attempt}  "
                         f"since {max(0.0, now - slot.since):.1f}s (ignored its cancellation)")
    return "\n".join(lines)
