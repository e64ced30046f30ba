"""The store's vocabulary: frozen msgspec Structs for what goes in and comes out.

Schema evolution (these records live in Redis across upgrades): a new field
always gets a default, and no field ever changes its type.

URLs in specs are checked by :mod:`adapters.urls` (the URL policy).

Decode errors keep msgspec's path in the message (``at $.max_retries``),
wrapped into :class:`adapters.errors.BadInput` by :func:`decode_spec`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from .errors import BadInput
from .keys import QUEUE_NAME, queue_of
from .limits import MAX_INPUT_BYTES, RESOLUTION, check_input, check_object_id, check_resolution
from .urls import check_url

__all__ = [
    "JobSpec",
    "BatchSpec",
    "ClaimedJob",
    "Attempt",
    "JobView",
    "BatchView",
    "Event",
    "Unfiled",
    "RedriveDue",
    "Expired",
    "LostWorker",
    "SlotView",
    "WorkerView",
    "ValidationTask",
    "ValidationCheck",
    "DeliveryView",
    "decode_spec",
    "MAX_INPUT_BYTES",
]

# Patterns are anchored with \Z, never $: msgspec searches with them, and "$" also matches
# before a trailing newline ("default\n" would pass and strand a job in a queue nobody serves).
TypeName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}\Z")]
QueueName = Annotated[str, Meta(pattern=QUEUE_NAME.pattern)]
PhaseName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")]
IdemKey = Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f\ud800-\udfff]{1,256}\Z")]  # printable, valid UTF-8
TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z"
"""A W3C ``traceparent``: version, trace id, parent span id, flags, in lower-case hex."""
MAX_DEPENDENCIES = 1000
"""The most dependencies one job may have (a flow's parent: its children)."""
DependencyPolicy = Literal["fail", "ignore", "continue"]
"""What a failed dependency does to the job waiting on it (README, "Dependencies, flows and chains")."""


class JobSpec(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a submit asks for. Limits are refused with the field's name."""

    type: TypeName
    input: Any = None
    queue: QueueName = "default"
    priority: Annotated[int, Meta(ge=-100, le=100)] = 0
    max_retries: Annotated[int, Meta(ge=0, le=1000)] = 3
    timeout: Annotated[float, Meta(ge=RESOLUTION, le=7 * 86400)] = 300.0
    backoff: Annotated[float, Meta(ge=0, le=86400)] = 1.0
    backoff_max: Annotated[float, Meta(ge=0, le=7 * 86400)] = 300.0
    delay: Annotated[float, Meta(ge=0, le=365 * 86400)] = 0.0
    phases: tuple[PhaseName, ...] = ()
    has_validator: bool = False
    validator_url: str | None = None
    webhook_url: str | None = None
    notify: bool = False
    idempotency_key: IdemKey | None = None
    idempotency_ttl: Annotated[float, Meta(ge=1, le=30 * 86400)] | None = None
    """How long the idempotency key returns this job, in seconds (default: a day)."""
    batch: str | None = None
    traceparent: Annotated[str, Meta(pattern=TRACEPARENT)] | None = None
    """The W3C trace context the job's spans continue (the client's submit span sets it)."""
    depends_on: tuple[str, ...] = ()
    """Jobs of the same queue this one waits for: it starts ``waiting`` until they allow."""
    on_dependency_failure: DependencyPolicy = "fail"

    def __post_init__(self) -> None:
        """Checks msgspec's constraints cannot state; a refusal is :class:`BadInput` (a
        ``ValueError``) naming the field, also for a spec built directly and given to a store."""
        try:
            if len(set(self.phases)) != len(self.phases):
                raise ValueError("phases: names must be unique")
            for name in ("backoff", "backoff_max", "delay"):
                check_resolution(name, getattr(self, name))
            if self.idempotency_ttl is not None and self.idempotency_key is None:
                raise ValueError("idempotency_ttl: needs an idempotency_key")
            check_input(self.input)
            if self.batch is not None:
                check_object_id("batch", self.batch)
            if self.webhook_url is not None:
                check_url(self.webhook_url, "webhook_url")
            if self.validator_url is not None:
                check_url(self.validator_url, "validator_url")
            check_dependencies(self.depends_on, self.queue, self.delay)
        except ValueError as exc:
            raise BadInput(str(exc)) from None


def check_dependencies(depends_on: tuple[str, ...], queue: str, delay: float) -> None:
    """A ``ValueError`` naming ``depends_on`` when its ids are malformed, repeated, too many, of
    another queue (a queue's keys share one Cluster slot: a step never reaches another's), or
    given with a delay (a waiting job starts when its dependencies allow, not at a time)."""
    if len(depends_on) > MAX_DEPENDENCIES:
        raise ValueError(f"depends_on: {len(depends_on)} ids is over the limit of {MAX_DEPENDENCIES}")
    if len(set(depends_on)) != len(depends_on):
        raise ValueError("depends_on: an id is given twice")
    for dep in depends_on:
        check_object_id("depends_on", dep)
        if queue_of(dep) != queue:
            raise ValueError(f"depends_on: {dep} is not in queue {queue!r} (dependencies share the job's queue)")
    if depends_on and delay:
        raise ValueError("depends_on: a job with dependencies takes no delay")


class BatchSpec(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a batch create asks for."""

    queue: QueueName = "default"
    expected: Annotated[int, Meta(ge=0, le=10_000_000)] | None = None
    threshold: Annotated[int, Meta(ge=1, le=100)] = 100
    progress_every: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    stuck_after: Annotated[float, Meta(ge=RESOLUTION, le=30 * 86400)] | None = None
    webhook_url: str | None = None
    notify: bool = False

    def __post_init__(self) -> None:
        if self.webhook_url is not None:
            check_url(self.webhook_url, "webhook_url")


S = TypeVar("S")


def decode_spec(kind: type[S], data: bytes | str | dict[str, Any]) -> S:
    """Decode and validate a spec; any problem is one :class:`BadInput` line naming the field."""
    try:
        if isinstance(data, dict):
            return msgspec.convert(data, kind)
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise BadInput(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadInput(f"malformed JSON: {exc}") from None
    except ValueError as exc:  # __post_init__ checks name their field
        raise BadInput(str(exc)) from None


class ClaimedJob(Struct, kw_only=True, frozen=True):
    """A job a worker now holds under lease ``token``."""

    id: str
    type: str
    input: str
    attempt: int
    token: str
    lease_deadline: int
    timeout_ms: int
    retry_count: int
    max_retries: int
    phases: str = ""
    phase_results: list[str] = []
    service_job_id: str = ""
    batch: str = ""
    traceparent: str = ""
    dependencies: list[tuple[str, str, str]] = []
    """Its dependencies as the claim found them: (id, state, result JSON) each."""


class Expired(Struct, kw_only=True, frozen=True):
    """An active job whose lease ran out, as the watchdog saw it."""

    id: str
    token: str
    type: str
    attempt: int
    service_job_id: str = ""
    worker: str = ""
    started_at: int = 0  # ms: when the attempt started
    timeout_ms: int = 0
    retry_count: int = 0
    max_retries: int = 0

    @property
    def attempt_deadline(self) -> float | None:
        """When the attempt exceeds the job's timeout (epoch seconds), if known."""
        if not self.started_at or not self.timeout_ms:
            return None
        return (self.started_at + self.timeout_ms) / 1000


class Delivery(Struct, kw_only=True, frozen=True):
    """A webhook delivery taken for sending, with its own snapshot."""

    id: str
    event: str
    object: str
    url: str
    snapshot: str
    attempt: int
    token: str
    created_at: int
    traceparent: str = ""


class ValidationTask(Struct, kw_only=True, frozen=True):
    """A ``validating`` job taken for one check under check token ``token``."""

    id: str
    type: str
    token: str
    check: int
    epoch: int = 0
    validator_url: str = ""
    service_job_id: str = ""
    traceparent: str = ""


class Attempt(Struct, kw_only=True, frozen=True):
    """One attempt of a job: its start record joined with its end record.

    Each attempt has its own fields in the job hash (``att:<n>`` when it
    starts, ``atx:<n>`` when it ends, ``ap:<n>:<phase>`` per phase result), so a
    later attempt never overwrites an earlier one's record. Its result is the job's
    ``result`` while it is the last attempt that succeeded, ``ar:<n>`` once a later
    one's took its place. Only what an attempt has is stored: an absent key reads as
    its default here (``by`` as ``"worker"`` once the attempt ended).
    """

    n: int
    worker: str = ""
    started_at: float = 0.0
    resumed_at_phase: str = ""
    outcome: str | None = None
    finished_at: float | None = None
    error: Any = None
    interrupted_phase: str | None = None
    service_job_id: str | None = None
    result: Any = None
    by: str | None = None
    phase_results: dict[str, Any] = {}


class ValidationCheck(Struct, kw_only=True, frozen=True):
    """One check against the source of truth (``epoch`` counts operator retries)."""

    n: int
    epoch: int = 0
    at: float = 0.0
    ok: bool = False
    status: str = ""
    reason: str = ""


class DeliveryView(Struct, kw_only=True, frozen=True):
    """One webhook delivery of a job or batch, as stored."""

    id: str
    event: str
    state: str
    attempts: int
    url: str
    created_at: float
    updated_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None


class JobView(Struct, kw_only=True, frozen=True):
    """A job as stored, decoded for reading (``status``)."""

    id: str
    queue: str
    type: str
    state: str
    input: Any
    priority: int
    max_retries: int
    retry_count: int
    attempts: int
    epoch: int
    timeout: float
    phases: dict[str, str]
    phase_results: dict[str, Any]
    created_at: float
    updated_at: float
    finished_at: float | None
    due_at: float | None
    result: Any
    error: Any
    reason: str | None
    batch: str | None
    service_job_id: str | None
    lease_worker: str | None
    lease_deadline: float | None
    validation_status: str | None
    notification: str | None
    attempt_records: list[Attempt]
    validation_checks: list[ValidationCheck] = []
    raw: dict[str, str] = {}
    category: str | None = None
    problem: str | None = None
    filed_at: float | None = None
    redrives: dict[str, int] = {}  # problem -> times re-driven (README, "Re-drive")
    rerun: str | None = None  # the job that runs it again (re-drive of missing_output)
    rerun_of: str | None = None  # the job it runs again


class BatchView(Struct, kw_only=True, frozen=True):
    """A batch as stored."""

    id: str
    queue: str
    state: str
    expected: int | None
    members: int
    completed: int
    failed: int
    cancelled: int
    threshold: int
    progress_every: int
    stuck_after: float | None
    closed: bool
    created_at: float
    finished_at: float | None
    reason: str | None
    notification: str | None


class RedriveDue(Struct, kw_only=True, frozen=True):
    """A filed job whose re-drive is due: its ``kind`` (the problem it was filed under), read at ``epoch``."""

    id: str
    type: str
    kind: str
    epoch: int


class Unfiled(Struct, kw_only=True, frozen=True):
    """A finished job the evaluator has not filed yet, with what classifying it needs.

    ``notification``: the state of the delivery of its terminal notification
    (``""`` when the job does not notify); ``missing``: the type's required
    outputs absent from a completed job's result.
    """

    id: str
    type: str
    state: str
    epoch: int
    finished_at: int
    reason: str = ""
    notification: str = ""
    batch_reason: str = ""
    result_empty: bool = False
    missing: list[str] = []


class Event(Struct, kw_only=True, frozen=True):
    """One entry of a queue's event stream."""

    stream_id: str
    queue: str
    type: str
    id: str
    at: float
    fields: dict[str, str]


class SlotView(Struct, kw_only=True, frozen=True):
    """A job a daemon's worker slot holds (or a handler it abandoned), as last heartbeated."""

    slot: int
    job: str
    type: str
    attempt: int
    since: float  # epoch seconds: when the handler started


class WorkerView(Struct, kw_only=True, frozen=True):
    """A daemon in the registry: ``live``, ``lost`` (its heartbeat stopped) or ``stopped``.

    ``late`` means live but past its heartbeat deadline, not yet declared lost.
    """

    id: str
    state: str
    host: str = ""
    pid: int = 0
    queues: list[str] = []
    types: list[str] = []  # the job types it has handlers for (it claims only those)
    concurrency: int = 0
    started_at: float | None = None
    heartbeat_at: float | None = None
    deadline: float | None = None
    gone_at: float | None = None
    late: bool = False
    slots: list[SlotView] = []
    abandoned: list[SlotView] = []


class LostWorker(Struct, kw_only=True, frozen=True):
    """A daemon this sweep declared lost: its last heartbeat (ms) and the jobs it then held."""

    id: str
    heartbeat_at: int = 0
    slots: str = ""  # JSON list of SlotView, as last heartbeated
