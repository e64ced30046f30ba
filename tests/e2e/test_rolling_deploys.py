"""Rolling deploys: real ``jobvisor run`` subprocesses of two versions on one queue, real Redis.

The old version (``tests.routing_app:old``) has a handler for ``A``; the new one
(``tests.routing_app:new``) for ``A`` and ``B``. A daemon claims only the types it has
handlers for, so no ``B`` job is ever claimed by the old daemon: none fails, none spends a
retry (``B`` allows none). With only old daemons up, ``B`` jobs wait ``queued`` and
``jobvisor queues`` reports them; a new daemon drains them. Waiting on other processes
polls Redis with a deadline (``wait_until``), failing at once if a daemon died.
"""

from __future__ import annotations

import json
from pathlib import Path

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobSpec, JobView
from jobvisor.adapters.store import SyncStore
from tests.cli_support import jv
from tests.daemon_process import DaemonProcess, daemon, wait_until

OLD, NEW = "tests.routing_app:old", "tests.routing_app:new"


def submit(url: str, job_type: str, n: int) -> list[str]:
    with SyncStore(open_backend(url)) as store:
        return [r.id for r in store.submit_many([JobSpec(type=job_type, max_retries=0 if job_type == "B" else 3,
                                                         input={"i": i}) for i in range(n)])]


def views(url: str, ids: list[str]) -> list[JobView]:
    with SyncStore(open_backend(url)) as store:
        return [store.get_job(i) for i in ids]


def all_completed(url: str, ids: list[str]) -> bool:
    return all(v.state == "completed" for v in views(url, ids))


def registered(url: str, *names: str) -> bool:
    with SyncStore(open_backend(url)) as store:
        return {w.id for w in store.workers()} >= set(names)


def assert_ran_once_each(jobs: list[JobView], worker: set[str] | None = None) -> set[str]:
    """Every job completed on its first attempt, no retry spent; the daemons that ran them."""
    assert [(v.state, v.attempts, v.retry_count) for v in jobs] == [("completed", 1, 0)] * len(jobs)
    ran = {v.attempt_records[0].worker for v in jobs}
    assert all(len(v.attempt_records) == 1 and v.attempt_records[0].outcome == "succeeded" for v in jobs)
    if worker is not None:
        assert ran == worker
    return ran


def both_alive(*daemons: DaemonProcess) -> None:
    for d in daemons:
        d.check_alive()


def test_an_old_and_a_new_daemon_share_a_queue(redis_url: str, tmp_path: Path) -> None:
    with daemon(redis_url, tmp_path, "old", app=OLD, extra=("--concurrency", "4")) as old, \
            daemon(redis_url, tmp_path, "new", app=NEW, extra=("--concurrency", "4")) as new:
        wait_until(lambda: registered(redis_url, "old", "new"), timeout=30, what="both daemons registered",
                   alive=old)
        both_alive(old, new)
        b_jobs = submit(redis_url, "B", 200)
        a_jobs = submit(redis_url, "A", 200)
        wait_until(lambda: all_completed(redis_url, b_jobs + a_jobs), timeout=60,
                   what="every job completed", alive=new)
        both_alive(old, new)
    assert_ran_once_each(views(redis_url, b_jobs), {"new"})
    assert assert_ran_once_each(views(redis_url, a_jobs)) == {"old", "new"}


def test_a_type_nobody_serves_waits_is_reported_and_drains_when_served(redis_url: str, tmp_path: Path) -> None:
    with daemon(redis_url, tmp_path, "old", app=OLD) as old:
        wait_until(lambda: registered(redis_url, "old"), timeout=30, what="the old daemon registered", alive=old)
        b_jobs = submit(redis_url, "B", 50)
        a_jobs = submit(redis_url, "A", 20)
        wait_until(lambda: all_completed(redis_url, a_jobs), timeout=30, what="the A jobs", alive=old)
        # the old daemon kept claiming (and found its queue empty) after the A jobs: B waited
        b_before = views(redis_url, b_jobs)
        assert [(v.state, v.attempts, v.retry_count) for v in b_before] == [("queued", 0, 0)] * 50
        report = json.loads(jv("queues", "--json", "--redis", redis_url).stdout)["default"]
        assert (report["queued"], report["unserved"], report["untyped"]) == (50, 50, 0)
        assert report["types"] == {"B": {"queued": 50, "daemons": 0}}
        text = jv("queues", "--redis", redis_url).stdout
        assert "B 50 (no live daemon serves it)" in text, text
        workers = jv("workers", "--redis", redis_url).stdout
        assert "types A\n" in workers, workers
        old.check_alive()
        with daemon(redis_url, tmp_path, "new", app=NEW) as new:
            wait_until(lambda: all_completed(redis_url, b_jobs), timeout=30, what="the B jobs drained", alive=new)
            report = json.loads(jv("queues", "--json", "--redis", redis_url).stdout)["default"]
            assert (report["queued"], report["unserved"], report["types"]) == (0, 0, {})
            both_alive(old, new)
    assert_ran_once_each(views(redis_url, b_jobs), {"new"})
