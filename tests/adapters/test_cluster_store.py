"""Redis Cluster: every store call stays in one slot, and the Lua library is on every master.

Slots: a recording backend sees every command the store sends while a workload touches every
kind of op (jobs, phases, batches, deliveries, the registry, reads); each ``FCALL``'s KEYS hash
to one slot, and so does every key its script builds from the prefix (ARGV[1]), since the
prefix carries the queue's (or the registry's) hash tag. Each plain command names one key.
The transition, race and recovery suites also run on the real 3-master cluster (``cluster``
marker), where a script that touched another slot would fail (Redis refuses it).

Library: a master that lost its functions (a failover to a fresh node, a FUNCTION FLUSH) answers
"function not found"; the next call to a queue on it loads the library there (on every master)
and runs again, once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
import trio

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import QUEUES, REGISTRY, TYPES, Keys, key_slot
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.redis_async import command_keys
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_actor import StoreActor
from tests.redis_cluster import RedisCluster
from tests.store_fixtures import ManualClock


def queues_on_every_master(cluster: RedisCluster) -> list[str]:
    """One queue name per master (the first ``c<n>`` whose tag lands there)."""
    found: dict[int, str] = {}
    for n in range(10_000):
        queue = f"c{n}"
        found.setdefault(cluster.master_of_slot(key_slot(Keys(queue).prefix)), queue)
        if len(found) == cluster.masters:
            return [found[m] for m in sorted(found)]
    raise AssertionError("no queue name for some master")


def check_one_slot(command: tuple[Any, ...]) -> None:
    name = str(command[0]).upper()
    keys = [command[i] for i in command_keys(command)]
    if name == "FCALL":
        assert command[2] == 1, command[:4]
        prefix = str(command[4])
        assert "{" in prefix, prefix
        assert prefix.endswith(":"), prefix
        # every key the script builds is prefix + suffix: the prefix's hash tag decides its slot
        assert {key_slot(keys[0]), key_slot(prefix + "job:any"), key_slot(prefix + "batch:x:members")} == {
            key_slot(prefix)}, command[:5]
    elif keys:
        assert len({key_slot(k) for k in keys}) == 1, command


def workload(store: SyncStore, clock: ManualClock, queues: list[str]) -> None:
    """Every kind of op, on each queue and on the registry."""
    store.heartbeat("d1", {"host": "h", "pid": "1", "queues": ",".join(queues)}, ttl=5.0, start=True)
    for queue in queues:
        batch = store.create_batch(BatchSpec(queue=queue)).id
        ids = [r.id for r in store.submit_many([JobSpec(type="t", queue=queue, batch=batch, max_retries=1,
                                                        webhook_url="http://hooks.example/x")
                                                for _ in range(3)])]
        store.close_batch(batch)
        claimed = store.claim(queue, "d1", n=3, lease=5)
        assert len(claimed) == 3
        store.complete(claimed[0].id, claimed[0].token, {"ok": 1})
        store.fail(claimed[1].id, claimed[1].token, {"type": "E", "message": "x"})
        store.cancel(ids[2])
        clock.advance(60)
        store.expired(queue)
        store.wake(queue)
        store.sweep_batches(queue)
        store.take_deliveries(queue, n=10, lease=5)
        store.get_batch(batch)
        store.get_job(ids[0])
        store.events(queue)
        store.queue_counts(queue)
        store.purge(queue, {"completed": clock()})
    store.register_types({"t": {}})
    store.queues()
    store.workers()
    store.worker_stopped("d1")


def test_every_store_call_keeps_its_keys_in_one_slot(cluster_url: str, redis_cluster: RedisCluster) -> None:
    backend = open_backend(cluster_url)
    sent: list[tuple[Any, ...]] = []
    real = backend._commands

    def recording(calls: Any, now_ms: int) -> list[tuple[Any, ...]]:
        commands = real(calls, now_ms)
        sent.extend(commands)
        return commands

    backend._commands = recording  # type: ignore[method-assign]
    clock = ManualClock()
    queues = queues_on_every_master(redis_cluster)
    with SyncStore(backend, clock=clock) as store:
        workload(store, clock, queues)
    fcalls = [c for c in sent if c[0] == "FCALL"]
    assert {str(c[3]) for c in fcalls} >= {Keys(q).queued for q in queues} | {f"jv:{{{REGISTRY}}}:live"}
    for command in sent:
        check_one_slot(command)
    # the global keys are plain commands of their own, never inside a script
    assert all(QUEUES not in map(str, c) and TYPES not in map(str, c) for c in fcalls)


def test_a_master_that_lost_the_library_gets_it_back_on_the_next_call(
        cluster_url: str, redis_cluster: RedisCluster) -> None:
    queues = queues_on_every_master(redis_cluster)
    with SyncStore(open_backend(cluster_url)) as store:
        store.submit(JobSpec(type="t", queue=queues[0]))  # loads the library on every master
        for client in redis_cluster.clients():
            assert client.function_list(), "the library is on every master"
            client.close()
        lost = redis_cluster.clients()[redis_cluster.master_of_slot(key_slot(Keys(queues[1]).prefix))]
        lost.function_flush()
        assert store.submit(JobSpec(type="t", queue=queues[1])).kind == "created"
        assert lost.function_list()
        lost.close()


async def test_the_actor_reloads_the_library_on_the_master_that_lost_it(
        cluster_url: str, redis_cluster: RedisCluster) -> None:
    queues = queues_on_every_master(redis_cluster)
    actor = StoreActor(open_backend(cluster_url), time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor)
        replies = [await store.submit(JobSpec(type="t", queue=q)) for q in queues]
        assert [r.kind for r in replies] == ["created"] * 3
        for client in redis_cluster.clients():
            client.function_flush()
            client.close()
        # one round trip carries a call for each master; each answers "function not found"
        async with trio.open_nursery() as inner:
            for queue in queues:
                inner.start_soon(store.submit, JobSpec(type="t", queue=queue))
        counts = [sum((await store.queue_counts(q)).values()) for q in queues]
        assert counts == [2, 2, 2]
        actor.close()
    for client in redis_cluster.clients():
        assert client.function_list()
        client.close()


def test_a_plain_url_to_a_cluster_node_says_to_name_the_cluster(redis_cluster: RedisCluster) -> None:
    queues = queues_on_every_master(redis_cluster)
    node = redis_cluster.nodes[0]
    elsewhere = next(q for q in queues if redis_cluster.master_of_slot(key_slot(Keys(q).prefix)) != 0)
    with SyncStore(open_backend(f"redis://127.0.0.1:{node.port}/0")) as store, pytest.raises(
            Exception, match=r"is a Cluster node .*redis\+cluster://"):
        store.submit(JobSpec(type="t", queue=elsewhere))


def test_the_cluster_fixture_splits_the_slots_between_three_masters(redis_cluster: RedisCluster) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        masters = {int(m[1]) for _, _, m, *_ in client.execute_command("CLUSTER", "SLOTS")}
    finally:
        client.close()
    assert masters == {n.port for n in redis_cluster.nodes}
