"""Exactly once under races: many callers fire the same terminal transition at one object.

Three kinds of racers, each against the real redis-server and (where it applies) the
embedded store:

* 50 trio tasks through one :class:`StoreActor` (which merges them into pipelines);
* 50 independent :class:`SyncStore` clients, one connection each, in threads released by
  one barrier (real Redis: the embedded store is one process's memory);
* two OS processes started on one Redis list (BLPOP), over 200 objects each.

Every object must have exactly one winner (``moved``), the others absorbed (or blocked,
or a sweep that found nothing), exactly one terminal event on the stream and exactly one
outbox row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.replies import Moved, Reply
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.machines import BATCH, JOB
from tests.store_fixtures import Target, delivery_ids, event_counts, job_ids, stream

# Every store-target test here runs on a 3-master Redis Cluster too (tests/redis_cluster.py).
pytestmark = pytest.mark.cluster

ROUNDS = 30
RACERS = 50
HOOK = "http://hooks.example/race"
TERMINAL_BATCH_EVENTS = ("batch.completed", "batch.failed")


def spec(queue: str, **kw: Any) -> JobSpec:
    return JobSpec(type="race", queue=queue, notify=True, webhook_url=HOOK, **kw)


def outcome(reply: Reply) -> str:
    """One word per reply: ``won`` for the one transition into a terminal state."""
    if reply.kind == "swept":
        moved = [b for b in reply.batches if b.kind == "moved"]
        return "won" if moved else f"swept{reply.n}"
    if isinstance(reply, Moved) and reply.machine in ("job", "batch") and reply.to in JOB.terminal | BATCH.terminal:
        return "won"
    return reply.kind


class Ledger:
    """What one queue holds, read once: event counts, outbox rows and outbox members."""

    def __init__(self, raw: Any, queue: str) -> None:
        self.counts = event_counts(raw, queue)
        self.rows: dict[str, set[str]] = {}
        for d in delivery_ids(raw, queue):
            self.rows.setdefault(d.split("~")[0], set()).add(d)
        self.outbox = {m.decode() for m in raw.zrange(f"jv:{{{queue}}}:outbox", 0, -1)}

    def job_once(self, job: str, terminal: str) -> None:
        assert self.counts[(job, terminal)] == 1
        assert sum(n for (i, t), n in self.counts.items() if i == job and t in (
            "job.completed", "job.cancelled", "job.failed", "job.timed_out")) == 1
        assert self.rows.get(job) == {f"{job}~{terminal}~0"}
        assert f"{job}~{terminal}~0" in self.outbox

    def batch_once(self, batch: str) -> None:
        assert sum(self.counts[(batch, t)] for t in TERMINAL_BATCH_EVENTS) == 1
        assert self.counts[(batch, "batch.finalize")] == 1
        rows = self.rows.get(batch, set())
        assert len(rows) == 1
        row = rows.pop()
        assert row.split("~")[1] in TERMINAL_BATCH_EVENTS
        assert row in self.outbox


def check_job_once(raw: Any, queue: str, job: str, terminal: str) -> None:
    Ledger(raw, queue).job_once(job, terminal)


def check_batch_once(raw: Any, queue: str, batch: str) -> None:
    Ledger(raw, queue).batch_once(batch)


# ---------------------------------------------------------------------------------------------
# (a) 50 trio tasks through one StoreActor
# ---------------------------------------------------------------------------------------------


async def race_tasks(fns: list[Callable[[], Any]]) -> list[Reply]:
    replies: list[Reply] = []

    async def one(fn: Callable[[], Any]) -> None:
        replies.append(await fn())

    async with trio.open_nursery() as nursery:
        for fn in fns:
            nursery.start_soon(one, fn)
    return replies


async def test_fifty_tasks_complete_one_job(target: Target, trio_store: Store) -> None:
    raw, q = target.raw(), "race-complete"
    for _ in range(ROUNDS):
        job = (await trio_store.submit(spec(q))).id
        [claimed] = await trio_store.claim(q, "w")
        replies = await race_tasks(
            [lambda: trio_store.complete(job, claimed.token, {"ok": 1})] * RACERS)
        assert Counter(map(outcome, replies)) == {"won": 1, "absorbed": RACERS - 1}
        check_job_once(raw, q, job, "job.completed")
        assert [e["type"] for e in stream(raw, q) if e["id"] == job] == [
            "job.submitted", "job.claim", "job.completed"]


async def test_fifty_tasks_cancel_one_job(target: Target, trio_store: Store) -> None:
    raw, q = target.raw(), "race-cancel"
    for n in range(ROUNDS):
        job = (await trio_store.submit(spec(q))).id
        if n % 2:
            await trio_store.claim(q, "w")  # an active job half the time
        replies = await race_tasks([lambda: trio_store.cancel(job)] * RACERS)
        assert Counter(map(outcome, replies)) == {"won": 1, "absorbed": RACERS - 1}
        check_job_once(raw, q, job, "job.cancelled")


async def _finished_open_batch(store: Store, q: str) -> str:
    """An open batch (no expected total) whose two members completed: ready once closed,
    or stuck (stuck_after 1 ms)."""
    b = (await store.create_batch(BatchSpec(queue=q, stuck_after=0.001, webhook_url=HOOK))).id
    await store.submit_many([spec(q, batch=b), spec(q, batch=b)])
    for c in await store.claim(q, "w", n=2):
        assert (await store.complete(c.id, c.token)).to == "completed"
    assert (await store.get_batch(b)).state == "open"
    return b


async def test_fifty_tasks_finalize_one_batch(target: Target, trio_store: Store) -> None:
    raw, q = target.raw(), "race-batch"
    for _ in range(ROUNDS):
        b = await _finished_open_batch(trio_store, q)
        await trio.sleep(0.002)  # the 1 ms stuck time must pass on the wall clock
        triggers = [
            lambda: trio_store.close_batch(b),
            lambda: trio_store.finalize_batch(b, stuck=True),
            lambda: trio_store.finalize_batch(b),
            lambda: trio_store.sweep_batches(q),
        ]
        replies = await race_tasks([triggers[i % 4] for i in range(RACERS)])
        outcomes = Counter(map(outcome, replies))
        assert outcomes["won"] == 1, outcomes
        assert set(outcomes) <= {"won", "absorbed", "blocked", "swept0"}, outcomes
        check_batch_once(raw, q, b)
        assert (await trio_store.get_batch(b)).state in ("completed", "completed_partial")


# ---------------------------------------------------------------------------------------------
# (a') 50 independent clients in threads, real Redis
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def clients(redis_url: str) -> Any:
    stores = [SyncStore(open_backend(redis_url)) for _ in range(RACERS)]
    for s in stores:
        s.queues()  # connect now, not inside the race
    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        yield stores, pool
    for s in stores:
        s.close()


def race_threads(pool: ThreadPoolExecutor, stores: list[SyncStore], fn: Callable[[SyncStore], Reply]) -> list[Reply]:
    barrier = threading.Barrier(len(stores), timeout=20)

    def one(store: SyncStore) -> Reply:
        barrier.wait()
        return fn(store)

    return list(pool.map(one, stores))


@pytest.mark.slow
def test_fifty_clients_in_threads_race_every_terminal_transition(redis_url: str, clients: Any) -> None:
    stores, pool = clients
    setup = stores[0]
    raw = redis.Redis.from_url(redis_url)
    q = "race-threads"
    for n in range(ROUNDS):
        job = setup.submit(spec(q)).id
        [c] = setup.claim(q, "w")
        replies = race_threads(pool, stores, lambda s: s.complete(job, c.token, {"n": n}))
        assert Counter(map(outcome, replies)) == {"won": 1, "absorbed": RACERS - 1}
        check_job_once(raw, q, job, "job.completed")

        job = setup.submit(spec(q)).id
        replies = race_threads(pool, stores, lambda s: s.cancel(job))
        assert Counter(map(outcome, replies)) == {"won": 1, "absorbed": RACERS - 1}
        check_job_once(raw, q, job, "job.cancelled")

        # complete and cancel racing on one active job: one terminal event, whichever wins
        job = setup.submit(spec(q)).id
        [c] = setup.claim(q, "w")
        replies = race_threads(pool, stores, lambda s: (
            s.complete(job, c.token) if stores.index(s) % 2 else s.cancel(job)))
        assert Counter(map(outcome, replies)) == {"won": 1, "absorbed": RACERS - 1}
        final = setup.get_job(job).state
        check_job_once(raw, q, job, f"job.{final}")

        b = trio.run(_finished_open_batch, setup.store, q)
        time.sleep(0.002)  # the 1 ms stuck time must pass on the wall clock
        ops: list[Callable[[SyncStore], Reply]] = [
            lambda s: s.close_batch(b), lambda s: s.finalize_batch(b, stuck=True),
            lambda s: s.finalize_batch(b), lambda s: s.sweep_batches(q)]
        replies = race_threads(pool, stores, lambda s: ops[stores.index(s) % 4](s))
        outcomes = Counter(map(outcome, replies))
        assert outcomes["won"] == 1, outcomes
        assert set(outcomes) <= {"won", "absorbed", "blocked", "swept0"}, outcomes
        check_batch_once(raw, q, b)
    raw.close()


# ---------------------------------------------------------------------------------------------
# (b) two OS processes, released together
# ---------------------------------------------------------------------------------------------

OBJECTS = 200


@pytest.mark.slow
def test_two_processes_race_over_two_hundred_objects(redis_url: str, tmp_path: Path) -> None:
    q = "race-procs"
    raw = redis.Redis.from_url(redis_url)
    store = SyncStore(open_backend(redis_url))
    to_complete = [r.id for r in store.submit_many([spec(q, priority=10) for _ in range(OBJECTS)])]
    to_cancel = [r.id for r in store.submit_many([spec(q) for _ in range(OBJECTS)])]
    tokens = {c.id: c.token for c in store.claim(q, "w", n=OBJECTS, lease=600)}
    assert set(tokens) == set(to_complete)
    contested = [r.id for r in store.submit_many([spec(q, priority=5) for _ in range(OBJECTS)])]
    tokens |= {c.id: c.token for c in store.claim(q, "w", n=OBJECTS, lease=600)}
    assert set(tokens) == set(to_complete) | set(contested)
    batches = [store.create_batch(BatchSpec(queue=q, webhook_url=HOOK)).id for _ in range(OBJECTS)]

    common = ([["complete", j, tokens[j]] for j in to_complete] + [["cancel", j] for j in to_cancel]
              + [["finalize", b] for b in batches])
    plans = {
        "A": common + [["complete", j, tokens[j]] for j in contested],
        "B": common + [["cancel", j] for j in contested],
    }
    procs = {}
    for name, ops in plans.items():
        path = tmp_path / f"plan-{name}.json"
        path.write_text(json.dumps({"url": redis_url, "name": name, "ops": ops,
                                    "ready": "test:ready", "start": "test:start"}))
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tests.store_race_proc", str(path)],
            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in procs:
            assert raw.blpop(["test:ready"], timeout=30) is not None, "a racer never got ready"
        raw.rpush("test:start", *procs)  # one start token each: they BLPOP it at once
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
            results[name] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    winners: Counter[str] = Counter()
    for name, rows in results.items():
        assert len(rows) == len(plans[name])
        for object_id, kind, _to in rows:
            if kind == "moved":
                winners[object_id] += 1
            else:
                assert kind == "absorbed", (name, object_id, kind)
    everything = to_complete + to_cancel + contested + batches
    assert {o: winners[o] for o in everything} == {o: 1 for o in everything}
    ledger = Ledger(raw, q)
    for j in to_complete:
        ledger.job_once(j, "job.completed")
    for j in to_cancel:
        ledger.job_once(j, "job.cancelled")
    states: Counter[str] = Counter()
    for j in contested:
        final = store.get_job(j).state
        states[final] += 1
        ledger.job_once(j, f"job.{final}")
    assert sum(states.values()) == OBJECTS
    assert set(states) <= {"completed", "cancelled"}
    for b in batches:
        ledger.batch_once(b)
    store.close()
    raw.close()


# ---------------------------------------------------------------------------------------------
# (c) idempotent submit under concurrency
# ---------------------------------------------------------------------------------------------


def check_one_job(raw: Any, q: str, replies: list[Reply]) -> None:
    ids = job_ids(raw, q)
    assert len(ids) == 1
    [job] = ids
    assert {r.id for r in replies} == {job}
    assert Counter(r.kind for r in replies) == {"created": 1, "exists": len(replies) - 1}
    assert [(e["type"], e["id"]) for e in stream(raw, q)] == [("job.submitted", job)]


async def test_twenty_concurrent_submits_with_one_key_make_one_job(target: Target, trio_store: Store) -> None:
    q = "idem"
    replies = await race_tasks(
        [lambda: trio_store.submit(JobSpec(type="t", queue=q, idempotency_key="k-1"))] * 20)
    check_one_job(target.raw(), q, replies)


def test_twenty_clients_submit_with_one_key_make_one_job(redis_url: str, clients: Any) -> None:
    stores, pool = clients
    raw = redis.Redis.from_url(redis_url)
    for n in range(5):
        q = f"idem-{n}"
        replies = race_threads(pool, stores[:20], lambda s: s.submit(
            JobSpec(type="t", queue=q, idempotency_key="k-1", input={"by": stores.index(s)})))
        check_one_job(raw, q, replies)
    raw.close()
