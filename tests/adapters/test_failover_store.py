"""Failover under the store: real Clusters with replicas and Sentinel sets with 2 replicas.

The fixtures kill a master by pid (SIGKILL) and wait for a replica's promotion by polling the
nodes' (or the Sentinels') own view, bounded by a deadline.
"""

from __future__ import annotations

from collections.abc import Callable

from jobvisor.adapters.keys import Keys, key_slot
from tests.redis_cluster import RedisCluster
from tests.redis_sentinel import SentinelSet


def test_a_killed_cluster_master_is_replaced_by_one_of_its_replicas(
        replicated_cluster: Callable[..., RedisCluster]) -> None:
    cluster = replicated_cluster(replicas=2)
    assert len(cluster.nodes) == 9
    assert len(cluster.master_indices()) == 3
    slot = key_slot(Keys("default").prefix)
    old = cluster.master_of_slot(slot)
    replicas = {n.port for n in cluster.replicas_of(old)}
    assert len(replicas) == 2
    assert cluster.kill_master_of_slot(slot) == old
    new = cluster.wait_promoted(slot, old, timeout=20)
    assert cluster.nodes[new].port in replicas


def test_a_killed_sentinel_primary_is_replaced_by_one_of_its_replicas(
        replicated_sentinels: Callable[..., SentinelSet]) -> None:
    sentinels = replicated_sentinels(replicas=2)
    old = sentinels.kill_primary()
    new = sentinels.wait_promoted(old, timeout=20)
    assert new in {r.port for r in sentinels.replicas}
