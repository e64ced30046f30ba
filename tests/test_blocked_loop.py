"""An ``async def`` handler that blocks its daemon's event loop for twice the lease.

Real ``jobvisor run`` subprocesses on the fixture's real Redis (SPEC.md, "Production
weather"): the blocked daemon cannot renew its lease, so a second daemon's watchdog takes
the job over and runs it again; when the first daemon's loop comes back, its late report is
fenced out. Counted from outside (the handler counts every execution per attempt in Redis):
the job ends in exactly one terminal state with exactly one terminal event, no attempt runs
twice, executions are at most 1 + the takeovers; the blocked daemon names the handler in one
warning, keeps serving other jobs, and stops on one SIGTERM.
"""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from supervisor import Client
from tests.isolation_app import app, runs_key
from tests.test_daemon_signals import daemon, jobs, terminal_events, wait_until

LEASE = 2.0


def test_a_handler_blocking_the_loop_for_two_leases_runs_once_per_takeover_and_ends_once(
        redis_url: str, tmp_path: Path) -> None:
    counts = redis.Redis.from_url(redis_url)
    with Client(redis_url, app=app) as client, \
            daemon(redis_url, tmp_path, "blocked", lease=LEASE, grace=2.0, app="tests.isolation_app:app") as a:
        wait_until(lambda: "webhook deliverer" in a.stderr(), timeout=30, what="daemon a up", alive=a)
        blocker = client.submit("block_loop", {"block": 2 * LEASE, "redis": redis_url})
        wait_until(lambda: counts.get(runs_key(blocker)), timeout=30, what="the blocker running", alive=a)
        with daemon(redis_url, tmp_path, "rescuer", lease=LEASE, grace=2.0, app="tests.isolation_app:app") as b:
            wait_until(lambda: jobs(redis_url, [blocker])[0].state == "completed", timeout=60,
                       what="the blocker completed", alive=b)
            # Daemon a's loop is back once it logs the stall; its late report was fenced out.
            wait_until(lambda: "event loop was blocked" in a.stderr(), timeout=30, what="a's stall warning",
                       alive=a)
            b.signal(signal.SIGTERM)
            assert b.wait(30) == 0
        # Only daemon a is left: it keeps serving.
        echoes = [client.submit("echo", {"n": i, "redis": redis_url}) for i in range(5)]
        wait_until(lambda: all(j.state == "completed" for j in jobs(redis_url, echoes)), timeout=30,
                   what="a serving after its stall", alive=a)
        a.signal(signal.SIGTERM)
        assert a.wait(30) == 0, a.stderr()
        stderr = a.stderr()

    view = jobs(redis_url, [blocker])[0]
    attempts = view.attempts
    takeovers = attempts - 1
    executions = int(counts.get(runs_key(blocker)))
    per_attempt = [int(counts.get(f"{runs_key(blocker)}:{n}") or 0) for n in range(1, attempts + 1)]
    assert terminal_events(redis_url, blocker) == ["job.completed"]
    assert view.state == "completed" and view.retry_count <= 1
    assert per_attempt == [1] * attempts  # no attempt ran twice, in any daemon
    assert executions <= 1 + takeovers
    assert takeovers == 1 and view.attempt_records[1].worker == "rescuer"
    assert view.attempt_records[0].worker == "blocked"
    for echo in echoes:
        assert int(counts.get(runs_key(echo))) == 1
    warnings = [line for line in stderr.splitlines() if "event loop was blocked" in line]
    assert len(warnings) == 1 and blocker in warnings[0] and "block_loop" in warnings[0]
    assert "Traceback" not in stderr and "invariant" not in stderr
    counts.close()
