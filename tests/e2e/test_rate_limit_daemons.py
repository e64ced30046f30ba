"""A rate limit across real ``jobvisor run`` daemons on a real redis-server: 200 jobs of a type
limited to 10/s, queued before 2 daemons start, start at most 10 in any 1-second window (counted
from the attempts' ``started_at``), never closer than one interval, and at close to the limit
(the daemons sleep until a held-back job may start, rather than until their idle poll); every
job ran once, with its retry count untouched."""

from __future__ import annotations

import math
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from jobvisor import Client
from tests.daemon_process import daemon, finished, jobs, wait_until
from tests.rate_app import app

APP = "tests.rate_app:app"
JOBS = 200
RATE = 10.0  # starts a second: the app's "10/s"


def test_two_daemons_keep_200_jobs_within_10_a_second_without_spending_a_retry(
        redis_url: str, tmp_path: Path) -> None:
    with Client(redis_url, app=app) as client:
        ids = [client.submit("send", {"n": i}) for i in range(JOBS)]
    with ExitStack() as stack:
        procs = [stack.enter_context(daemon(redis_url, tmp_path, f"d{i}", app=APP, grace=1.0, lease=5.0,
                                            extra=("--concurrency", "8", "--idle-poll", "5")))
                 for i in range(2)]
        wait_until(lambda: finished(redis_url) >= JOBS, timeout=40, what=f"{JOBS} jobs", alive=procs[0])
        for p in procs:
            p.check_alive()
    views = jobs(redis_url, ids)
    assert [(v.state, v.attempts, v.retry_count) for v in views] == [("completed", 1, 0)] * JOBS
    starts = sorted(v.attempt_records[0].started_at for v in views)
    per_second = Counter(math.floor(t) for t in starts)
    assert max(per_second.values()) <= RATE, per_second
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1 / RATE - 0.001, min(gaps)  # the store's 1 ms
    observed = (JOBS - 1) / (starts[-1] - starts[0])
    assert observed >= 0.9 * RATE, observed  # an idle poll of 5 s would give about 0.2 a second
    assert len({v.attempt_records[0].worker for v in views}) == 2  # both daemons started jobs
