"""The store's ops: what one entry of an ``FCALL``'s op list asks the Lua library.

Each op is a frozen msgspec Struct tagged by ``op`` (the Lua's ``OP.<name>``), and states
the replies it can answer as its type parameter (``Report(Op[Fenced])``):
:func:`answers` reads it, and the store checks every reply against it: a refusal the op does not answer
(``rejected``, ``not_found``) is raised (:class:`~adapters.errors.Rejected`,
:class:`~adapters.errors.NotFound`), any other kind is a protocol error, never a silent
``AttributeError`` later. Optional fields
are ``None`` and left out of the JSON (the Lua tells absent from empty); a submit's options
keep their unused defaults out of the JSON too (``Submit``)."""

from __future__ import annotations

import functools
from typing import Any, Generic, TypeVar, get_args

from msgspec import Struct

from .replies import (
    Absorbed,
    Added,
    Alive,
    Checked,
    Claimed,
    Created,
    Deferred,
    DeliveriesDue,
    Exists,
    Expiries,
    Extended,
    Fenced,
    Filed,
    FlowCreated,
    Inspecting,
    Lost,
    NotFound,
    Purged,
    Queued,
    Recorded,
    Redriven,
    Redrives,
    Registered,
    Released,
    Renewed,
    Returned,
    Skipped,
    Stale,
    Stopped,
    Swept,
    Transition,
    UnfiledJobs,
    Validations,
    Woken,
)

__all__ = [
    "BatchAdd", "BatchCancel", "BatchClose", "BatchCreate", "BatchFinalize", "BatchSweep", "Claim",
    "CountQueued", "Delivered", "Expire", "File", "Heartbeat", "Inspect", "ListExpired", "ListUnfiled",
    "Op", "Pause", "PhaseTrigger", "Purge", "RateLimits", "Reclaim", "Redeliver",
    "Redrive", "ListRedrives", "ReleaseCheck", "Renew", "Report",
    "Resume", "ScheduleAdd", "ScheduleTick", "ScheduleTrigger", "ServiceId", "Submit", "SubmitFlow",
    "TakeDeliveries", "TakeValidations", "Trigger", "Validated", "Wake", "WorkerStop", "WorkersLost",
    "answers",
]

R_co = TypeVar("R_co", covariant=True)


class Op(Struct, Generic[R_co], kw_only=True, frozen=True, tag_field="op", omit_defaults=True):
    """One op; ``R_co`` is what it answers."""


@functools.cache
def answers(kind: type[Op[Any]]) -> Any:
    """The reply type (a class or a union) ``kind`` answers, for ``isinstance``."""
    for base in getattr(kind, "__orig_bases__", ()):
        args = get_args(base)
        if args:
            return args[0]
    raise TypeError(f"{kind.__name__} does not state what it answers")


# -- jobs ------------------------------------------------------------------------------


class Submit(Op[Created | Exists], tag="submit", frozen=True):
    """Every job's own fields first; then the options, each left out of the JSON when it is
    not used (its default): the script decodes every byte of every submit, and a job that
    uses no option costs about half as much to decode."""

    id: str
    type: str
    input: str  # JSON
    priority: int
    max_retries: int
    timeout_ms: int
    backoff_ms: int
    backoff_max_ms: int
    delay_ms: int = 0
    phases: str = ""
    has_validator: bool = False
    validator_url: str = ""
    notify: bool = False
    webhook_url: str = ""
    idem: str = ""
    idem_ttl_ms: int = 0  # only with ``idem``
    batch: str = ""
    traceparent: str = ""
    deps: tuple[str, ...] | None = None  # None: no dependencies
    dep_policy: str | None = None
    parent: str | None = None


class SubmitFlow(Op[FlowCreated], tag="flow", frozen=True):
    """A flow's jobs in one step, each dependency listed before its dependents."""

    jobs: tuple[Submit, ...]


class Claim(Op[Claimed], tag="claim", frozen=True):
    n: int
    worker: str
    lease_ms: int
    nonce: str
    types: tuple[str, ...] | None = None  # None: every type


class RateLimits(Op[Recorded], tag="rate_limits", frozen=True):
    """Publish job types' rate limits to the queue: (type, ``"<interval ms>[ <input field>]"``),
    ``""`` to remove one."""

    limits: tuple[tuple[str, str], ...]


class Reclaim(Op[Claimed], tag="reclaim", frozen=True):
    worker: str
    nonce: str


class CountQueued(Op[Queued], tag="queued", frozen=True):
    pass


class Report(Op[Fenced], tag="report", frozen=True):
    """A worker's outcome (complete, fail, timeout, release) under its lease token."""

    id: str
    token: str
    trigger: str
    jitter: float
    result: str | None = None
    error: str | None = None


class Renew(Op[Renewed | Absorbed | Stale | NotFound], tag="renew", frozen=True):
    id: str
    token: str
    lease_ms: int


class ServiceId(Op[Recorded | Absorbed | Stale | NotFound], tag="service_id", frozen=True):
    id: str
    token: str
    service_job_id: str


class PhaseTrigger(Op[Transition | Stale], tag="phase", frozen=True):
    id: str
    token: str
    name: str
    trigger: str
    result: str | None = None


class Trigger(Op[Transition], tag="trigger", frozen=True):
    """An unfenced trigger; the store refuses (``rejected``) one that needs a lease."""

    id: str
    trigger: str
    jitter: float
    status: str | None = None


class Expire(Op[Transition | Skipped | Extended | NotFound], tag="expire", frozen=True):
    id: str
    token: str
    trigger: str
    jitter: float
    result: str | None = None
    lease_ms: int | None = None
    reason: str | None = None
    inspector: str | None = None
    cause: str | None = None
    error: str | None = None


class Inspect(Op[Inspecting | Skipped | NotFound], tag="inspect", frozen=True):
    id: str
    token: str
    hold_ms: int
    inspector: str


class ListExpired(Op[Expiries], tag="expired", frozen=True):
    n: int
    offset: int
    gap_ms: int
    lease_ms: int


class Wake(Op[Woken], tag="wake", frozen=True):
    n: int


class TakeValidations(Op[Validations], tag="validations", frozen=True):
    n: int
    lease_ms: int
    types: tuple[str, ...]
    nonce: str


class Validated(Op[Transition | Checked | Stale | NotFound], tag="validated", frozen=True):
    """One check's verdict, under its check token."""

    id: str
    token: str
    ok: bool
    status: str
    reason: str
    max_attempts: int
    retry_at: int  # ms: when the next check is due if this one failed
    error: str | None = None


class ReleaseCheck(Op[Released | Absorbed | Stale | NotFound], tag="validated", frozen=True):
    """A check given back unrecorded (the same Lua op as :class:`Validated`)."""

    id: str
    token: str
    release: bool  # always True (a default would be left out of the JSON)


# -- batches ---------------------------------------------------------------------------


class BatchCreate(Op[Created | Exists], tag="batch_create", frozen=True):
    id: str
    threshold: int
    progress_every: int
    stuck_after_ms: int
    notify: bool
    webhook_url: str
    expected: int | None = None


class BatchAdd(Op[Added], tag="batch_add", frozen=True):
    id: str
    jobs: tuple[str, ...]


class BatchClose(Op[Transition], tag="batch_close", frozen=True):
    id: str


class BatchFinalize(Op[Transition], tag="batch_finalize", frozen=True):
    id: str
    stuck: bool


class BatchCancel(Op[Transition], tag="batch_cancel", frozen=True):
    id: str


class BatchSweep(Op[Swept], tag="batch_sweep", frozen=True):
    n: int
    ready_from: int | None = None


# -- webhook deliveries ----------------------------------------------------------------


class TakeDeliveries(Op[DeliveriesDue], tag="deliveries", frozen=True):
    n: int
    lease_ms: int
    nonce: str
    max_attempts: int


class Delivered(Op[Transition | Stale | NotFound], tag="delivered", frozen=True):
    id: str
    token: str
    trigger: str
    max_attempts: int
    error: str
    status: int | str  # "" when there was no HTTP status
    retry_at: int | None = None


class Redeliver(Op[Transition], tag="redeliver", frozen=True):
    id: str


class Pause(Op[Transition], tag="pause", frozen=True):
    """An operator's pause of the queue's claims (``absorbed`` when paused already)."""


class Resume(Op[Transition], tag="resume", frozen=True):
    """The queue's claims go on; its idle workers are woken (``absorbed`` when not paused)."""


# -- schedules --------------------------------------------------------------------------


class ScheduleAdd(Op[Created | Transition], tag="schedule_add", frozen=True):
    """Add the schedule ``name`` (``created``), or redefine it (``add``)."""

    name: str
    cron: str
    every_ms: int
    tz: str
    missed: str
    catch_up_max: int
    grace_ms: int
    job_type: str
    template: str  # a Submit op's JSON, its id left for the tick
    next_at: int


class ScheduleTrigger(Op[Transition], tag="schedule_trigger", frozen=True):
    """An operator's ``pause``, ``resume`` (armed at ``next_at``) or ``remove``."""

    name: str
    trigger: str
    next_at: int | None = None


class ScheduleTick(Op[Transition], tag="schedule_tick", frozen=True):
    """A daemon's ``fire`` (submitting job ``id``) or ``skip`` of ``tick``; armed at ``next_at``."""

    name: str
    trigger: str
    tick: int
    next_at: int
    id: str | None = None


# -- filing and retention --------------------------------------------------------------


class ListUnfiled(Op[UnfiledJobs], tag="unfiled", frozen=True):
    n: int
    required: dict[str, list[str]]


class File(Op[Filed | Absorbed | Skipped | Deferred | NotFound], tag="file", frozen=True):
    """File the job read in ``state`` at ``epoch`` under (category, problem), or look again in
    ``wait_ms``."""

    id: str
    state: str
    epoch: int
    wait_ms: int | None = None
    category: str | None = None
    problem: str | None = None
    redrive_max: int | None = None  # the type's re-drive cap for this problem: index it while below
    redrive_ms: int | None = None


class ListRedrives(Op[Redrives], tag="redrives", frozen=True):
    n: int
    policies: dict[str, tuple[int, dict[str, int]]]  # job type -> (delay ms, {kind: max})
    wait_ms: int


class Redrive(Op[Redriven | Skipped | NotFound], tag="redrive", frozen=True):
    """Re-drive the job read at ``epoch``, filed under ``kind``, when the policy allows; a
    ``missing_output`` re-drive submits the re-run as ``rerun_id``."""

    id: str
    type: str
    kind: str
    epoch: int
    max: int
    delay_ms: int
    rerun_id: str | None = None


class Purge(Op[Purged], tag="purge", frozen=True):
    n: int
    cutoffs: tuple[tuple[str, int], ...]  # (state, cutoff ms)


# -- the registry of daemons -----------------------------------------------------------


class Heartbeat(Op[Registered | Alive | Returned], tag="heartbeat", frozen=True):
    id: str
    fields: tuple[str, ...]  # flat: name, value, ...
    ttl_ms: int
    start: bool


class WorkerStop(Op[Stopped | Skipped], tag="worker_stop", frozen=True):
    id: str


class WorkersLost(Op[Lost], tag="workers_lost", frozen=True):
    n: int
    gap_ms: int
    lease_ms: int
