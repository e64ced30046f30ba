"""The store's upkeep operations: the registry of daemons, batches, webhook deliveries,
filing and retention. Each is one Lua op (see :mod:`adapters.store`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .errors import BadInput
from .filing import CATEGORY_OF, Problem
from .ids import new_token
from .keys import QUEUES, REGISTRY
from .records import BatchSpec, Delivery, LostWorker, Reply, Unfiled
from .store_core import MAX_BATCH_ADD, Due, StoreCore, next_due

__all__ = ["UpkeepOps"]


class UpkeepOps(StoreCore):
    """Daemons, batches, deliveries and filing."""

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

    async def declare_lost_workers(
        self, n: int = 100, *, gap: float = 0.0, lease: float = 0.0
    ) -> list[LostWorker]:
        """Daemons past their heartbeat deadline, each declared lost by exactly one caller;
        ``gap`` and ``lease`` as for :meth:`expired` (a store outage re-arms heartbeats)."""
        reply = await self._op(REGISTRY, {"op": "workers_lost", "n": n,
                                          "gap_ms": int(gap * 1000), "lease_ms": int(lease * 1000)})
        return [msgspec.convert(w, LostWorker) for w in reply.jobs]

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
        op = {"op": "batch_add", "id": batch_id, "jobs": list(job_ids)}
        return self._rejected(await self._op(queue, op))

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
        op = {"op": "batch_cancel", "id": batch_id}
        return self._rejected(await self._op(self._queue_of(batch_id), op))

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
            queue, {"op": "deliveries", "n": n, "lease_ms": int(lease * 1000),
                    "nonce": new_token(self.randbytes), "max_attempts": max_attempts}
        )
        return Due([msgspec.convert(d, Delivery) for d in reply.deliveries], next_due(reply))

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

    async def redeliver(self, delivery_id: str) -> Reply:
        """An operator's re-send of a ``dead`` delivery: back to ``pending`` with a fresh attempt
        budget, due now, with the same ``webhook-id``. ``absorbed`` when it was delivered,
        ``invalid`` while it is still on its way; :class:`NotFound` when there is none."""
        queue = self._delivery_queue(delivery_id)
        return self._rejected(await self._op(queue, {"op": "redeliver", "id": delivery_id}))

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

    async def purge(self, queue: str, cutoffs: dict[str, float], n: int = 500) -> Reply:
        """Delete up to ``n`` filed jobs that finished before their state's cutoff (epoch seconds).

        ``jobs`` lists what was deleted (id and state), each with one ``job.deleted`` event.
        """
        pairs = [[state, int(cutoff * 1000)] for state, cutoff in cutoffs.items()]
        return await self._op(queue, {"op": "purge", "n": n, "cutoffs": pairs})

