"""Failure recovery with real ``jobvisor run`` subprocesses, a real Redis and a loopback service.

SPEC.md, "Actors": lease expiry (a dead worker) → the status query first (completed on the
external service means completed here), else retry or fail within ``max_retries``; a paused
worker's late report is fenced out; several daemons cooperate without double work.

The handlers (``tests/recovery_app.py``) record every execution in Redis, and the
``external`` type hands its work to :class:`tests.external_service.ExternalService`, an HTTP
server on 127.0.0.1 in this process that the test drives (and makes hang or fail). A
"dead worker" is a daemon killed with SIGKILL, or a *ghost*: a client that claims jobs
through the store and then stops renewing. Waits poll Redis with a deadline and fail at
once, with the daemon's stderr, if a daemon died; every daemon is killed in a ``finally``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from jobvisor import Client
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import REGISTRY
from jobvisor.adapters.records import JobView
from jobvisor.adapters.store import SyncStore
from tests.daemon_process import ROOT, TERMINAL_EVENTS, DaemonProcess, cli_env, daemon, wait_until
from tests.external_service import ExternalService
from tests.recovery_app import app, executions_key

APP = "tests.recovery_app:app"


@contextmanager
def recovery_daemon(url: str, directory: Path, name: str, *, service: ExternalService | None = None,
                    lease: float = 1.0, grace: float = 5.0, extra: tuple[str, ...] = ()) -> Iterator[DaemonProcess]:
    env = {"TEST_SERVICE_URL": service.url} if service is not None else {}
    with daemon(url, directory, name, lease=lease, grace=grace, app=APP, env=env,
                extra=("--status-query-timeout", "1", *extra)) as process:
        yield process


def submit(url: str, n: int, type_: str, job_input: Any = None) -> list[str]:
    with Client(url, app=app) as client:
        return [client.submit(type_, job_input) for _ in range(n)]


def job(url: str, job_id: str) -> JobView:
    with SyncStore(open_backend(url)) as store:
        return store.get_job(job_id)


def all_in(url: str, ids: list[str], state: str) -> bool:
    """Whether every job is in ``state``: one connection, one pipeline (cheap to poll)."""
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for i in ids:
            pipe.hget(f"jv:{{default}}:job:{i}", "state")
        return all(s == state.encode() for s in pipe.execute())
    finally:
        client.close()


def events(url: str, queue: str = "default") -> list[Any]:
    with SyncStore(open_backend(url)) as store:
        return store.events(queue, "-", 100_000)


def job_events(url: str, job_id: str) -> list[Any]:
    return [e for e in events(url) if e.id == job_id]


def executions(url: str, job_id: str) -> list[int]:
    client = redis.Redis.from_url(url)
    try:
        return [int(pid) for pid in client.lrange(executions_key(job_id), 0, -1)]
    finally:
        client.close()


def live_daemons(url: str) -> set[str]:
    with SyncStore(open_backend(url)) as store:
        return {w.id for w in store.workers()}


def jv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobvisor", *args], cwd=ROOT, env=cli_env({}),
                          capture_output=True, text=True, timeout=30)


def stop(process: DaemonProcess) -> None:
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0, process.stderr()


def kill(process: DaemonProcess) -> None:
    process.signal(signal.SIGKILL)
    process.wait(timeout=10)


# -- status queries -----------------------------------------------------------------------------------


def test_a_job_the_service_finished_completes_here_without_running_again(redis_url: str, tmp_path: Path) -> None:
    with ExternalService() as service:
        [job_id] = submit(redis_url, 1, "external")
        with recovery_daemon(redis_url, tmp_path, "doomed", service=service) as doomed:
            wait_until(lambda: job(redis_url, job_id).service_job_id, timeout=20,
                       what="the handler to record its service job id", alive=doomed)
            kill(doomed)
        [sid] = service.ids_of(job_id)
        assert job(redis_url, job_id).state == "active"
        service.set(sid, "completed", {"pages": 3, "url": "https://render.example/3"})  # it finished there
        with recovery_daemon(redis_url, tmp_path, "rescuer", service=service) as rescuer:
            wait_until(lambda: job(redis_url, job_id).state == "completed", timeout=20,
                       what="the rescuer to complete the job", alive=rescuer)
            stop(rescuer)
    view = job(redis_url, job_id)
    assert view.result == {"pages": 3, "url": "https://render.example/3"}
    assert len(executions(redis_url, job_id)) == 1  # the handler did not run again
    [attempt] = view.attempt_records
    assert (attempt.worker, attempt.outcome, attempt.by, attempt.service_job_id) == (
        "doomed", "succeeded", "watchdog", sid)
    completed = [e for e in job_events(redis_url, job_id) if e.type in TERMINAL_EVENTS]
    assert [(e.type, e.fields["cause"]) for e in completed] == [("job.completed", "service_completed")]
    assert service.ids_of(job_id) == [sid]  # nothing was handed to the service twice


def test_a_job_the_service_failed_is_retried_and_retries_stop_at_max_retries_across_kills(
    redis_url: str, tmp_path: Path
) -> None:
    with ExternalService() as service:
        [job_id] = submit(redis_url, 1, "external")
        max_retries = app.handlers["external"].max_retries
        assert max_retries == 2
        for n, name in enumerate(("first", "second", "third"), start=1):
            with recovery_daemon(redis_url, tmp_path, name, service=service) as d:
                def running_here(n: int = n) -> bool:
                    sids = service.ids_of(job_id)
                    view = job(redis_url, job_id)
                    return len(sids) == n and view.service_job_id == sids[-1] and view.attempts == n
                wait_until(running_here, timeout=20, what=f"attempt {n} running on {name}", alive=d)
                view = job(redis_url, job_id)
                assert view.attempt_records[-1].worker == name  # retried on the daemon that recovered it
                assert view.retry_count == n - 1 <= max_retries
                kill(d)
            service.set(service.ids_of(job_id)[-1], "failed")  # the service lost it too
        with recovery_daemon(redis_url, tmp_path, "last", service=service) as last:
            wait_until(lambda: job(redis_url, job_id).state == "failed", timeout=20,
                       what="the last recovery to fail the job", alive=last)
            stop(last)
    view = job(redis_url, job_id)
    assert (view.reason, view.retry_count, view.attempts) == ("worker_lost", max_retries, 3)
    assert [(a.worker, a.outcome, a.by) for a in view.attempt_records] == [
        ("first", "worker_lost", "watchdog"), ("second", "worker_lost", "watchdog"),
        ("third", "worker_lost", "watchdog")]
    assert len(executions(redis_url, job_id)) == 3
    history = job_events(redis_url, job_id)
    assert [(e.type, e.fields["cause"]) for e in history if e.type == "job.lease_expired"] == [
        ("job.lease_expired", "service_failed")] * 2
    assert [(e.type, e.fields["reason"], e.fields["cause"]) for e in history if e.type in TERMINAL_EVENTS] == [
        ("job.failed", "worker_lost", "service_failed")]


def test_a_status_query_that_hangs_or_fails_still_decides_within_its_bound(redis_url: str, tmp_path: Path) -> None:
    with ExternalService() as service:
        ids = submit(redis_url, 4, "external")
        with recovery_daemon(redis_url, tmp_path, "doomed", service=service) as doomed:
            wait_until(lambda: all(job(redis_url, i).service_job_id for i in ids), timeout=20,
                       what="every handler to record its service job id", alive=doomed)
            kill(doomed)
        modes = dict(zip(ids, ("hang", "error", "garbage", "reset"), strict=True))
        for job_id, mode in modes.items():
            [sid] = service.ids_of(job_id)
            service.misbehave(sid, mode)
        service.start_new_jobs_as("completed", {"by": "retry"})
        with recovery_daemon(redis_url, tmp_path, "rescuer", service=service) as rescuer:
            wait_until(lambda: all_in(redis_url, ids, "completed"), timeout=30,
                       what="every job recovered and retried", alive=rescuer)
            stop(rescuer)
    started = next(e.at for e in events(redis_url, REGISTRY) if e.type == "worker.started" and e.id == "rescuer")
    causes = {"hang": "status_query_timeout", "error": "status_query_failed", "garbage": "status_query_failed",
              "reset": "status_query_failed"}
    for job_id, mode in modes.items():
        [decision] = [e for e in job_events(redis_url, job_id) if e.type == "job.lease_expired"]
        assert decision.fields["cause"] == causes[mode], (mode, decision)
        # the lease had run out before the rescuer started: one sweep (0.2 s), one query bound (1 s)
        assert decision.at - started < 0.2 + 1.0 + 3.0, (mode, decision.at - started)
        view = job(redis_url, job_id)
        assert (view.result, view.retry_count) == ({"by": "retry"}, 1)
        assert [e.type for e in job_events(redis_url, job_id) if e.type in TERMINAL_EVENTS] == ["job.completed"]


# -- races between daemons ----------------------------------------------------------------------------------


def test_two_daemons_watchdogs_race_on_the_same_expired_leases(redis_url: str, tmp_path: Path) -> None:
    """A ghost holds 30 leases (half with a service job the service finished) until both
    daemons sweep every 50 ms, then stops renewing: one recovery and one event per job."""
    with ExternalService() as service:
        service.start_new_jobs_as("completed", {"by": "service"})
        queried = submit(redis_url, 15, "external")
        plain = submit(redis_url, 15, "plain")
        with SyncStore(open_backend(redis_url)) as ghost:
            held = {c.id: c.token for c in ghost.claim("default", "ghost", n=30, lease=2)}
            assert set(held) == set(queried + plain)
            with ExitStack() as stack:
                for job_id in queried:
                    # the ghost handed its work to the service
                    sid = httpx.post(f"{service.url}/jobs", json={"job": job_id}, timeout=10).json()["id"]
                    assert ghost.record_service_job_id(job_id, held[job_id], sid).kind == "recorded"
                extra = ("--watchdog-interval", "0.05", "--status-query-timeout", "10")
                daemons = [stack.enter_context(recovery_daemon(redis_url, tmp_path, name, service=service,
                                                               lease=3, extra=extra))
                           for name in ("left", "right")]
                deadline = time.monotonic() + 30
                while live_daemons(redis_url) != {"left", "right"}:  # keep the leases until both watch
                    for d in daemons:
                        d.check_alive()
                    assert time.monotonic() < deadline, "the daemons did not register"
                    for job_id, token in held.items():
                        assert ghost.renew(job_id, token, 2).kind == "renewed"
                    time.sleep(0.2)
                wait_until(lambda: all_in(redis_url, list(held), "completed"), timeout=30,
                           what="every job recovered", alive=daemons[0])
                for d in daemons:
                    stop(d)
    history = events(redis_url)
    # the watchdogs' decisions on the ghost's attempt (a later attempt may be recovered again, legitimately)
    decisions = Counter(e.id for e in history if e.fields.get("cause") and e.fields.get("attempt") == "1")
    assert decisions == Counter({job_id: 1 for job_id in held})
    terminal = Counter(e.id for e in history if e.type in TERMINAL_EVENTS)
    assert terminal == Counter({job_id: 1 for job_id in held})
    for job_id in queried:
        [decision] = [e for e in history if e.id == job_id and e.fields.get("attempt") == "1" and e.fields.get("cause")]
        assert (decision.type, decision.fields["cause"]) == ("job.completed", "service_completed")
        assert executions(redis_url, job_id) == []
    for job_id in plain:
        [decision] = [e for e in history if e.id == job_id and e.fields.get("attempt") == "1" and e.fields.get("cause")]
        assert (decision.type, decision.fields["cause"]) == ("job.lease_expired", "no_status_query")


def test_a_paused_workers_late_success_is_fenced_out(redis_url: str, tmp_path: Path) -> None:
    """Two jobs, both running on a daemon that is then paused past its lease (SIGSTOP); another
    daemon recovers and re-runs them. On SIGCONT the paused handlers finish (their sleep is
    shielded) and report success: for ``racing`` the new attempt is still running, so the
    fence rejects it (``job.stale_report``); ``done`` was already completed, so its terminal
    state absorbs it. Either way the job keeps the new attempt's result, one ``job.completed``."""
    racing, done = submit(redis_url, 1, "shielded", {"seconds": [3, 5]}) + submit(
        redis_url, 1, "shielded", {"seconds": [3, 0]})
    with recovery_daemon(redis_url, tmp_path, "paused") as paused:
        wait_until(lambda: all(len(executions(redis_url, j)) == 1 for j in (racing, done)), timeout=20,
                   what="both handlers to start", alive=paused)
        paused.signal(signal.SIGSTOP)
        try:
            with recovery_daemon(redis_url, tmp_path, "other") as other:
                wait_until(lambda: (job(redis_url, done).state == "completed"
                                    and len(executions(redis_url, racing)) == 2),
                           timeout=20, what="the other daemon to re-run both jobs", alive=other)
                assert "paused" not in live_daemons(redis_url)  # declared lost: no heartbeat for a lease
                assert job(redis_url, racing).state == "active"  # its second attempt still runs
                before = job(redis_url, done)
                paused.signal(signal.SIGCONT)

                def fenced() -> list[Any]:
                    return [e for e in job_events(redis_url, racing)
                            if e.type == "job.stale_report" and e.fields["op"] == "complete"]

                [rejected] = wait_until(fenced, timeout=20, what="the late success to reach the fence", alive=paused)
                wait_until(lambda: f"late complete for {done} absorbed" in paused.stderr(), timeout=20,
                           what="the other late success to be absorbed", alive=paused)
                assert job(redis_url, done).raw == before.raw  # nothing written
                wait_until(lambda: job(redis_url, racing).state == "completed", timeout=20,
                           what="the second attempt to finish", alive=other)
                wait_until(lambda: "paused" in live_daemons(redis_url), timeout=10,
                           what="the paused daemon's heartbeat to return", alive=paused)
                stop(paused)
                stop(other)
        finally:
            paused.signal(signal.SIGCONT)
    assert rejected.fields["token"].endswith(".1")
    assert rejected.fields["state"] == "active"
    for job_id in (racing, done):
        view = job(redis_url, job_id)
        assert (view.state, view.result) == ("completed", {"attempt": 2})
        first, second = view.attempt_records
        assert (first.worker, first.outcome, first.by) == ("paused", "worker_lost", "watchdog")
        assert (second.worker, second.outcome) == ("other", "succeeded")
        assert [e.type for e in job_events(redis_url, job_id) if e.type in TERMINAL_EVENTS] == ["job.completed"]
    registry = Counter((e.type, e.id) for e in events(redis_url, REGISTRY))
    assert registry[("worker.lost", "paused")] == 1
    assert registry[("worker.returned", "paused")] == 1


# -- the registry and the workers command ----------------------------------------------------------------------


def test_workers_lists_live_daemons_with_their_jobs_and_a_killed_one_is_declared_lost_once(
    redis_url: str, tmp_path: Path
) -> None:
    assert jv("workers", "--redis", redis_url, "--json").stdout.strip() == "[]"
    ids = submit(redis_url, 3, "plain", {"seconds": 60})
    with ExitStack() as stack:
        daemons = {name: stack.enter_context(recovery_daemon(redis_url, tmp_path, name, lease=1.5, grace=0.2,
                                                             extra=("--concurrency", "1")))
                   for name in ("d1", "d2", "d3")}

        def heartbeating() -> bool:
            with SyncStore(open_backend(redis_url)) as store:
                return sum(len(w.slots) for w in store.workers()) == 3

        wait_until(heartbeating, timeout=30, what="three daemons each heartbeating its job", alive=daemons["d1"])
        out = jv("workers", "--redis", redis_url, "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert sorted(d["id"] for d in data) == ["d1", "d2", "d3"]
        for d in data:
            assert (d["state"], d["late"], d["concurrency"], d["queues"]) == ("live", False, 1, ["default"])
            assert d["pid"] == daemons[d["id"]].process.pid
            [slot] = d["slots"]
            assert slot["slot"] == 1
            assert slot["type"] == "plain"
            assert slot["attempt"] == 1
        assert sorted(s["job"] for d in data for s in d["slots"]) == sorted(ids)
        text = jv("workers", "--redis", redis_url)
        assert text.returncode == 0
        assert text.stdout.count(" live ") == 3
        assert text.stdout.count("slot 1") == 3

        kill(daemons["d2"])
        wait_until(lambda: "d2" not in live_daemons(redis_url), timeout=20, what="d2 declared lost",
                   alive=daemons["d1"])
        time.sleep(1.0)  # two more watchdogs keep sweeping: the declaration must not repeat
        everyone = json.loads(jv("workers", "--redis", redis_url, "--json", "--all").stdout)
        assert {d["id"]: d["state"] for d in everyone} == {"d1": "live", "d3": "live", "d2": "lost"}
        assert sorted(d["id"] for d in json.loads(jv("workers", "--redis", redis_url, "--json").stdout)) == ["d1", "d3"]
        shown = jv("events", "--redis", redis_url, "--queue", "@workers")
        assert shown.returncode == 0
        assert shown.stdout.count("worker.lost") == 1
        for name in ("d1", "d3"):
            stop(daemons[name])
    registry = Counter((e.type, e.id) for e in events(redis_url, REGISTRY))
    assert registry == Counter({("worker.started", "d1"): 1, ("worker.started", "d2"): 1,
                                ("worker.started", "d3"): 1, ("worker.lost", "d2"): 1,
                                ("worker.stopped", "d1"): 1, ("worker.stopped", "d3"): 1})


def test_workers_command_bad_input_and_unreachable_redis() -> None:
    bad = jv("workers", "--bogus")
    assert bad.returncode == 2
    assert bad.stderr.startswith("jobvisor: ")
    assert len(bad.stderr.splitlines()) == 1
    down = jv("workers", "--redis", "redis://127.0.0.1:1/0")
    assert down.returncode == 1
    assert len(down.stderr.splitlines()) == 1
    assert "redis://127.0.0.1:1/0" in down.stderr
    url = jv("workers", "--redis", "http://nope")
    assert url.returncode == 2
    assert "redis" in url.stderr
    assert len(url.stderr.splitlines()) == 1


def test_a_handler_blocked_in_a_thread_is_abandoned_and_the_daemon_still_exits(
    redis_url: str, tmp_path: Path
) -> None:
    [stuck] = submit(redis_url, 1, "stuck", {"seconds": 3600})
    with recovery_daemon(redis_url, tmp_path, "holder", lease=1.5,
                         extra=("--abandon-after", "0.5", "--concurrency", "1", "--grace", "1")) as d:
        wait_until(lambda: job(redis_url, stuck).state == "timed_out", timeout=20,
                   what="the stuck handler's timeout", alive=d)
        [after] = submit(redis_url, 1, "plain")  # the only slot is free again
        wait_until(lambda: job(redis_url, after).state == "completed", timeout=20,
                   what="another job on the reclaimed slot", alive=d)

        def abandoned_listed() -> list[Any]:
            [me] = json.loads(jv("workers", "--redis", redis_url, "--json").stdout)
            return me["abandoned"]

        [entry] = wait_until(abandoned_listed, timeout=10, what="the abandoned handler in the registry", alive=d)
        assert entry["job"] == stuck
        signalled = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait(timeout=20) == 0, d.stderr()
        assert time.monotonic() - signalled < 1 + 0.5 + 0.5 + 5
        assert "abandoned handler(s) still blocked" in d.stderr()
    view = job(redis_url, stuck)
    [attempt] = view.attempt_records
    assert (attempt.outcome, attempt.error["abandoned"]) == ("timed_out", True)
    assert "ignored its cancellation" in attempt.error["message"]
    assert len(executions(redis_url, stuck)) == 1
    assert [e.type for e in job_events(redis_url, stuck) if e.type in TERMINAL_EVENTS] == ["job.timed_out"]
