"""The operator's commands over many jobs: ``jobs``, ``retry`` (one job, or in bulk by
filters), ``queue pause|resume`` and ``redeliver``.

Each checks every argument before it connects (a bad filter is one line, exit 2, nothing
read or written), then runs one step of :mod:`adapters.operations` over the synchronous
store and prints through :mod:`supervisor.cli_render`. Bulk steps move each job or delivery
through its own guarded op, so they are exactly as safe as the single forms.
"""

from __future__ import annotations

import argparse
from typing import Any

from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.keys import check_queue_name
from jobvisor.adapters.listing import MAX_PAGE, JobPage, search_jobs
from jobvisor.adapters.operations import (
    RETRYABLE,
    BulkResult,
    drive,
    parse_since,
    pause_queue,
    redeliver_dead,
    resume_queue,
    retry_matching,
)
from jobvisor.adapters.replies import Moved
from jobvisor.machines import JobState

from .cli_commands import open_store, trigger_result
from .cli_parser import EXIT_OK, bad
from .cli_render import emit, when

__all__ = ["cmd_jobs", "cmd_queue", "cmd_redeliver", "cmd_retry"]


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The filters of ``args``, checked: queues, state, type, since (epoch seconds)."""
    queues = args.queue
    for q in queues or ():
        try:
            check_queue_name(q)
        except ValueError as exc:
            bad(str(exc))
    state = getattr(args, "state", None)
    if state is not None and state not in {s.value for s in JobState}:
        bad(f"state: {state!r} is not a job state ({', '.join(s.value for s in JobState)})")
    if args.job_type is not None and not 1 <= len(args.job_type) <= 200:
        bad("type: must be 1-200 characters")
    return {"queues": queues, "state": state, "job_type": args.job_type, "since": parse_since(args.since)}


def _has_filters(args: argparse.Namespace) -> bool:
    return any(getattr(args, n, None) is not None for n in ("queue", "state", "job_type", "since"))


def jobs_text(page: JobPage) -> str:
    """``jobvisor jobs``: one row per job, then the cursor of the next page when there is one."""
    if not page.jobs:
        lines = ["no jobs match"]
    else:
        lines = [f"{'id':<34} {'type':<16} {'state':<17} {'attempts':>8} {'retries':>7}  {'created':<24} notify"]
        lines += [f"{j.id:<34} {j.type:<16} {j.state:<17} {j.attempts:>8} {j.retry_count:>3}/{j.max_retries:<3}"
                  f"  {when(j.created_at):<24} {j.notification or '-'}" for j in page.jobs]
    if page.next_cursor is not None:
        lines.append(f"more: --cursor {page.next_cursor}")
    return "\n".join(lines)


def cmd_jobs(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if not 1 <= args.limit <= MAX_PAGE:
        bad(f"limit: must be between 1 and {MAX_PAGE}, got {args.limit}")
    with open_store(args) as store:
        page = drive(search_jobs(store.store, filters["queues"], state=filters["state"],
                                 job_type=filters["job_type"], created_after=filters["since"],
                                 cursor=args.cursor, limit=args.limit))
    emit(args, page, jobs_text(page))
    return EXIT_OK


def bulk_text(result: BulkResult, verb: str, done: str, noun: str) -> str:
    """A bulk step's outcome: the count, then the ids (a dry run) or those left as they were."""
    if result.dry_run:
        return "\n".join([f"would {verb} {result.matched} {noun}", *result.ids])
    lines = [f"{done} {result.done} of {result.matched} {noun}"]
    lines += [f"{i}: left as it is ({why})" for i, why in result.skipped.items()]
    return "\n".join(lines)


def cmd_retry(args: argparse.Namespace) -> int:
    if args.id is not None:
        if _has_filters(args) or args.dry_run:
            bad("retry: give a job id, or --state with filters, not both")
        with open_store(args) as store:
            store.get_job(args.id)
            return trigger_result(args, store.retry(args.id, from_start=args.from_start), "retry")
    if args.state is None:
        bad(f"state: a bulk retry needs --state ({', '.join(RETRYABLE)}), or give a job id")
    filters = _filters(args)
    if args.state not in RETRYABLE:
        bad(f"state: {args.state!r} cannot be retried (retryable: {', '.join(RETRYABLE)})")
    with open_store(args) as store:
        result = drive(retry_matching(store.store, from_start=args.from_start, dry_run=args.dry_run, **filters))
    emit(args, result, bulk_text(result, "retry", "retried", "jobs"))
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    try:
        name = check_queue_name(args.name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    pause = args.queue_command == "pause"
    with open_store(args) as store:
        reply = drive((pause_queue if pause else resume_queue)(store.store, name))
    state = "paused" if pause else "running"
    data = {"queue": name, "outcome": reply.kind, "paused": pause}
    text = (f"{name}: {reply.from_} -> {reply.to}" if isinstance(reply, Moved)
            else f"{name} is {state} already (no change)")
    emit(args, data, text)
    return EXIT_OK


def cmd_redeliver(args: argparse.Namespace) -> int:
    if args.id is not None and _has_filters(args):
        bad("redeliver: give a job or delivery id, or filters, not both")
    if args.dry_run and args.id is not None and "~" in args.id:
        bad("dry-run: for a job id or filters, not one delivery id")
    if args.id is not None and "~" in args.id:  # one delivery
        with open_store(args) as store:
            return trigger_result(args, store.redeliver(args.id), "re-send")
    filters = {} if args.id is not None else _filters(args)
    filters.pop("state", None)
    with open_store(args) as store:
        if args.id is not None:
            store.get_job(args.id)  # a job id that names nothing is not found (exit 3)
        result = drive(redeliver_dead(store.store, job_id=args.id, dry_run=args.dry_run, **filters))
    emit(args, result, bulk_text(result, "re-send", "re-sent", "dead deliveries"))
    return EXIT_OK
