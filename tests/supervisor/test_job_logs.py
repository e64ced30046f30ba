"""One log line per job outcome, and ``ctx.log``: in process, on the embedded store, in virtual time.

Each outcome is logged exactly once, by the daemon holding the job, on ``jobvisor.jobs``:
failures at WARNING, successes (completed, a retry scheduled) at DEBUG unless
``log_outcomes="info"``. Records carry the job's fields as attributes.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from jobvisor import App, ValidationResult
from jobvisor.adapters.records import JobSpec
from jobvisor.supervisor.joblog import log_outcome
from jobvisor.supervisor.logsetup import configure_logging
from tests.harness import ended, running_daemon

JOBS = "jobvisor.jobs"


def _spec(app: App, type_: str, **extra: Any) -> JobSpec:
    h = app.handlers[type_]
    return JobSpec(type=type_, phases=h.phases, timeout=h.timeout, max_retries=h.max_retries,
                   backoff=h.backoff, backoff_max=h.backoff_max, has_validator=h.has_validator, **extra)


def _app() -> App:
    app = App()

    @app.handler("ok")
    async def ok(ctx: Any) -> dict[str, int]:
        return {"n": 1}

    @app.handler("flaky", max_retries=1, backoff=1.0)
    async def flaky(ctx: Any) -> None:
        if ctx.attempt == 1:
            raise ValueError("first try\nfails")

    @app.handler("boom", max_retries=0)
    async def boom(ctx: Any) -> None:
        raise RuntimeError("no luck")

    @app.handler("slow", timeout=2.0, max_retries=0)
    async def slow(ctx: Any) -> None:
        await trio.sleep(60)

    return app


def _lines(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == JOBS and getattr(r, "job_id", None) == job_id]


async def _run(app: App, caplog: pytest.LogCaptureFixture, *types: str, **settings: Any) -> dict[str, str]:
    ids: dict[str, str] = {}
    async with running_daemon(app, **settings) as (daemon, watcher):
        for type_ in types:
            ids[type_] = (await daemon.store.submit(_spec(app, type_))).id
        for job in ids.values():
            await watcher.until(ended(watcher, job))
    return ids


# (type, [(level, outcome) of each line, in order])
EXPECTED = [
    ("ok", [(logging.DEBUG, "completed")]),
    ("flaky", [(logging.DEBUG, "scheduled"), (logging.DEBUG, "completed")]),
    ("boom", [(logging.WARNING, "failed")]),
    ("slow", [(logging.WARNING, "timed_out")]),
]


async def test_each_outcome_is_one_line_with_the_job_fields(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=JOBS)
    app = _app()
    ids = await _run(app, caplog, *(t for t, _ in EXPECTED))
    for type_, expected in EXPECTED:
        records = _lines(caplog, ids[type_])
        assert [(r.levelno, r.outcome) for r in records] == expected, type_  # type: ignore[attr-defined]
        for attempt, record in enumerate(records, start=1):
            assert (record.job_type, record.queue, record.attempt) == (type_, "default", attempt)  # type: ignore[attr-defined]
            assert isinstance(record.duration, float)  # type: ignore[attr-defined]
            message = record.getMessage()
            assert message.startswith(f"job {ids[type_]} ")
            assert "\n" not in message
    boom = _lines(caplog, ids["boom"])[0].getMessage()
    assert boom.endswith(": RuntimeError: no luck"), boom
    retry = _lines(caplog, ids["flaky"])[0].getMessage()
    assert "retry scheduled" in retry
    assert retry.endswith(": ValueError: first try fails"), retry  # one line, whatever the message
    assert "Timeout: handler exceeded its timeout of 2s" in _lines(caplog, ids["slow"])[0].getMessage()


async def test_successes_are_silent_at_info_unless_asked(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=JOBS)
    app = _app()
    ids = await _run(app, caplog, "ok", "boom")
    assert _lines(caplog, ids["ok"]) == []
    assert [r.levelno for r in _lines(caplog, ids["boom"])] == [logging.WARNING]
    caplog.clear()
    ids = await _run(app, caplog, "ok", log_outcomes="info")
    assert [(r.levelno, r.outcome) for r in _lines(caplog, ids["ok"])] == [  # type: ignore[attr-defined]
        (logging.INFO, "completed")]


async def test_a_validation_outcome_is_logged_once_by_the_validator(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=JOBS)
    app = App()
    verdicts = {"good": True, "bad": False}

    @app.handler("checked", max_retries=0)
    async def checked(ctx: Any) -> dict[str, str]:
        return {"which": ctx.input["which"]}

    @app.validator("checked")
    async def check(job: Any) -> ValidationResult:
        ok = verdicts[job.result["which"]]
        return ValidationResult(ok=ok, status="done" if ok else "missing", reason="" if ok else "not there")

    ids = {}
    async with running_daemon(app, validation_attempts=2, validation_interval=1.0) as (daemon, watcher):
        for which in verdicts:
            ids[which] = (await daemon.store.submit(_spec(app, "checked", input={"which": which}))).id
        for job in ids.values():
            await watcher.until(ended(watcher, job))
        registry = daemon.deps.metrics.registry
    per_job = "jobvisor_validation_checks_per_job"
    # the good job took one check, the bad one both allowed: one observation each
    assert registry.get_sample_value(f"{per_job}_sum", {"outcome": "completed"}) == 1
    assert registry.get_sample_value(f"{per_job}_sum", {"outcome": "validation_failed"}) == 2
    assert registry.get_sample_value(f"{per_job}_count", {"outcome": "validation_failed"}) == 1
    good = [(r.levelno, r.outcome) for r in _lines(caplog, ids["good"])]  # type: ignore[attr-defined]
    bad = [(r.levelno, r.outcome) for r in _lines(caplog, ids["bad"])]  # type: ignore[attr-defined]
    assert good == [(logging.DEBUG, "validating"), (logging.DEBUG, "completed")]
    assert bad == [(logging.DEBUG, "validating"), (logging.WARNING, "validation_failed")]
    line = _lines(caplog, ids["bad"])[-1].getMessage()
    assert "check 2" in line
    assert "not there" in line


async def test_ctx_log_names_the_job_attempt_and_phase(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="jobvisor.handler")
    app = App()

    @app.handler("phased", phases=["fetch"], max_retries=1, backoff=1.0)
    async def phased(ctx: Any) -> None:
        ctx.log.info("starting")

        async def fetch() -> int:
            ctx.log.warning("fetching")
            return 1

        await ctx.phase("fetch", fetch)
        if ctx.attempt == 1:
            raise ValueError("again")

    async with running_daemon(app) as (daemon, watcher):
        job = (await daemon.store.submit(_spec(app, "phased"))).id
        await watcher.until(ended(watcher, job))
    seen = [(r.name, r.levelname, r.job_id, r.job_type, r.attempt, r.phase, r.getMessage())  # type: ignore[attr-defined]
            for r in caplog.records if r.name.startswith("jobvisor.handler")]
    assert seen == [
        ("jobvisor.handler.phased", "INFO", job, "phased", 1, None, f"job {job} (phased attempt 1): starting"),
        ("jobvisor.handler.phased", "WARNING", job, "phased", 1, "fetch",
         f"job {job} (phased attempt 1, phase fetch): fetching"),
        # the second attempt does not run the completed phase again
        ("jobvisor.handler.phased", "INFO", job, "phased", 2, None, f"job {job} (phased attempt 2): starting"),
    ]


async def test_a_thread_handler_logs_through_the_same_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="jobvisor.handler")
    app = App()

    @app.handler("threaded", phases=["work"])
    def threaded(ctx: Any) -> None:
        ctx.log.info("before")
        ctx.phase("work", lambda: ctx.log.info("inside"))

    async with running_daemon(app, idle_poll=0.05) as (daemon, watcher):
        job = (await daemon.store.submit(_spec(app, "threaded"))).id
        await watcher.until(ended(watcher, job), timeout=20)
    seen = [(r.job_id, r.attempt, r.phase, r.getMessage())  # type: ignore[attr-defined]
            for r in caplog.records if r.name == "jobvisor.handler.threaded"]
    assert seen == [(job, 1, None, f"job {job} (threaded attempt 1): before"),
                    (job, 1, "work", f"job {job} (threaded attempt 1, phase work): inside")]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The daemon's logging, in the JSON format, into a string; the root logger restored after."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("debug", "json", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_the_json_format_is_one_object_per_line_with_the_job_fields(json_log: io.StringIO) -> None:
    log_outcome(job_id="default.01J", job_type="report", queue="default", attempt=2, outcome="failed",
                duration=0.25, error={"type": "ValueError", "message": "bad\nthing"})
    logging.getLogger("jobvisor.daemon").info("see https://user:pw@hooks.example/x?token=abc")
    lines = json_log.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert {k: first[k] for k in ("level", "logger", "job_id", "job_type", "queue", "attempt", "outcome",
                                  "duration", "error")} == {
        "level": "WARNING", "logger": "jobvisor.jobs", "job_id": "default.01J", "job_type": "report",
        "queue": "default", "attempt": 2, "outcome": "failed", "duration": 0.25, "error": "ValueError: bad thing"}
    assert first["message"].startswith("job default.01J failed (report, queue default, attempt 2, 0.250s)")
    assert first["timestamp"].endswith("+00:00")  # ISO 8601, UTC
    assert "pw" not in second["message"]
    assert "abc" not in second["message"]



async def test_queue_wait_is_observed_once_per_job_from_submit_to_its_first_claim(
        autojump_clock: trio.testing.MockClock) -> None:
    app = App()

    @app.handler("slow", max_retries=1, backoff=1.0)
    async def slow(ctx: Any) -> None:
        await trio.sleep(5)
        if ctx.attempt == 1:
            raise ValueError("again")  # the retry's claim is not a queue wait

    async with running_daemon(app, concurrency=1) as (daemon, watcher):
        first = (await daemon.store.submit(_spec(app, "slow"))).id
        second = (await daemon.store.submit(_spec(app, "slow"))).id
        for job in (first, second):
            await watcher.until(ended(watcher, job))
        registry = daemon.deps.metrics.registry
    wait = "jobvisor_queue_wait_seconds"
    assert registry.get_sample_value(f"{wait}_count", {"type": "slow"}) == 2
    # the first was claimed at once; the second waited for the first's attempt (5 s, one slot)
    total = registry.get_sample_value(f"{wait}_sum", {"type": "slow"})
    assert total is not None
    assert 5.0 - 0.01 <= total <= 5.0 + 0.5, total


def test_a_url_in_an_error_is_redacted_in_the_json_error_field(json_log: io.StringIO) -> None:
    log_outcome(job_id="default.01J", job_type="report", queue="default", attempt=1, outcome="failed",
                duration=0.1, error={"type": "HTTPError", "message": "https://bob:hunter2@api.example/x?token=abc"})
    [line] = json_log.getvalue().splitlines()
    assert "hunter2" not in line
    assert "abc" not in json.loads(line)["error"]
