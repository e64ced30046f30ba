"""The Python API for handlers: ``App`` and the context a handler receives.

::

    from jobvisor import App

    app = App()

    @app.handler("thumbnail", phases=["fetch", "render"], timeout=60, max_retries=3)
    async def thumbnail(ctx):
        image = await ctx.phase("fetch", fetch, ctx.input["url"])  # skipped on retry once done
        return await ctx.phase("render", render, image)

    @app.validator("thumbnail")
    async def is_really_done(job) -> ValidationResult: ...

    @app.status_query("thumbnail")
    async def ask_service(service_job_id) -> StatusAnswer: ...

    @app.schedule("nightly-report", cron="0 3 * * *", tz="Europe/Paris", input={"days": 1})
    @app.handler("report")
    async def report(ctx): ...

A handler takes a :class:`JobContext` and returns something msgspec can
encode; an exception fails the attempt (retried with backoff within
``max_retries``). Phases are run through :meth:`JobContext.phase`: a phase
completed by an earlier attempt is not run again, its stored result is
returned, so a retry resumes at the first unfinished phase.

Where a handler runs (``isolation``), chosen at registration:

==========  ==========================  ===========================================
isolation   the handler                 at its timeout or cancel
==========  ==========================  ===========================================
``loop``    ``async def`` (default)     cancelled at its next ``await``; one that
                                        blocks the loop cannot be, and is judged
                                        timed out when it returns past its timeout
``thread``  plain ``def`` (default      told (``ctx.cancelled``, and
            for one)                    :class:`Interrupted` at its next ``ctx``
                                        call); abandoned ``abandon_after`` later
``process`` plain module-level ``def``  its child process is killed
==========  ==========================  ===========================================

A ``thread`` handler gets a :class:`SyncJobContext` (the same job fields,
with ``phase`` and ``record_service_job_id`` as plain calls); a ``process``
handler gets a :class:`ProcessContext` (the job's fields only: a child
process records no phases).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from jobvisor.adapters.rates import check_rate_key, parse_rate, wire
from jobvisor.adapters.records import PhaseName, TypeName
from jobvisor.adapters.redrive import Redrive
from jobvisor.adapters.urls import check_url

from .context import Interrupted, JobContext, PhaseReporter, ProcessContext, SyncJobContext

__all__ = [
    "App",
    "HandlerSpec",
    "ScheduleDecl",
    "Interrupted",
    "Isolation",
    "JobContext",
    "ProcessContext",
    "SyncJobContext",
    "PhaseReporter",
    "Redrive",
    "StatusAnswer",
    "ServiceStatus",
    "ValidationResult",
    "HttpValidator",
]

Handler = Callable[..., Any]
Isolation = Literal["loop", "thread", "process"]
log = logging.getLogger("jobvisor.app")


class ServiceStatus(enum.StrEnum):
    """What an external service says of a job (``@app.status_query``)."""

    COMPLETED = "completed"
    RUNNING = "running"
    FAILED = "failed"
    UNKNOWN = "unknown"


class StatusAnswer(msgspec.Struct, frozen=True, kw_only=True):
    status: ServiceStatus
    result: Any = None


class ValidationResult(msgspec.Struct, frozen=True, kw_only=True):
    """A validator's verdict: ``ok``, and what the source of truth said."""

    ok: bool
    status: str = ""
    reason: str = ""


class HttpValidator(msgspec.Struct, frozen=True, kw_only=True):
    """The built-in validator: GET ``url`` (``{job_id}``, ``{service_job_id}`` filled in),
    read ``field``, compare with ``expected``, and require ``non_null`` fields."""

    url: str
    field: str = "status"
    expected: str = "completed"
    non_null: tuple[str, ...] = ("completed_at",)

    def __post_init__(self) -> None:
        check_url(self.url.replace("{job_id}", "x").replace("{service_job_id}", "x"), "validator url")


Validator = Callable[[Any], Awaitable[ValidationResult]]
StatusQuery = Callable[[str], Awaitable[StatusAnswer]]


@dataclass(frozen=True)
class HandlerSpec:
    """A job type: its handler and the defaults its jobs are submitted with."""

    type: str
    fn: Handler
    isolation: Isolation = "loop"
    queue: str = "default"
    phases: tuple[str, ...] = ()
    timeout: float = 300.0
    max_retries: int = 3
    backoff: float = 1.0
    backoff_max: float = 300.0
    validator: Validator | HttpValidator | None = None
    status_query: StatusQuery | None = None
    required_outputs: tuple[str, ...] = ()
    rate_limit: str | None = None  # "<count>/<s|m|h>": starts allowed across every daemon
    rate_key: str | None = None  # the input field whose every value has its own limit
    redrive: Redrive | None = None  # README, "Re-drive"

    @property
    def has_validator(self) -> bool:
        return self.validator is not None

    def describe(self) -> dict[str, Any]:
        """What the daemon publishes about this type (``jv:types``), for submitters."""
        return {
            "queue": self.queue,
            "isolation": self.isolation,
            "phases": list(self.phases),
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "backoff": self.backoff,
            "backoff_max": self.backoff_max,
            "has_validator": self.has_validator,
            "has_status_query": self.status_query is not None,
            "required_outputs": list(self.required_outputs),
            "rate_limit": self.rate_limit,
            "rate_key": self.rate_key,
            "redrive": None if self.redrive is None else self.redrive.describe(),
        }

    def rate_wire(self) -> str:
        """The type's limit as the claim reads it (``""``: none); see :mod:`adapters.rates`."""
        return wire(None if self.rate_limit is None else parse_rate(self.rate_limit), self.rate_key)


class _TypeSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: TypeName
    phases: tuple[PhaseName, ...] = ()
    timeout: float = msgspec.field(default=300.0)
    max_retries: int = 3
    backoff: float = 1.0
    backoff_max: float = 300.0
    required_outputs: tuple[Annotated[str, Meta(min_length=1, max_length=256)], ...] = ()


def _isolation_of(type: str, fn: Handler, asked: Isolation | None, phases: tuple[str, ...]) -> Isolation:
    """Where ``fn`` runs; one line in the log for a plain function, a ValueError for a mismatch."""
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(fn.__class__.__call__)
    where: Isolation = asked or ("loop" if is_async else "thread")
    if where not in ("loop", "thread", "process"):
        raise ValueError(f"handler {type!r}: isolation is one of loop, thread, process, not {where!r}")
    if where == "loop" and not is_async:
        raise ValueError(f"handler {type!r}: isolation='loop' needs an async def; a plain function "
                         "runs in a thread (isolation='thread') or a process (isolation='process')")
    if where != "loop" and is_async:
        raise ValueError(f"handler {type!r}: isolation={where!r} needs a plain def, not an async def")
    if where == "process":
        if phases:
            raise ValueError(f"handler {type!r}: a process-isolated handler cannot record phases")
        # Sent to the child by reference (module and name), so it must be reachable from its
        # module; the module's own attribute is not set yet while the decorator runs.
        qualname = getattr(fn, "__qualname__", "<unknown>")
        if "<" in qualname or "." in qualname or not getattr(fn, "__module__", None):
            raise ValueError(f"handler {type!r}: isolation='process' needs a function defined at module "
                             f"level (it is sent to a child process by reference), not {qualname}")
    if where == "thread":
        log.info("handler %r is a plain function: it runs in a worker thread; at its timeout it is told "
                 "to stop and abandoned if it does not", type)
    return where


@dataclass(frozen=True)
class ScheduleDecl:
    """A schedule an app declares: the daemons add it at start (``supervisor/schedules.py``)."""

    name: str
    type: str
    input: Any = None
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    queue: str | None = None
    missed: str = "skip"
    catch_up_max: int = 10
    grace: float = 60.0


@dataclass
class App:
    """A registry of job types. Nothing is global: make as many apps as you like."""

    handlers: dict[str, HandlerSpec] = field(default_factory=dict)
    schedules: dict[str, ScheduleDecl] = field(default_factory=dict)

    def handler(
        self,
        type: str,
        *,
        queue: str = "default",
        phases: Sequence[str] = (),
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        required_outputs: Sequence[str] = (),
        isolation: Isolation | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        redrive: Redrive | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register the handler for ``type`` (a decorator).

        ``required_outputs`` names the keys the result (a JSON object) must
        hold, non-null: a completed job without one of them, or with an
        empty result, is filed ``incomplete`` / ``missing_output``.
        ``isolation`` is where it runs (see the module docstring): by default
        ``loop`` for an ``async def`` and ``thread`` for a plain function;
        ``process`` takes a plain function defined at module level, without
        phases. A mismatch is a ``ValueError`` at registration.
        ``rate_limit`` (``"100/m"``, ``"10/s"``, ``"1000/h"``) caps how often jobs of the
        type start, across every daemon, optionally per value of the input field
        ``rate_key`` (README, "Rate limits"); a bad one is a ``ValueError`` naming it.
        ``redrive`` (:class:`Redrive`) re-sends the dead webhook of a job filed
        ``notification_failed``, and runs a job filed ``missing_output`` again as a new job,
        after a delay, at most N times each (README, "Re-drive").
        """
        from jobvisor.adapters.keys import check_queue_name

        check_queue_name(queue)
        if isinstance(required_outputs, str):
            raise ValueError(f"handler {type!r}: required_outputs is a list of names, not one string")
        settings = msgspec.convert(
            {"type": type, "phases": list(phases), "timeout": timeout, "max_retries": max_retries,
             "backoff": backoff, "backoff_max": backoff_max, "required_outputs": list(required_outputs)},
            _TypeSettings,
        )
        if not 0 < timeout <= 7 * 86400 or not 0 <= max_retries <= 1000 or backoff < 0:
            raise ValueError(f"handler {type!r}: timeout, max_retries or backoff out of range")
        if len(set(settings.phases)) != len(settings.phases):
            raise ValueError(f"handler {type!r}: phase names must be unique")
        try:
            limit = None if rate_limit is None else str(parse_rate(rate_limit))
            if rate_key is not None:
                check_rate_key(rate_key, rate_limit)
        except ValueError as exc:
            raise ValueError(f"handler {type!r}: {exc}") from None
        if redrive is not None and not isinstance(redrive, Redrive):
            raise ValueError(f"handler {type!r}: redrive is a Redrive(notification_failed=N, missing_output=N, "
                             f"delay=seconds), not {redrive!r}"[:200])

        def register(fn: Handler) -> Handler:
            if type in self.handlers:
                raise ValueError(f"handler {type!r} is already registered")
            where = _isolation_of(type, fn, isolation, settings.phases)
            self.handlers[type] = HandlerSpec(
                type=type, fn=fn, isolation=where, queue=queue, phases=settings.phases, timeout=timeout,
                max_retries=max_retries, backoff=backoff, backoff_max=backoff_max,
                required_outputs=settings.required_outputs, rate_limit=limit, rate_key=rate_key,
                redrive=redrive,
            )
            return fn

        return register

    def described_types(self) -> dict[str, dict[str, Any]]:
        """Each handler's type with the defaults it publishes (what a submit of it reads)."""
        return {t: h.describe() for t, h in self.handlers.items()}

    def _replace(self, type: str, **changes: Any) -> None:
        if type not in self.handlers:
            raise ValueError(f"no handler registered for {type!r}; register the handler first")
        self.handlers[type] = dataclasses.replace(self.handlers[type], **changes)

    def validator(self, type: str) -> Callable[[Validator], Validator]:
        """Register a Python validator: ``async def (job: JobView) -> ValidationResult``."""

        def register(fn: Validator) -> Validator:
            self._replace(type, validator=fn)
            return fn

        return register

    def http_validator(self, type: str, url: str, **options: Any) -> None:
        """Use the built-in HTTP validator for ``type``."""
        self._replace(type, validator=HttpValidator(url=url, **options))

    def status_query(self, type: str) -> Callable[[StatusQuery], StatusQuery]:
        """Register ``async def (service_job_id) -> StatusAnswer`` for lost-worker recovery."""

        def register(fn: StatusQuery) -> StatusQuery:
            self._replace(type, status_query=fn)
            return fn

        return register

    def schedule(
        self, name: str, *, cron: str | None = None, every: float | None = None, type: str | None = None,
        input: Any = None, tz: str = "UTC", queue: str | None = None, missed: str = "skip",
        catch_up_max: int = 10, grace: float = 60.0,
    ) -> Callable[[Handler], Handler]:
        """Declare a schedule: a job of ``type`` with ``input`` at each tick of ``cron`` (read in
        ``tz``) or ``every`` seconds; ``missed`` ticks (no daemon ran) are ``skip``ped (the
        latest fires when at most ``grace`` seconds old) or caught up (``catch_up``, at most
        ``catch_up_max``). Used as a decorator over a handler, ``type`` defaults to the
        handler's (place it above ``@app.handler``). Every daemon of the app adds it at start;
        each tick is submitted once however many run. A bad value is a ``ValueError``."""
        from jobvisor.adapters.records import JobSpec
        from jobvisor.adapters.schedules import ScheduleSpec

        decl = ScheduleDecl(name=name, type=type or "", input=input, cron=cron, every=every, tz=tz, queue=queue,
                            missed=missed, catch_up_max=catch_up_max, grace=grace)
        ScheduleSpec(name=name, job=JobSpec(type=type or "x"), cron=cron, every=every, tz=tz, missed=missed,
                     catch_up_max=catch_up_max, grace=grace).timing()
        if name in self.schedules:
            raise ValueError(f"schedule {name!r} is already declared")
        if type is not None:
            self.schedules[name] = decl

        def register(fn: Handler) -> Handler:
            if type is None:
                owner = next((h.type for h in self.handlers.values() if h.fn is fn), None)
                if owner is None:
                    raise ValueError(f"schedule {name!r}: no type, and {fn!r} is not a registered handler")
                self.schedules[name] = dataclasses.replace(decl, type=owner)
            return fn

        return register

    @property
    def queues(self) -> list[str]:
        return sorted({h.queue for h in self.handlers.values()}) or ["default"]
