"""The operator's everyday steps over many jobs at once, and a queue's pause.

Each step is built from guarded ops that already exist, one job or one delivery at a time,
so a bulk step is exactly as safe as its single form and never a new way to move a job:

* :func:`retry_matching`: the jobs a listing (:func:`~adapters.listing.search_jobs`) finds,
  each retried through the guarded ``retry`` trigger. A job that left its state since it was
  listed is absorbed (``completed``) or refused, and nothing is written for it; N failed jobs
  retried are exactly N new epochs.
* :func:`redeliver_dead`: the ``dead`` webhook deliveries of the jobs a listing finds, each
  re-sent through the guarded ``redeliver`` op (a new delivery of the same event id, so the
  same ``webhook-id``).
* :func:`pause_queue` / :func:`resume_queue`: the queue's ``paused`` flag, checked first by
  every claim of the queue inside the Lua library; a resume wakes the queue's idle workers.

``dry_run`` lists what would be done and writes nothing. Every refusal is
:class:`~adapters.errors.BadInput` naming the parameter, raised before anything is written.
The functions take an async :class:`~adapters.store_ops.Store`; :func:`drive` runs one over
the synchronous client's direct executor, where it never suspends.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import TypeVar

import msgspec

from .calls import CommandCall
from .errors import BadInput, NotFound
from .keys import Keys, check_queue_name
from .listing import JobSummary, search_jobs
from .replies import Moved, Transition
from .store_core import one
from .store_ops import Store
from .store_sync import drive

__all__ = ["BulkResult", "QueuePause", "RETRYABLE", "drive", "parse_since", "pause_queue", "queue_paused",
           "redeliver_dead", "resume_queue", "retry_matching", "matching_jobs", "dead_deliveries"]

T = TypeVar("T")
RETRYABLE = ("failed", "cancelled", "timed_out", "validation_failed")
"""The states the operator's ``retry`` leaves (SPEC.md: ``completed`` absorbs it)."""
_PAGE = 500
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BulkResult(msgspec.Struct, kw_only=True, frozen=True):
    """What a bulk step found and did: ``matched`` ids, ``done`` of them moved (none on a dry run),
    and each one left as it was with why (``skipped``: id -> its state or the refusal)."""

    matched: int
    done: int
    dry_run: bool
    ids: list[str]
    skipped: dict[str, str] = {}


class QueuePause(msgspec.Struct, kw_only=True, frozen=True):
    """A queue's pause: ``paused`` and since when (epoch seconds)."""

    queue: str
    paused: bool
    since: float | None = None


def parse_since(value: str | float | datetime | None, now: float | None = None) -> float | None:
    """``since`` as epoch seconds: a duration back from now (``90s``, ``30m``, ``2h``, ``7d``,
    ``1w``), an ISO 8601 time (UTC when it names no offset), epoch seconds, or a datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        duration = _DURATION.match(text)
        if duration:
            return (time.time() if now is None else now) - float(duration[1]) * _UNIT[duration[2]]
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            except ValueError:
                raise BadInput(f"since: {value[:40]!r} is not a time (30m, 2h, 7d, an ISO 8601 time "
                               "or epoch seconds)") from None
            return parse_since(when)
    else:
        raise BadInput("since: not a time")
    if not 0 <= seconds < 1e11:  # NaN fails too
        raise BadInput(f"since: {seconds!r} is not a time in epoch seconds")
    return seconds


async def matching_jobs(
    store: Store, *, queues: Sequence[str] | None = None, state: str | None = None, job_type: str | None = None,
    since: float | None = None,
) -> AsyncIterator[list[JobSummary]]:
    """Every job matching the filters, a page at a time (the listing's stable walk)."""
    cursor: str | None = None
    while True:
        page = await search_jobs(store, queues, state=state, job_type=job_type, created_after=since,
                                 cursor=cursor, limit=_PAGE)
        if page.jobs:
            yield page.jobs
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def retry_matching(
    store: Store, *, state: str, queues: Sequence[str] | None = None, job_type: str | None = None,
    since: float | None = None, from_start: bool = False, dry_run: bool = False,
) -> BulkResult:
    """Retry every job in ``state`` (one of :data:`RETRYABLE`) matching the filters, each
    through the guarded ``retry`` trigger; with ``dry_run`` only list them."""
    if state not in RETRYABLE:
        raise BadInput(f"state: {state!r} cannot be retried (retryable: {', '.join(RETRYABLE)})")
    ids: list[str] = []
    skipped: dict[str, str] = {}
    done = 0
    async for jobs in matching_jobs(store, queues=queues, state=state, job_type=job_type, since=since):
        for job in jobs:
            ids.append(job.id)
            if dry_run:
                continue
            try:
                reply = await store.retry(job.id, from_start=from_start)
            except NotFound:  # deleted by retention since it was listed
                skipped[job.id] = "deleted"
                continue
            if isinstance(reply, Moved):
                done += 1
            else:
                skipped[job.id] = reply.state
    return BulkResult(matched=len(ids), done=done, dry_run=dry_run, ids=ids, skipped=skipped)


async def dead_deliveries(
    store: Store, *, queues: Sequence[str] | None = None, job_type: str | None = None, since: float | None = None,
    job_id: str | None = None,
) -> list[str]:
    """The ids of the ``dead`` webhook deliveries of one job (``job_id``), or of every finished job
    matching the filters whose latest notification is dead; oldest first per job."""
    if job_id is not None:
        view = await store.get_job(job_id)
        return [d.id for d in await store.job_deliveries(view.id, view.epoch) if d.state == "dead"]
    found: list[str] = []
    async for jobs in matching_jobs(store, queues=queues, state=None, job_type=job_type, since=since):
        for job in jobs:
            if job.notification == "dead":
                found.extend(await dead_deliveries(store, job_id=job.id))
    return found


async def redeliver_dead(
    store: Store, *, queues: Sequence[str] | None = None, job_type: str | None = None, since: float | None = None,
    job_id: str | None = None, dry_run: bool = False,
) -> BulkResult:
    """Re-send every dead delivery :func:`dead_deliveries` finds (same ``webhook-id``, a fresh
    attempt budget), each through the guarded ``redeliver`` op; with ``dry_run`` only list them."""
    ids = await dead_deliveries(store, queues=queues, job_type=job_type, since=since, job_id=job_id)
    done = 0
    skipped: dict[str, str] = {}
    for delivery_id in [] if dry_run else ids:
        try:
            reply = await store.redeliver(delivery_id)
        except NotFound:
            skipped[delivery_id] = "deleted"
            continue
        if isinstance(reply, Moved):
            done += 1
        else:
            skipped[delivery_id] = reply.state
    return BulkResult(matched=len(ids), done=done, dry_run=dry_run, ids=ids, skipped=skipped)


def _name(queue: str) -> str:
    try:
        return check_queue_name(queue)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


async def _known(store: Store, queue: str) -> str:
    """The name of a queue jobs were submitted to (a typo must not pause nothing)."""
    name = _name(queue)
    if name not in await store.queues():
        raise NotFound(f"queue {name!r} not found")
    return name


async def pause_queue(store: Store, queue: str) -> Transition:
    """Stop every claim of ``queue`` (``moved``; ``absorbed`` when it was paused already).
    Jobs may still be submitted; they wait, ``queued``, until :func:`resume_queue`."""
    return await store.pause(await _known(store, queue))


async def resume_queue(store: Store, queue: str) -> Transition:
    """Let ``queue`` be claimed again and wake its idle workers (``absorbed`` when it was not paused)."""
    return await store.resume(await _known(store, queue))


async def queue_paused(store: Store, queue: str) -> QueuePause:
    """Whether ``queue`` is paused, and since when. Reads one key."""
    since = one((await store.executor.execute([CommandCall(("GET", Keys(_name(queue)).paused))]))[0])
    return QueuePause(queue=queue, paused=since is not None, since=None if since is None else int(since) / 1000)
