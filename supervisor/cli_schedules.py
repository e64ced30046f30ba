"""``jobvisor schedule add|list|pause|resume|remove``.

``add`` checks everything before it connects where it can (the name, the timing, the
policy, the input), then builds the job as ``submit`` does (the type's defaults, published
by daemons or read from ``--app``) and adds the schedule: a bad value is one line, exit 2,
nothing written. ``pause``, ``resume`` and ``remove`` go through the schedule machine's
guarded triggers (a trigger the schedule's state refuses is exit 2, nothing written).
"""

from __future__ import annotations

import argparse
from typing import Any

from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Created, Moved
from jobvisor.adapters.schedules import ScheduleSpec, ScheduleView, check_schedule_name

from .cli_commands import load_app, open_store, submit_types, trigger_result
from .cli_input import read_input
from .cli_parser import EXIT_OK
from .cli_render import emit, when

__all__ = ["cmd_schedule", "schedules_text"]

_OPTIONS = ("cron", "every", "tz", "missed", "catch_up_max", "grace")


def cmd_schedule(args: argparse.Namespace) -> int:
    verb = args.schedule_command
    if verb == "add":
        return _add(args)
    if verb == "list":
        with open_store(args) as store:
            views = store.list_schedules(args.queue, removed=args.removed)
        emit(args, [_data(v) for v in views], schedules_text(views))
        return EXIT_OK
    name = check_schedule_name(args.name)
    with open_store(args) as store:
        reply = getattr(store, f"{verb}_schedule")(name)
        return trigger_result(args, reply, verb)


def _add(args: argparse.Namespace) -> int:
    from .client import build_spec, schedule_spec, submitter_policy

    options: dict[str, Any] = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k) is not None}
    # Checked before connecting: everything but the type's defaults.
    ScheduleSpec(name=args.name, job=JobSpec(type=args.type), **options).timing()
    value = read_input(args)
    app = load_app(args.app) if args.app is not None else None
    with open_store(args) as store:
        types = submit_types(store, app)
        build_spec(types, args.type, value, queue=args.queue, destinations=submitter_policy())
        reply = store.add_schedule(schedule_spec(types, args.name, args.type, value, queue=args.queue, **options))
        view = store.get_schedule(args.name)
    created = isinstance(reply, Created)
    moved = f" ({reply.from_} -> {reply.to})" if isinstance(reply, Moved) else ""
    emit(args, {**_data(view), "created": created},
         f"{view.name}: {'added' if created else 'redefined' + moved}, next tick {when(view.next_at)}")
    return EXIT_OK


def _data(v: ScheduleView) -> dict[str, Any]:
    return {"name": v.name, "queue": v.queue, "state": v.state, "type": v.job_type, "cron": v.cron,
            "every": v.every, "tz": v.tz, "missed": v.missed, "catch_up_max": v.catch_up_max,
            "grace": v.grace, "next_at": v.next_at, "last_tick": v.last_tick, "fired": v.fired,
            "last_job": v.last_job}


def schedules_text(views: list[ScheduleView]) -> str:
    """One row per schedule: name, state, queue, type, when, next tick, last tick, fired."""
    if not views:
        return "no schedules"
    rows = [("NAME", "STATE", "QUEUE", "TYPE", "WHEN", "NEXT", "LAST", "FIRED")]
    for v in views:
        ticks = f"every {v.every:g}s" if v.every is not None else f"{v.cron} ({v.tz})"
        rows.append((v.name, v.state, v.queue, v.job_type, ticks,
                     when(v.next_at) if v.state == "active" else "-", when(v.last_tick), str(v.fired)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
