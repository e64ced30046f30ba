"""OpenTelemetry spans for jobs, when OpenTelemetry is installed (``pip install jobvisor[otel]``).

A job's trace starts (or continues) at the client's submit: its ``jobvisor.submit`` span's W3C
``traceparent`` is stored with the job, and every later span of the job is in that trace: the
claim and each handler attempt (``jobvisor.attempt``), each phase (``jobvisor.phase``), each
validation check (``jobvisor.validation``) and each webhook delivery attempt
(``jobvisor.webhook``, whose request carries its own ``traceparent`` header).

Without the ``opentelemetry`` package nothing is imported and every function here is a no-op;
with the API but no SDK configured, spans are OpenTelemetry's non-recording ones and no
``traceparent`` is stored. A span that could change nothing (no tracer provider set, no
``traceparent`` to continue, no trace in the current context: OpenTelemetry would hand back
the current span, an empty non-recording one) is not made at all: :func:`span` is then a shared empty context,
so a daemon without tracing pays next to nothing per job.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

__all__ = ["ENABLED", "current_traceparent", "inject_headers", "now_ns", "quiet", "record_span",
           "set_error", "set_outcome", "span"]

ENABLED = importlib.util.find_spec("opentelemetry") is not None
"""Whether the OpenTelemetry API is installed (checked without importing it)."""

_tracer: Any = None


def _get_tracer() -> Any:
    global _tracer
    if _tracer is None:
        from opentelemetry import trace

        from jobvisor import __version__

        _tracer = trace.get_tracer("jobvisor", __version__)
    return _tracer


def _parent_context(traceparent: str) -> Any:
    from opentelemetry import propagate

    return propagate.extract({"traceparent": traceparent}) if traceparent else None


_NO_SPAN: AbstractContextManager[Any] = nullcontext(None)
_provider_set = False  # a tracer provider was seen set (it stays set for the process's life)
_trace: Any = None  # opentelemetry.trace, once loaded
_UNKNOWN: Any = object()


def quiet(traceparent: str = "") -> bool:
    """Whether a span (a child of ``traceparent`` when given, else of the current span) would
    be a no-op: OpenTelemetry is not installed, or no tracer provider is set and there is no
    trace to continue (no ``traceparent``, no span with a trace current), where its no-op tracer
    makes no span and hands back the current one, which carries no trace either."""
    global _provider_set, _trace
    if not ENABLED:
        return True
    if _provider_set or traceparent:
        return False
    if _trace is None:
        from opentelemetry import trace

        trace.get_tracer_provider()  # one named by the environment is set now, as at a first span
        _trace = trace
    # Read where OpenTelemetry keeps it (asking get_tracer_provider() looks the environment up
    # each time, several times the cost of the rest); an API without it is asked the public way.
    provider = getattr(_trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:
        provider = _trace.get_tracer_provider()
        provider = None if isinstance(provider, _trace.ProxyTracerProvider) else provider
    if provider is not None:
        _provider_set = True
        return False
    current = _trace.get_current_span()
    return isinstance(current, _trace.NonRecordingSpan) and not current.get_span_context().is_valid


def span(name: str, *, traceparent: str = "", attributes: Mapping[str, Any] | None = None,
         kind: str = "internal") -> AbstractContextManager[Any]:
    """A span named ``name``: a child of ``traceparent`` when given (a job's stored context),
    else of the current span. ``kind`` is ``internal``, ``producer``, ``consumer`` or
    ``client``. An exception leaving the block is recorded on the span and re-raised. The
    block gets the span, or ``None`` when it would be a no-op (:func:`quiet`)."""
    if quiet(traceparent):
        return _NO_SPAN
    return _span(name, traceparent=traceparent, attributes=attributes, kind=kind)


@contextmanager
def _span(name: str, *, traceparent: str, attributes: Mapping[str, Any] | None, kind: str) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind

    kinds = {"internal": SpanKind.INTERNAL, "producer": SpanKind.PRODUCER,
             "consumer": SpanKind.CONSUMER, "client": SpanKind.CLIENT}
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with _get_tracer().start_as_current_span(
            name, context=_parent_context(traceparent), kind=kinds[kind], attributes=attrs) as current:
        yield current


def now_ns() -> int:
    """The wall clock in nanoseconds, as span times are given (0 when tracing is off)."""
    return time.time_ns() if ENABLED else 0


def record_span(name: str, *, traceparent: str, start_ns: int, attributes: Mapping[str, Any]) -> None:
    """A span that began at ``start_ns`` (:func:`now_ns`) and ends now, a child of ``traceparent``;
    nothing when the job carries no trace context."""
    if not ENABLED or not traceparent:
        return
    attrs = {k: v for k, v in attributes.items() if v is not None}
    _get_tracer().start_span(name, context=_parent_context(traceparent), attributes=attrs,
                             start_time=start_ns).end()


def set_outcome(current: Any, outcome: tuple[str, Any] | None, reason: str | None) -> None:
    """Mark an attempt's span with how its handler ended: an error status unless it completed."""
    if current is None:
        return
    kind = outcome[0] if outcome is not None else (reason or "interrupted")
    current.set_attribute("jobvisor.outcome", kind)
    if kind != "complete":
        detail = outcome[1] if outcome is not None else None
        message = detail.get("message") if isinstance(detail, Mapping) else None
        set_error(current, f"{kind}: {message}" if message else kind)


def current_traceparent() -> str:
    """The current span's W3C ``traceparent`` ("" when there is no recording span)."""
    if not ENABLED:
        return ""
    carrier: dict[str, str] = {}
    inject_headers(carrier)
    return carrier.get("traceparent", "")


def inject_headers(headers: dict[str, str]) -> None:
    """Add the current span's trace context headers (``traceparent``) to ``headers``."""
    if not ENABLED:
        return
    from opentelemetry import propagate

    propagate.inject(headers)


def set_error(current: Any, message: str) -> None:
    """Mark ``current`` (a span from :func:`span`, or ``None``) as failed with ``message``."""
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_status(Status(StatusCode.ERROR, message))
