"""A rate limit with a daemon killed -9 mid-run, on a real redis-server and real ``jobvisor run``
daemons: 60 jobs of a type limited to 10/s, two daemons; the victim finishes its first 5 jobs,
then hangs in every later one until its 4 slots are full, and is killed -9 holding exactly
those 4 (``tests/rate_fault_app.py``). The survivor finishes every job: none lost, none
completed twice, every start of every attempt (the victim's included) within 10 in any
1-second window, and only the 4 held jobs spent a retry, each recovered by the watchdog once
its lease expired (attempt 1 the victim's, lost; attempt 2 the survivor's).
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import redis

from jobvisor import Client
from tests.daemon_process import daemon, finished, jobs, terminal_events, wait_until
from tests.rate_fault_app import ENDS, RATE, STARTS, app

APP = "tests.rate_fault_app:app"
JOBS = 60
FIRST = 5  # jobs the victim finishes before it hangs
SLOTS = 4  # the victim's concurrency: the jobs it holds when killed


def pushed(url: str, key: str) -> list[tuple[str, str]]:
    """The (job id, daemon) pairs of :data:`STARTS` or :data:`ENDS`, in order."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [tuple(entry.split(" ")) for entry in client.lrange(key, 0, -1)]  # type: ignore[misc]
    finally:
        client.close()


def held_by(url: str, name: str) -> set[str]:
    """The jobs ``name`` started and did not end."""
    ends = {job for job, who in pushed(url, ENDS) if who == name}
    return {job for job, who in pushed(url, STARTS) if who == name and job not in ends}


def full(held: set[str]) -> set[str] | None:
    return held if len(held) == SLOTS else None


def test_a_daemon_killed_mid_run_loses_no_job_runs_none_twice_and_the_limit_holds(
        redis_url: str, tmp_path: Path) -> None:
    with Client(redis_url, app=app) as client:
        ids = [client.submit("send", {"n": i}) for i in range(JOBS)]
    with ExitStack() as stack:
        victim = stack.enter_context(daemon(
            redis_url, tmp_path, "victim", app=APP, grace=1.0, lease=2.0,
            extra=("--concurrency", str(SLOTS)),
            env={"RATE_FAULT_DAEMON": "victim", "RATE_FAULT_HANG_AFTER": str(FIRST)}))
        survivor = stack.enter_context(daemon(
            redis_url, tmp_path, "survivor", app=APP, grace=1.0, lease=2.0, extra=("--concurrency", "8"),
            env={"RATE_FAULT_DAEMON": "survivor"}))
        held = wait_until(lambda: full(held_by(redis_url, "victim")), timeout=20,
                          what=f"the victim holding {SLOTS} jobs", alive=victim)
        victim.process.kill()  # SIGKILL: no shutdown, its leases simply stop being renewed
        victim.process.wait(10)
        assert held_by(redis_url, "victim") == held  # its slots were full: it started nothing more
        active = {v.id for v in jobs(redis_url, ids)
                  if v.state == "active" and v.attempt_records[-1].worker == "victim"}
        assert active == held  # what the store says the victim held, before its leases expire
        wait_until(lambda: finished(redis_url) >= JOBS, timeout=25, what=f"{JOBS} jobs", alive=survivor)
        survivor.check_alive()

    views = {v.id: v for v in jobs(redis_url, ids)}
    assert Counter(v.state for v in views.values()) == {"completed": JOBS}  # none lost
    assert all(terminal_events(redis_url, j) == ["job.completed"] for j in ids)  # each finished once
    starts, ends = Counter(j for j, _ in pushed(redis_url, STARTS)), Counter(j for j, _ in pushed(redis_url, ENDS))
    assert ends == Counter(ids)  # every job's handler ran to its end exactly once
    assert starts == Counter({j: 2 if j in held else 1 for j in ids})  # only the held jobs ran again
    # no retry count moved but the held jobs', each recovered once by the watchdog
    assert {j: (v.retry_count, v.attempts) for j, v in views.items()} == {
        j: ((1, 2) if j in held else (0, 1)) for j in ids}
    for j in held:
        first, second = views[j].attempt_records
        assert (first.worker, first.outcome, first.by) == ("victim", "worker_lost", "watchdog")
        assert (second.worker, second.outcome) == ("survivor", "succeeded")
    victim_done = {j for j, who in pushed(redis_url, ENDS) if who == "victim"}
    assert len(victim_done) == FIRST
    assert all(views[j].attempt_records[0].worker == "victim" for j in victim_done)
    # the limit held across both daemons and the kill: never 11 starts within one second
    started = sorted(a.started_at for v in views.values() for a in v.attempt_records)
    assert len(started) == JOBS + len(held)
    window = int(RATE)
    closest = min(b - a for a, b in zip(started, started[window:], strict=False))
    assert closest >= 1.0 - 0.001, closest  # the store keeps milliseconds
