"""Sentinel: the store reaches the primary the Sentinels name, and follows it after a failover.

Real processes (``tests/redis_sentinel.py``): 1 master, 1 replica, 3 sentinels. The failover is
``SENTINEL FAILOVER`` (the replica promoted, the old master made its replica): calls during
the switch may fail as an outage (``StoreUnavailable``: ``READONLY``, a lost connection), never
as anything else, and once the Sentinels name the new primary every call reaches it.
"""

from __future__ import annotations

import time

import trio

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_actor import StoreActor
from tests.redis_sentinel import SentinelSet


def test_the_synchronous_store_reaches_the_named_primary(sentinel_url: str, sentinel_set: SentinelSet) -> None:
    with SyncStore(open_backend(sentinel_url)) as store:
        job = store.submit(JobSpec(type="t"))
        assert store.get_job(job.id).state == "queued"


async def test_the_actor_follows_the_primary_through_a_failover(sentinel_url: str,
                                                                sentinel_set: SentinelSet) -> None:
    actor = StoreActor(open_backend(sentinel_url), time.time, max_backoff=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor)
        before = await store.submit(JobSpec(type="t"))
        await trio.to_thread.run_sync(sentinel_set.wait_replicated)
        new_primary = await trio.to_thread.run_sync(sentinel_set.failover)
        outages = 0
        with trio.fail_after(30):
            while True:
                try:
                    after = await store.submit(JobSpec(type="t"))
                    break
                except StoreUnavailable:  # READONLY or a lost connection while it switches: an outage
                    outages += 1
                    await trio.sleep(0.1)
        assert after.kind == "created"
        assert (await store.get_job(before.id)).state == "queued"  # replicated before the failover
        assert sentinel_set.primary_port() == new_primary
        actor.close()
