"""Read-only listings for the HTTP API: jobs by queue, state, type and creation time, one
page at a time, and a queue's live batches.

A listing walks the queue's state indexes (``adapters/keys.py``), never the keyspace: for a
state, the one index that holds it (``queued`` is one zset per job type); without one, every
index in a fixed order (active, validating, queued by type, scheduled, waiting, finished). Within an
index, entries come newest score first (ties by id, as Redis orders them), so a page is
one ``ZRANGE ... BYSCORE REV LIMIT`` plus one ``HMGET`` per job, pipelined.

The cursor is opaque to callers: where the last page stopped (index, score, id). A page
examines at most ``scan_budget`` index entries, so a filter that matches little returns a
short (even empty) page with a cursor to go on from, like ``SCAN``: its cost is bounded.
A listing is not a snapshot: a job that changes state while it is paged through may be
seen on two pages, or on none, which the job's own record settles; one page lists a job once
(it may have moved from an index the page read to one it reads later).

Every refusal (a bad cursor, state, queue, time) is :class:`~adapters.errors.BadInput`
naming the parameter, raised before Redis is asked anything.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import msgspec

from jobvisor.machines import JobState

from .backend import CommandCall
from .errors import BadInput, NotFound
from .keys import Keys, check_queue_name, queue_of
from .store import Store

__all__ = ["JobSummary", "JobPage", "list_jobs", "search_jobs", "live_batches", "is_batch_member",
           "finished_per_minute", "MAX_PAGE"]

MAX_PAGE = 500
"""The most jobs one page may hold."""
_FIELDS = ("id", "type", "state", "priority", "attempts", "retry_count", "max_retries",
           "created_at", "updated_at", "finished_at", "batch", "category", "problem", "notification")
_TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out", "validation_failed"})
# The walk order without a state filter; `queued` expands to one index per job type.
_ORDER = ("active", "validating", "queued", "due", "waiting", "finished")


class JobSummary(msgspec.Struct, kw_only=True, frozen=True):
    """One row of a job listing (the job's record has the rest)."""

    id: str
    queue: str
    type: str
    state: str
    priority: int
    attempts: int
    retry_count: int
    max_retries: int
    created_at: float
    updated_at: float
    finished_at: float | None = None
    batch: str | None = None
    category: str | None = None
    problem: str | None = None
    notification: str | None = None
    """The state of its latest webhook delivery (``pending``, ``delivered``, ``dead``), if it notifies."""


class JobPage(msgspec.Struct, kw_only=True, frozen=True):
    """A page of jobs and the cursor of the next one (``None``: the listing is done)."""

    jobs: list[JobSummary]
    next_cursor: str | None


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    rank: int
    index: str
    score: float
    member: str


_cursor_decoder = msgspec.json.Decoder(_Cursor)


def encode_cursor(cursor: _Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str) -> _Cursor:
    """The cursor a previous page gave; anything else is :class:`BadInput` naming ``cursor``."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadInput("cursor: not a cursor this listing gave") from None
    if (not 0 <= cursor.rank < len(_ORDER) or cursor.index.split(":", 1)[0] != _ORDER[cursor.rank]
            or len(cursor.member) > 200 or len(cursor.index) > 200):
        raise BadInput("cursor: not a cursor this listing gave")
    return cursor


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(reply: Any) -> list[tuple[str, float]]:
    """``ZRANGE ... WITHSCORES`` as (member, score), whichever RESP version shaped it."""
    if not reply:
        return []
    if isinstance(reply[0], list | tuple):
        return [(_text(m), float(s)) for m, s in reply]
    return [(_text(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]


async def _run(store: Store, *commands: tuple[Any, ...]) -> list[Any]:
    results = await store.executor.execute([CommandCall(c) for c in commands])
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def _check_state(state: str | None) -> None:
    if state is not None and state not in {s.value for s in JobState}:
        known = ", ".join(s.value for s in JobState)
        raise BadInput(f"state: {state!r} is not a job state ({known})")


async def _indexes(store: Store, keys: Keys, state: str | None, job_type: str | None) -> list[tuple[int, str]]:
    """(rank, index name after the queue's prefix) to walk, in walk order."""
    if state is None:
        ranks = range(len(_ORDER))
    else:
        index = _ORDER.index("finished" if state in _TERMINAL else "due" if state == "scheduled" else state)
        ranks = range(index, index + 1)
    out: list[tuple[int, str]] = []
    for rank in ranks:
        if _ORDER[rank] != "queued":
            out.append((rank, _ORDER[rank]))
            continue
        if job_type is not None:
            types = [job_type]
        else:
            (members,) = await _run(store, ("SMEMBERS", keys.queued_types))
            types = sorted(_text(t) for t in members)
        out.extend((rank, f"queued:{t}") for t in types)
        out.append((rank, "queued"))  # the earlier versions' untyped index, emptied by wake
    return out


async def list_jobs(
    store: Store, queue: str, *, state: str | None = None, job_type: str | None = None,
    created_after: float | None = None, created_before: float | None = None,
    cursor: str | None = None, limit: int = 50, scan_budget: int | None = None,
) -> JobPage:
    """One page of ``queue``'s jobs matching every filter given (times in epoch seconds)."""
    try:
        keys = Keys(check_queue_name(queue))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    _check_state(state)
    if not 1 <= limit <= MAX_PAGE:
        raise BadInput(f"limit: must be between 1 and {MAX_PAGE}, got {limit}")
    if job_type is not None and not 1 <= len(job_type) <= 200:
        raise BadInput("type: must be 1-200 characters")
    start = decode_cursor(cursor) if cursor else None
    budget = scan_budget if scan_budget is not None else max(200, limit * 10)
    found: list[JobSummary] = []
    seen: set[str] = set()
    last: _Cursor | None = None
    for rank, index in await _indexes(store, keys, state, job_type):
        if start is not None and (rank, index) < (start.rank, start.index):
            continue
        resume = start if start is not None and (rank, index) == (start.rank, start.index) else None
        top = resume.score if resume is not None else float("inf")
        skip_from = resume.member if resume is not None else None
        offset = 0
        while True:
            chunk = min(budget, max(limit - len(found), 1) * 2 + 1)
            (reply,) = await _run(store, ("ZRANGE", keys.prefix + index, "+inf" if top == float("inf") else
                                          repr(top), "-inf", "BYSCORE", "REV", "LIMIT", offset, chunk,
                                          "WITHSCORES"))
            entries = _pairs(reply)
            offset += len(entries)
            if skip_from is not None:  # the entries the last page already gave lead the answer
                kept = [(m, s) for m, s in entries if s < top or m < skip_from]
                if not kept and len(entries) == chunk:
                    continue
                entries, skip_from = kept, None
            budget -= len(entries)
            if entries:
                for summary in await _summaries(store, keys, queue, [m for m, _ in entries], state, job_type,
                                                created_after, created_before):
                    if summary.id not in seen:
                        seen.add(summary.id)
                        found.append(summary)
                member, score = entries[-1]
                last = _Cursor(rank, index, score, member)
            if len(found) >= limit or budget <= 0:
                return JobPage(jobs=found[:limit],
                               next_cursor=encode_cursor(_after(found, limit, last, entries, rank, index)))
            if len(entries) < chunk:
                break
    return JobPage(jobs=found, next_cursor=None)


class _Across(msgspec.Struct, array_like=True, frozen=True):
    queue: str
    inner: str | None


_across_decoder = msgspec.json.Decoder(_Across)


async def search_jobs(
    store: Store, queues: Sequence[str] | None = None, *, state: str | None = None, job_type: str | None = None,
    created_after: float | None = None, created_before: float | None = None,
    cursor: str | None = None, limit: int = 50, scan_budget: int | None = None,
) -> JobPage:
    """:func:`list_jobs` over several queues (``None``: every queue), walked in name order.

    The cursor names the queue the page stopped in and that queue's own cursor, so the next
    page goes on from there. Within a queue the walk is :func:`list_jobs`'s (newest first per
    index, by score then id): jobs submitted while a listing is paged through sort before
    where it stopped, so no job of a page is listed again and none it had still to reach is
    skipped. A queue first used after the walk passed its name is not listed.
    """
    names: list[str] = []
    for q in sorted(set(queues)) if queues is not None else await store.queues():
        try:
            names.append(check_queue_name(q))
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    _check_state(state)
    if not 1 <= limit <= MAX_PAGE:
        raise BadInput(f"limit: must be between 1 and {MAX_PAGE}, got {limit}")
    start, inner = 0, None
    if cursor:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            at = _across_decoder.decode(raw)
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise BadInput("cursor: not a cursor this listing gave") from None
        if at.inner is not None:
            decode_cursor(at.inner)
        start = next((i for i, q in enumerate(names) if q >= at.queue), len(names))
        inner = at.inner if start < len(names) and names[start] == at.queue else None
    found: list[JobSummary] = []
    for i in range(start, len(names)):
        page = await list_jobs(store, names[i], state=state, job_type=job_type, created_after=created_after,
                               created_before=created_before, cursor=inner, limit=limit - len(found),
                               scan_budget=scan_budget)
        found.extend(page.jobs)
        inner = None
        if page.next_cursor is not None:
            return JobPage(jobs=found, next_cursor=_across(names[i], page.next_cursor))
        if len(found) >= limit and i + 1 < len(names):
            return JobPage(jobs=found, next_cursor=_across(names[i + 1], None))
    return JobPage(jobs=found, next_cursor=None)


def _across(queue: str, inner: str | None) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(_Across(queue, inner))).decode().rstrip("=")


def _after(found: list[JobSummary], limit: int, last: _Cursor | None, entries: list[tuple[str, float]],
           rank: int, index: str) -> _Cursor:
    """Where the next page starts: after the last job this page returns."""
    assert last is not None
    if len(found) <= limit:
        return last
    cut = found[limit - 1].id  # the page ends mid-chunk: resume after the last job kept
    for member, score in entries:
        if member == cut:
            return _Cursor(rank, index, score, member)
    return last


async def _summaries(store: Store, keys: Keys, queue: str, ids: Sequence[str], state: str | None,
                     job_type: str | None, after: float | None, before: float | None) -> list[JobSummary]:
    rows = await _run(store, *(("HMGET", keys.job(i), *_FIELDS) for i in ids))
    out = []
    for row in rows:
        values = dict(zip(_FIELDS, (None if v is None else _text(v) for v in row), strict=True))
        if values["id"] is None or values["state"] is None:
            continue  # deleted since the index was read
        created = int(values["created_at"] or 0) / 1000
        if (state is not None and values["state"] != state) or (job_type is not None and values["type"] != job_type):
            continue
        if (after is not None and created < after) or (before is not None and created >= before):
            continue
        out.append(JobSummary(
            id=values["id"], queue=queue, type=values["type"] or "", state=values["state"],
            priority=int(values["priority"] or 0), attempts=int(values["attempts"] or 0),
            retry_count=int(values["retry_count"] or 0), max_retries=int(values["max_retries"] or 0),
            created_at=created, updated_at=int(values["updated_at"] or 0) / 1000,
            finished_at=int(values["finished_at"]) / 1000 if values["finished_at"] else None,
            batch=values["batch"] or None, category=values["category"] or None,
            problem=values["problem"] or None, notification=values["notification"] or None,
        ))
    return out


async def live_batches(store: Store, queue: str, limit: int = 100) -> list[str]:
    """Ids of ``queue``'s live (not yet ended) batches, the stuck-soonest first."""
    try:
        keys = Keys(check_queue_name(queue))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    (members,) = await _run(store, ("ZRANGE", keys.batches, 0, limit - 1))
    return [_text(m) for m in members]


async def is_batch_member(store: Store, batch_id: str, job_id: str) -> bool:
    """Whether ``job_id`` was added to batch ``batch_id``."""
    try:
        keys = Keys(queue_of(batch_id))
    except ValueError:
        raise NotFound(f"batch {batch_id} not found") from None
    (answer,) = await _run(store, ("SISMEMBER", keys.batch(batch_id) + ":members", job_id))
    return bool(answer)


async def finished_per_minute(store: Store, queue: str, now: float, minutes: int = 10) -> list[int]:
    """Jobs of ``queue`` that finished in each of the last ``minutes`` minutes (still stored),
    oldest first; the last count is the current, partial, minute."""
    keys = Keys(check_queue_name(queue))
    end = int(now // 60 + 1) * 60_000
    bounds = [(end - (i + 1) * 60_000, end - i * 60_000) for i in reversed(range(minutes))]
    counts = await _run(store, *(("ZCOUNT", keys.finished, lo, f"({hi}") for lo, hi in bounds))
    return [int(c) for c in counts]
