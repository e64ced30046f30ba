"""Real ``jobvisor run`` subprocesses against the fixture's real Redis: signals and crashes.

SPEC.md, "Actors": on SIGINT/SIGTERM the daemon stops claiming, lets running handlers
finish within the grace period, then cancels them and records the interrupted attempts
(naming the phase); a job left ``active`` by a killed daemon is recovered by any daemon's
watchdog; an actor that keeps crashing stops the daemon with one line naming it, exit 1.

The handlers (``tests/daemon_app.py``) count every phase execution in Redis, so these
tests see from outside which phases ran, in which daemon, how often. Waiting on a foreign
process has no event to await: each wait polls Redis in a loop bounded by a deadline, and
fails at once, with the daemon's stderr, if the daemon died. Every daemon is killed in a
``finally``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.cli_support import ROOT, cli_env
from tests.daemon_process import (
    daemon,
    events_of,
    executions,
    jobs,
    submit,
    terminal_events,
    wait_until,
)

# -- the tests --------------------------------------------------------------------------------------


def test_sigterm_lets_running_handlers_finish_within_the_grace(redis_url: str, tmp_path: Path) -> None:
    ids = submit(redis_url, 4, "phased", {"sleep": {"render": 1.5}})
    with daemon(redis_url, tmp_path, "graceful", grace=10, extra=("--concurrency", "3")) as d:
        def three_rendering() -> list[str]:
            started = [i for i in ids if executions(redis_url, i)["render"] == 1]
            return started if len(started) == 3 else []

        running = wait_until(three_rendering, timeout=15, what="three handlers in their render phase", alive=d)
        d.signal(signal.SIGTERM)
        assert d.wait(timeout=10 + 5) == 0, d.stderr()
        # stopping is not an outage: no connection of the daemon says it was lost
        assert "lost its connection" not in d.stderr()
        assert "WARNING" not in d.stderr()
    [waiting] = set(ids) - set(running)

    for job in jobs(redis_url, running):
        assert job.state == "completed", job
        assert [(a.outcome, a.worker) for a in job.attempt_records] == [("succeeded", "graceful")]
        assert set(job.phases.values()) == {"completed"}
        assert executions(redis_url, job.id) == {"fetch": 1, "render": 1, "publish": 1, "run": 0}
        assert terminal_events(redis_url, job.id) == ["job.completed"]
        assert "job.release" not in [e.type for e in events_of(redis_url, job.id)]
    # shutting down, the daemon claimed nothing more, although slots freed up
    [left] = jobs(redis_url, [waiting])
    assert (left.state, left.attempts) == ("queued", 0)
    assert executions(redis_url, waiting) == {"fetch": 0, "render": 0, "publish": 0, "run": 0}


def test_sigterm_past_the_grace_releases_the_jobs_and_a_second_daemon_finishes_them(
    redis_url: str, tmp_path: Path
) -> None:
    grace = 1.0
    ids = submit(redis_url, 3, "phased", {"sleep": {"render": 60}, "first_attempt_only": True})
    with daemon(redis_url, tmp_path, "first", grace=grace) as first:
        wait_until(lambda: all(executions(redis_url, i)["render"] == 1 for i in ids),
                   timeout=15, what="every handler in its render phase", alive=first)
        signalled = time.monotonic()
        first.signal(signal.SIGTERM)
        code = first.wait(timeout=grace + 15)
        took = time.monotonic() - signalled
        assert code == 0, first.stderr()
    assert took < grace + 5, f"shutdown took {took:.1f}s with a grace of {grace}s"

    for job in jobs(redis_url, ids):
        assert job.state == "queued", job
        assert job.retry_count == 0  # a shutdown is not the job's failure
        [attempt] = job.attempt_records
        assert (attempt.outcome, attempt.interrupted_phase, attempt.worker) == ("interrupted", "render", "first")
        assert attempt.finished_at is not None
        assert (job.phases["fetch"], job.phases["publish"]) == ("completed", "pending")
        assert job.phases["render"] != "completed"
        assert set(job.phase_results) == {"fetch"}
        assert terminal_events(redis_url, job.id) == []
        released = [e for e in events_of(redis_url, job.id) if e.type == "job.release"]
        assert [(e.fields["from"], e.fields["to"], e.fields.get("phase")) for e in released] == [
            ("active", "queued", "render")]

    shown = subprocess.run(
        [sys.executable, "-m", "jobvisor", "status", ids[0], "--json", "--redis", redis_url],
        cwd=ROOT, env=cli_env({}), capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "queued"
    assert [(a["outcome"], a["interrupted_phase"]) for a in status["attempt_records"]] == [("interrupted", "render")]

    with daemon(redis_url, tmp_path, "second", grace=5) as second:
        wait_until(lambda: all(j.state == "completed" for j in jobs(redis_url, ids)),
                   timeout=20, what="the second daemon to complete every job", alive=second)
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0, second.stderr()

    for job in jobs(redis_url, ids):
        assert [(a.n, a.outcome, a.worker) for a in job.attempt_records] == [
            (1, "interrupted", "first"), (2, "succeeded", "second")]
        assert job.attempt_records[1].resumed_at_phase == "render"
        # fetch completed before the interruption and was not run again; render ran twice
        assert executions(redis_url, job.id) == {"fetch": 1, "render": 2, "publish": 1, "run": 0}
        assert job.result == {"fetch": {"phase": "fetch", "attempt": 1},
                              "render": {"phase": "render", "attempt": 2},
                              "publish": {"phase": "publish", "attempt": 2}}
        assert terminal_events(redis_url, job.id) == ["job.completed"]


def test_a_second_sigterm_skips_the_grace_but_still_records_the_interrupted_attempts(
    redis_url: str, tmp_path: Path
) -> None:
    """README: 'A second signal skips the grace period' -- the period, not the cleanup."""
    ids = submit(redis_url, 2, "phased", {"sleep": {"render": 60}, "first_attempt_only": True})
    with daemon(redis_url, tmp_path, "impatient", grace=30) as d:
        wait_until(lambda: all(executions(redis_url, i)["render"] == 1 for i in ids),
                   timeout=15, what="every handler in its render phase", alive=d)
        d.signal(signal.SIGTERM)
        # trio coalesces a signal that arrives twice before it is read: wait for the first to land
        wait_until(lambda: "received SIGTERM" in d.stderr(), timeout=10, what="the first SIGTERM", alive=d)
        signalled = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait(timeout=15) == 0, d.stderr()
        assert time.monotonic() - signalled < 5
    for job in jobs(redis_url, ids):
        assert job.state == "queued", (job.state, job.attempt_records)
        assert [(a.outcome, a.interrupted_phase) for a in job.attempt_records] == [("interrupted", "render")]


def test_a_killed_daemons_jobs_are_recovered_by_another_daemons_watchdog(redis_url: str, tmp_path: Path) -> None:
    ids = submit(redis_url, 2, "phased", {"sleep": {"render": 60}, "first_attempt_only": True})
    with daemon(redis_url, tmp_path, "doomed", lease=1) as doomed:
        wait_until(lambda: all(executions(redis_url, i)["render"] == 1 for i in ids),
                   timeout=15, what="every handler in its render phase", alive=doomed)
        doomed.signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    assert {j.state for j in jobs(redis_url, ids)} == {"active"}
    with daemon(redis_url, tmp_path, "rescuer") as rescuer:
        wait_until(lambda: all(j.state == "completed" for j in jobs(redis_url, ids)),
                   timeout=20, what="the watchdog's recovery and a completed second attempt", alive=rescuer)
        rescuer.signal(signal.SIGTERM)
        assert rescuer.wait(timeout=15) == 0, rescuer.stderr()
    for job in jobs(redis_url, ids):
        first, second = job.attempt_records
        assert (first.worker, first.by, first.interrupted_phase) == ("doomed", "watchdog", "render")
        assert (second.worker, second.outcome) == ("rescuer", "succeeded")
        assert job.retry_count == 1 <= job.max_retries
        assert executions(redis_url, job.id) == {"fetch": 1, "render": 2, "publish": 1, "run": 0}
        assert terminal_events(redis_url, job.id) == ["job.completed"]


def test_an_actor_that_keeps_crashing_stops_the_daemon_with_one_line_naming_it(
    redis_url: str, tmp_path: Path
) -> None:
    """A Redis user without pub/sub rights: the listener actor crashes at every start.

    A real misconfiguration (an ACL that forgot ``SUBSCRIBE``); every other actor works.
    """
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", "nosubscribe", "on", ">pw", "~*", "&*", "+@all", "-subscribe")
    try:
        url = redis_url.replace("redis://", "redis://nosubscribe:pw@", 1)
        with daemon(url, tmp_path, "crashing",
                    extra=("--restart-intensity", "2", "--restart-period", "30", "--log-level", "ERROR")) as d:
            code = d.wait(timeout=20)
            stderr = d.stderr()
        assert code == 1, stderr
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("jobvisor: "), stderr
        assert "listener" in lines[0], stderr
    finally:
        admin.execute_command("ACL", "DELUSER", "nosubscribe")
        admin.close()


def test_json_logs_are_one_object_per_line_with_the_job_fields(redis_url: str, tmp_path: Path) -> None:
    """``--log-format json``: every stderr line of a daemon is a JSON object; with
    ``--log-outcomes info`` a completed job's outcome is one of them, with the job's fields."""
    [job] = submit(redis_url, 1, "sleeper", {"seconds": 0.0})
    with daemon(redis_url, tmp_path, "json", extra=("--log-format", "json", "--log-outcomes", "info")) as d:
        wait_until(lambda: terminal_events(redis_url, job), timeout=30, what="the job to end", alive=d)
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0
        text = d.stderr()
    records = [json.loads(line) for line in text.splitlines()]  # every line parses
    assert records, text
    assert all({"timestamp", "level", "logger", "message"} <= set(r) for r in records), text
    [outcome] = [r for r in records if r["logger"] == "jobvisor.jobs" and r.get("job_id") == job]
    assert (outcome["level"], outcome["job_type"], outcome["attempt"]) == ("INFO", "sleeper", 1)
    assert outcome["outcome"] == "completed"
