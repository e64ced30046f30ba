"""Clients for submitting, inspecting, cancelling and retrying jobs.

:class:`Client` is plain synchronous (scripts, web apps, the CLI);
:class:`AsyncClient` is for async code under trio or asyncio
(``async with AsyncClient.open(url) as client``), or over a daemon's own store. Both submit by job *type*: the type's
defaults (queue, phases, timeout, retries, validator) come from an
:class:`~supervisor.app.App` given to the client, or else from what running
daemons published; an unknown type is refused (:class:`BadInput`) before
anything is written.

::

    with Client("redis://127.0.0.1:6379/0") as client:
        job = client.submit("thumbnail", {"url": "https://example.org/a.png"})
        print(client.status(job).state)

Operations: :meth:`Client.jobs` lists and searches jobs a page at a time (a stable cursor);
:meth:`Client.retry_matching` retries every job in a state matching filters (``dry_run=True``
lists them); :meth:`Client.pause_queue` / :meth:`Client.resume_queue`;
:meth:`Client.redeliver_dead` re-sends dead webhook deliveries (same ``webhook-id``). The
filters are ``queue`` (a name, a list, or ``None`` for every queue), ``type`` and ``since``
(epoch seconds, a datetime, or ``"30m"``, ``"2h"``, ``"7d"``, an ISO 8601 time).

Waiting: ``client.wait(job_id, timeout=...)`` returns the job's view once it is terminal,
following its queue's event stream (no polling); :class:`WaitTimeout` (a ``TimeoutError``)
when the timeout passes first. It needs redis-server (see :mod:`adapters.job_wait`).

Batches: :meth:`Client.create_batch` takes the options of SPEC.md (expected
total, threshold percent, progress every K completions, stuck-after seconds,
webhook URL), validated before anything is written; members join at submit
(``batch=``) or with :meth:`Client.add_to_batch`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobvisor.adapters.backend import Backend, MemoryServers, open_backend
from jobvisor.adapters.destinations import DestinationPolicy
from jobvisor.adapters.errors import WaitTimeout
from jobvisor.adapters.listing import JobPage, search_jobs
from jobvisor.adapters.operations import (
    BulkResult,
    QueuePause,
    drive,
    parse_since,
    pause_queue,
    queue_paused,
    redeliver_dead,
    resume_queue,
    retry_matching,
)
from jobvisor.adapters.records import BatchView, DeliveryView, JobSpec, JobView
from jobvisor.adapters.replies import Created, Exists, Transition
from jobvisor.adapters.schedules import ScheduleView
from jobvisor.adapters.store import Store, SyncStore

from .client_specs import build_batch_spec, build_spec, schedule_spec, submit_span, submitter_policy
from .flows import AsyncFlowSubmits, FlowSubmits, Step
from .published_types import DEFAULT_TTL, PublishedTypes, merged

if TYPE_CHECKING:  # the CLI's submit imports this module: no trio for an annotation
    from .app import App

__all__ = ["Client", "AsyncClient", "WaitTimeout", "build_spec", "build_batch_spec", "schedule_spec",
           "submitter_policy"]

Since = float | datetime | str | None
"""When a filter's jobs were created from: see :func:`adapters.operations.parse_since`."""


def _queues(queue: str | Iterable[str] | None) -> list[str] | None:
    return None if queue is None else [queue] if isinstance(queue, str) else list(queue)


def _app_types(app: App | None) -> dict[str, dict[str, Any]] | None:
    return app.described_types() if app is not None else None


class Client(FlowSubmits):
    """Synchronous client. ``redis`` is a Redis URL or ``memory://`` (with ``memory``).

    ``allowed_hosts`` (hosts, or ``*.domain``) limits the webhook and validator URLs a
    submit may carry; ``destinations`` is the destination policy they are checked against
    (default: :func:`submitter_policy`, the environment's). The daemon checks again when it
    sends, on the resolved addresses.
    """

    def __init__(
        self, redis: str = "redis://127.0.0.1:6379/0", *, app: App | None = None,
        memory: MemoryServers | None = None, allowed_hosts: Iterable[str] | None = None,
        destinations: DestinationPolicy | None = None, types_ttl: float = DEFAULT_TTL,
    ) -> None:
        self.destinations = destinations if destinations is not None else submitter_policy()
        self.published = PublishedTypes(types_ttl)
        self.store = SyncStore(open_backend(redis, memory=memory))
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    def types(self) -> dict[str, dict[str, Any]]:
        """Every job type a submit may name: the app's, and what daemons published (read now)."""
        return merged(self.published.keep(self.store.job_types()), _app_types(self.app))

    def submit_types(self, type: str) -> dict[str, dict[str, Any]]:
        """The types a submit of ``type`` is checked against: the app's when it has ``type``,
        else the published ones read within ``types_ttl`` seconds, else read now."""
        app_types = _app_types(self.app)
        if app_types and type in app_types:
            return app_types
        published = self.published.serves(type)
        return merged(published, app_types) if published is not None else self.types()

    def submit(self, type: str, input: Any = None, **options: Any) -> str:
        """Submit a job; returns its id (the same id again for a repeated idempotency key).
        One round trip when the type's defaults are known (see :mod:`supervisor.published_types`)."""
        return self.submit_spec(self.build_step(Step(type, input, options))).id

    def build_step(self, step: Step) -> JobSpec:
        """The checked spec of one job (its type's defaults and ``step``'s options)."""
        return build_spec(self.submit_types(step.type), step.type, step.input, allowed_hosts=self.allowed_hosts,
                          destinations=self.destinations, **step.options)

    def submit_spec(self, spec: JobSpec) -> Created | Exists:
        with submit_span(spec) as traced:
            return self.store.submit(traced)

    def status(self, job_id: str) -> JobView:
        return self.store.get_job(job_id)

    def deliveries(self, job_id: str) -> list[DeliveryView]:
        """The job's webhook deliveries (every notification of every epoch), oldest first."""
        return self.store.job_deliveries(job_id, self.store.get_job(job_id).epoch)

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """Block until the job is terminal and return its view; :class:`WaitTimeout` (a
        ``TimeoutError``) after ``timeout`` seconds (``None``: no limit). redis-server only."""
        from jobvisor.adapters.job_wait import block_cap, direct_reader, wait_job

        backend = self.store.backend
        return drive(wait_job(self.store.store, job_id, direct_reader(self.store.store, backend),
                              limit=timeout, block_cap=block_cap(backend)))

    def cancel(self, job_id: str) -> Transition:
        return self.store.cancel(job_id)

    def retry(self, job_id: str, *, from_start: bool = False) -> Transition:
        return self.store.retry(job_id, from_start=from_start)

    def events(self, queue: str = "default", after: str = "-", count: int = 1000) -> list[Any]:
        return self.store.events(queue, after, count)

    def queue_counts(self, queue: str = "default") -> dict[str, int]:
        return self.store.queue_counts(queue)

    # -- operations ------------------------------------------------------------------

    def jobs(self, queue: str | Iterable[str] | None = None, *, state: str | None = None, type: str | None = None,
             since: Since = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        """One page of the jobs matching every filter given; pass ``next_cursor`` for the next."""
        return drive(search_jobs(self.store.store, _queues(queue), state=state, job_type=type,
                                 created_after=parse_since(since), cursor=cursor, limit=limit))

    def retry_matching(self, state: str, *, queue: str | Iterable[str] | None = None, type: str | None = None,
                       since: Since = None, from_start: bool = False, dry_run: bool = False) -> BulkResult:
        """Retry every job in ``state`` matching the filters, each through the guarded retry."""
        return drive(retry_matching(self.store.store, state=state, queues=_queues(queue), job_type=type,
                                    since=parse_since(since), from_start=from_start, dry_run=dry_run))

    def pause_queue(self, queue: str) -> Transition:
        """Stop claims of ``queue`` (``moved``, or ``absorbed`` when paused already)."""
        return drive(pause_queue(self.store.store, queue))

    def resume_queue(self, queue: str) -> Transition:
        """Let ``queue`` be claimed again; its idle workers are woken."""
        return drive(resume_queue(self.store.store, queue))

    def queue_paused(self, queue: str) -> QueuePause:
        return drive(queue_paused(self.store.store, queue))

    def redeliver(self, delivery_id: str) -> Transition:
        """Re-send one dead delivery (same ``webhook-id``, a fresh attempt budget)."""
        return self.store.redeliver(delivery_id)

    def redeliver_dead(self, job_id: str | None = None, *, queue: str | Iterable[str] | None = None,
                       type: str | None = None, since: Since = None, dry_run: bool = False) -> BulkResult:
        """Re-send the dead deliveries of one job, or of every job matching the filters."""
        return drive(redeliver_dead(self.store.store, job_id=job_id, queues=_queues(queue), job_type=type,
                                    since=parse_since(since), dry_run=dry_run))

    # -- batches ----------------------------------------------------------------

    def create_batch(self, **options: Any) -> str:
        """Create a batch (``queue``, ``expected``, ``threshold``, ``progress_every``,
        ``stuck_after``, ``webhook_url``, ``notify``); returns its id."""
        return self.store.create_batch(build_batch_spec(destinations=self.destinations, **options)).id

    def add_to_batch(self, batch_id: str, job_ids: list[str]) -> int:
        """Add existing jobs; returns how many were new members."""
        return self.store.add_to_batch(batch_id, job_ids).added

    def close_batch(self, batch_id: str) -> Transition:
        return self.store.close_batch(batch_id)

    def batch_status(self, batch_id: str) -> BatchView:
        return self.store.get_batch(batch_id)

    def cancel_batch(self, batch_id: str) -> Transition:
        return self.store.cancel_batch(batch_id)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schedules --------------------------------------------------------------

    def add_schedule(self, name: str, type: str, input: Any = None, **options: Any) -> Created | Transition:
        """Add (or redefine) the schedule ``name``: a job of ``type`` at each tick (``cron``
        with ``tz``, or ``every`` seconds; ``queue``, ``missed``, ``catch_up_max``, ``grace``).
        Checked before anything is written (:class:`BadInput` naming the field)."""
        return self.store.add_schedule(schedule_spec(self.submit_types(type), name, type, input, **options))

    def schedules(self, queue: str | None = None) -> list[ScheduleView]:
        return self.store.list_schedules(queue)

    def schedule(self, name: str) -> ScheduleView:
        return self.store.get_schedule(name)

    def pause_schedule(self, name: str) -> Transition:
        return self.store.pause_schedule(name)

    def resume_schedule(self, name: str) -> Transition:
        return self.store.resume_schedule(name)

    def remove_schedule(self, name: str) -> Transition:
        return self.store.remove_schedule(name)


class AsyncClient(AsyncFlowSubmits):
    """The same operations for async code, over any :class:`Store`.

    ``async with AsyncClient.open(url) as client:`` opens a store of its own in the caller's
    loop, trio or asyncio alike (coredis on anyio; no thread). ``AsyncClient(daemon.store)``
    shares an embedding trio daemon's store actor.
    """

    def __init__(self, store: Store, *, app: App | None = None,
                 allowed_hosts: Iterable[str] | None = None, destinations: DestinationPolicy | None = None,
                 types_ttl: float = DEFAULT_TTL) -> None:
        self.destinations = destinations if destinations is not None else submitter_policy()
        self.published = PublishedTypes(types_ttl)
        self.store = store
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, redis: str = "redis://127.0.0.1:6379/0", *, app: App | None = None,
        memory: MemoryServers | None = None, allowed_hosts: Iterable[str] | None = None,
        destinations: DestinationPolicy | None = None, redis_timeout: float = 5.0,
        types_ttl: float = DEFAULT_TTL,
    ) -> AsyncIterator[AsyncClient]:
        """A client with a store of its own for ``redis`` (a Redis URL or ``memory://``), in the
        running loop (trio or asyncio), closed when the context ends. ``redis_timeout``: seconds
        one round trip (and one connect) may take."""
        from jobvisor.adapters.client_store import open_store

        async with open_store(redis, memory=memory, redis_timeout=redis_timeout) as store:
            yield cls(store, app=app, allowed_hosts=allowed_hosts, destinations=destinations, types_ttl=types_ttl)

    # The API, matching Client.wait: the bound also sets each blocking read's wait, so
    # a read never outlives it (a cancel scope around the call works as well).
    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:  # noqa: ASYNC109
        """The job's view once it is terminal (its queue's event stream followed, no polling);
        :class:`WaitTimeout` (a ``TimeoutError``) after ``timeout`` seconds (``None``: no
        limit). redis-server only."""
        from jobvisor.adapters.job_wait import block_cap, follower_reader, wait_job

        backend: Backend = getattr(self.store.executor, "backend")  # noqa: B009 (not in the Executor protocol)
        return await wait_job(self.store, job_id, follower_reader(backend), limit=timeout,
                              block_cap=block_cap(backend))

    async def types(self) -> dict[str, dict[str, Any]]:
        """Every job type a submit may name: the app's, and what daemons published (read now)."""
        return merged(self.published.keep(await self.store.job_types()), _app_types(self.app))

    async def submit_types(self, type: str) -> dict[str, dict[str, Any]]:
        """As :meth:`Client.submit_types`."""
        app_types = _app_types(self.app)
        if app_types and type in app_types:
            return app_types
        published = self.published.serves(type)
        return merged(published, app_types) if published is not None else await self.types()

    async def submit(self, type: str, input: Any = None, **options: Any) -> str:
        spec = await self.build_step(Step(type, input, options))
        with submit_span(spec) as traced:
            return (await self.store.submit(traced)).id

    async def build_step(self, step: Step) -> JobSpec:
        """As :meth:`Client.build_step`."""
        return build_spec(await self.submit_types(step.type), step.type, step.input,
                          allowed_hosts=self.allowed_hosts, destinations=self.destinations, **step.options)

    async def status(self, job_id: str) -> JobView:
        return await self.store.get_job(job_id)

    async def deliveries(self, job_id: str) -> list[DeliveryView]:
        return await self.store.job_deliveries(job_id, (await self.store.get_job(job_id)).epoch)

    async def cancel(self, job_id: str) -> Transition:
        return await self.store.cancel(job_id)

    async def retry(self, job_id: str, *, from_start: bool = False) -> Transition:
        return await self.store.retry(job_id, from_start=from_start)

    async def events(self, queue: str = "default", after: str = "-", count: int = 1000) -> list[Any]:
        return await self.store.events(queue, after, count)

    async def queue_counts(self, queue: str = "default") -> dict[str, int]:
        return await self.store.queue_counts(queue)

    async def create_batch(self, **options: Any) -> str:
        return (await self.store.create_batch(build_batch_spec(destinations=self.destinations, **options))).id

    async def add_to_batch(self, batch_id: str, job_ids: list[str]) -> int:
        return (await self.store.add_to_batch(batch_id, job_ids)).added

    async def close_batch(self, batch_id: str) -> Transition:
        return await self.store.close_batch(batch_id)

    async def batch_status(self, batch_id: str) -> BatchView:
        return await self.store.get_batch(batch_id)

    async def cancel_batch(self, batch_id: str) -> Transition:
        return await self.store.cancel_batch(batch_id)

    async def jobs(self, queue: str | Iterable[str] | None = None, *, state: str | None = None,
                   type: str | None = None, since: Since = None, limit: int = 50,
                   cursor: str | None = None) -> JobPage:
        return await search_jobs(self.store, _queues(queue), state=state, job_type=type,
                                 created_after=parse_since(since), cursor=cursor, limit=limit)

    async def retry_matching(self, state: str, *, queue: str | Iterable[str] | None = None,
                             type: str | None = None, since: Since = None, from_start: bool = False,
                             dry_run: bool = False) -> BulkResult:
        return await retry_matching(self.store, state=state, queues=_queues(queue), job_type=type,
                                    since=parse_since(since), from_start=from_start, dry_run=dry_run)

    async def pause_queue(self, queue: str) -> Transition:
        return await pause_queue(self.store, queue)

    async def resume_queue(self, queue: str) -> Transition:
        return await resume_queue(self.store, queue)

    async def queue_paused(self, queue: str) -> QueuePause:
        return await queue_paused(self.store, queue)

    async def redeliver(self, delivery_id: str) -> Transition:
        return await self.store.redeliver(delivery_id)

    async def redeliver_dead(self, job_id: str | None = None, *, queue: str | Iterable[str] | None = None,
                             type: str | None = None, since: Since = None, dry_run: bool = False) -> BulkResult:
        return await redeliver_dead(self.store, job_id=job_id, queues=_queues(queue), job_type=type,
                                    since=parse_since(since), dry_run=dry_run)

    # -- schedules --------------------------------------------------------------

    async def add_schedule(self, name: str, type: str, input: Any = None, **options: Any) -> Created | Transition:
        """As :meth:`Client.add_schedule`."""
        return await self.store.add_schedule(schedule_spec(await self.submit_types(type), name, type, input,
                                                           **options))

    async def schedules(self, queue: str | None = None) -> list[ScheduleView]:
        return await self.store.list_schedules(queue)

    async def schedule(self, name: str) -> ScheduleView:
        return await self.store.get_schedule(name)

    async def pause_schedule(self, name: str) -> Transition:
        return await self.store.pause_schedule(name)

    async def resume_schedule(self, name: str) -> Transition:
        return await self.store.resume_schedule(name)

    async def remove_schedule(self, name: str) -> Transition:
        return await self.store.remove_schedule(name)
