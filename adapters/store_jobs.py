"""The job operations of the store: submit, the worker's fenced reports, operator and
watchdog triggers, and validation checks. Each is one Lua op (see :mod:`adapters.store`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import ops
from .calls import Call, OpsCall
from .errors import BadInput, Rejected
from .flows import FlowJob, flow_order
from .ids import new_token
from .keys import QUEUES, queue_of
from .records import ClaimedJob, Expired, JobSpec, ValidationTask
from .replies import (
    Absorbed,
    Checked,
    Created,
    Exists,
    Extended,
    Fenced,
    Inspecting,
    NotFound,
    Recorded,
    Released,
    Renewed,
    Skipped,
    Stale,
    Transition,
    Woken,
)
from .store_core import IDEMPOTENCY_TTL, Due, StoreCore, json_encode, next_due, one
from .store_views import new_phases

__all__ = ["JobOps"]


class JobOps(StoreCore):
    """Jobs: what clients, workers, the watchdog and the validator ask of the store."""

    # -- submit ---------------------------------------------------------------

    def _submit_op(
        self, spec: JobSpec, *, job_id: str | None = None, after: Sequence[str] = (), parent: str | None = None,
    ) -> ops.Submit:
        encoded = json_encode(spec.input)
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
        deps = (*spec.depends_on, *after)
        return ops.Submit(
            id=job_id or self.ids.new_id(spec.queue, self._now_ms()),
            type=spec.type,
            input=encoded.decode(),
            priority=spec.priority,
            max_retries=spec.max_retries,
            timeout_ms=int(spec.timeout * 1000),
            backoff_ms=int(spec.backoff * 1000),
            backoff_max_ms=int(spec.backoff_max * 1000),
            delay_ms=int(spec.delay * 1000),
            phases=new_phases(spec.phases),
            has_validator=spec.has_validator or spec.validator_url is not None,
            validator_url=spec.validator_url or "",
            notify=spec.notify or spec.webhook_url is not None,
            webhook_url=spec.webhook_url or "",
            idem=spec.idempotency_key or "",
            idem_ttl_ms=int((spec.idempotency_ttl or IDEMPOTENCY_TTL) * 1000) if spec.idempotency_key else 0,
            batch=spec.batch or "",
            traceparent=spec.traceparent or "",
            deps=deps or None,
            dep_policy=spec.on_dependency_failure if deps else None,
            parent=parent,
        )

    async def submit(self, spec: JobSpec) -> Created | Exists:
        """Create a job (``created``), or return the one its idempotency key made (``exists``)."""
        return (await self.submit_many([spec]))[0]

    async def submit_many(self, specs: Sequence[JobSpec]) -> list[Created | Exists]:
        """Submit several jobs; one script call per queue, in order."""
        by_queue: dict[str, list[tuple[int, ops.Submit]]] = {}
        for i, spec in enumerate(specs):
            by_queue.setdefault(spec.queue, []).append((i, self._submit_op(spec)))
        replies: list[Created | Exists | None] = [None] * len(specs)
        calls: list[Call] = [OpsCall.of(q, [op for _, op in items]) for q, items in by_queue.items()]
        results = await self.executor.execute(calls)
        for (queue, items), result in zip(by_queue.items(), results, strict=True):
            got = one(result)
            if any(isinstance(a, Created) for a in got):
                await self._note_queue(queue)
            try:
                answers = self._answers([op for _, op in items], got)
            except Rejected as exc:
                if str(exc).startswith("depends_on:"):
                    raise BadInput(str(exc)) from None
                raise
            for (i, _), reply in zip(items, answers, strict=True):
                replies[i] = reply
        return [r for r in replies if r is not None]

    async def submit_flow(self, jobs: Sequence[FlowJob]) -> list[Created]:
        """Submit a flow's jobs in one step (:mod:`adapters.flows`): ``created`` for each, in
        the order given, with the state it starts in. A cycle, an unknown dependency or an id
        already taken is :class:`BadInput` and nothing is written."""
        order = flow_order(jobs)
        queue = jobs[0].spec.queue
        ids = [self.ids.new_id(queue, self._now_ms()) for _ in jobs]
        parents = [None if job.parent is None else ids[job.parent] for job in jobs]
        submits = tuple(
            self._submit_op(jobs[i].spec, job_id=ids[i], after=[ids[k] for k in jobs[i].after], parent=parents[i])
            for i in order
        )
        try:
            reply = await self._op(queue, ops.SubmitFlow(jobs=submits))
        except Rejected as exc:
            raise BadInput(str(exc)) from None
        await self._note_queue(queue)
        states = dict(reply.jobs)
        return [Created(id=ids[i], state=states[ids[i]], effects=reply.effects) for i in range(len(jobs))]

    async def _note_queue(self, queue: str) -> None:
        if queue not in self._known_queues:
            await self._command("SADD", QUEUES, queue)
            self._known_queues.add(queue)

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
        return (await self.claim_next(queue, worker, n, lease, types=types, nonce=nonce))[0]

    async def claim_next(
        self, queue: str, worker: str, n: int = 1, lease: float = 30.0, *,
        types: Iterable[str] | None = None, nonce: str | None = None,
    ) -> tuple[list[ClaimedJob], float | None]:
        """:meth:`claim`, and when a job a rate limit held back may start (seconds on the
        store's clock; ``None`` when no limit held one back): a worker with nothing
        claimed may sleep until then. See README, "Rate limits"."""
        served = None if types is None else tuple(sorted(set(types)))
        if served == ():
            return [], None
        reply = await self._op(queue, ops.Claim(n=n, worker=worker, lease_ms=int(lease * 1000),
                                                nonce=nonce or self.claim_nonce(), types=served))
        return list(reply.jobs), None if reply.next_at is None else reply.next_at / 1000

    async def publish_rate_limits(self, queue: str, limits: dict[str, str]) -> None:
        """Publish job types' rate limits to ``queue``, where its claims read them: type ->
        :func:`~adapters.rates.wire` of its limit, ``""`` to remove one. Every daemon does at
        start for its types on its queues (the last to start sets a type's limit)."""
        if limits:
            await self._op(queue, ops.RateLimits(limits=tuple(sorted(limits.items()))))

    async def reclaim(self, queue: str, worker: str, nonce: str) -> list[ClaimedJob]:
        """The jobs a claim with ``nonce`` leased to ``worker`` and that it still holds:
        for a claim whose answer never arrived (its outcome unknown). Writes nothing."""
        return list((await self._op(queue, ops.Reclaim(worker=worker, nonce=nonce))).jobs)

    async def report(
        self,
        job_id: str,
        token: str,
        trigger: str,
        *,
        result: Any = None,
        error: Any = None,
        raw_result: bytes | None = None,
    ) -> Fenced:
        """The worker's outcome (``complete``, ``fail``, ``timeout``), fenced by ``token``."""
        stored = None
        if raw_result is not None:
            stored = self._clean_raw(raw_result)
        elif result is not None or trigger == "complete":
            stored = self._clean(result)
        op = ops.Report(id=job_id, token=token, trigger=trigger, jitter=self.rng.random(), result=stored,
                        error=None if error is None else self._clean(error))
        return await self._op(self._queue_of(job_id), op)

    async def complete(self, job_id: str, token: str, result: Any = None) -> Fenced:
        return await self.report(job_id, token, "complete", result=result)

    async def fail(self, job_id: str, token: str, error: Any) -> Fenced:
        return await self.report(job_id, token, "fail", error=error)

    async def renew(self, job_id: str, token: str, lease: float) -> Renewed | Stale | Transition | NotFound:
        """Extend the lease; ``stale``/``absorbed`` tells the worker it lost the job."""
        return await self._op(self._queue_of(job_id),
                              ops.Renew(id=job_id, token=token, lease_ms=int(lease * 1000)))

    async def phase(self, job_id: str, token: str, name: str, trigger: str, result: Any = None) -> Transition | Stale:
        """A phase ``start``s or ``complete``s (with its result), fenced by ``token``."""
        op = ops.PhaseTrigger(id=job_id, token=token, name=name, trigger=trigger,
                              result=self._clean(result) if trigger == "complete" else None)
        return await self._op(self._queue_of(job_id), op)

    async def record_service_job_id(
        self, job_id: str, token: str, service_job_id: str
    ) -> Recorded | Stale | Transition | NotFound:
        clean = self.sanitizer.sanitize_text(service_job_id) if self.sanitizer else service_job_id
        return await self._op(self._queue_of(job_id), ops.ServiceId(id=job_id, token=token, service_job_id=clean))

    # -- operator and system triggers ---------------------------------------------

    async def trigger(self, job_id: str, trigger: str, *, status: str | None = None) -> Transition:
        """An unfenced job trigger: cancel, retry, retry_from_start, validation results
        (``status``: what the source of truth said). A trigger that needs a lease is
        :class:`~adapters.errors.Rejected`."""
        op = ops.Trigger(id=job_id, trigger=trigger, jitter=self.rng.random(), status=status)
        return await self._op(self._queue_of(job_id), op)

    async def cancel(self, job_id: str) -> Transition:
        return await self.trigger(job_id, "cancel")

    async def retry(self, job_id: str, *, from_start: bool = False) -> Transition:
        return await self.trigger(job_id, "retry_from_start" if from_start else "retry")

    async def wake(self, queue: str, n: int = 1000) -> Woken:
        """Move scheduled jobs whose time has come to queued; ``next_due`` is the next time."""
        return await self._op(queue, ops.Wake(n=n))

    async def expired(self, queue: str, n: int = 100, offset: int = 0, *,
                      gap: float = 0.0, lease: float = 0.0) -> list[Expired]:
        """Active jobs whose lease deadline has passed and that no inspection holds.

        Oldest deadline first; ``offset`` skips that many (the ones a caller leaves for later).
        With ``gap``: when no sweep reached the queue for longer than ``gap`` seconds (the
        store was away), every lease first gets ``lease`` seconds from now (README, "Redis
        outages"); this is the watchdog's call.
        """
        reply = await self._op(queue, ops.ListExpired(n=n, offset=offset, gap_ms=int(gap * 1000),
                                                      lease_ms=int(lease * 1000)))
        return list(reply.jobs)

    async def inspect(self, job_id: str, token: str, *, hold: float, inspector: str) -> Inspecting | Skipped | NotFound:
        """Take an expired lease in hand for ``hold`` seconds to ask the external service.

        ``inspecting`` when this caller holds it now: no other watchdog sees the job
        until the hold ends, and the decision must present ``inspector``. ``skipped``
        when the lease was renewed, taken, or is held by another inspection.
        """
        return await self._op(self._queue_of(job_id), ops.Inspect(id=job_id, token=token,
                                                                  hold_ms=int(hold * 1000), inspector=inspector))

    async def expire(
        self, job_id: str, token: str, trigger: str = "lease_expired", *,
        result: Any = None, lease: float | None = None, reason: str | None = None,
        inspector: str | None = None, cause: str | None = None, error: Any = None,
    ) -> Transition | Skipped | Extended | NotFound:
        """The watchdog's decision on an expired lease it saw with ``token``.

        ``trigger`` is ``lease_expired`` (retry or ``failed``), ``complete`` (the
        external service finished it: completed here, or validating when the type
        has a validator), ``timeout`` (past the job's timeout) or ``extend`` (still
        running there; never past the attempt's timeout). ``cause`` names why, on
        the transition's event; ``error`` goes in the attempt record. After
        :meth:`inspect`, pass its ``inspector``. ``skipped`` when another watchdog
        or the worker got there first.
        """
        op = ops.Expire(
            id=job_id, token=token, trigger=trigger, jitter=self.rng.random(),
            result=self._clean(result) if result is not None or trigger == "complete" else None,
            lease_ms=None if lease is None else int(lease * 1000), reason=reason, inspector=inspector,
            cause=cause, error=None if error is None else json_encode(error).decode(),
        )
        return await self._op(self._queue_of(job_id), op)

    # -- validation --------------------------------------------------------------------

    async def validations_due(
        self, queue: str, types: Sequence[str], n: int = 50, lease: float = 30.0
    ) -> Due[ValidationTask]:
        """Take ``validating`` jobs whose next check is due, each under a check token.

        Only jobs of ``types`` (this daemon has their validators) or carrying their own
        validator URL are taken; each is held for ``lease`` seconds.
        """
        reply = await self._op(queue, ops.TakeValidations(n=n, lease_ms=int(lease * 1000), types=tuple(types),
                                                          nonce=new_token(self.randbytes)))
        return Due(list(reply.jobs), next_due(reply.next_due))

    async def validation_outcome(
        self, job_id: str, token: str, *, ok: bool, status: str = "", reason: str = "",
        max_attempts: int = 5, retry_at: float | None = None, error: Any = None,
    ) -> Transition | Checked | Stale | NotFound:
        """Record one check: passed (``validation_passed``), failed (another check due at
        ``retry_at``: ``checked``), or failed on the last of ``max_attempts`` checks
        (``validation_exhausted``, ``error`` stored). Fenced by the check token."""
        op = ops.Validated(id=job_id, token=token, ok=ok, status=status, reason=reason, max_attempts=max_attempts,
                           retry_at=int((self.executor.now() if retry_at is None else retry_at) * 1000),
                           error=None if error is None else json_encode(error).decode())
        return await self._op(self._queue_of(job_id), op)

    async def release_validation(self, job_id: str, token: str) -> Released | Absorbed | Stale | NotFound:
        """Give a check back unrecorded (shutdown mid-check): due again at once."""
        return await self._op(self._queue_of(job_id), ops.ReleaseCheck(id=job_id, token=token, release=True))

