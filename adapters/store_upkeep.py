"""The store's upkeep operations: the registry of daemons, batches, webhook deliveries,
filing and retention. Each is one Lua op (see :mod:`adapters.store`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import ops
from .errors import BadInput
from .filing import CATEGORY_OF, Problem
from .ids import new_token
from .keys import QUEUES, REGISTRY
from .records import BatchSpec, Delivery, LostWorker, RedriveDue, Unfiled
from .redrive import KINDS, Redrive
from .replies import (
    Absorbed,
    Added,
    Alive,
    Created,
    Deferred,
    Exists,
    Filed,
    NotFound,
    Purged,
    Redriven,
    Registered,
    Returned,
    Skipped,
    Stale,
    Stopped,
    Swept,
    Transition,
)
from .store_core import MAX_BATCH_ADD, Due, StoreCore, next_due

__all__ = ["Filing", "UpkeepOps"]

Filing = Filed | Absorbed | Skipped | Deferred | NotFound
"""What filing one job answers."""


class UpkeepOps(StoreCore):
    """Daemons, batches, deliveries and filing."""

    # -- the registry of daemons ---------------------------------------------------------

    async def heartbeat(
        self, daemon_id: str, fields: dict[str, str], *, ttl: float, start: bool = False
    ) -> Registered | Alive | Returned:
        """Register (``start``) or refresh a daemon; it is live for ``ttl`` seconds more.

        ``registered``, ``alive``, or ``returned`` when it had been declared lost.
        """
        flat = tuple(x for k, v in fields.items() for x in (k, v))
        return await self._op(REGISTRY, ops.Heartbeat(id=daemon_id, fields=flat, ttl_ms=int(ttl * 1000), start=start))

    async def worker_stopped(self, daemon_id: str) -> Stopped | Skipped:
        """A daemon shutting down leaves the registry (never declared lost)."""
        return await self._op(REGISTRY, ops.WorkerStop(id=daemon_id))

    async def declare_lost_workers(
        self, n: int = 100, *, gap: float = 0.0, lease: float = 0.0
    ) -> list[LostWorker]:
        """Daemons past their heartbeat deadline, each declared lost by exactly one caller;
        ``gap`` and ``lease`` as for :meth:`expired` (a store outage re-arms heartbeats)."""
        reply = await self._op(REGISTRY, ops.WorkersLost(n=n, gap_ms=int(gap * 1000), lease_ms=int(lease * 1000)))
        return list(reply.daemons)

    # -- batches -----------------------------------------------------------------

    async def create_batch(self, spec: BatchSpec) -> Created | Exists:
        """Create a batch (``created``; ``state`` is ``completed`` at once when it expects no members)."""
        op = ops.BatchCreate(
            id=self.ids.new_id(spec.queue, self._now_ms()),
            expected=spec.expected,
            threshold=spec.threshold,
            progress_every=spec.progress_every or 0,
            stuck_after_ms=int((spec.stuck_after or 0) * 1000),
            notify=spec.notify or spec.webhook_url is not None,
            webhook_url=spec.webhook_url or "",
        )
        await self._command("SADD", QUEUES, spec.queue)
        return await self._op(spec.queue, op)

    async def add_to_batch(self, batch_id: str, job_ids: Sequence[str]) -> Added:
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
        return await self._op(queue, ops.BatchAdd(id=batch_id, jobs=tuple(job_ids)))

    async def close_batch(self, batch_id: str) -> Transition:
        """No more members: the size is now known, so the batch may finalize at once."""
        return await self._op(self._queue_of(batch_id), ops.BatchClose(id=batch_id))

    async def finalize_batch(self, batch_id: str, *, stuck: bool = False) -> Transition:
        """The guarded finalize: ``moved`` (to its terminal state) once; ``blocked`` while not
        ready, ``absorbed`` once terminal, both writing nothing."""
        return await self._op(self._queue_of(batch_id), ops.BatchFinalize(id=batch_id, stuck=stuck))

    async def cancel_batch(self, batch_id: str) -> Transition:
        """Cancel the batch and every unfinished member (``members_cancelled``)."""
        return await self._op(self._queue_of(batch_id), ops.BatchCancel(id=batch_id))

    async def sweep_batches(self, queue: str, n: int = 100, *, ready_from: int | None = None) -> Swept:
        """The batch monitor's sweep, through the guarded finalize (``swept``).

        Finalizes up to ``n`` batches with no member activity for their stuck-after
        time. With ``ready_from``, also tries the ordinary finalize on a page of ``n``
        live batches from that rank (a safety net: a batch that is not ready is left
        untouched); ``cursor`` is where the next page starts. ``batches`` lists the
        batches that moved, ``next_due`` (ms) is the earliest stuck deadline left.
        """
        return await self._op(queue, ops.BatchSweep(n=n, ready_from=ready_from))

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
        reply = await self._op(queue, ops.TakeDeliveries(n=n, lease_ms=int(lease * 1000),
                                                         nonce=new_token(self.randbytes), max_attempts=max_attempts))
        return Due(list(reply.deliveries), next_due(reply.next_due))

    async def delivery_outcome(
        self, queue: str, delivery_id: str, token: str, trigger: str, *,
        max_attempts: int, retry_at: float | None = None, status: int | None = None, error: str = "",
    ) -> Transition | Stale | NotFound:
        """``succeed``, ``fail`` (retry at ``retry_at`` while attempts are left), ``reject``, ``release``."""
        op = ops.Delivered(id=delivery_id, token=token, trigger=trigger, max_attempts=max_attempts, error=error,
                           status=status or "", retry_at=None if retry_at is None else int(retry_at * 1000))
        return await self._op(queue, op)

    async def redeliver(self, delivery_id: str) -> Transition:
        """An operator's re-send of a ``dead`` delivery: back to ``pending`` with a fresh attempt
        budget, due now, with the same ``webhook-id``. ``absorbed`` when it was delivered,
        ``invalid`` while it is still on its way; :class:`NotFound` when there is none."""
        queue = self._delivery_queue(delivery_id)
        return await self._op(queue, ops.Redeliver(id=delivery_id))

    async def pause(self, queue: str) -> Transition:
        """Stop every claim of ``queue`` (``moved`` running -> paused; ``absorbed`` when it was
        paused already). Jobs may still be submitted; they wait until :meth:`resume`."""
        return await self._op(queue, ops.Pause())

    async def resume(self, queue: str) -> Transition:
        """Let ``queue`` be claimed again and wake its idle workers (``absorbed`` when it was
        not paused)."""
        return await self._op(queue, ops.Resume())

    @classmethod
    def _delivery_queue(cls, delivery_id: str) -> str:
        """The queue of ``<job or batch id>~<event>~<epoch>``; :class:`BadInput` for anything else."""
        parts = delivery_id.split("~")
        if len(parts) != 3 or not parts[1] or not parts[2].isdigit():
            raise BadInput(f"delivery: {delivery_id[:100]!r} is not a delivery id "
                           "(<job or batch id>~<event>~<epoch>)")
        return cls._queue_of(parts[0])

    # -- filing and retention ------------------------------------------------------------

    async def unfiled(
        self, queue: str, n: int = 100, *, required: dict[str, list[str]] | None = None
    ) -> list[Unfiled]:
        """Finished jobs due to be filed; ``required``: job type -> required output names."""
        return list((await self._op(queue, ops.ListUnfiled(n=n, required=required or {}))).jobs)

    async def file_job(self, job: Unfiled, problem: Problem | str) -> Filing:
        """File ``job`` as it was read: ``filed`` once per outcome, else ``absorbed`` or ``skipped``."""
        return (await self.file_jobs([(job, Problem(problem))]))[0]

    async def file_jobs(
        self, decisions: Sequence[tuple[Unfiled, Problem | None]], *, wait: float = 600.0,
        redrive: Mapping[str, Redrive] | None = None,
    ) -> list[Filing]:
        """File each job under its problem in one call per queue; ``None`` looks again in ``wait`` s.

        Replies in order: ``filed`` (exactly one ``job.filed`` event), ``absorbed``
        (already filed at this epoch), ``skipped`` (the job moved on since it was
        read), ``deferred`` or ``not_found``. ``redrive``: job type -> its re-drive policy; a job
        filed under a problem its policy covers is due for re-drive ``delay`` s later.
        """
        policies = redrive or {}
        by_queue: dict[str, list[tuple[int, ops.File]]] = {}
        for i, (job, problem) in enumerate(decisions):
            if problem is None:
                op = ops.File(id=job.id, state=job.state, epoch=job.epoch, wait_ms=int(wait * 1000))
            else:
                policy = policies.get(job.type)
                cap = policy.limit(problem.value) if policy is not None else 0
                op = ops.File(id=job.id, state=job.state, epoch=job.epoch, category=CATEGORY_OF[problem].value,
                              problem=problem.value, redrive_max=cap or None,
                              redrive_ms=int(policy.delay * 1000) if policy is not None and cap else None)
            by_queue.setdefault(self._queue_of(job.id), []).append((i, op))
        replies: list[Filing | None] = [None] * len(decisions)
        for queue, items in by_queue.items():
            answers = await self._ops(queue, [op for _, op in items])
            for (i, _), reply in zip(items, answers, strict=True):
                replies[i] = reply
        return [r for r in replies if r is not None]

    async def redrives_due(
        self, queue: str, policies: Mapping[str, Redrive], n: int = 100, *, wait: float = 600.0
    ) -> Due[RedriveDue]:
        """Filed jobs of ``queue`` due for re-drive under ``policies`` (job type -> policy), and
        when the next one may fall due; a job whose notification is still on its way is looked
        at again ``wait`` s later. Drops index entries that are no longer candidates."""
        wire = {t: (int(p.delay * 1000), {k: p.limit(k) for k in KINDS if p.limit(k)}) for t, p in policies.items()}
        reply = await self._op(queue, ops.ListRedrives(n=n, policies=wire, wait_ms=int(wait * 1000)))
        return Due(list(reply.jobs), next_due(reply.next_due))

    async def redrive(self, due: RedriveDue, policy: Redrive) -> Redriven | Skipped | NotFound:
        """One guarded re-drive of ``due`` under ``policy`` (its type's): ``redriven`` (one
        ``job.redriven`` event; a ``missing_output`` re-drive also submits the re-run), or
        ``skipped`` with nothing written (another type, not filed so, cap reached, too early,
        the notification not dead, already re-run: another daemon did it)."""
        queue = self._queue_of(due.id)
        rerun = self.ids.new_id(queue, self._now_ms()) if due.kind == Problem.MISSING_OUTPUT else None
        op = ops.Redrive(id=due.id, type=due.type, kind=due.kind, epoch=due.epoch, max=policy.limit(due.kind),
                         delay_ms=int(policy.delay * 1000), rerun_id=rerun)
        return await self._op(queue, op)

    async def purge(self, queue: str, cutoffs: dict[str, float], n: int = 500) -> Purged:
        """Delete up to ``n`` filed jobs that finished before their state's cutoff (epoch seconds).

        ``jobs`` lists what was deleted (id and state), each with one ``job.deleted`` event.
        """
        pairs = tuple((state, int(cutoff * 1000)) for state, cutoff in cutoffs.items())
        return await self._op(queue, ops.Purge(n=n, cutoffs=pairs))

