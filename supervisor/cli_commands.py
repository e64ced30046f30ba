"""The data commands of ``jobvisor``: submit, status, cancel, queues, report, workers,
batch, diagram, webhooks (``retry`` and the other operator's commands are in
:mod:`supervisor.cli_ops`). Each reads its arguments, calls the synchronous store once or a few times,
and prints through :mod:`supervisor.cli_render`.

None of them imports the daemon, trio or the HTTP client: a command starts in the time it
takes to import the store (``bench/cli_startup.py`` measures it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import BadInput, NotFound
from jobvisor.adapters.keys import check_queue_name
from jobvisor.adapters.replies import Absorbed, Created, Invalid, Moved, Transition
from jobvisor.adapters.store import SyncStore

from .cli_input import read_input, redis_url
from .cli_parser import DEFAULT_REDIS, EXIT_FAILURE, EXIT_OK, CliExit, bad
from .cli_render import batch_text, emit, job_json, job_text, queues_text, report_text, workers_text
from .published_types import merged

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "cmd_batch", "cmd_cancel", "cmd_diagram", "cmd_queues", "cmd_report", "cmd_status",
    "cmd_submit", "cmd_webhooks", "cmd_workers", "load_app", "open_store",
]


def open_store(args: argparse.Namespace) -> SyncStore:
    """The store of ``--redis`` (else ``$JOBVISOR_REDIS``, else the default URL)."""
    return SyncStore(open_backend(redis_url(args, DEFAULT_REDIS)))


def load_app(spec: str) -> App:
    """Import ``module:attr`` and return the App; a bad spec is BadInput naming it."""
    from .app import App

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise BadInput(f"app: {spec!r} is not module:attr")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(f"app: cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise BadInput(f"app: {spec!r} is not a jobvisor App")
    return app


def submit_types(store: SyncStore, app: App | None) -> dict[str, dict[str, Any]]:
    """The job types a submit from the command line reads: the published ones, ``--app``'s own
    taking precedence (as a client given an app)."""
    return merged(store.job_types(), app.described_types() if app is not None else None)


def cmd_diagram(args: argparse.Namespace) -> int:
    from jobvisor.machines import MACHINES, to_mermaid

    print(to_mermaid(MACHINES[args.machine], effects=args.effects))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a job; stdout is its id alone (``J=$(jobvisor submit ...)``). When the
    idempotency key had already made a job, that job's id is printed and a note says so on
    stderr; ``--json`` shows its state and ``"existing": true``."""
    from .client import build_spec, submitter_policy

    value = read_input(args)
    app = load_app(args.app) if args.app is not None else None
    with open_store(args) as store:
        types = submit_types(store, app)
        options = {k: getattr(args, k) for k in ("queue", "priority", "max_retries", "timeout", "delay",
                                                 "idempotency_key", "idempotency_ttl", "webhook_url",
                                                 "validator_url", "notify", "batch", "depends_on",
                                                 "on_dependency_failure")}
        # the destination policy of $JOBVISOR_ALLOW_DESTINATIONS, _ALLOW_PRIVATE_DESTINATIONS, _ALLOWED_HOSTS
        spec = build_spec(types, args.type, value, destinations=submitter_policy(), **options)
        reply = store.submit(spec)
        existing = not isinstance(reply, Created)
        state: str | None = reply.state if isinstance(reply, Created) else None
        if existing:
            try:
                state = store.get_job(reply.id).state
            except NotFound:  # the key outlived its job (retention deleted it)
                state = None
    emit(args, {"id": reply.id, "created": not existing, "existing": existing, "state": state}, reply.id)
    if existing and not args.json:
        print(f"jobvisor: {reply.id} is the existing job for this idempotency key"
              + (f" ({state})" if state else ""), file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        job = store.get_job(args.id)
        deliveries = store.job_deliveries(job.id, job.epoch)
    print(job_json(job, deliveries) if args.json else job_text(job, deliveries))
    return EXIT_OK


def trigger_result(args: argparse.Namespace, reply: Transition, verb: str) -> int:
    """Show an operator trigger's outcome: moved and absorbed are success, invalid is bad input."""
    match reply:
        case Moved(id=id_, from_=from_, to=to):
            emit(args, {"id": id_, "outcome": reply.kind, "from": from_, "to": to, "state": to},
                 f"{id_}: {from_} -> {to}")
            return EXIT_OK
        case Absorbed(id=id_, state=state):
            emit(args, {"id": id_, "outcome": reply.kind, "from": "", "to": "", "state": state},
                 f"{id_} is {state}: nothing to {verb} (no change)")
            return EXIT_OK
        case Invalid(id=id_, state=state):
            bad(f"{id_} is {state}: cannot {verb} it")
    raise CliExit(EXIT_FAILURE, f"{reply.id}: {reply.kind} in {reply.state}")


def cmd_cancel(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        store.get_job(args.id)
        return trigger_result(args, store.cancel(args.id), "cancel")


def cmd_queues(args: argparse.Namespace) -> int:
    from jobvisor.adapters.operations import drive, queue_paused
    from jobvisor.adapters.routing import serving

    with open_store(args) as store:
        workers = store.workers()
        data: dict[str, dict[str, Any]] = {}
        for q in store.queues():
            counts: dict[str, Any] = store.queue_counts(q)
            by_type, untyped = store.queued_by_type(q)
            served = serving(q, workers)
            limits = store.rate_limits(q)
            counts["types"] = {t: {"queued": n, "daemons": served.get(t, 0)} for t, n in sorted(by_type.items())}
            for t, (interval, key) in limits.items():  # only the limited types have the field
                if t in counts["types"]:
                    counts["types"][t]["rate_limit"] = {"interval": interval, "key": key}
            counts["unserved"] = sum(n for t, n in by_type.items() if t not in served)
            counts["untyped"] = untyped
            pause = drive(queue_paused(store.store, q))
            counts["paused"] = pause.paused
            counts["paused_since"] = pause.since
            data[q] = counts
    emit(args, data, queues_text(data))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from jobvisor.adapters.filing import CATEGORY_OF, Category, Problem

    for q in args.queue or ():
        try:
            check_queue_name(q)
        except ValueError as exc:
            bad(str(exc))
    with open_store(args) as store:
        queues = args.queue or store.queues()
        per_queue = {q: store.filing_counts(q) for q in queues}
    categories = {c.value: 0 for c in Category}
    problems = {p.value: 0 for p in Problem}
    counts: dict[str, dict[str, int]] = {c.value: {} for c in Category}
    unfiled = 0
    for found, waiting in per_queue.values():
        unfiled += waiting
        for (category, problem), n in found.items():
            categories[category] = categories.get(category, 0) + n
            problems[problem] = problems.get(problem, 0) + n
            counts.setdefault(category, {})[problem] = counts.get(category, {}).get(problem, 0) + n
    data = {
        "filed": sum(categories.values()), "unfiled": unfiled, "categories": categories,
        "problems": problems, "counts": counts,
        "queues": {q: {"unfiled": w, "counts": {f"{c}:{p}": n for (c, p), n in found.items()}}
                   for q, (found, w) in per_queue.items()},
    }
    rows = [(c.value, p.value, counts.get(c.value, {}).get(p.value, 0)) for p, c in CATEGORY_OF.items()]
    emit(args, data, report_text(rows, {c.value: categories[c.value] for c in Category}, unfiled))
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        daemons = store.workers(include_gone=args.all)
    if args.json:
        print(msgspec.json.encode(daemons).decode())
    else:
        print(workers_text(daemons, all_shown=args.all, now=time.time()))
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    from .client import build_batch_spec, submitter_policy

    with open_store(args) as store:
        if args.batch_command == "create":
            spec = build_batch_spec(
                queue=args.queue, expected=args.expected, threshold=args.threshold,
                progress_every=args.progress_every, stuck_after=args.stuck_after,
                webhook_url=args.webhook_url,
                destinations=submitter_policy())
            created = store.create_batch(spec)
            state = created.state if isinstance(created, Created) else store.get_batch(created.id).state
            emit(args, {"id": created.id, "state": state}, created.id)
            return EXIT_OK
        if args.batch_command == "status":
            view = store.get_batch(args.id)
            emit(args, view, batch_text(view))
            return EXIT_OK
        store.get_batch(args.id)
        if args.batch_command == "add":
            added = store.add_to_batch(args.id, args.jobs).added
            emit(args, {"id": args.id, "added": added}, f"{args.id}: {added} added")
            return EXIT_OK
        reply = store.close_batch(args.id) if args.batch_command == "close" else store.cancel_batch(args.id)
        return trigger_result(args, reply, args.batch_command)


def cmd_webhooks(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        return trigger_result(args, store.redeliver(args.id), "re-send")
