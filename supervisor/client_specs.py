"""What a client submits, built and checked before anything is written: a job's spec from its
type's defaults (:func:`build_spec`), a batch's (:func:`build_batch_spec`) and a schedule's
(:func:`schedule_spec`), each refusal one :class:`BadInput` naming the field; the submitter's
destination policy; the submit's trace span. The CLI, the clients, the HTTP API and the
schedule actor all build through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from jobvisor.adapters.destinations import DestinationPolicy
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.records import BatchSpec, JobSpec, decode_spec
from jobvisor.adapters.schedules import ScheduleSpec
from jobvisor.adapters.urls import check_url

from . import tracing

__all__ = ["build_spec", "build_batch_spec", "schedule_spec", "submit_span", "submitter_policy"]

_OVERRIDES = {
    "queue", "priority", "max_retries", "timeout", "backoff", "backoff_max", "delay",
    "webhook_url", "validator_url", "notify", "idempotency_key", "idempotency_ttl", "batch",
    "depends_on", "on_dependency_failure",
}


def build_spec(
    types: dict[str, dict[str, Any]], type: str, input: Any, *,
    allowed_hosts: frozenset[str] | None = None, destinations: DestinationPolicy | None = None,
    **options: Any,
) -> JobSpec:
    """A validated :class:`JobSpec` for ``type`` with its registered defaults and ``options``.

    ``webhook_url`` and ``validator_url`` must be http(s) URLs with a host, that host must be
    in ``allowed_hosts`` when one is given, and the destination policy (``destinations``,
    else the one of the ``JOBVISOR_*`` environment) must not refuse it by name (an internal
    address in any spelling, ``localhost``, ``*.internal``...); else :class:`BadInput`
    naming the field. Nothing is written before these checks pass.
    """
    unknown = set(options) - _OVERRIDES
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: not a submit option")
    if type not in types:
        known = ", ".join(sorted(types)) or "none registered"
        raise BadInput(f"type: unknown job type {type!r} (known: {known})")
    defaults = types[type]
    fields: dict[str, Any] = {
        "type": type,
        "input": input,
        "queue": defaults.get("queue", "default"),
        "phases": defaults.get("phases", []),
        "timeout": defaults.get("timeout", 300.0),
        "max_retries": defaults.get("max_retries", 3),
        "backoff": defaults.get("backoff", 1.0),
        "backoff_max": defaults.get("backoff_max", 300.0),
        "has_validator": defaults.get("has_validator", False),
    }
    fields.update({k: v for k, v in options.items() if v is not None})
    spec = decode_spec(JobSpec, fields)
    _check_destinations(spec, ("webhook_url", "validator_url"), allowed_hosts, destinations)
    return spec


@contextmanager
def submit_span(spec: JobSpec) -> Iterator[JobSpec]:
    """The ``jobvisor.submit`` span around a submit, and the spec carrying its trace context
    (the job's later spans continue it); ``spec`` itself when tracing is off."""
    with tracing.span("jobvisor.submit", kind="producer", attributes={
            "jobvisor.job.type": spec.type, "jobvisor.queue": spec.queue}) as current:
        traceparent = tracing.current_traceparent() if current is not None else ""
        yield msgspec.structs.replace(spec, traceparent=traceparent) if traceparent else spec


def submitter_policy() -> DestinationPolicy:
    """The submitter's destination policy: the daemon's settings read from the environment
    (``JOBVISOR_ALLOW_DESTINATIONS``, ``JOBVISOR_ALLOW_PRIVATE_DESTINATIONS``,
    ``JOBVISOR_ALLOWED_HOSTS``); a bad value is :class:`BadInput`."""
    try:
        return DestinationPolicy.from_env(os.environ)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _check_destinations(spec: Any, names: tuple[str, ...], allowed_hosts: frozenset[str] | None,
                        destinations: DestinationPolicy | None) -> None:
    policy = destinations if destinations is not None else submitter_policy()
    for name in names:
        url = getattr(spec, name)
        if url is None:
            continue
        try:
            if allowed_hosts is not None:
                check_url(url, name, allowed_hosts)
            policy.check_url(url, name)
        except ValueError as exc:
            raise BadInput(str(exc)) from None


def build_batch_spec(*, destinations: DestinationPolicy | None = None, **options: Any) -> BatchSpec:
    """A validated :class:`BatchSpec`; a bad option is one :class:`BadInput` line naming it
    (the webhook URL is checked as :func:`build_spec` checks it)."""
    unknown = set(options) - set(BatchSpec.__struct_fields__)
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: not a batch option")
    spec = decode_spec(BatchSpec, {k: v for k, v in options.items() if v is not None})
    _check_destinations(spec, ("webhook_url",), None, destinations)
    return spec


_SCHEDULE_OPTIONS = {"cron", "every", "tz", "missed", "catch_up_max", "grace"}


def schedule_spec(types: dict[str, dict[str, Any]], name: str, type: str, input: Any, *,
                  queue: str | None = None, **options: Any) -> ScheduleSpec:
    """A :class:`ScheduleSpec` whose job is built as a submit's (the type's defaults); every
    field checked, a refusal :class:`BadInput` naming it."""
    unknown = set(options) - _SCHEDULE_OPTIONS
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: not a schedule option")
    job = build_spec(types, type, input, queue=queue)
    fields = {k: v for k, v in options.items() if v is not None}
    try:
        spec = ScheduleSpec(name=name, job=job, **fields)
    except TypeError as exc:
        raise BadInput(str(exc)) from None
    spec.timing()
    return spec
