"""``jobvisor events``: the last events of each queue, then (``--follow``) every new one.

Reading goes through :class:`~adapters.events.EventFeed`; this module only checks the
arguments and prints. Ctrl-C is how a user ends ``--follow``: exit code 0. While following,
Redis away (an outage, a failover) is one line on stderr, and following goes on once it is back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from jobvisor.adapters.backend import STREAM_CAP
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.events import EventFeed
from jobvisor.adapters.keys import REGISTRY, check_queue_name

from .cli_commands import open_store
from .cli_parser import EXIT_OK, bad
from .cli_render import emit, event_line

__all__ = ["cmd_events"]


def cmd_events(args: argparse.Namespace) -> int:
    for q in args.queue or ():
        try:
            if q != REGISTRY:
                check_queue_name(q)
        except ValueError as exc:
            bad(str(exc))
    if not 1 <= args.limit <= STREAM_CAP:
        bad(f"limit: must be between 1 and {STREAM_CAP} (the stream keeps no more), got {args.limit}")
    try:
        return _events(args)
    except KeyboardInterrupt:
        if not args.follow:
            raise
        return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    """Print the stream (the last ``--limit`` events per queue); with ``--follow`` go on
    printing every event appended after them, until interrupted. Without ``--queue``,
    queues that appear later are followed too, from their first event."""
    with open_store(args) as store:
        feed = EventFeed(store)
        queues = args.queue
        if args.job is not None:
            subject_queue = feed.subject(args.job)  # a job or batch that exists, else NotFound naming it
            queues = queues or [subject_queue]
        positions: dict[str, str] = {}
        for q in queues or feed.queues():
            history, positions[q] = feed.history(q, args.job, args.limit)
            for e in history:
                emit(args, e, event_line(e))
        if not args.follow:
            return EXIT_OK
        sys.stdout.flush()
        for e in feed.follow(positions, discover=queues is None, outage=_outage()):
            if args.job is None or e.id == args.job:
                emit(args, e, event_line(e))
                sys.stdout.flush()
    return EXIT_OK


def _outage() -> Callable[[StoreUnavailable], None]:
    """One stderr line per outage met while following (not one per attempt)."""
    said: list[str] = []

    def report(exc: StoreUnavailable) -> None:
        if str(exc) not in said:
            said.append(str(exc))
            print(f"jobvisor: {exc}; following again once it is back", file=sys.stderr, flush=True)

    return report
