"""Two daemons on a real 3-master Redis Cluster: three queues, one per master, 600 jobs.

Each queue gets a batch of 50 members and 150 loose jobs; both daemons serve all three
queues. Counted from the event streams: every job has exactly one terminal event, every
batch exactly one finalize, and nothing else ended (the registry, on its own slot, saw both
daemons start and stop).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import REGISTRY, Keys, key_slot
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.store import SyncStore
from tests.adapters.test_cluster_store import queues_on_every_master
from tests.cli_support import jv, ok_json
from tests.daemon_process import TERMINAL_EVENTS, daemon, wait_until
from tests.redis_cluster import RedisCluster

BATCH, LOOSE = 50, 150
BATCH_ENDS = {"batch.finalize"}


def test_two_daemons_run_600_jobs_on_three_masters_each_ending_once(
        cluster_url: str, redis_cluster: RedisCluster, tmp_path: Path) -> None:
    queues = queues_on_every_master(redis_cluster)
    assert len({redis_cluster.master_of_slot(key_slot(Keys(q).prefix)) for q in queues}) == 3
    extra = ("--queues", ",".join(queues), "--concurrency", "16")
    with SyncStore(open_backend(cluster_url)) as store, \
            daemon(cluster_url, tmp_path, "a", app="bench.noop_app:app", extra=extra) as a, \
            daemon(cluster_url, tmp_path, "b", app="bench.noop_app:app", extra=extra) as b:
        wait_until(lambda: len(store.workers()) == 2, timeout=30, what="both daemons registered", alive=a)
        jobs: dict[str, list[str]] = {}
        batches: dict[str, str] = {}
        for queue in queues:
            batch = store.create_batch(BatchSpec(queue=queue)).id
            members = store.submit_many([JobSpec(type="noop", queue=queue, batch=batch, max_retries=0)
                                         for _ in range(BATCH)])
            store.close_batch(batch)
            loose = store.submit_many([JobSpec(type="noop", queue=queue, max_retries=0) for _ in range(LOOSE)])
            jobs[queue] = [r.id for r in members + loose]
            batches[queue] = batch

        def finished() -> bool:
            return all(store.queue_counts(q).get("finished", 0) == BATCH + LOOSE for q in queues) and all(
                store.get_batch(b).state not in ("open", "closed", "finalizing") for b in batches.values())

        wait_until(finished, timeout=60, what="600 jobs and 3 batches finished", alive=b)
        for queue in queues:
            events = store.events(queue, count=100_000)
            terminal = Counter(e.id for e in events if e.type in TERMINAL_EVENTS)
            assert set(terminal) == set(jobs[queue]), queue
            assert set(terminal.values()) == {1}, [i for i, n in terminal.items() if n != 1]
            ends = [e for e in events if e.id == batches[queue] and e.type in BATCH_ENDS]
            assert len(ends) == 1, [e.type for e in events if e.id == batches[queue]]
        a.signal()
        b.signal()
        assert a.wait(20) == 0, a.stderr()
        assert b.wait(20) == 0, b.stderr()
        started = [e for e in store.events(REGISTRY) if e.type == "worker.started"]
        assert len(started) == 2


def test_the_cli_submits_and_reads_over_a_cluster_url(cluster_url: str, redis_cluster: RedisCluster) -> None:
    """The synchronous path (redis-py's RedisCluster): a queue on each master, and the
    global keys (``jv:queues``) beside them."""
    queues = queues_on_every_master(redis_cluster)
    ids = []
    for queue in queues:
        submitted = ok_json(jv("submit", "noop", "--app", "bench.noop_app:app", "--queue", queue,
                               "--redis", cluster_url, "--json"))
        ids.append(submitted["id"])
    for job_id in ids:
        assert ok_json(jv("status", job_id, "--redis", cluster_url, "--json"))["state"] == "queued"
    assert set(ok_json(jv("queues", "--redis", cluster_url, "--json"))) >= set(queues)
