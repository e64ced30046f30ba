"""The ``jobvisor`` command line.

Exit codes (SPEC.md, "Interfaces"): 0 success, 2 bad input (one clear line,
nothing written), 3 not found, 1 any other failure (Redis unreachable, an
actor that keeps crashing). ``--json`` prints data as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from jobvisor.adapters.backend import STREAM_CAP, open_backend
from jobvisor.adapters.errors import BadInput, JobvisorError, NotFound, Rejected, redact
from jobvisor.adapters.keys import REGISTRY, check_queue_name, events_key, queue_of
from jobvisor.adapters.redaction import install_log_redaction, redact_text
from jobvisor.adapters.store import SyncStore, event_of
from jobvisor.machines import MACHINES, to_mermaid

from .app import App
from .cli_input import check_decodable, read_input, redis_url
from .client import build_batch_spec, build_spec, submitter_policy

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_FOUND = 0, 1, 2, 3
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
# Validation and webhook settings of `run`, one flag each (the secret only from the environment).
RUN_SETTINGS = (
    "validation_attempts", "validation_interval", "validation_jitter", "validation_timeout",
    "validation_concurrency", "webhook_url", "webhook_attempts", "webhook_backoff",
    "webhook_backoff_max", "webhook_timeout", "webhook_concurrency",
    "max_result_bytes", "loop_lag_warning",
)


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _bad(message: str) -> NoReturn:
    raise _Exit(EXIT_BAD_INPUT, message)


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"jobvisor: {message}\n")


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--redis", default=None, help=f"Redis URL (default $JOBVISOR_REDIS or {DEFAULT_REDIS})")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


_HYGIENE_SETTINGS = (
    "evaluator_interval", "retention_interval", "retention_batch", "retention_completed",
    "retention_failed", "retention_cancelled", "retention_timed_out", "retention_validation_failed",
    "sanitize_base64_min", "sanitize_max_string", "sanitize_max_value",
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobvisor", description="Job supervisor with guarded state machines.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--redis", default=None)
    run.add_argument("--app", default=None, help="module:attr of the App with the handlers")
    run.add_argument("--queues", default=None, help="comma-separated queues (default: the app's)")
    run.add_argument("--concurrency", default=None)
    run.add_argument("--lease", default=None)
    run.add_argument("--grace", default=None)
    run.add_argument("--idle-poll", dest="idle_poll", default=None)
    run.add_argument("--watchdog-interval", dest="watchdog_interval", default=None)
    run.add_argument("--batch-interval", dest="batch_interval", default=None)
    run.add_argument("--batch-sweep-size", dest="batch_sweep_size", default=None)
    run.add_argument("--status-query-timeout", dest="status_query_timeout", default=None)
    run.add_argument("--status-query-concurrency", dest="status_query_concurrency", default=None)
    run.add_argument("--abandon-after", dest="abandon_after", default=None)
    run.add_argument("--metrics-port", dest="metrics_port", default=None)
    run.add_argument("--metrics-host", dest="metrics_host", default=None)
    run.add_argument("--restart-intensity", dest="restart_intensity", default=None)
    run.add_argument("--restart-period", dest="restart_period", default=None)
    run.add_argument("--worker-id", dest="worker_id", default=None)
    for setting in _HYGIENE_SETTINGS:
        run.add_argument("--" + setting.replace("_", "-"), dest=setting, default=None)
    for name in RUN_SETTINGS:
        run.add_argument("--" + name.replace("_", "-"), dest=name, default=None)
    run.add_argument("--allowed-hosts", dest="allowed_hosts", default=None,
                     help="comma-separated hosts (or *.domain) webhook and validator URLs may use")
    run.add_argument("--allow-destinations", dest="allow_destinations", default=None,
                     help="comma-separated hosts, *.domain, IP addresses or CIDR ranges outbound requests "
                          "may reach even though internal")
    run.add_argument("--allow-private-destinations", dest="allow_private_destinations", action="store_true",
                     default=None, help="let outbound requests reach any internal address (development only)")
    run.add_argument("--log-level", default="INFO")
    from .web.command import add_run_flags  # light: the web stack is imported when run

    add_run_flags(run)

    submit = sub.add_parser("submit", help="submit a job")
    submit.add_argument("type")
    group = submit.add_mutually_exclusive_group()
    group.add_argument("--input", default=None, help="the job's input as JSON")
    group.add_argument("--input-file", default=None, help="read the input JSON from a file ('-' = stdin)")
    submit.add_argument("--app", default=None, help="module:attr, for type defaults without a daemon")
    submit.add_argument("--queue", default=None)
    submit.add_argument("--priority", type=int, default=None)
    submit.add_argument("--max-retries", dest="max_retries", type=int, default=None)
    submit.add_argument("--timeout", type=float, default=None)
    submit.add_argument("--delay", type=float, default=None)
    submit.add_argument("--idempotency-key", dest="idempotency_key", default=None)
    submit.add_argument("--webhook-url", dest="webhook_url", default=None)
    submit.add_argument("--notify", action="store_true", default=None,
                        help="send this job's terminal event to the daemon's default webhook URL")
    submit.add_argument("--validator-url", dest="validator_url", default=None,
                        help="validate against this URL ({job_id}, {service_job_id} filled in)")
    submit.add_argument("--batch", default=None)
    _common(submit)

    for name, helptext in (("status", "show a job"), ("cancel", "cancel a job")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("id")
        _common(p)
    retry = sub.add_parser("retry", help="retry a failed, cancelled, timed-out or validation-failed job")
    retry.add_argument("id")
    retry.add_argument("--from-start", action="store_true", help="rerun every phase")
    _common(retry)

    events = sub.add_parser("events", help="print the event stream")
    events.add_argument("--queue", action="append", default=None,
                        help=f"queue(s) (default: all); {REGISTRY} for the daemons' registry")
    events.add_argument("--job", default=None, help="only events of this job or batch")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--limit", type=int, default=1000)
    _common(events)

    queues = sub.add_parser(
        "queues", help="jobs per queue and state; queued ones per type, and those no live daemon serves")
    _common(queues)

    report = sub.add_parser("report", help="finished jobs by category and problem, as the evaluator filed them")
    report.add_argument("--queue", action="append", default=None, help="queue(s) (default: all)")
    _common(report)
    workers = sub.add_parser(
        "workers", help="live daemons, the job types they serve, their worker slots and current jobs")
    workers.add_argument("--all", action="store_true", help="also the latest stopped and lost daemons")
    _common(workers)

    batch = sub.add_parser("batch", help="batches")
    bsub = batch.add_subparsers(dest="batch_command", required=True, parser_class=_Parser)
    create = bsub.add_parser("create")
    create.add_argument("--queue", default="default")
    create.add_argument("--expected", type=int, default=None)
    create.add_argument("--threshold", type=int, default=100)
    create.add_argument("--progress-every", dest="progress_every", type=int, default=None)
    create.add_argument("--stuck-after", dest="stuck_after", type=float, default=None)
    create.add_argument("--webhook-url", dest="webhook_url", default=None)
    _common(create)
    add = bsub.add_parser("add")
    add.add_argument("id")
    add.add_argument("jobs", nargs="+")
    _common(add)
    for name in ("close", "status", "cancel"):
        p = bsub.add_parser(name)
        p.add_argument("id")
        _common(p)

    webhooks = sub.add_parser("webhooks", help="webhook deliveries")
    redeliver = webhooks.add_subparsers(dest="webhooks_command", required=True).add_parser(
        "redeliver", help="re-send a dead delivery (same webhook-id, a fresh attempt budget)")
    redeliver.add_argument("id", help="a delivery id, as `status --json` shows it (<job id>~<event>~<epoch>)")
    _common(redeliver)

    diagram = sub.add_parser("diagram", help="print a machine as a Mermaid state diagram")
    diagram.add_argument("machine", choices=sorted(MACHINES))
    diagram.add_argument("--redis", default=None, help="accepted like every command; not used")

    demo = sub.add_parser("demo", help="the whole story in one process: jobs, validation, webhooks, a lost "
                                       "worker, a batch; ends with the guarantees counted")
    demo.add_argument("--redis", default=None,
                      help="run against this Redis instead of the embedded store (its own queues; nothing "
                           "else is touched)")
    demo.add_argument("--json", action="store_true", help="print the final figures as JSON")
    from .web.command import add_parser as add_web_parser  # light: the web stack is imported when run

    add_web_parser(sub)
    return parser


# -- helpers -------------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> SyncStore:
    return SyncStore(open_backend(redis_url(args, DEFAULT_REDIS)))


def load_app(spec: str) -> App:
    """Import ``module:attr`` and return the App; a bad spec is BadInput naming it."""
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
        raise BadInput(f"app: {spec!r} is not a supervisor.App")
    return app


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print data as JSON (``--json``) or ``text``; URLs in either are shown redacted."""
    if getattr(args, "json", False):
        print(redact_text(msgspec.json.encode(data).decode()))
    else:
        print(redact_text(text))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


# -- commands ------------------------------------------------------------------------------------


def cmd_diagram(args: argparse.Namespace) -> int:
    print(to_mermaid(MACHINES[args.machine]))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    if args.redis is not None and not args.redis.startswith(("redis://", "rediss://", "unix://")):
        _bad(f"redis: {redact(args.redis)!r} is not a Redis URL (redis://host:port/db)")
    try:
        return demo_main(args.redis, args.json)
    except BaseException as exc:  # noqa: BLE001 - nurseries wrap errors in groups: find ours
        found = _innermost(exc, (JobvisorError,))
        if found is None:
            raise
        raise _Exit(EXIT_BAD_INPUT if isinstance(found, BadInput) else EXIT_FAILURE, str(found)) from None


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from .config import load_config
    from .daemon import run_daemon
    from .supervise import SupervisorGaveUp
    from .web.command import run_daemon_with_web, run_settings

    level = args.log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        _bad(f"log-level: {args.log_level!r} is not one of debug, info, warning, error, critical")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction(logging.getLogger())  # URLs in any record, httpx's and httpcore's too
    if logging.getLevelName(level) > logging.DEBUG:  # a line per webhook or check request is debug detail
        logging.getLogger("httpx").setLevel(logging.WARNING)
    flags = {k: getattr(args, k) for k in ("redis", "app", "concurrency", "lease", "grace", "idle_poll",
                                           "watchdog_interval", "batch_interval", "batch_sweep_size",
                                           "status_query_timeout", "status_query_concurrency",
                                           "abandon_after", "metrics_port", "metrics_host",
                                           "restart_intensity", "restart_period", "worker_id",
                                           *_HYGIENE_SETTINGS, *RUN_SETTINGS)}
    if args.queues is not None:
        flags["queues"] = [q for q in args.queues.split(",") if q]
    if args.allowed_hosts is not None:
        flags["allowed_hosts"] = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    if args.allow_destinations is not None:
        flags["allow_destinations"] = [h.strip() for h in args.allow_destinations.split(",") if h.strip()]
    flags["allow_private_destinations"] = args.allow_private_destinations
    config = load_config(flags)
    web = run_settings(args, config.redis)
    app = load_app(config.app) if config.app else App()
    try:
        if web is None:
            trio.run(partial(run_daemon, config, app, on_stuck=_exit_stuck))
        else:
            trio.run(partial(run_daemon_with_web, web, config, app, on_stuck=_exit_stuck))
    except BaseException as exc:  # noqa: BLE001 - nurseries wrap errors in groups: find ours
        found = _innermost(exc, (SupervisorGaveUp, JobvisorError))
        if found is None:
            raise
        if isinstance(found, BadInput):
            raise found from None
        raise _Exit(EXIT_FAILURE, str(found)) from None
    return EXIT_OK


def _exit_stuck(ending: BaseException | None) -> None:
    """Handlers blocked in threads that cannot be interrupted would keep the process alive:
    everything else is cleaned up by now, so end it here, with the exit code it would have had."""
    import os

    from .supervise import SupervisorGaveUp

    code = EXIT_OK
    if ending is not None:
        found = _innermost(ending, (SupervisorGaveUp, JobvisorError))
        code = EXIT_BAD_INPUT if isinstance(found, BadInput) else EXIT_FAILURE
        print(f"jobvisor: {found if found is not None else repr(ending)}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _innermost(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` inside ``exc``, however deep the exception groups go."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _innermost(inner, kinds)
            if found is not None:
                return found
    return None


def cmd_submit(args: argparse.Namespace) -> int:
    value = read_input(args)
    app = load_app(args.app) if args.app is not None else None
    with _store(args) as store:
        types = store.job_types()
        if app is not None:
            types.update({t: h.describe() for t, h in app.handlers.items()})
        options = {k: getattr(args, k) for k in ("queue", "priority", "max_retries", "timeout", "delay",
                                                 "idempotency_key", "webhook_url", "validator_url",
                                                 "notify", "batch")}
        # the destination policy of $JOBVISOR_ALLOW_DESTINATIONS, _ALLOW_PRIVATE_DESTINATIONS, _ALLOWED_HOSTS
        spec = build_spec(types, args.type, value, destinations=submitter_policy(), **options)
        reply = store.submit(spec)
    _print(args, {"id": reply.id, "created": reply.kind == "created", "state": reply.state},
           reply.id if reply.kind == "created" else f"{reply.id} (existing job for this idempotency key)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _store(args) as store:
        job = store.get_job(args.id)
        deliveries = store.job_deliveries(job.id, job.epoch)
    if args.json:
        data = msgspec.to_builtins(job)
        data.pop("raw", None)
        data["deliveries"] = msgspec.to_builtins(deliveries)
        print(redact_text(json.dumps(data)))  # webhook and validator URLs are stored as given
        return EXIT_OK
    lines = [
        f"job        {job.id}",
        f"type       {job.type}    queue {job.queue}    priority {job.priority}",
        f"state      {job.state}" + (f"    reason {job.reason}" if job.reason else ""),
        f"retries    {job.retry_count}/{job.max_retries}    attempts {job.attempts}    timeout {job.timeout:g}s",
        f"created    {_when(job.created_at)}    finished {_when(job.finished_at)}",
    ]
    if job.phases:
        lines.append("phases     " + ", ".join(f"{n}={s}" for n, s in job.phases.items()))
    if job.service_job_id:
        lines.append(f"service id {job.service_job_id}")
    if job.validation_status:
        lines.append(f"validation {job.validation_status}")
    for c in job.validation_checks:
        verdict = "passed" if c.ok else "failed"
        lines.append(f"check {c.n}" + (f" (retry {c.epoch})" if c.epoch else "") + f"  {verdict}  {_when(c.at)}"
                     + (f"  status {c.status}" if c.status else "") + (f"  {c.reason}" if c.reason else ""))
    for d in deliveries:
        lines.append(f"webhook    {d.event} {d.state}, {d.attempts} attempt(s)"
                     + (f", last HTTP {d.last_status}" if d.last_status else "")
                     + (f", last error {d.last_error}" if d.last_error else "") + f"  -> {d.url or '(default URL)'}")
    if job.category:
        lines.append(f"filed      {job.category} / {job.problem}    at {_when(job.filed_at)}")
    lines.append(f"input      {json.dumps(job.input)[:200]}")
    if job.result is not None:
        lines.append(f"result     {json.dumps(job.result)[:200]}")
    if job.error is not None:
        lines.append(f"error      {_error_text(job.error)}")
    for a in job.attempt_records:
        lines.append(
            f"attempt {a.n}  {a.outcome or 'running'}  worker {a.worker or '-'}"
            f"  started {_when(a.started_at)}  finished {_when(a.finished_at)}"
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
            lines.append(f"    error {_error_text(a.error)}")
    print(redact_text("\n".join(lines)))
    return EXIT_OK


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        text = f"{kind}: {message}" if kind and message is not None else str(message if message is not None else error)
    else:
        text = str(error)
    return text.replace("\n", " ")[:200]


def _trigger_result(args: argparse.Namespace, reply: Any, verb: str) -> int:
    data = {"id": reply.id, "outcome": reply.kind, "from": reply.from_, "to": reply.to, "state": reply.state}
    if reply.kind == "moved":
        _print(args, data, f"{reply.id}: {reply.from_} -> {reply.to}")
        return EXIT_OK
    if reply.kind == "absorbed":
        _print(args, data, f"{reply.id} is {reply.state}: nothing to {verb} (no change)")
        return EXIT_OK
    if reply.kind == "invalid":
        _bad(f"{reply.id} is {reply.state}: cannot {verb} it")
    raise _Exit(EXIT_FAILURE, f"{reply.id}: {reply.kind} {reply.error}".strip())


def cmd_cancel(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.get_job(args.id)
        return _trigger_result(args, store.cancel(args.id), "cancel")


def cmd_retry(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.get_job(args.id)
        return _trigger_result(args, store.retry(args.id, from_start=args.from_start), "retry")


def _event_line(e: Any) -> str:
    extra = " ".join(f"{k}={v}" for k, v in e.fields.items())
    return f"{_when(e.at)}  {e.queue:<10} {e.type:<22} {e.id}  {extra}"


def cmd_events(args: argparse.Namespace) -> int:
    for q in args.queue or ():
        try:
            if q != REGISTRY:
                check_queue_name(q)
        except ValueError as exc:
            _bad(str(exc))
    if not 1 <= args.limit <= STREAM_CAP:
        _bad(f"limit: must be between 1 and {STREAM_CAP} (the stream keeps no more), got {args.limit}")
    if not args.follow:
        return _events(args)
    try:
        return _events(args)
    except KeyboardInterrupt:  # Ctrl-C is how a user ends --follow: not a failure
        return EXIT_OK


def _history(store: Any, queue: str, job: str | None, limit: int) -> tuple[list[Any], str]:
    """The last ``limit`` events of ``queue`` (of ``job`` only, when one is given), and the
    stream id they were read up to ("0-0" for an empty stream), where following goes on."""
    if job is None:
        latest = store.latest_events(queue, limit)
        return latest, latest[-1].stream_id if latest else "0-0"
    found: list[Any] = []
    after = "-"
    while page := store.events(queue, after, 1000):  # the stream is capped: a bounded scan
        found = (found + [e for e in page if e.id == job])[-limit:]
        after = page[-1].stream_id
    return found, "0-0" if after == "-" else after


def _events(args: argparse.Namespace) -> int:
    """Print the stream (the last ``--limit`` events per queue); with ``--follow`` go on
    printing every event appended after them, until interrupted. Without ``--queue``,
    queues that appear later are followed too, from their first event."""
    with _store(args) as store:
        if args.job is not None:
            try:
                job_queue = queue_of(args.job)
            except ValueError:
                _bad(f"job: {args.job!r} is not a jobvisor id (<queue>.<id>)")
            try:
                store.get_job(args.job)
            except NotFound:
                store.get_batch(args.job)
            args.queue = args.queue or [job_queue]
        fixed = args.queue is not None
        queues = args.queue or store.queues()
        # where each stream was read up to; "0-0" (from its start) for one with nothing yet
        streams: dict[str, str] = {}
        for q in queues:
            history, streams[events_key(q)] = _history(store, q, args.job, args.limit)
            for e in history:
                _print(args, e, _event_line(e))
        if not args.follow:
            return EXIT_OK
        sys.stdout.flush()
        client = store.backend.client
        while True:
            if not fixed:
                for q in store.queues():
                    streams.setdefault(events_key(q), "0-0")
            if not streams:
                time.sleep(1.0)  # no queue exists yet: nothing to block on
                continue
            answer = store.backend._guard(lambda: client.xread(streams, block=1000, count=100))
            for key, rows in answer or []:
                key = key.decode() if isinstance(key, bytes) else key
                queue = key.split("{", 1)[1].split("}", 1)[0]
                for row in rows:
                    e = event_of(queue, row)
                    streams[key] = e.stream_id
                    if args.job is None or e.id == args.job:
                        _print(args, e, _event_line(e))
            sys.stdout.flush()


def cmd_queues(args: argparse.Namespace) -> int:
    from jobvisor.adapters.routing import serving

    with _store(args) as store:
        workers = store.workers()
        data: dict[str, dict[str, Any]] = {}
        for q in store.queues():
            counts: dict[str, Any] = store.queue_counts(q)
            by_type, untyped = store.queued_by_type(q)
            served = serving(q, workers)
            counts["types"] = {t: {"queued": n, "daemons": served.get(t, 0)} for t, n in sorted(by_type.items())}
            counts["unserved"] = sum(n for t, n in by_type.items() if t not in served)
            counts["untyped"] = untyped
            data[q] = counts
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    print(f"{'queue':<16}{'queued':>8}{'scheduled':>10}{'active':>8}{'validating':>11}{'finished':>10}"
          f"{'outbox':>8}{'unserved':>10}")
    for q, c in data.items():
        print(f"{q:<16}{c['queued']:>8}{c['scheduled']:>10}{c['active']:>8}{c['validating']:>11}"
              f"{c['finished']:>10}{c['outbox']:>8}{c['unserved']:>10}")
        waiting = [f"{t} {v['queued']} ({v['daemons']} live daemon{'s' if v['daemons'] != 1 else ''})"
                   if v["daemons"] else f"{t} {v['queued']} (no live daemon serves it)"
                   for t, v in c["types"].items()]
        if c["untyped"]:
            waiting.append(f"{c['untyped']} from an earlier version, typed at the next claim")
        if waiting:
            print(f"  queued by type: {', '.join(waiting)}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from jobvisor.adapters.filing import CATEGORY_OF, Category, Problem

    for q in args.queue or ():
        try:
            check_queue_name(q)
        except ValueError as exc:
            _bad(str(exc))
    with _store(args) as store:
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
    if args.json:
        print(json.dumps({
            "filed": sum(categories.values()), "unfiled": unfiled, "categories": categories,
            "problems": problems, "counts": counts,
            "queues": {q: {"unfiled": w, "counts": {f"{c}:{p}": n for (c, p), n in found.items()}}
                       for q, (found, w) in per_queue.items()},
        }))
        return EXIT_OK
    print(f"{'category':<12}{'problem':<22}{'jobs':>8}")
    for problem, category in CATEGORY_OF.items():
        print(f"{category.value:<12}{problem.value:<22}{counts.get(category.value, {}).get(problem.value, 0):>8}")
    print(f"{'':<12}{'':<22}{'--------':>8}")
    for category in Category:
        print(f"{category.value:<12}{'(all)':<22}{categories[category.value]:>8}")
    print(f"{'unfiled':<12}{'(waiting)':<22}{unfiled:>8}")
    return EXIT_OK


def _ago(now: float, ts: float | None) -> str:
    return "-" if ts is None else f"{max(0.0, now - ts):.1f}s ago"


def cmd_workers(args: argparse.Namespace) -> int:
    with _store(args) as store:
        daemons = store.workers(include_gone=args.all)
    if args.json:
        print(msgspec.json.encode(daemons).decode())
        return EXIT_OK
    if not daemons:
        print("no live daemons" + ("" if args.all else " (--all shows stopped and lost ones)"))
        return EXIT_OK
    now = time.time()
    for d in daemons:
        state = "late" if d.late else d.state
        busy = f"{len(d.slots)}/{d.concurrency} busy" if d.state == "live" else f"gone {_ago(now, d.gone_at)}"
        print(f"{d.id}  {state}  host {d.host or '-'} pid {d.pid or '-'}  queues {','.join(d.queues) or '-'}  "
              f"{busy}  heartbeat {_ago(now, d.heartbeat_at)}  started {_when(d.started_at)}")
        print(f"  types {','.join(d.types) or '-'}")  # the only ones it claims
        for slot in d.slots:
            print(f"  slot {slot.slot:<4} {slot.job}  {slot.type}  attempt {slot.attempt}  "
                  f"running {max(0.0, now - slot.since):.1f}s")
        for slot in d.abandoned:
            print(f"  abandoned  {slot.job}  {slot.type}  attempt {slot.attempt}  "
                  f"since {max(0.0, now - slot.since):.1f}s (ignored its cancellation)")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if args.batch_command == "create":
            spec = build_batch_spec(
                queue=args.queue, expected=args.expected, threshold=args.threshold,
                progress_every=args.progress_every, stuck_after=args.stuck_after, webhook_url=args.webhook_url,
                destinations=submitter_policy())
            reply = store.create_batch(spec)
            _print(args, {"id": reply.id, "state": reply.state}, reply.id)
            return EXIT_OK
        if args.batch_command == "status":
            view = store.get_batch(args.id)
            _print(args, view, "\n".join([
                f"batch      {view.id}",
                f"state      {view.state}" + (f"    reason {view.reason}" if view.reason else ""),
                f"members    {view.members}" + (f" of {view.expected} expected" if view.expected is not None else "")
                + ("    closed" if view.closed else ""),
                f"completed  {view.completed}    failed {view.failed}    cancelled {view.cancelled}"
                f"    threshold {view.threshold}%",
            ]))
            return EXIT_OK
        store.get_batch(args.id)
        if args.batch_command == "add":
            reply = store.add_to_batch(args.id, args.jobs)
            _print(args, {"id": args.id, "added": reply.added}, f"{args.id}: {reply.added} added")
            return EXIT_OK
        if args.batch_command == "close":
            reply = store.close_batch(args.id)
        else:
            reply = store.cancel_batch(args.id)
        return _trigger_result(args, reply, args.batch_command)


def cmd_webhooks(args: argparse.Namespace) -> int:
    with _store(args) as store:
        return _trigger_result(args, store.redeliver(args.id), "re-send")


def cmd_web(args: argparse.Namespace) -> int:
    from .web.command import run_web

    return run_web(args, redis=redis_url(args, DEFAULT_REDIS), load_app=load_app)


COMMANDS = {
    "diagram": cmd_diagram, "demo": cmd_demo, "run": cmd_run, "submit": cmd_submit, "status": cmd_status,
    "cancel": cmd_cancel, "retry": cmd_retry, "events": cmd_events, "queues": cmd_queues,
    "workers": cmd_workers, "batch": cmd_batch, "report": cmd_report, "web": cmd_web, "webhooks": cmd_webhooks,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_decodable(args)
        return COMMANDS[args.command](args)
    except _Exit as exc:
        _refuse(exc)
        return exc.code
    except (BadInput, Rejected) as exc:
        _refuse(exc)
        return EXIT_BAD_INPUT
    except NotFound as exc:
        _refuse(exc)
        return EXIT_NOT_FOUND
    except JobvisorError as exc:
        _refuse(exc)
        return EXIT_FAILURE


def _refuse(exc: Exception) -> None:
    """The one stderr line of a refusal: a newline inside the message (an echoed value, a
    server's reply) is shown escaped, never as a second line."""
    text = redact_text(str(exc)).replace("\r", "\\r").replace("\n", "\\n")
    print(f"jobvisor: {text}", file=sys.stderr)


def run() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `jobvisor events --follow | head`: the reader has gone
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
