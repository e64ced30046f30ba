"""A client process that traces its submit: ``python -m tests.trace_client URL TYPE PHASES``.

Sets up OpenTelemetry's SDK with an in-memory exporter, submits one job through
:class:`jobvisor.Client` inside a span of its own, and prints one JSON line: the job id
and the ids of its ``request`` and ``jobvisor.submit`` spans.
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobvisor import Client


def main(url: str, type_: str, webhook_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with trace.get_tracer("client").start_as_current_span("request"), Client(url) as client:
        job = client.submit(type_, {"n": 1}, webhook_url=webhook_url)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    print(json.dumps({"job": job, "trace_id": f"{spans['request'].context.trace_id:032x}",
                      "request": f"{spans['request'].context.span_id:016x}",
                      "submit": f"{spans['jobvisor.submit'].context.span_id:016x}",
                      "submit_parent": f"{spans['jobvisor.submit'].parent.span_id:016x}"}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
