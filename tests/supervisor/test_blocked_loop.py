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

from jobvisor import Client
from tests.daemon_process import daemon, jobs, terminal_events, wait_until
from tests.isolation_app import app, runs_key

LEASE = 2.0


def test_a_handler_blocking_the_loop_for_two_leases_runs_once_per_takeover_and_ends_once(
        redis_url: str, tmp_path: Path) -> None:
    counts = redis.Redis.from_url(redis_url)
    app_ref = "tests.isolation_app:app"
    with Client(redis_url, app=app) as client, \
            daemon(redis_url, tmp_path, "one", lease=LEASE, grace=2.0, app=app_ref) as one, \
            daemon(redis_url, tmp_path, "two", lease=LEASE, grace=2.0, app=app_ref) as two:
        by_name = {"one": one, "two": two}
        for d in (one, two):  # both serve before the blocker is submitted, so a takeover is on time
            wait_until(lambda d=d: "webhook deliverer" in d.stderr(), timeout=60, what=f"{d.name} up", alive=d)
        blocker = client.submit("block_loop", {"block": 2 * LEASE, "redis": redis_url})
        wait_until(lambda: counts.get(runs_key(blocker)), timeout=30, what="the blocker running")
        blocked = by_name[jobs(redis_url, [blocker])[0].lease_worker or ""]
        rescuer = two if blocked is one else one
        wait_until(lambda: jobs(redis_url, [blocker])[0].state == "completed", timeout=60,
                   what="the blocker completed", alive=rescuer)
        # The blocked daemon's loop is back once it logs the stall; its late report was fenced out.
        wait_until(lambda: "event loop was blocked" in blocked.stderr(), timeout=30,
                   what="the stall warning", alive=blocked)
        rescuer.signal(signal.SIGTERM)
        assert rescuer.wait(30) == 0
        # Only the formerly blocked daemon is left: it keeps serving.
        echoes = [client.submit("echo", {"n": i, "redis": redis_url}) for i in range(5)]
        wait_until(lambda: all(j.state == "completed" for j in jobs(redis_url, echoes)), timeout=30,
                   what="serving after its stall", alive=blocked)
        blocked.signal(signal.SIGTERM)
        assert blocked.wait(30) == 0, blocked.stderr()
        stderr = blocked.stderr()

    view = jobs(redis_url, [blocker])[0]
    attempts = view.attempts
    takeovers = attempts - 1
    executions = int(counts.get(runs_key(blocker)))
    per_attempt = [int(counts.get(f"{runs_key(blocker)}:{n}") or 0) for n in range(1, attempts + 1)]
    assert terminal_events(redis_url, blocker) == ["job.completed"]
    assert view.state == "completed"
    assert view.retry_count <= 1
    assert per_attempt == [1] * attempts  # no attempt ran twice, in any daemon
    assert executions <= 1 + takeovers
    assert takeovers == 1
    assert view.attempt_records[0].worker == blocked.name
    assert view.attempt_records[1].worker == rescuer.name
    for echo in echoes:
        assert int(counts.get(runs_key(echo))) == 1
    # One warning names the blocker (a loaded machine may add stalls of its own, naming no handler).
    warnings = [line for line in stderr.splitlines() if "event loop was blocked" in line and blocker in line]
    assert len(warnings) == 1
    assert "block_loop" in warnings[0]
    assert "WARNING" in warnings[0]
    assert "Traceback" not in stderr
    assert "invariant" not in stderr
    counts.close()
