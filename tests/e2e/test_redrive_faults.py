"""Re-drive with Redis away longer than the re-drive actor's poll, on a real redis-server (AOF on)
and a real ``jobvisor run`` daemon: a ``report`` job completes without its required output and
is filed ``missing_output``; Redis is killed (SIGKILL, by pid) before the re-run falls due and
stays away past its due time, many times the actor's and the evaluator's intervals; restarted
from its AOF, the daemon re-runs the job exactly once, after Redis is back: one
``job.redriven`` event, one re-run (linked both ways) that completes with its output, two
handler runs in all, and the daemon still serving (it stops cleanly on one signal).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobvisor import Client
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobView
from jobvisor.adapters.store import SyncStore
from tests.daemon_process import DaemonProcess, wait_until
from tests.redis_server import RedisServer
from tests.redrive_fault_app import DELAY, RUNS, app

APP = "tests.redrive_fault_app:app"
POLL = 0.2  # the daemon's idle poll (the re-drive actor's longest sleep) and evaluator interval
OUTAGE = DELAY + 2.0  # Redis away from before the re-run is due until well after


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    own = RedisServer(tmp_path / "redis")  # AOF on, fsync always: a kill loses nothing written
    own.start()
    try:
        yield own
    finally:
        own.stop()


def view(url: str, job_id: str) -> JobView:
    with SyncStore(open_backend(url)) as store:
        return store.get_job(job_id)


def redriven_events(url: str) -> list[tuple[str, float, dict[str, str]]]:
    with SyncStore(open_backend(url)) as store:
        return [(e.id, e.at, e.fields) for e in store.events("default") if e.type == "job.redriven"]


def runs(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return list(client.lrange(RUNS, 0, -1))
    finally:
        client.close()


def test_a_rerun_due_while_redis_is_away_happens_once_after_it_is_back(server: RedisServer, tmp_path: Path) -> None:
    url = server.url
    daemon = DaemonProcess(url, tmp_path, "d", grace=2.0, lease=2.0, app=APP,
                           extra=("--idle-poll", str(POLL), "--evaluator-interval", str(POLL)))
    try:
        with Client(url, app=app) as client:
            job = client.submit("report", {"n": 1})
        filed = wait_until(lambda: (v := view(url, job)).problem == "missing_output" and v, timeout=15,
                           what="the job filed missing_output", alive=daemon)
        assert filed.filed_at is not None
        assert runs(url) == [job]
        assert redriven_events(url) == []  # not yet due
        assert server.process is not None
        server.kill()  # SIGKILL by pid: Redis gone at once
        killed_at = time.time()
        assert killed_at < filed.filed_at + DELAY  # the re-run falls due during the outage
        time.sleep(OUTAGE)  # the outage itself: many of the actor's polls, and past the due time
        daemon.check_alive()
        server.start()
        back_at = time.time()
        assert back_at > filed.filed_at + DELAY
        rerun = wait_until(lambda: view(url, job).rerun, timeout=15, what="the re-run", alive=daemon)
        done = wait_until(lambda: (v := view(url, rerun)).category is not None and v, timeout=15,
                          what="the re-run filed", alive=daemon)
        daemon.check_alive()
        # exactly once, after Redis was back
        [(redriven, at, fields)] = redriven_events(url)
        assert (redriven, fields["kind"], fields["count"]) == (job, "missing_output", "1")
        assert at > killed_at  # Redis was away from then until back_at: so after it was back
        assert runs(url) == [job, rerun]
        original = view(url, job)
        assert (original.state, original.redrives, original.rerun) == ("completed", {"missing_output": 1}, rerun)
        assert (done.state, done.rerun_of, done.result, done.category, done.problem) == (
            "completed", job, {"total": 2}, "complete", "none")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.stderr()
    finally:
        daemon.close()
