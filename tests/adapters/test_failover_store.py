"""Failover under the store: a real Cluster with 2 replicas per master.

A test kills a master by pid (SIGKILL) and waits for one of its replicas' promotion by
polling the nodes' own view, bounded by a deadline; the actor's next calls reach the new
master. On a Cluster, ``durability=replica`` waits on each master for one of its own replicas,
and a round trip whose reply never came is never sent again (its outcome is unknown). The
Sentinel set's kill and promotion run under load in ``tests/e2e/test_failover_daemons.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import trio
import trio.testing

from jobvisor.adapters.backend import CommandCall, open_backend
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.keys import Keys, events_key, key_slot
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.redis_async import open_async
from jobvisor.adapters.redis_urls import parse_redis_url
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_actor import StoreActor
from tests.adapters.test_cluster_store import queues_on_every_master
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One 3-master cluster with 2 replicas per master for this module (a start costs seconds).
    Its tests pass in any order: one kills the master of ``default`` (its other replica then
    follows the promoted one), the other needs one live replica per master."""
    cluster = RedisCluster(tmp_path_factory.mktemp("replicated"), replicas=2, node_timeout_ms=1000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_the_actor_follows_a_slot_to_the_promoted_replica(replicated: RedisCluster) -> None:
    """After a connection error on a node, the slot map is read again before the next round
    trip: the first calls after the promotion reach the new master (none of them is routed to
    the dead node for ever), and with ``durability=replica`` they are confirmed by its replica."""
    cluster = replicated
    replicated.flush()
    assert len(cluster.nodes) == 9
    assert len(cluster.master_indices()) == 3
    actor = StoreActor(open_backend(cluster.url + "?durability=replica", timeout=1.0), time.time, max_backoff=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor)
        before = await store.submit(JobSpec(type="t"))
        slot = key_slot(Keys("default").prefix)
        await trio.to_thread.run_sync(lambda: wait_replicated(cluster, slot))
        replicas = {n.port for n in cluster.replicas_of(cluster.master_of_slot(slot))}
        assert len(replicas) == 2
        old = await trio.to_thread.run_sync(cluster.kill_master_of_slot, slot)
        with pytest.raises(StoreUnavailable):  # the dead node: an outage, the slot map now stale
            await store.submit(JobSpec(type="t"))
        new = await trio.to_thread.run_sync(lambda: cluster.wait_promoted(slot, old, timeout=20))
        assert cluster.nodes[new].port in replicas
        with trio.fail_after(10):
            while True:
                try:
                    after = await store.submit(JobSpec(type="t"))
                    break
                except StoreUnavailable:  # the backoff window of the outage just met
                    await trio.sleep(0.05)
        assert after.kind == "created"
        assert (await store.get_job(before.id)).state == "queued"
        actor.close()


def wait_replicated(cluster: RedisCluster, slot: int) -> None:
    """Until both replicas of the slot's master have every write it took (``WAIT 2``)."""
    client = cluster.clients()[cluster.master_of_slot(slot)]
    try:
        assert client.execute_command("WAIT", cluster.replicas, 5000) >= cluster.replicas
    finally:
        client.close()


def test_the_synchronous_cluster_path_never_sends_again_what_a_lost_connection_left_unknown(
        cluster_url: str) -> None:
    """A pipeline whose reply never came (here: the read timed out behind a blocking command)
    may have run: each of its commands is an outage (``StoreUnavailable``), none is sent again
    (an ``INCR`` sent again would count 2; a Lua step sent again would run a job twice)."""
    tag = "{" + Keys("default").prefix.split("{", 1)[1].split("}", 1)[0] + "}"
    backend = open_backend(cluster_url, timeout=0.3)
    try:
        results = backend.run([CommandCall(("INCR", f"{tag}n")), CommandCall(("BLPOP", f"{tag}l", 1))], 0)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert backend.run([CommandCall(("GET", f"{tag}n"))], 0) == [b"1"]
    finally:
        backend.close()


def on_node(node: RedisServer, queue: str, job_id: str) -> bool:
    client = redis.Redis(host="127.0.0.1", port=node.port, single_connection_client=True)
    try:
        client.execute_command("READONLY")  # a Cluster replica answers reads only after this
        return bool(client.exists(Keys(queue).job(job_id)))
    finally:
        client.close()


async def test_durability_replica_on_a_cluster_waits_on_each_master_for_its_own_replicas(
        replicated: RedisCluster) -> None:
    """``WAIT 1`` ends each master's pipeline: a write is on a replica of its own master when its
    call returns (the synchronous store and the actor alike); a master whose replicas are
    stopped makes its own writes outages, and only its own (the others' stand)."""
    cluster = replicated
    replicated.flush()
    queues = queues_on_every_master(cluster)
    url = cluster.url + "?durability=replica"
    with SyncStore(open_backend(url)) as store:
        jobs = {q: store.submit(JobSpec(type="t", queue=q)).id for q in queues}
    for queue, job_id in jobs.items():
        replicas = cluster.replicas_of(cluster.master_of_slot(key_slot(Keys(queue).prefix)))
        assert any(on_node(r, queue, job_id) for r in replicas), queue
    cut = cluster.replicas_of(cluster.master_of_slot(key_slot(Keys(queues[0]).prefix)))
    actor = StoreActor(open_backend(url, timeout=0.5), time.time, max_backoff=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor)
        submitted = [await store.submit(JobSpec(type="t", queue=q)) for q in queues]
        for queue, reply in zip(queues, submitted, strict=True):
            replicas = cluster.replicas_of(cluster.master_of_slot(key_slot(Keys(queue).prefix)))
            assert any(on_node(r, queue, reply.id) for r in replicas), queue
        cluster.pause(cut)
        try:
            answers: dict[str, object] = {}

            async def one(queue: str) -> None:
                try:
                    answers[queue] = await store.submit(JobSpec(type="t", queue=queue))
                except StoreUnavailable as exc:
                    answers[queue] = exc

            with trio.fail_after(5):
                async with trio.open_nursery() as callers:
                    for queue in queues:
                        callers.start_soon(one, queue)
        finally:
            cluster.resume(cut)
        assert isinstance(answers[queues[0]], StoreUnavailable)
        assert "not replicated" in str(answers[queues[0]])
        assert not any(isinstance(answers[q], StoreUnavailable) for q in queues[1:]), answers
        actor.close()


async def test_a_blocking_read_on_a_cluster_node_holds_its_connection_while_it_waits(
        cluster_url: str, redis_cluster: RedisCluster) -> None:
    """An ``XREAD BLOCK`` keeps its connection out of the pool until answered: a read started
    while it waits, on the same master, is not queued behind its block (it answers at once)."""
    master = redis_cluster.master_of_slot(key_slot(Keys("c0").prefix))
    waiting, ready = [q for q in (f"c{n}" for n in range(2000))
                      if redis_cluster.master_of_slot(key_slot(Keys(q).prefix)) == master][:2]
    with SyncStore(open_backend(cluster_url)) as store:
        job = store.submit(JobSpec(type="t", queue=ready)).id
    async with open_async(parse_redis_url(cluster_url), limit=5.0) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.pipeline, [("XREAD", "BLOCK", 3000, "STREAMS", events_key(waiting), "$")])
        await trio.testing.wait_all_tasks_blocked()  # that read is sent and waits on the server
        with trio.fail_after(1.5):
            [reply] = await client.pipeline([("XREAD", "STREAMS", events_key(ready), "0-0")])
        nursery.cancel_scope.cancel()
    assert job.encode() in repr(reply).encode()
