"""Failover under load, real processes: a Cluster with 2 replicas per master, a Sentinel set with
2 replicas; masters SIGKILLed by pid, promotions awaited by polling the nodes' own view.

``jobvisor events --follow`` across a Cluster follows every slot's stream (one blocking read per
slot, all at once) and goes on through a failover.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.keys import Keys, key_slot
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.adapters.test_cluster_store import queues_on_every_master
from tests.cli_support import ROOT, cli_env
from tests.failover_load import ClusterTopology, SentinelTopology, run_failover
from tests.redis_cluster import RedisCluster
from tests.redis_sentinel import SentinelSet


@contextmanager
def follower(url: str) -> Iterator[Callable[[set[str], float], list[Any]]]:
    """``jobvisor events --follow --json``; yields ``until(ids, timeout)``: the events printed
    until each of ``ids`` was seen."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jobvisor", "events", "--follow", "--json", "--redis", url],
        cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True)
    reader.start()

    def until(ids: set[str], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        seen: list[Any] = []
        while not ids <= {e["id"] for e in seen}:
            try:
                seen.append(json.loads(lines.get(timeout=max(0.01, deadline - time.monotonic()))))
            except queue.Empty:
                process.kill()
                raise AssertionError(f"missing {ids - {e['id'] for e in seen}} after {timeout}s; "
                                     f"stderr: {process.communicate()[1]}") from None
        return seen

    try:
        yield until
    finally:
        process.kill()
        process.wait(10)


def test_events_follow_reads_every_master_and_goes_on_through_a_failover(
        replicated_cluster: Callable[..., RedisCluster]) -> None:
    cluster = replicated_cluster(replicas=2)
    queues = queues_on_every_master(cluster)
    with SyncStore(open_backend(cluster.url)) as store:
        first = {store.submit(JobSpec(type="t", queue=q)).id for q in queues}
        with follower(cluster.url) as until:
            until(first, 20)
            slot = key_slot(Keys(queues[0]).prefix)
            old = cluster.kill_master_of_slot(slot)
            cluster.wait_promoted(slot, old, timeout=20)
            deadline = time.monotonic() + 20
            while True:  # the store's own calls meet the failover too: an outage, then the new master
                try:
                    after = {store.submit(JobSpec(type="t", queue=q)).id for q in queues}
                    break
                except StoreUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # a backoff between attempts, not a synchronisation
            seen = until(after, 20)
    assert {e["type"] for e in seen if e["id"] in after} == {"job.submitted"}


N = 1000  # the figure; each run lasts about 3 s of naps plus the failover


def test_sentinel_failover_under_load_with_durability_replica_loses_and_doubles_nothing(
        replicated_sentinels: Callable[..., SentinelSet], tmp_path: Path) -> None:
    figures = run_failover(SentinelTopology(replicated_sentinels(replicas=2)), tmp_path, N, durable=True)
    assert (figures.lost, figures.doubled, figures.repeated, figures.unfinished) == (0, 0, 0, 0), figures
    assert figures.acknowledged == N


def test_cluster_failover_under_load_with_durability_replica_loses_and_doubles_nothing(
        replicated_cluster: Callable[..., RedisCluster], tmp_path: Path) -> None:
    cluster = replicated_cluster(replicas=2)
    figures = run_failover(ClusterTopology(cluster, queues_on_every_master(cluster)), tmp_path, N, durable=True)
    assert (figures.lost, figures.doubled, figures.repeated, figures.unfinished) == (0, 0, 0, 0), figures
    assert figures.acknowledged == N
