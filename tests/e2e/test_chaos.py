"""Chaos: 2,000 jobs, three daemons, one SIGKILLed at random every ~1.5 s and restarted.

Half the jobs are ``chaos`` (no status query: a lost one is retried), half ``chaos_svc``
(their "service" keeps the result, so a lost one whose work finished completes without a
re-run). Every handler execution is appended to a Redis list per job. Right after each kill,
the jobs the dead daemon held (active under its worker id) are counted as *hit* by it.

At the end, for every job: exactly one terminal state (and only the finished index holds
it), exactly one terminal event, ``retry_count <= max_retries``, and handler executions
``<= 1 +`` the kills that hit it. The figures (jobs, kills, duplicate executions, lost
jobs, duplicate events) are printed and written to ``chaos.json`` in the test's directory.

Bounded: kills stop after ``KILL_WINDOW`` seconds, and the whole run fails after
``DEADLINE`` seconds. Every daemon is killed in a ``finally``.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import Keys, RegistryKeys
from jobvisor.adapters.store import SyncStore
from jobvisor.machines import JOB
from jobvisor.supervisor.client import build_spec
from tests.daemon_process import TERMINAL_EVENTS, DaemonProcess, wait_until
from tests.recovery_app import app, executions_key

JOBS = 2000
DAEMONS = 3
KILL_EVERY = 1.5
KILL_WINDOW = 30.0
DEADLINE = 75.0
TERMINAL = frozenset(s.value for s in JOB.terminal)
K = Keys("default")


def start(url: str, directory: Path, name: str) -> DaemonProcess:
    return DaemonProcess(url, directory, name, grace=2.0, lease=1.0, app="tests.recovery_app:app",
                         extra=("--concurrency", "16", "--status-query-timeout", "1", "--log-level", "error"))


def held_by(client: redis.Redis, worker: str) -> list[str]:
    """The jobs active under ``worker``'s lease (read right after it died: nothing moved them yet)."""
    ids = [i.decode() for i in client.zrange(K.active, 0, -1)]
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(K.job(i), "state", "lease_worker")
    return [i for i, (state, owner) in zip(ids, pipe.execute(), strict=True)
            if state == b"active" and owner == worker.encode()]


@pytest.mark.slow
def test_chaos_kills_lose_nothing_and_double_nothing(redis_url: str, tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    client = redis.Redis.from_url(redis_url)
    types = {t: h.describe() for t, h in app.handlers.items()}
    specs = [build_spec(types, "chaos" if n % 2 else "chaos_svc", {"n": n, "sleep_ms": [40, 260]})
             for n in range(JOBS)]
    with SyncStore(open_backend(redis_url)) as store:
        ids = [r.id for i in range(0, JOBS, 500) for r in store.submit_many(specs[i:i + 500])]
    assert len(set(ids)) == JOBS

    incarnation = Counter[int]()
    daemons: dict[int, DaemonProcess] = {}
    everyone: list[DaemonProcess] = []
    hit = Counter[str]()
    kills: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        for slot in range(DAEMONS):
            daemons[slot] = start(redis_url, tmp_path, f"c{slot}.0")
            everyone.append(daemons[slot])
        next_kill = began + KILL_EVERY
        while client.zcard(K.finished) < JOBS:
            now = time.monotonic()
            assert now - began < DEADLINE, (
                f"chaos (seed {seed}) unfinished after {DEADLINE}s: {client.zcard(K.finished)}/{JOBS} jobs done, "
                f"{len(kills)} kills")
            for d in daemons.values():
                if d.process.poll() is not None and d.process.returncode != -signal.SIGKILL:
                    raise AssertionError(f"daemon {d.name} exited {d.process.returncode}:\n{d.stderr()}")
            if now >= next_kill and now - began < KILL_WINDOW:
                slot = rng.randrange(DAEMONS)
                victim = daemons[slot]
                victim.signal(signal.SIGKILL)
                victim.process.wait(10)
                held = held_by(client, victim.name)
                hit.update(held)
                kills.append({"daemon": victim.name, "at": round(now - began, 2), "held": len(held),
                              "done": client.zcard(K.finished)})
                incarnation[slot] += 1
                daemons[slot] = start(redis_url, tmp_path, f"c{slot}.{incarnation[slot]}")
                everyone.append(daemons[slot])
                next_kill = now + KILL_EVERY * rng.uniform(0.75, 1.25)
            time.sleep(0.05)  # other processes' progress: nothing to await but its effects in Redis
        took = time.monotonic() - began
        for d in daemons.values():
            # a daemon restarted a moment ago may still be starting up (no signal handler yet):
            # wait until it has registered before asking it to shut down gracefully
            wait_until(lambda d=d: client.zscore(RegistryKeys.live, d.name) is not None,
                       timeout=20, what=f"daemon {d.name} registered")
        for d in daemons.values():
            d.signal(signal.SIGTERM)
        for d in daemons.values():
            assert d.wait(timeout=20) == 0, d.stderr()
    finally:
        for d in everyone:
            d.close()

    with SyncStore(open_backend(redis_url)) as store:
        history = store.events("default", "-", 1_000_000)
        views = {i: store.get_job(i) for i in ids}
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.llen(executions_key(i))
    runs = dict(zip(ids, pipe.execute(), strict=True))
    finished = {m.decode() for m in client.zrange(K.finished, 0, -1)}
    client.close()

    terminal_events = Counter(e.id for e in history if e.type in TERMINAL_EVENTS)
    lost = [i for i in ids if views[i].state not in TERMINAL or i not in finished]
    duplicate_events = [i for i in ids if terminal_events[i] > 1]
    over = [(i, runs[i], hit[i]) for i in ids if runs[i] > 1 + hit[i]]
    causes = Counter(e.fields["cause"] for e in history if e.fields.get("cause"))
    figures = {
        "seed": seed, "jobs": JOBS, "daemons": DAEMONS, "seconds": round(took, 1), "kills": len(kills),
        "jobs_hit_by_kills": len(hit), "handler_executions": sum(runs.values()),
        "duplicate_executions": sum(max(0, n - 1) for n in runs.values()),
        "lost_jobs": len(lost), "duplicate_terminal_events": len(duplicate_events),
        "states": dict(Counter(v.state for v in views.values())),
        "watchdog_causes": dict(causes), "kill_log": kills,
    }
    (tmp_path / "chaos.json").write_text(json.dumps(figures, indent=2))
    print("\nchaos figures:", json.dumps({k: v for k, v in figures.items() if k != "kill_log"}))

    assert kills, f"no kill happened (seed {seed}): the run was too short to mean anything"
    assert lost == [], f"seed {seed}: lost {lost[:5]}"
    assert duplicate_events == [], f"seed {seed}: duplicate terminal events {duplicate_events[:5]}"
    assert all(terminal_events[i] == 1 for i in ids)
    assert over == [], f"seed {seed}: executions past 1 + kills that hit: {over[:5]}"
    for i, view in views.items():
        assert view.retry_count <= view.max_retries
        if view.state == "completed":  # its own result, from a handler that ran (here, or via the service)
            assert view.result["n"] == view.input["n"]
            assert runs[i] >= 1
