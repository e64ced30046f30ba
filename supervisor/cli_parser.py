"""The command line's grammar: every command, its arguments, and the exit codes.

The flags of ``jobvisor run`` are generated from :data:`~supervisor.config.SETTINGS`, so
``jobvisor run --help`` shows each setting's help, default and ``JOBVISOR_*`` variable, and a
setting added to :class:`~supervisor.config.DaemonConfig` is a flag without further edits.
Every flag of ``run`` defaults to ``None`` (unset), so that :func:`~supervisor.config.load_config`
can tell a flag from its variable.

Exit codes (SPEC.md, "Interfaces"): 0 success, 2 bad input (one clear line, nothing written),
3 not found, 1 any other failure. Bad usage is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

import jobvisor
from jobvisor.adapters.keys import REGISTRY

from .config import SETTINGS, Setting

__all__ = [
    "DEFAULT_REDIS", "EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_NOT_FOUND", "EXIT_OK", "CliExit", "bad",
    "build_parser",
]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_NOT_FOUND = 0, 1, 2, 3
DEFAULT_REDIS: str = next(s.default for s in SETTINGS if s.name == "redis")
MACHINE_NAMES = ("batch", "job", "phase", "schedule", "webhook")  # checked against jobvisor.machines by a test

# settings of `run` grouped in --help by the first word of their name
_GROUPS = {
    "validation": "validation", "webhook": "webhooks", "allowed": "outbound requests",
    "allow": "outbound requests", "evaluator": "filing and retention", "retention": "filing and retention",
    "sanitize": "payload hygiene", "max": "payload hygiene", "metrics": "metrics", "batch": "batches",
    "restart": "supervision", "status": "lost workers", "abandon": "lost workers",
}


class CliExit(Exception):
    """End the command with ``code`` and the one line ``message`` on stderr."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def bad(message: str) -> NoReturn:
    """Refuse bad input: one line, exit code 2."""
    raise CliExit(EXIT_BAD_INPUT, message)


class _Parser(argparse.ArgumentParser):
    """argparse, but bad usage is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"jobvisor: {message}\n")


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--redis", default=None, metavar="URL",
                   help=f"Redis URL (default: $JOBVISOR_REDIS, else {DEFAULT_REDIS})")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def setting_help(s: Setting) -> str:
    """A setting's help line: what it is, its default, its variable."""
    return f"{s.help} (default: {s.shown}; env {s.env})".replace("%", "%%")


def _add_settings(run: argparse.ArgumentParser) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in SETTINGS:
        if s.flag is None:
            continue
        title = _GROUPS.get(s.name.split("_", 1)[0], "daemon")
        if title not in groups:
            groups[title] = run.add_argument_group(f"settings: {title}")
        group = groups[title]
        if s.kind == "switch":
            group.add_argument(s.flag, dest=s.name, action="store_true", default=None, help=setting_help(s))
        else:
            group.add_argument(s.flag, dest=s.name, default=None, metavar=s.metavar, help=setting_help(s))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobvisor", description="Job supervisor with guarded state machines.")
    parser.add_argument("--version", action="version", version=f"jobvisor {jobvisor.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run", help="run the daemon",
        description="Run the daemon. Each setting comes from its flag, else its JOBVISOR_* environment "
                    "variable, else its default; durations are seconds. JOBVISOR_WEBHOOK_SECRET is read "
                    "from the environment only.")
    _add_settings(run)
    from .web.command import add_run_flags  # light: the web stack is imported when run

    add_run_flags(run)

    submit = sub.add_parser("submit", help="submit a job; prints its id")
    submit.add_argument("type", help="the job type (the app's, or one a daemon published)")
    group = submit.add_mutually_exclusive_group()
    group.add_argument("--input", default=None, metavar="JSON", help="the job's input as JSON")
    group.add_argument("--input-file", default=None, metavar="FILE",
                       help="read the input JSON from a file ('-' = stdin)")
    submit.add_argument("--app", default=None, metavar="MODULE:ATTR",
                        help="the App, for the type's defaults without a running daemon")
    submit.add_argument("--queue", default=None, help="queue (default: the type's)")
    submit.add_argument("--priority", type=int, default=None, help="higher runs first (default 0)")
    submit.add_argument("--max-retries", dest="max_retries", type=int, default=None, metavar="N",
                        help="retries after a failed attempt (default: the type's)")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="time limit of one attempt (default: the type's)")
    submit.add_argument("--delay", type=float, default=None, metavar="SECONDS",
                        help="run no earlier than this")
    submit.add_argument("--idempotency-key", dest="idempotency_key", default=None, metavar="KEY",
                        help="the same key returns the job it made (for a day, or --idempotency-ttl)")
    submit.add_argument("--idempotency-ttl", dest="idempotency_ttl", type=float, default=None, metavar="SECONDS",
                        help="how long the key returns this job (1 s to 30 days; default: a day)")
    submit.add_argument("--webhook-url", dest="webhook_url", default=None, metavar="URL",
                        help="send this job's terminal event here")
    submit.add_argument("--notify", action="store_true", default=None,
                        help="send this job's terminal event to the daemon's default webhook URL")
    submit.add_argument("--validator-url", dest="validator_url", default=None, metavar="URL",
                        help="validate against this URL ({job_id}, {service_job_id} filled in)")
    submit.add_argument("--batch", default=None, metavar="ID", help="join this open batch")
    submit.add_argument("--depends-on", dest="depends_on", action="append", default=None, metavar="ID",
                        help="wait for this job of the same queue first (repeat for several)")
    submit.add_argument("--on-dependency-failure", dest="on_dependency_failure", default=None,
                        choices=("fail", "ignore", "continue"),
                        help="when a dependency fails: fail this job (default), ignore it, or run at once")
    _common(submit)

    _flow_parsers(sub)

    for name, helptext in (("status", "show a job"), ("cancel", "cancel a job")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("id")
        _common(p)
    _ops_parsers(sub)
    _schedule_parsers(sub.add_parser("schedule", help="cron and interval schedules"))

    events = sub.add_parser("events", help="print the event stream")
    events.add_argument("--queue", action="append", default=None,
                        help=f"queue(s) (default: all); {REGISTRY} for the daemons' registry")
    events.add_argument("--job", default=None, metavar="ID", help="only events of this job or batch")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events (Ctrl-C ends)")
    events.add_argument("--limit", type=int, default=1000, metavar="N",
                        help="the last N events per queue (default: 1000)")
    _common(events)

    queues = sub.add_parser(
        "queues", help="jobs per queue and state; queued ones per type, and those no live daemon serves")
    _common(queues)

    report = sub.add_parser("report",
                            help="finished jobs by category and problem, as the evaluator filed them")
    report.add_argument("--queue", action="append", default=None, help="queue(s) (default: all)")
    _common(report)
    workers = sub.add_parser(
        "workers", help="live daemons, the job types they serve, their worker slots and current jobs")
    workers.add_argument("--all", action="store_true", help="also the latest stopped and lost daemons")
    _common(workers)

    _batch_parsers(sub.add_parser("batch", help="batches"))

    webhooks = sub.add_parser("webhooks", help="webhook deliveries (see also: redeliver)")
    redeliver = webhooks.add_subparsers(dest="webhooks_command", required=True, parser_class=_Parser).add_parser(
        "redeliver", help="re-send a dead delivery (same webhook-id, a fresh attempt budget)")
    redeliver.add_argument("id", help="a delivery id, as `status --json` shows it (<job id>~<event>~<epoch>)")
    _common(redeliver)

    diagram = sub.add_parser("diagram", help="print a machine as a Mermaid state diagram")
    diagram.add_argument("machine", choices=MACHINE_NAMES)
    diagram.add_argument("--effects", action="store_true", help="label each edge with its row's effects, in order")
    diagram.add_argument("--redis", default=None, help="accepted like every command; not used")

    demo = sub.add_parser("demo", help="the whole story in one process: jobs, validation, webhooks, a lost "
                                       "worker, a batch; ends with the guarantees counted")
    demo.add_argument("--redis", default=None, metavar="URL",
                      help="run against this Redis instead of the embedded store (its own queues; nothing "
                           "else is touched)")
    demo.add_argument("--json", action="store_true", help="print the final figures as JSON")
    from .web.command import add_parser as add_web_parser  # light: the web stack is imported when run

    add_web_parser(sub)
    return parser


def _flow_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    step = "a job: TYPE, or TYPE=JSON with its input"
    flow = sub.add_parser("flow", help="submit a parent and its children in one step; prints the ids "
                                       "(the parent's first)")
    flow.add_argument("--parent", required=True, metavar="TYPE[=JSON]",
                      help=f"{step}; it waits for its children")
    flow.add_argument("--child", required=True, action="append", metavar="TYPE[=JSON]",
                      help=f"{step}; queued at once (repeat for several)")
    chain = sub.add_parser("chain", help="submit steps that run one after the other; prints their ids")
    chain.add_argument("steps", nargs="+", metavar="TYPE[=JSON]", help=f"{step}; each waits on the one before")
    for p in (flow, chain):
        p.add_argument("--on-dependency-failure", dest="on_dependency_failure", default="fail",
                       choices=("fail", "ignore", "continue"),
                       help="when a dependency fails: fail the waiting job (default), ignore it, or run at once")
        p.add_argument("--queue", default=None, help="queue of every job (default: the types'; one queue)")
        p.add_argument("--app", default=None, metavar="MODULE:ATTR",
                       help="the App, for the types' defaults without a running daemon")
        _common(p)


def _batch_parsers(batch: argparse.ArgumentParser) -> None:
    bsub = batch.add_subparsers(dest="batch_command", required=True, parser_class=_Parser)
    create = bsub.add_parser("create", help="create a batch; prints its id")
    create.add_argument("--queue", default="default", help="queue (default: default)")
    create.add_argument("--expected", type=int, default=None, metavar="N", help="expected number of members")
    create.add_argument("--threshold", type=int, default=100, metavar="PERCENT",
                        help="completion threshold percent (default: 100)")
    create.add_argument("--progress-every", dest="progress_every", type=int, default=None, metavar="K",
                        help="a progress event every K completions")
    create.add_argument("--stuck-after", dest="stuck_after", type=float, default=None, metavar="SECONDS",
                        help="finalize after this long without member activity")
    create.add_argument("--webhook-url", dest="webhook_url", default=None, metavar="URL",
                        help="send the batch's events here")
    _common(create)
    add = bsub.add_parser("add", help="add jobs to an open batch")
    add.add_argument("id")
    add.add_argument("jobs", nargs="+")
    _common(add)
    for name, helptext in (("close", "close membership"), ("status", "show a batch"),
                           ("cancel", "cancel a batch")):
        p = bsub.add_parser(name, help=helptext)
        p.add_argument("id")
        _common(p)


def _filters(p: argparse.ArgumentParser, *, state: bool = True) -> None:
    """The filters of ``jobs``, bulk ``retry`` and bulk ``redeliver``."""
    p.add_argument("--queue", action="append", default=None, help="queue(s) (default: every queue)")
    if state:
        p.add_argument("--state", default=None, help="a job state (queued, failed, ...)")
    p.add_argument("--type", dest="job_type", default=None, metavar="TYPE", help="a job type")
    p.add_argument("--since", default=None, metavar="WHEN",
                   help="created since: 30m, 2h, 7d, an ISO 8601 time (UTC unless it says) or epoch seconds")


def _ops_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    jobs = sub.add_parser("jobs", help="list and search jobs, a page at a time",
                          description="List jobs by queue, state, type and creation time, newest first per "
                                      "state, through the state indexes. Each page ends with the cursor of the "
                                      "next one: jobs submitted meanwhile never make a job appear twice or go "
                                      "missing across pages.")
    _filters(jobs)
    jobs.add_argument("--limit", type=int, default=50, metavar="N", help="jobs per page, 1-500 (default: 50)")
    jobs.add_argument("--cursor", default=None, help="the cursor the previous page ended with")
    _common(jobs)

    retry = sub.add_parser("retry", help="retry a failed, cancelled, timed-out or validation-failed job, "
                                         "or every job the filters match",
                           description="Retry one job by id, or every job in --state matching the filters "
                                       "(each through the same guarded retry: a job that finished meanwhile "
                                       "is left as it is). --dry-run prints what would be retried.")
    retry.add_argument("id", nargs="?", default=None, help="a job id (or give --state and filters)")
    retry.add_argument("--from-start", action="store_true", help="rerun every phase")
    _filters(retry)
    retry.add_argument("--dry-run", dest="dry_run", action="store_true",
                       help="print the count and ids that would be retried; write nothing")
    _common(retry)

    queue = sub.add_parser("queue", help="pause or resume a queue")
    qsub = queue.add_subparsers(dest="queue_command", required=True, parser_class=_Parser)
    for name, helptext in (("pause", "stop claims of the queue (submits still queue jobs)"),
                           ("resume", "let the queue be claimed again, and wake its idle daemons")):
        p = qsub.add_parser(name, help=helptext)
        p.add_argument("name", help="the queue")
        _common(p)

    redeliver = sub.add_parser("redeliver", help="re-send dead webhook deliveries (same webhook-id)",
                               description="Re-send the dead webhook deliveries of one job (or one delivery "
                                           "id), or of every job the filters match: each a new delivery of "
                                           "the same event, with the same webhook-id and a fresh attempt "
                                           "budget. --dry-run prints what would be re-sent.")
    redeliver.add_argument("id", nargs="?", default=None, help="a job id or a delivery id (or give filters)")
    _filters(redeliver, state=False)
    redeliver.add_argument("--dry-run", dest="dry_run", action="store_true",
                           help="print the count and ids that would be re-sent; write nothing")
    _common(redeliver)


def _schedule_parsers(schedule: argparse.ArgumentParser) -> None:
    ssub = schedule.add_subparsers(dest="schedule_command", required=True, parser_class=_Parser)
    add = ssub.add_parser("add", help="add (or redefine) a schedule: a job of TYPE at each tick",
                          description="Add a schedule, or redefine the one of that name: each tick (of --cron "
                                      "read in --tz, or every --every seconds) submits one job of TYPE, once "
                                      "however many daemons run.")
    add.add_argument("name", help="the schedule's name (1-64 of letters, digits, '_', '.' and '-')")
    add.add_argument("type", help="the job type (the app's, or one a daemon published)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", default=None, metavar="EXPR", help="a cron expression ('*/5 * * * *')")
    when.add_argument("--every", type=float, default=None, metavar="SECONDS", help="a tick every N seconds")
    add.add_argument("--tz", default=None, metavar="ZONE", help="the cron's time zone (default: UTC)")
    group = add.add_mutually_exclusive_group()
    group.add_argument("--input", default=None, metavar="JSON", help="each job's input as JSON")
    group.add_argument("--input-file", default=None, metavar="FILE", help="read the input JSON from a file")
    add.add_argument("--queue", default=None, help="queue (default: the type's)")
    add.add_argument("--missed", choices=("skip", "catch_up"), default=None,
                     help="ticks missed while no daemon ran: skip (the latest fires within --grace; "
                          "default) or catch_up")
    add.add_argument("--catch-up-max", dest="catch_up_max", type=int, default=None, metavar="N",
                     help="the most missed ticks caught up (1-100, default 10)")
    add.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                     help="how late a missed tick may still fire under skip (default 60)")
    add.add_argument("--app", default=None, metavar="MODULE:ATTR",
                     help="the App, for the type's defaults without a running daemon")
    _common(add)
    listing = ssub.add_parser("list", help="the schedules, their next and last ticks")
    listing.add_argument("--queue", default=None, help="only this queue's")
    listing.add_argument("--removed", action="store_true", help="removed ones too")
    _common(listing)
    for name, helptext in (("pause", "no tick fires until resumed"),
                           ("resume", "ticks fire again, from the first after now"),
                           ("remove", "no more ticks")):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("name", help="the schedule")
        _common(p)

