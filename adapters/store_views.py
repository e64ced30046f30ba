"""Views of stored records: job, batch, delivery and daemon hashes and stream entries,
decoded from the strings Redis keeps into the records of :mod:`adapters.records`.

The phase fields have one codec here, used by every reader and writer in Python (the Lua
library has its own pair, ``parse_phases``/``join_phases``, for the same format):

* ``phases``: ``"name=state,name=state"`` in declared order (:func:`encode_phases`,
  :func:`decode_phases`, :func:`new_phases` for a job just submitted);
* ``pr:<name>``: the latest result of a completed phase, and ``ap:<n>:<name>`` attempt
  ``n``'s own copy (:func:`result_field`), JSON;
* a claim hands a worker both, as ``phases`` and a flat ``[name, json, ...]`` list
  (:func:`claimed_phases`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from jobvisor.machines import PhaseState

from .records import (
    Attempt,
    BatchView,
    ClaimedJob,
    DeliveryView,
    Event,
    JobView,
    SlotView,
    ValidationCheck,
    WorkerView,
)

__all__ = [
    "PHASES_FIELD",
    "b2s",
    "batch_view",
    "claimed_dependencies",
    "claimed_phases",
    "decode_phases",
    "delivery_view",
    "encode_phases",
    "event_of",
    "job_view",
    "new_phases",
    "result_field",
    "validation_checks",
    "worker_view",
]

_decode = msgspec.json.Decoder().decode


def b2s(value: Any) -> str:
    """A reply's bytes (or number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)

PHASES_FIELD = "phases"
"""The job hash field holding every phase's state."""


def encode_phases(states: Mapping[str, str]) -> str:
    """Phase states as stored: ``"name=state,name=state"``, in the mapping's order."""
    return ",".join(f"{name}={state}" for name, state in states.items())


def new_phases(names: Iterable[str]) -> str:
    """The ``phases`` field of a job just submitted: every phase pending."""
    return encode_phases(dict.fromkeys(names, PhaseState.PENDING.value))


def decode_phases(text: str) -> dict[str, str]:
    """The ``phases`` field as ``{name: state}``, in declared order."""
    states: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        name, _, state = part.partition("=")
        states[name] = state
    return states


def result_field(name: str, attempt: int | None = None) -> str:
    """The job hash field of phase ``name``'s result: the latest (``pr:``), or ``attempt``'s
    own copy (``ap:<n>:``)."""
    return f"pr:{name}" if attempt is None else f"ap:{attempt}:{name}"


def claimed_phases(job: ClaimedJob) -> tuple[dict[str, str], dict[str, Any]]:
    """A claimed job's phase states and the results of its completed phases."""
    pairs = job.phase_results
    return decode_phases(job.phases), {pairs[i]: _decode(pairs[i + 1]) for i in range(0, len(pairs), 2)}


def claimed_dependencies(job: ClaimedJob) -> dict[str, dict[str, Any]]:
    """A claimed job's dependencies as the claim read them: id -> ``{"state", "result"}``."""
    return {dep: {"state": state, "result": _decode(result)} for dep, state, result in job.dependencies}


def _ms(value: str | None) -> float | None:
    return int(value) / 1000 if value else None


def _json_or(value: str | None, default: Any = None) -> Any:
    return _decode(value) if value else default


def job_view(h: dict[str, str]) -> JobView:
    """Decode a job hash (strings) into a :class:`JobView`."""
    phases = decode_phases(h.get(PHASES_FIELD, ""))
    results = {name: _json_or(h[result_field(name)]) for name in phases if result_field(name) in h}
    attempts = []
    ends = {n: _json_or(h.get(f"atx:{n}"), {}) for n in range(1, int(h.get("attempts", 0)) + 1)}
    # the job's result is its last successful attempt's; an earlier one's is kept in `ar:<n>`
    last_success = max((n for n, end in ends.items() if end.get("outcome") == "succeeded"), default=None)
    for n, end in ends.items():
        start = _json_or(h.get(f"att:{n}"), {})
        record = {**start, **end, "n": n}
        if end:  # only what an attempt has is stored (records of 0.2.0 hold every key)
            record.setdefault("by", "worker")
            if f"ar:{n}" in h:
                record["result"] = _json_or(h[f"ar:{n}"])
            elif n == last_success and "result" not in end:
                record["result"] = _json_or(h.get("result"))
        record["phase_results"] = {name: _json_or(h[result_field(name, n)]) for name in phases
                                   if result_field(name, n) in h}
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
        redrives={k.removeprefix("redrive:"): int(v) for k, v in h.items() if k.startswith("redrive:")},
        rerun=h.get("rerun") or None, rerun_of=h.get("rerun_of") or None,
    )


def validation_checks(h: dict[str, str]) -> list[ValidationCheck]:
    """Every recorded check of a job hash, by epoch then number; times in seconds."""
    checks = []
    for key, value in h.items():
        if key.startswith("vck:"):
            record = _decode(value)
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
    fields = {b2s(k): b2s(v) for k, v in (raw_fields.items() if isinstance(raw_fields, dict) else
                                            zip(raw_fields[::2], raw_fields[1::2], strict=True))}
    return Event(
        stream_id=b2s(stream_id), queue=queue, type=fields.pop("type"), id=fields.pop("id"),
        at=int(fields.pop("at")) / 1000, fields=fields,
    )
