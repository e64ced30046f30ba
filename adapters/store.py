"""The store: every guarded transition and every read, as one API.

:class:`Store` is written once, as ``async`` methods over an *executor*:

* :class:`~adapters.store_actor.StoreActor` (the daemon's): requests from
  every actor are batched into pipelines by one trio task that owns the
  connection;
* :class:`DirectExecutor`: each call runs at once on the calling thread
  (the embedded store inline; redis-server blocking).

:class:`SyncStore` is the plain synchronous client: it drives the same
coroutines over a :class:`DirectExecutor`, where they never suspend, so
there is one implementation of each operation, not two.

Payload hygiene: results, errors, phase results and service ids pass
through the store's :class:`~adapters.sanitize.Sanitizer` before they are
sent (so attempt records, built from them in Lua, are sanitized too); job
input never does, and input over ``max_input_bytes`` is refused.

Every method that changes state returns :class:`~adapters.records.Reply`
(or a list of claimed items) whose ``kind`` tells moved, absorbed, blocked,
invalid, stale or not_found; only refusals the caller must fix raise
(:class:`~adapters.errors.Rejected`, :class:`~adapters.errors.NotFound`).
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from jobvisor.machines import JOB

from . import routing
from .backend import Backend, Call, CommandCall, OpsCall
from .errors import BadInput, NotFound, Rejected, StoreError
from .filing import CATEGORY_OF, Problem
from .ids import IdGenerator, new_token
from .keys import QUEUE_NAME, QUEUES, REGISTRY, TYPES, Keys, RegistryKeys, check_queue_name, events_key, queue_of
from .records import (
    MAX_INPUT_BYTES,
    Attempt,
    BatchSpec,
    BatchView,
    ClaimedJob,
    Delivery,
    DeliveryView,
    Event,
    Expired,
    JobSpec,
    JobView,
    LostWorker,
    Reply,
    SlotView,
    Unfiled,
    ValidationCheck,
    ValidationTask,
    WorkerView,
)
from .sanitize import Sanitizer

__all__ = ["Store", "SyncStore", "Executor", "DirectExecutor", "Due", "IDEMPOTENCY_TTL"]

IDEMPOTENCY_TTL = 86400.0
"""How long an idempotency key keeps returning the same job (seconds)."""

_json = msgspec.json.Encoder()
_decode_any = msgspec.json.Decoder()
T = TypeVar("T")
JOB_NOTIFICATIONS = tuple(JOB.notifications.values())  # every event type a job's outbox row can have


@dataclass(frozen=True, slots=True)
class Due(Generic[T]):
    """Work taken from an index, and when the next item there falls due (epoch seconds)."""

    items: list[T]
    next_due: float | None


class Executor(Protocol):
    """Runs calls; one result (or exception instance) per call, in order."""

    async def execute(self, calls: Sequence[Call]) -> list[Any]: ...

    def now(self) -> float: ...


class DirectExecutor:
    """Runs each call at once, blocking, on the caller's thread."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.now = clock

    async def execute(self, calls: Sequence[Call]) -> list[Any]:
        return self.backend.run(calls, int(self.now() * 1000))


def _one(result: Any) -> Any:
    if isinstance(result, Exception):
        raise result
    return result


def _b2s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


MAX_BATCH_ADD = 1000
"""Jobs one ``add_to_batch`` call may add: the call is one script, and a script holds Redis."""


class Store:
    """jobvisor's store API over an executor (see the module docstring)."""

    def __init__(
        self,
        executor: Executor,
        *,
        max_input_bytes: int = MAX_INPUT_BYTES,
        sanitizer: Sanitizer | None = Sanitizer(),
        randbytes: Callable[[int], bytes] = os.urandom,
        rng: random.Random | None = None,
        observers: Sequence[Callable[[Sequence[Reply]], None]] = (),
    ) -> None:
        self.executor = executor
        self.observers = list(observers)
        self._known_queues: set[str] = set()
        self.max_input_bytes = max_input_bytes
        self.sanitizer = sanitizer
        self.randbytes = randbytes
        self.ids = IdGenerator(randbytes)
        self.rng = rng or random.Random()

    # -- plumbing -----------------------------------------------------------

    async def _ops(self, queue: str, ops: Sequence[dict[str, Any]]) -> list[Reply]:
        call = OpsCall(queue, _json.encode(ops), len(ops))
        replies: list[Reply] = _one((await self.executor.execute([call]))[0])
        for reply in replies:
            if reply.kind == "error":
                raise StoreError(f"store script failed: {reply.error}")
        for observe in self.observers:
            observe(replies)
        return replies

    async def _op(self, queue: str, op: dict[str, Any]) -> Reply:
        return (await self._ops(queue, [op]))[0]

    async def _command(self, *args: Any) -> Any:
        return _one((await self.executor.execute([CommandCall(args)]))[0])

    async def _commands(self, calls: Iterable[tuple[Any, ...]]) -> list[Any]:
        return [_one(r) for r in await self.executor.execute([CommandCall(c) for c in calls])]

    def _now_ms(self) -> int:
        return int(self.executor.now() * 1000)

    @staticmethod
    def _queue_of(object_id: str) -> str:
        try:
            return queue_of(object_id)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    def _clean(self, value: Any) -> str:
        """``value`` as the JSON that is stored: sanitized (unless the sanitizer is off)."""
        if self.sanitizer is not None:
            value = self.sanitizer.sanitize(value)
        return _json.encode(value).decode()

    def _clean_raw(self, raw: bytes) -> str:
        return (raw if self.sanitizer is None else self.sanitizer.sanitize_json(raw)).decode()

    @staticmethod
    def _rejected(reply: Reply) -> Reply:
        if reply.kind == "rejected":
            raise Rejected(reply.error)
        if reply.kind == "not_found":
            raise NotFound(f"{reply.error or 'object'} {reply.id} not found")
        return reply

    # -- submit ---------------------------------------------------------------

    def _submit_op(self, spec: JobSpec) -> dict[str, Any]:
        encoded = _json.encode(spec.input)
        if len(encoded) > self.max_input_bytes:
            raise BadInput(
                f"input: {len(encoded)} bytes is over the limit of {self.max_input_bytes} bytes"
            )
        if spec.batch is not None:
            try:
                batch_queue = queue_of(spec.batch)
            except ValueError:
                raise BadInput(f"batch: {spec.batch!r} is not a jobvisor id (<queue>.<id>)") from None
            if batch_queue != spec.queue:
                raise BadInput(f"batch: {spec.batch} is not in queue {spec.queue!r}")
        return {
            "op": "submit",
            "id": self.ids.new_id(spec.queue, self._now_ms()),
            "type": spec.type,
            "input": encoded.decode(),
            "priority": spec.priority,
            "max_retries": spec.max_retries,
            "timeout_ms": int(spec.timeout * 1000),
            "backoff_ms": int(spec.backoff * 1000),
            "backoff_max_ms": int(spec.backoff_max * 1000),
            "delay_ms": int(spec.delay * 1000),
            "phases": ",".join(f"{p}=pending" for p in spec.phases),
            "has_validator": spec.has_validator or spec.validator_url is not None,
            "validator_url": spec.validator_url or "",
            "notify": spec.notify or spec.webhook_url is not None,
            "webhook_url": spec.webhook_url or "",
            "idem": spec.idempotency_key or "",
            "idem_ttl_ms": int(IDEMPOTENCY_TTL * 1000),
            "batch": spec.batch or "",
        }

    async def submit(self, spec: JobSpec) -> Reply:
        """Create a job (``created``), or return the one its idempotency key made (``exists``)."""
        return (await self.submit_many([spec]))[0]

    async def submit_many(self, specs: Sequence[JobSpec]) -> list[Reply]:
        """Submit several jobs; one script call per queue, in order."""
        by_queue: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i, spec in enumerate(specs):
            by_queue.setdefault(spec.queue, []).append((i, self._submit_op(spec)))
        replies: list[Reply | None] = [None] * len(specs)
        calls: list[Call] = [OpsCall(q, _json.encode([op for _, op in items]), len(items))
                             for q, items in by_queue.items()]
        results = await self.executor.execute(calls)
        for (queue, items), result in zip(by_queue.items(), results, strict=True):
            answers = _one(result)
            for observe in self.observers:
                observe(answers)
            if queue not in self._known_queues and any(a.kind == "created" for a in answers):
                await self._command("SADD", QUEUES, queue)
                self._known_queues.add(queue)
            for (i, _), reply in zip(items, answers, strict=True):
                replies[i] = self._rejected(reply)
        return [r for r in replies if r is not None]

    # -- workers ----------------------------------------------------------------

    def claim_nonce(self) -> str:
        """A fresh nonce for :meth:`claim`: keep it to :meth:`reclaim` if the answer is lost."""
        return new_token(self.randbytes)

    async def claim(
        self, queue: str, worker: str, n: int = 1, lease: float = 30.0, *,
        types: Iterable[str] | None = None, nonce: str | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to ``n`` queued jobs by priority, each under a new lease token
        (``<nonce>.<attempt>``).

        ``types`` are the job types the caller has handlers for: only jobs of those
        types are claimed, best priority (then oldest) first across them; jobs of
        other types stay queued for a daemon that serves them. ``None`` claims any
        type (tools and tests); a daemon always names its types.
        """
        op: dict[str, Any] = {"op": "claim", "n": n, "worker": worker, "lease_ms": int(lease * 1000),
                              "nonce": nonce or self.claim_nonce()}
        if types is not None:
            op["types"] = sorted(set(types))
            if not op["types"]:
                return []
        reply = await self._op(queue, op)
        return [msgspec.convert(j, ClaimedJob) for j in reply.jobs]

    async def reclaim(self, queue: str, worker: str, nonce: str) -> list[ClaimedJob]:
        """The jobs a claim with ``nonce`` leased to ``worker`` and that it still holds:
        for a claim whose answer never arrived (its outcome unknown). Writes nothing."""
        reply = await self._op(queue, {"op": "reclaim", "worker": worker, "nonce": nonce})
        return [msgspec.convert(j, ClaimedJob) for j in reply.jobs]

    async def report(
        self,
        job_id: str,
        token: str,
        trigger: str,
        *,
        result: Any = None,
        error: Any = None,
        raw_result: bytes | None = None,
    ) -> Reply:
        """The worker's outcome (``complete``, ``fail``, ``timeout``), fenced by ``token``."""
        op: dict[str, Any] = {"op": "report", "id": job_id, "token": token, "trigger": trigger,
                              "jitter": self.rng.random()}
        if raw_result is not None:
            op["result"] = self._clean_raw(raw_result)
        elif result is not None or trigger == "complete":
            op["result"] = self._clean(result)
        if error is not None:
            op["error"] = self._clean(error)
        return await self._op(self._queue_of(job_id), op)

    async def complete(self, job_id: str, token: str, result: Any = None) -> Reply:
        return await self.report(job_id, token, "complete", result=result)

    async def fail(self, job_id: str, token: str, error: Any) -> Reply:
        return await self.report(job_id, token, "fail", error=error)

    async def renew(self, job_id: str, token: str, lease: float) -> Reply:
        """Extend the lease; ``stale``/``absorbed`` tells the worker it lost the job."""
        return await self._op(
            self._queue_of(job_id),
            {"op": "renew", "id": job_id, "token": token, "lease_ms": int(lease * 1000)},
        )

    async def phase(self, job_id: str, token: str, name: str, trigger: str, result: Any = None) -> Reply:
        """A phase ``start``s or ``complete``s (with its result), fenced by ``token``."""
        op: dict[str, Any] = {"op": "phase", "id": job_id, "token": token, "name": name, "trigger": trigger}
        if trigger == "complete":
            op["result"] = self._clean(result)
        return self._rejected(await self._op(self._queue_of(job_id), op))

    async def record_service_job_id(self, job_id: str, token: str, service_job_id: str) -> Reply:
        return await self._op(
            self._queue_of(job_id),
            {"op": "service_id", "id": job_id, "token": token,
             "service_job_id": self.sanitizer.sanitize_text(service_job_id) if self.sanitizer else service_job_id},
        )

    # -- operator and system triggers ---------------------------------------------

    async def trigger(self, job_id: str, trigger: str, **extra: Any) -> Reply:
        """An unfenced job trigger: cancel, retry, retry_from_start, validation results."""
        op = {"op": "trigger", "id": job_id, "trigger": trigger, "jitter": self.rng.random(), **extra}
        return self._rejected(await self._op(self._queue_of(job_id), op))

    async def cancel(self, job_id: str) -> Reply:
        return await self.trigger(job_id, "cancel")

    async def retry(self, job_id: str, *, from_start: bool = False) -> Reply:
        return await self.trigger(job_id, "retry_from_start" if from_start else "retry")

    async def wake(self, queue: str, n: int = 1000) -> Reply:
        """Move scheduled jobs whose time has come to queued; ``next_due`` is the next time."""
        return await self._op(queue, {"op": "wake", "n": n})

    async def expired(self, queue: str, n: int = 100, offset: int = 0, *,
                      gap: float = 0.0, lease: float = 0.0) -> list[Expired]:
        """Active jobs whose lease deadline has passed and that no inspection holds.

        Oldest deadline first; ``offset`` skips that many (the ones a caller leaves for later).
        With ``gap``: when no sweep reached the queue for longer than ``gap`` seconds (the
        store was away), every lease first gets ``lease`` seconds from now (README, "Redis
        outages"); this is the watchdog's call.
        """
        reply = await self._op(queue, {"op": "expired", "n": n, "offset": offset,
                                       "gap_ms": int(gap * 1000), "lease_ms": int(lease * 1000)})
        return [msgspec.convert(j, Expired) for j in reply.jobs]

    async def inspect(self, job_id: str, token: str, *, hold: float, inspector: str) -> Reply:
        """Take an expired lease in hand for ``hold`` seconds to ask the external service.

        ``inspecting`` when this caller holds it now: no other watchdog sees the job
        until the hold ends, and the decision must present ``inspector``. ``skipped``
        when the lease was renewed, taken, or is held by another inspection.
        """
        return await self._op(
            self._queue_of(job_id),
            {"op": "inspect", "id": job_id, "token": token, "hold_ms": int(hold * 1000),
             "inspector": inspector},
        )

    async def expire(
        self, job_id: str, token: str, trigger: str = "lease_expired", *,
        result: Any = None, lease: float | None = None, reason: str | None = None,
        inspector: str | None = None, cause: str | None = None, error: Any = None,
    ) -> Reply:
        """The watchdog's decision on an expired lease it saw with ``token``.

        ``trigger`` is ``lease_expired`` (retry or ``failed``), ``complete`` (the
        external service finished it: completed here, or validating when the type
        has a validator), ``timeout`` (past the job's timeout) or ``extend`` (still
        running there; never past the attempt's timeout). ``cause`` names why, on
        the transition's event; ``error`` goes in the attempt record. After
        :meth:`inspect`, pass its ``inspector``. ``skipped`` when another watchdog
        or the worker got there first.
        """
        op: dict[str, Any] = {"op": "expire", "id": job_id, "token": token, "trigger": trigger,
                              "jitter": self.rng.random()}
        if result is not None or trigger == "complete":
            op["result"] = self._clean(result)
        if lease is not None:
            op["lease_ms"] = int(lease * 1000)
        if reason is not None:
            op["reason"] = reason
        if inspector is not None:
            op["inspector"] = inspector
        if cause is not None:
            op["cause"] = cause
        if error is not None:
            op["error"] = _json.encode(error).decode()
        return await self._op(self._queue_of(job_id), op)

    # -- the registry of daemons ---------------------------------------------------------

    async def heartbeat(
        self, daemon_id: str, fields: dict[str, str], *, ttl: float, start: bool = False
    ) -> Reply:
        """Register (``start``) or refresh a daemon; it is live for ``ttl`` seconds more.

        ``registered``, ``alive``, or ``returned`` when it had been declared lost.
        """
        flat = [x for k, v in fields.items() for x in (k, v)]
        return await self._op(
            REGISTRY,
            {"op": "heartbeat", "id": daemon_id, "fields": flat, "ttl_ms": int(ttl * 1000), "start": start},
        )

    async def worker_stopped(self, daemon_id: str) -> Reply:
        """A daemon shutting down leaves the registry (never declared lost)."""
        return await self._op(REGISTRY, {"op": "worker_stop", "id": daemon_id})

    async def declare_lost_workers(self, n: int = 100, *, gap: float = 0.0, lease: float = 0.0) -> list[LostWorker]:
        """Daemons past their heartbeat deadline, each declared lost by exactly one caller;
        ``gap`` and ``lease`` as for :meth:`expired` (a store outage re-arms heartbeats)."""
        reply = await self._op(REGISTRY, {"op": "workers_lost", "n": n,
                                          "gap_ms": int(gap * 1000), "lease_ms": int(lease * 1000)})
        return [msgspec.convert(w, LostWorker) for w in reply.jobs]

    async def workers(self, *, include_gone: bool = False, gone_limit: int = 100) -> list[WorkerView]:
        """Live daemons (oldest first), then, with ``include_gone``, the latest stopped or lost."""
        live = await self._command("ZRANGE", RegistryKeys.live, 0, -1)
        ids = [_b2s(i) for i in live]
        if include_gone:
            gone = await self._command("ZREVRANGE", RegistryKeys.gone, 0, gone_limit - 1)
            ids += [_b2s(i) for i in gone if _b2s(i) not in ids]
        if not ids:
            return []
        rows = await self._commands(("HGETALL", RegistryKeys.daemon(i)) for i in ids)
        now = self.executor.now()
        return [worker_view({_b2s(k): _b2s(v) for k, v in row.items()}, now) for row in rows if row]

    # -- batches -----------------------------------------------------------------

    async def create_batch(self, spec: BatchSpec) -> Reply:
        """Create a batch (``created``; ``state`` is ``completed`` at once when it expects no members)."""
        op = {
            "op": "batch_create",
            "id": self.ids.new_id(spec.queue, self._now_ms()),
            "expected": "" if spec.expected is None else spec.expected,
            "threshold": spec.threshold,
            "progress_every": spec.progress_every or 0,
            "stuck_after_ms": int((spec.stuck_after or 0) * 1000),
            "notify": spec.notify or spec.webhook_url is not None,
            "webhook_url": spec.webhook_url or "",
        }
        await self._command("SADD", QUEUES, spec.queue)
        return await self._op(spec.queue, op)

    async def add_to_batch(self, batch_id: str, job_ids: Sequence[str]) -> Reply:
        """Add existing jobs (``added`` counts the new ones); members already finished are counted.

        Refused, with nothing written (:class:`Rejected`), when the batch is closed or
        finalized, when a job belongs to another batch, or when more members than the
        expected total would result; :class:`NotFound` for an unknown batch or job.
        """
        queue = self._queue_of(batch_id)
        if len(job_ids) > MAX_BATCH_ADD:
            raise BadInput(f"job_ids: {len(job_ids)} jobs in one add; at most {MAX_BATCH_ADD} per call "
                           "(one call is one atomic step that holds Redis)")
        for job_id in job_ids:
            if self._queue_of(job_id) != queue:
                raise BadInput(f"jobs: {job_id} is not in the batch's queue {queue!r}")
        return self._rejected(await self._op(queue, {"op": "batch_add", "id": batch_id, "jobs": list(job_ids)}))

    async def close_batch(self, batch_id: str) -> Reply:
        """No more members: the size is now known, so the batch may finalize at once."""
        return self._rejected(await self._op(self._queue_of(batch_id), {"op": "batch_close", "id": batch_id}))

    async def finalize_batch(self, batch_id: str, *, stuck: bool = False) -> Reply:
        """The guarded finalize: ``moved`` (to its terminal state) once; ``blocked`` while not
        ready, ``absorbed`` once terminal, both writing nothing."""
        return self._rejected(
            await self._op(self._queue_of(batch_id), {"op": "batch_finalize", "id": batch_id, "stuck": stuck})
        )

    async def cancel_batch(self, batch_id: str) -> Reply:
        """Cancel the batch and every unfinished member (``members_cancelled``)."""
        return self._rejected(await self._op(self._queue_of(batch_id), {"op": "batch_cancel", "id": batch_id}))

    async def sweep_batches(self, queue: str, n: int = 100, *, ready_from: int | None = None) -> Reply:
        """The batch monitor's sweep, through the guarded finalize (``swept``).

        Finalizes up to ``n`` batches with no member activity for their stuck-after
        time. With ``ready_from``, also tries the ordinary finalize on a page of ``n``
        live batches from that rank (a safety net: a batch that is not ready is left
        untouched); ``cursor`` is where the next page starts. ``batches`` lists the
        batches that moved, ``next_due`` (ms) is the earliest stuck deadline left.
        """
        op: dict[str, Any] = {"op": "batch_sweep", "n": n}
        if ready_from is not None:
            op["ready_from"] = ready_from
        return await self._op(queue, op)

    # -- webhook deliveries ----------------------------------------------------------

    async def take_deliveries(
        self, queue: str, n: int = 50, lease: float = 30.0, *, max_attempts: int = 8
    ) -> list[Delivery]:
        """Due deliveries, each now ``sending`` under a token; out of attempts means ``dead``."""
        return (await self.outbox_due(queue, n, lease, max_attempts=max_attempts)).items

    async def outbox_due(
        self, queue: str, n: int = 50, lease: float = 30.0, *, max_attempts: int = 8
    ) -> Due[Delivery]:
        """:meth:`take_deliveries`, and when the outbox's next delivery falls due."""
        reply = await self._op(
            queue, {"op": "deliveries", "n": n, "lease_ms": int(lease * 1000), "nonce": new_token(self.randbytes),
                    "max_attempts": max_attempts}
        )
        return Due([msgspec.convert(d, Delivery) for d in reply.deliveries], _due(reply))

    async def delivery_outcome(
        self, queue: str, delivery_id: str, token: str, trigger: str, *,
        max_attempts: int, retry_at: float | None = None, status: int | None = None, error: str = "",
    ) -> Reply:
        """``succeed``, ``fail`` (retry at ``retry_at`` while attempts are left), ``reject``, ``release``."""
        op: dict[str, Any] = {"op": "delivered", "id": delivery_id, "token": token, "trigger": trigger,
                              "max_attempts": max_attempts, "error": error, "status": status or ""}
        if retry_at is not None:
            op["retry_at"] = int(retry_at * 1000)
        return await self._op(queue, op)

    # -- filing and retention ------------------------------------------------------------

    async def unfiled(
        self, queue: str, n: int = 100, *, required: dict[str, list[str]] | None = None
    ) -> list[Unfiled]:
        """Finished jobs due to be filed; ``required``: job type -> required output names."""
        reply = await self._op(queue, {"op": "unfiled", "n": n, "required": required or {}})
        return [msgspec.convert(j, Unfiled) for j in reply.jobs]

    async def file_job(self, job: Unfiled, problem: Problem | str) -> Reply:
        """File ``job`` as it was read: ``filed`` once per outcome, else ``absorbed`` or ``skipped``."""
        return (await self.file_jobs([(job, Problem(problem))]))[0]

    async def file_jobs(
        self, decisions: Sequence[tuple[Unfiled, Problem | None]], *, wait: float = 600.0
    ) -> list[Reply]:
        """File each job under its problem in one call per queue; ``None`` looks again in ``wait`` s.

        Replies in order: ``filed`` (exactly one ``job.filed`` event), ``absorbed``
        (already filed at this epoch), ``skipped`` (the job moved on since it was
        read), ``deferred`` or ``not_found``.
        """
        by_queue: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i, (job, problem) in enumerate(decisions):
            op: dict[str, Any] = {"op": "file", "id": job.id, "state": job.state, "epoch": job.epoch}
            if problem is None:
                op["wait_ms"] = int(wait * 1000)
            else:
                op["category"] = CATEGORY_OF[problem].value
                op["problem"] = problem.value
            by_queue.setdefault(self._queue_of(job.id), []).append((i, op))
        replies: list[Reply | None] = [None] * len(decisions)
        for queue, items in by_queue.items():
            answers = await self._ops(queue, [op for _, op in items])
            for (i, _), reply in zip(items, answers, strict=True):
                replies[i] = reply
        return [r for r in replies if r is not None]

    async def filing_counts(self, queue: str) -> tuple[dict[tuple[str, str], int], int]:
        """Filed jobs still stored by (category, problem), and how many wait to be filed."""
        keys = Keys(check_queue_name(queue))
        raw, waiting = await self._commands([("HGETALL", keys.filing), ("ZCARD", keys.unfiled)])
        counts: dict[tuple[str, str], int] = {}
        for field, value in raw.items():
            category, _, problem = _b2s(field).partition(":")
            if int(value):
                counts[(category, problem)] = int(value)
        return counts, int(waiting)

    async def purge(self, queue: str, cutoffs: dict[str, float], n: int = 500) -> Reply:
        """Delete up to ``n`` filed jobs that finished before their state's cutoff (epoch seconds).

        ``jobs`` lists what was deleted (id and state), each with one ``job.deleted`` event.
        """
        pairs = [[state, int(cutoff * 1000)] for state, cutoff in cutoffs.items()]
        return await self._op(queue, {"op": "purge", "n": n, "cutoffs": pairs})

    async def job_deliveries(self, job_id: str, epoch: int) -> list[DeliveryView]:
        """The webhook deliveries of a job's notifications, epochs ``0..epoch``, oldest first."""
        keys = Keys(self._queue_of(job_id))
        ids = [f"{job_id}~{event}~{e}" for e in range(epoch + 1) for event in JOB_NOTIFICATIONS]
        rows = await self._commands(("HGETALL", keys.delivery(i)) for i in ids)
        views = [delivery_view(i, {_b2s(k): _b2s(v) for k, v in raw.items()})
                 for i, raw in zip(ids, rows, strict=True) if raw]
        return sorted(views, key=lambda v: v.created_at)

    # -- validation --------------------------------------------------------------------

    async def validations_due(
        self, queue: str, types: Sequence[str], n: int = 50, lease: float = 30.0
    ) -> Due[ValidationTask]:
        """Take ``validating`` jobs whose next check is due, each under a check token.

        Only jobs of ``types`` (this daemon has their validators) or carrying their own
        validator URL are taken; each is held for ``lease`` seconds.
        """
        reply = await self._op(
            queue, {"op": "validations", "n": n, "lease_ms": int(lease * 1000), "types": list(types),
                    "nonce": new_token(self.randbytes)}
        )
        return Due([msgspec.convert(j, ValidationTask) for j in reply.jobs], _due(reply))

    async def validation_outcome(
        self, job_id: str, token: str, *, ok: bool, status: str = "", reason: str = "",
        max_attempts: int = 5, retry_at: float | None = None, error: Any = None,
    ) -> Reply:
        """Record one check: passed (``validation_passed``), failed (another check due at
        ``retry_at``: ``checked``), or failed on the last of ``max_attempts`` checks
        (``validation_exhausted``, ``error`` stored). Fenced by the check token."""
        op: dict[str, Any] = {"op": "validated", "id": job_id, "token": token, "ok": ok, "status": status,
                              "reason": reason, "max_attempts": max_attempts,
                              "retry_at": int((retry_at if retry_at is not None else self.executor.now()) * 1000)}
        if error is not None:
            op["error"] = _json.encode(error).decode()
        return await self._op(self._queue_of(job_id), op)

    async def release_validation(self, job_id: str, token: str) -> Reply:
        """Give a check back unrecorded (shutdown mid-check): due again at once."""
        return await self._op(self._queue_of(job_id), {"op": "validated", "id": job_id, "token": token,
                                                        "release": True})

    # -- reads ------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobView:
        """The job as stored; :class:`NotFound` when there is none."""
        raw = await self._command("HGETALL", Keys(self._queue_of(job_id)).job(job_id))
        if not raw:
            raise NotFound(f"job {job_id} not found")
        return job_view({_b2s(k): _b2s(v) for k, v in raw.items()})

    async def get_batch(self, batch_id: str) -> BatchView:
        raw = await self._command("HGETALL", Keys(self._queue_of(batch_id)).batch(batch_id))
        if not raw:
            raise NotFound(f"batch {batch_id} not found")
        return batch_view({_b2s(k): _b2s(v) for k, v in raw.items()})

    async def latest_events(self, queue: str, count: int = 100) -> list[Event]:
        """The last ``count`` events of ``queue`` (or of the registry), oldest first."""
        rows = await self._command("XREVRANGE", events_key(queue), "+", "-", "COUNT", count)
        return [event_of(queue, row) for row in reversed(rows)]

    async def events(self, queue: str, after: str = "-", count: int = 1000) -> list[Event]:
        """Events of ``queue`` (or of the registry, ``REGISTRY``) after stream id ``after``
        (exclusive), oldest first."""
        start = after if after == "-" else f"({after}"
        rows = await self._command("XRANGE", events_key(queue), start, "+", "COUNT", count)
        return [event_of(queue, row) for row in rows]

    async def register_types(self, types: dict[str, dict[str, Any]]) -> None:
        """Publish job types and their defaults (``jv:types``) so submitters can check them."""
        if types:
            await self._command("HSET", TYPES, *[x for t, d in types.items() for x in (t, _json.encode(d))])

    async def job_types(self) -> dict[str, dict[str, Any]]:
        raw = await self._command("HGETALL", TYPES)
        return {_b2s(k): _decode_any.decode(v) for k, v in raw.items()}

    async def queues(self) -> list[str]:
        """The queues jobs were submitted to. A name no queue may have (left by an earlier
        version that let a trailing newline through) is skipped: no daemon can serve it."""
        names = (_b2s(q) for q in await self._command("SMEMBERS", QUEUES))
        return sorted(q for q in names if QUEUE_NAME.fullmatch(q))

    async def queue_counts(self, queue: str) -> dict[str, int]:
        """Jobs of ``queue`` per index (``queued`` counts every type, untyped ones included)."""
        keys = Keys(check_queue_name(queue))
        names = ("scheduled", "active", "validating", "finished", "outbox")
        sets = (keys.due, keys.active, keys.validating, keys.finished, keys.outbox)
        by_type, untyped = await self.queued_by_type(queue)
        counts = await self._commands(("ZCARD", key) for key in sets)
        return {"queued": sum(by_type.values()) + untyped,
                **dict(zip(names, (int(c) for c in counts), strict=True))}

    async def queued_by_type(self, queue: str) -> tuple[dict[str, int], int]:
        """Queued jobs of ``queue`` per job type, and how many still sit in the earlier
        versions' untyped index (a claim moves them to their types' indexes)."""
        reply = await self._op(check_queue_name(queue), {"op": "queued"})
        return {str(t): int(c) for t, c in reply.jobs}, reply.n

    async def unserved(self, queues: Iterable[str]) -> dict[str, dict[str, int]]:
        """Per queue, the queued jobs of each type that no live daemon serves (they wait,
        never claimed by a daemon without the handler; see :mod:`adapters.routing`)."""
        workers = await self.workers()
        return {q: routing.unserved(q, (await self.queued_by_type(q))[0], workers) for q in queues}


# -- decoding stored records ------------------------------------------------------------


def _ms(value: str | None) -> float | None:
    return int(value) / 1000 if value else None


def _json_or(value: str | None, default: Any = None) -> Any:
    return _decode_any.decode(value) if value else default


def job_view(h: dict[str, str]) -> JobView:
    """Decode a job hash (strings) into a :class:`JobView`."""
    phases: dict[str, str] = {}
    for part in filter(None, h.get("phases", "").split(",")):
        name, _, state = part.partition("=")
        phases[name] = state
    results = {name: _json_or(h[f"pr:{name}"]) for name in phases if f"pr:{name}" in h}
    attempts = []
    for n in range(1, int(h.get("attempts", 0)) + 1):
        start = _json_or(h.get(f"att:{n}"), {"n": n})
        end = _json_or(h.get(f"atx:{n}"), {})
        record = {**start, **end}
        record["phase_results"] = {name: _json_or(h[f"ap:{n}:{name}"]) for name in phases
                                   if f"ap:{n}:{name}" in h}
        record["started_at"] = record.get("started_at", 0) / 1000
        if record.get("finished_at") is not None:
            record["finished_at"] = record["finished_at"] / 1000
        attempts.append(msgspec.convert(record, Attempt))
    return JobView(
        id=h["id"], queue=h["queue"], type=h["type"], state=h["state"],
        input=_json_or(h.get("input")), priority=int(h.get("priority", 0)),
        max_retries=int(h.get("max_retries", 0)), retry_count=int(h.get("retry_count", 0)),
        attempts=int(h.get("attempts", 0)), epoch=int(h.get("epoch", 0)),
        timeout=int(h.get("timeout_ms", 0)) / 1000, phases=phases, phase_results=results,
        created_at=_ms(h.get("created_at")) or 0.0, updated_at=_ms(h.get("updated_at")) or 0.0,
        finished_at=_ms(h.get("finished_at")), due_at=_ms(h.get("due_at")),
        result=_json_or(h.get("result")), error=_json_or(h.get("error")),
        reason=h.get("reason") or None, batch=h.get("batch") or None,
        service_job_id=h.get("service_job_id") or None, lease_worker=h.get("lease_worker") or None,
        lease_deadline=_ms(h.get("lease_deadline")), validation_status=h.get("validation_status") or None,
        notification=h.get("notification") or None, attempt_records=attempts,
        validation_checks=validation_checks(h), raw=h,
        category=h.get("category") or None, problem=h.get("problem") or None,
        filed_at=_ms(h.get("filed_at")),
    )


def _due(reply: Reply) -> float | None:
    return reply.next_due / 1000 if reply.next_due is not None else None


def validation_checks(h: dict[str, str]) -> list[ValidationCheck]:
    """Every recorded check of a job hash, by epoch then number; times in seconds."""
    checks = []
    for key, value in h.items():
        if key.startswith("vck:"):
            record = _decode_any.decode(value)
            record["at"] = record.get("at", 0) / 1000
            checks.append(msgspec.convert(record, ValidationCheck))
    return sorted(checks, key=lambda c: (c.epoch, c.n))


def delivery_view(delivery_id: str, h: dict[str, str]) -> DeliveryView:
    status = h.get("last_status") or ""
    return DeliveryView(
        id=delivery_id, event=h.get("event", ""), state=h.get("state", ""),
        attempts=int(h.get("attempts", 0)), url=h.get("url", ""),
        created_at=_ms(h.get("created_at")) or 0.0, updated_at=_ms(h.get("updated_at")),
        last_status=int(status) if status.isdigit() else None, last_error=h.get("last_error") or None,
    )


def batch_view(h: dict[str, str]) -> BatchView:
    return BatchView(
        id=h["id"], queue=h["queue"], state=h["state"],
        expected=int(h["expected"]) if h.get("expected") else None,
        members=int(h.get("members", 0)), completed=int(h.get("completed", 0)),
        failed=int(h.get("failed", 0)), cancelled=int(h.get("cancelled", 0)),
        threshold=int(h.get("threshold", 100)), progress_every=int(h.get("progress_every", 0)),
        stuck_after=_ms(h.get("stuck_after_ms")) or None, closed=h.get("closed") == "1",
        created_at=_ms(h.get("created_at")) or 0.0, finished_at=_ms(h.get("finished_at")),
        reason=h.get("reason") or None, notification=h.get("notification") or None,
    )


_slots = msgspec.json.Decoder(list[SlotView])


def worker_view(h: dict[str, str], now: float) -> WorkerView:
    """Decode a registry record; ``now`` (epoch seconds) tells a late heartbeat."""
    deadline = _ms(h.get("deadline"))
    state = h.get("state", "unknown")
    return WorkerView(
        id=h.get("id", ""), state=state, host=h.get("host", ""), pid=int(h.get("pid") or 0),
        queues=[q for q in h.get("queues", "").split(",") if q],
        types=[t for t in h.get("types", "").split(",") if t],
        concurrency=int(h.get("concurrency") or 0), started_at=_ms(h.get("started_at")),
        heartbeat_at=_ms(h.get("heartbeat_at")), deadline=deadline, gone_at=_ms(h.get("gone_at")),
        late=state == "live" and deadline is not None and deadline < now,
        slots=_slots.decode(h["slots"]) if h.get("slots") else [],
        abandoned=_slots.decode(h["abandoned"]) if h.get("abandoned") else [],
    )


def event_of(queue: str, row: Any) -> Event:
    stream_id, raw_fields = row
    fields = {_b2s(k): _b2s(v) for k, v in (raw_fields.items() if isinstance(raw_fields, dict) else
                                            zip(raw_fields[::2], raw_fields[1::2], strict=True))}
    return Event(
        stream_id=_b2s(stream_id), queue=queue, type=fields.pop("type"), id=fields.pop("id"),
        at=int(fields.pop("at")) / 1000, fields=fields,
    )


# -- the synchronous client ------------------------------------------------------------------


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (a Store over a DirectExecutor)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("SyncStore: a store call tried to suspend")


def _sync(method: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: SyncStore, *args: Any, **kwargs: Any) -> T:
        return _drive(method(self.store, *args, **kwargs))

    return call


class SyncStore:
    """The plain synchronous client: the same operations as :class:`Store`, blocking."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        self.backend = backend
        self.store = Store(DirectExecutor(backend, clock), **kwargs)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    submit = _sync(Store.submit)
    submit_many = _sync(Store.submit_many)
    claim = _sync(Store.claim)
    report = _sync(Store.report)
    complete = _sync(Store.complete)
    fail = _sync(Store.fail)
    renew = _sync(Store.renew)
    phase = _sync(Store.phase)
    record_service_job_id = _sync(Store.record_service_job_id)
    trigger = _sync(Store.trigger)
    cancel = _sync(Store.cancel)
    retry = _sync(Store.retry)
    wake = _sync(Store.wake)
    expired = _sync(Store.expired)
    inspect = _sync(Store.inspect)
    expire = _sync(Store.expire)
    heartbeat = _sync(Store.heartbeat)
    worker_stopped = _sync(Store.worker_stopped)
    declare_lost_workers = _sync(Store.declare_lost_workers)
    workers = _sync(Store.workers)
    create_batch = _sync(Store.create_batch)
    add_to_batch = _sync(Store.add_to_batch)
    close_batch = _sync(Store.close_batch)
    finalize_batch = _sync(Store.finalize_batch)
    cancel_batch = _sync(Store.cancel_batch)
    sweep_batches = _sync(Store.sweep_batches)
    take_deliveries = _sync(Store.take_deliveries)
    outbox_due = _sync(Store.outbox_due)
    job_deliveries = _sync(Store.job_deliveries)
    validations_due = _sync(Store.validations_due)
    validation_outcome = _sync(Store.validation_outcome)
    release_validation = _sync(Store.release_validation)
    delivery_outcome = _sync(Store.delivery_outcome)
    get_job = _sync(Store.get_job)
    get_batch = _sync(Store.get_batch)
    events = _sync(Store.events)
    latest_events = _sync(Store.latest_events)
    queues = _sync(Store.queues)
    register_types = _sync(Store.register_types)
    job_types = _sync(Store.job_types)
    queue_counts = _sync(Store.queue_counts)
    queued_by_type = _sync(Store.queued_by_type)
    unserved = _sync(Store.unserved)
    unfiled = _sync(Store.unfiled)
    file_job = _sync(Store.file_job)
    file_jobs = _sync(Store.file_jobs)
    filing_counts = _sync(Store.filing_counts)
    purge = _sync(Store.purge)
