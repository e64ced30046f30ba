"""OpenTelemetry: one job's spans form one trace, from a client process to the daemon.

A client in its own process submits inside a span of its own; the daemon (in this process,
on the session's redis-server) runs the job's two phases, a validation check and the
completion webhook to a real loopback receiver. Every span lands in one trace with the
parent links the README states, and the webhook request carries the webhook span's
``traceparent``. Spans go to OpenTelemetry's in-memory exporter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobvisor import App, ValidationResult
from tests.cli_support import ROOT, cli_env
from tests.harness import ended, running_daemon
from tests.http_servers import ScriptedServer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (OpenTelemetry allows one per process: set once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def _app() -> App:
    app = App()

    @app.handler("traced", phases=["fetch", "render"], max_retries=0)
    async def traced(ctx: Any) -> dict[str, int]:
        await ctx.phase("fetch", lambda: 1)
        await ctx.phase("render", lambda: 2)
        return {"ok": 1}

    @app.validator("traced")
    async def agree(job: Any) -> ValidationResult:
        return ValidationResult(ok=True, status="completed")

    return app


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


async def test_one_job_is_one_trace_from_the_client_process_to_the_webhook(
        redis_url: str, spans: InMemorySpanExporter) -> None:
    with ScriptedServer() as receiver:
        async with running_daemon(_app(), redis=redis_url, webhook_secret=SECRET, idle_poll=0.1,
                                  validation_interval=0.05, allow_private_destinations=True) as (daemon, watcher):
            client = await trio.to_thread.run_sync(lambda: subprocess.run(
                [sys.executable, "-m", "tests.trace_client", redis_url, "traced", receiver.url_for("/hooks")],
                cwd=ROOT, env=cli_env({"JOBVISOR_ALLOW_PRIVATE_DESTINATIONS": "true"}),
                capture_output=True, text=True, timeout=60))
            assert client.returncode == 0, client.stderr
            sent = json.loads(client.stdout)
            job = sent["job"]
            await watcher.until(lambda: any(r.id == f"{job}~job.completed~0" and r.to == "delivered"
                                            for r in watcher.moves), timeout=30)
        [hook] = receiver.requests
    mine: list[ReadableSpan] = [s for s in spans.get_finished_spans()
                                if _hex(s.context.trace_id, 32) == sent["trace_id"]]
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in mine:
        by_name.setdefault(s.name, []).append(s)
    assert sorted((name, len(group)) for name, group in by_name.items()) == [
        ("jobvisor.attempt", 1), ("jobvisor.claim", 1), ("jobvisor.phase", 2),
        ("jobvisor.validation", 1), ("jobvisor.webhook", 1)]
    assert sent["submit_parent"] == sent["request"]  # the client's submit continued its caller's trace

    def parent(s: ReadableSpan) -> str:
        assert s.parent is not None, s.name
        return _hex(s.parent.span_id, 16)

    [attempt], [claim] = by_name["jobvisor.attempt"], by_name["jobvisor.claim"]
    [check], [webhook] = by_name["jobvisor.validation"], by_name["jobvisor.webhook"]
    for child in (attempt, claim, check, webhook):
        assert parent(child) == sent["submit"], child.name  # each continues the submit
    phases = sorted(by_name["jobvisor.phase"], key=lambda s: s.start_time or 0)
    assert [s.attributes["jobvisor.phase"] for s in phases if s.attributes] == ["fetch", "render"]
    assert {parent(s) for s in phases} == {_hex(attempt.context.span_id, 16)}
    assert attempt.attributes is not None
    assert (attempt.attributes["jobvisor.job.id"], attempt.attributes["jobvisor.attempt"],
            attempt.attributes["jobvisor.outcome"]) == (job, 1, "complete")
    assert attempt.status.is_ok
    version, trace_id, span_id, flags = hook.headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", sent["trace_id"], _hex(webhook.context.span_id, 16))
    assert int(flags, 16) & 1  # sampled


async def test_without_a_trace_context_the_job_runs_untraced_by_the_client(
        redis_url: str, spans: InMemorySpanExporter) -> None:
    """A job submitted with no current span (the CLI, a client without OpenTelemetry) stores no
    trace context: its claim is not a span and its attempt starts a trace of its own."""
    app = _app()
    async with running_daemon(app, redis=redis_url, idle_poll=0.1, validation_interval=0.05) as (daemon, watcher):
        from jobvisor.adapters.records import JobSpec

        job = (await daemon.store.submit(JobSpec(type="traced", phases=("fetch", "render"),
                                                 has_validator=True, max_retries=0))).id
        await watcher.until(ended(watcher, job))
        view = await daemon.store.get_job(job)
    assert view.state == "completed"
    names = [s.name for s in spans.get_finished_spans()
             if s.attributes and s.attributes.get("jobvisor.job.id") == job]
    assert "jobvisor.claim" not in names
    [attempt] = [s for s in spans.get_finished_spans() if s.name == "jobvisor.attempt"
                 and s.attributes and s.attributes.get("jobvisor.job.id") == job]
    assert attempt.parent is None
