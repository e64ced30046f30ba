"""Schedules across real ``jobvisor run`` daemons on a real redis-server: a schedule every second
offered by 3 daemons submits each tick's job once (20 ticks: exactly 20 submits), and daemons
SIGKILLed at a tick boundary (just before, just after) neither lose nor double a tick.

What is counted comes from the queue's event stream: every ``schedule.fire`` names its tick and
the job it submitted, and every job a tick submitted has exactly one ``job.submitted``."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from jobvisor import Client
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.store import SyncStore
from tests.daemon_process import DaemonProcess, daemon, wait_until
from tests.schedule_app import app

APP = "tests.schedule_app:app"
TICKS = 20


def fired(url: str) -> list[tuple[int, str]]:
    """(tick ms, job id) of every ``schedule.fire`` of the queue, in stream order."""
    with SyncStore(open_backend(url)) as store:
        events = store.events("default", count=100_000)
    return [(int(e.fields["tick"]), e.fields["job"]) for e in events if e.type == "schedule.fire"]


def submitted(url: str) -> Counter[str]:
    with SyncStore(open_backend(url)) as store:
        return Counter(e.id for e in store.events("default", count=100_000) if e.type == "job.submitted")


@contextmanager
def daemons(url: str, directory: Path, n: int) -> Iterator[list[DaemonProcess]]:
    with ExitStack() as stack:
        yield [stack.enter_context(daemon(url, directory, f"d{i}", app=APP, grace=1.0, lease=2.0))
               for i in range(n)]


def check_every_tick_once(url: str, n: int) -> list[int]:
    """The first ``n`` ticks fired: consecutive seconds, each fired once, each job submitted once."""
    fires = fired(url)
    ticks = [t for t, _ in fires]
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {Counter(ticks).most_common(3)}"
    assert ticks == sorted(ticks)
    first = ticks[0]
    window = [t for t in ticks if t < first + n * 1000]
    assert window == [first + 1000 * i for i in range(n)], "a tick was lost"
    jobs = submitted(url)
    assert all(jobs[job] == 1 for _, job in fires)
    assert len({job for _, job in fires}) == len(fires)
    return window


def add_every_second(url: str) -> None:
    with Client(url, app=app) as client:
        client.add_schedule("every-second", "tick", every=1, missed="catch_up", catch_up_max=100)


def test_three_daemons_fire_each_of_20_ticks_exactly_once(redis_url: str, tmp_path: Path) -> None:
    with daemons(redis_url, tmp_path, 3) as procs:
        add_every_second(redis_url)
        wait_until(lambda: len(fired(redis_url)) >= TICKS, timeout=45, what=f"{TICKS} ticks", alive=procs[0])
        for p in procs:
            p.check_alive()
    assert len(check_every_tick_once(redis_url, TICKS)) == TICKS


def _at_boundary(offset: float) -> None:
    """Return at the next whole second plus ``offset`` (negative: just before it). A fault's
    moment, not a wait for a result."""
    now = time.time()
    target = int(now) + 1 + offset
    if target <= now + 0.05:
        target += 1
    time.sleep(target - now)


def test_a_daemon_killed_at_a_tick_neither_loses_nor_doubles_it(redis_url: str, tmp_path: Path) -> None:
    with daemons(redis_url, tmp_path, 3) as procs:
        add_every_second(redis_url)
        wait_until(lambda: len(fired(redis_url)) >= 3, timeout=30, what="3 ticks", alive=procs[2])
        _at_boundary(-0.002)  # just before a tick falls
        procs[0].signal(signal.SIGKILL)
        wait_until(lambda: len(fired(redis_url)) >= 8, timeout=30, what="8 ticks", alive=procs[2])
        _at_boundary(+0.001)  # while the daemons are firing it
        procs[1].signal(signal.SIGKILL)
        wait_until(lambda: len(fired(redis_url)) >= TICKS, timeout=45, what=f"{TICKS} ticks", alive=procs[2])
        assert procs[0].process.wait(5) == -signal.SIGKILL
        assert procs[1].process.wait(5) == -signal.SIGKILL
    assert len(check_every_tick_once(redis_url, TICKS)) == TICKS
