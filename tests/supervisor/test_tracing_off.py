"""Tracing without an SDK: a span that could change nothing is not made, one that carries a
job's trace still is (its ``traceparent`` reaches what the handler submits).

OpenTelemetry allows one tracer provider per process, set once; the test suite's own
tracing tests set one, so each check runs in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.cli_support import ROOT, cli_env

TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"

SCRIPT = textwrap.dedent(f"""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from jobvisor.supervisor import tracing

    TP = {TRACEPARENT!r}
    assert tracing.quiet() and tracing.quiet("")
    with tracing.span("jobvisor.phase") as span:
        assert span is None
        assert tracing.current_traceparent() == ""
    # a job that carries a trace: its attempt continues it, and so does a submit inside it
    assert not tracing.quiet(TP)
    with tracing.span("jobvisor.attempt", traceparent=TP, kind="consumer") as span:
        assert span is not None and not span.is_recording()
        assert tracing.current_traceparent() == TP
        assert not tracing.quiet()
        with tracing.span("jobvisor.submit", kind="producer") as inner:
            assert inner is not None
            assert tracing.current_traceparent() == TP
    assert tracing.quiet()
    # a provider set later (by the application, at any time) is used from then on
    trace.set_tracer_provider(TracerProvider())
    assert not tracing.quiet()
    with tracing.span("jobvisor.phase") as span:
        assert span is not None and span.is_recording()
        assert tracing.current_traceparent().startswith("00-")
    print("ok")
""")


def test_spans_without_an_sdk_are_made_only_when_they_carry_a_trace() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=cli_env({}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_tracer_provider_named_by_the_environment_is_used_from_the_first_span() -> None:
    script = textwrap.dedent("""
        from jobvisor.supervisor import tracing

        assert not tracing.quiet()
        with tracing.span("jobvisor.phase") as span:
            assert span is not None and span.is_recording()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                          env=cli_env({"OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
