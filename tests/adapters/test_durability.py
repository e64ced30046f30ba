"""``durability=replica``: every round trip that writes waits for one replica (``WAIT 1``).

A primary and its replica, real processes on free loopback ports. With the replica in step, a
write is on the replica by the time its call returns (read there at once); with the replica
gone, each write's answer is an outage (applied on the primary, unconfirmed: its outcome is
unknown, as for a lost connection), never a silent success. The daemon's store actor and the
synchronous store behave alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trio

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.redis_urls import parse_redis_url
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_actor import StoreActor
from tests.redis_server import RedisServer


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(tmp_path / "primary", appendonly=False)
    primary.start()
    replica = RedisServer(tmp_path / "replica", appendonly=False,
                          extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    client = redis.Redis(host="127.0.0.1", port=primary.port)
    try:
        assert client.execute_command("WAIT", 1, 10_000) == 1  # the replica is in step
        yield primary, replica
    finally:
        client.close()
        replica.stop()
        primary.stop()


def on_replica(replica: RedisServer, job_id: str) -> bool:
    client = redis.Redis(host="127.0.0.1", port=replica.port)
    try:
        return bool(client.exists(Keys("default").job(job_id)))
    finally:
        client.close()


def test_a_write_is_on_the_replica_when_its_call_returns(primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = primary_and_replica
    with SyncStore(open_backend(primary.url + "?durability=replica")) as store:
        jobs = [store.submit(JobSpec(type="t")).id for _ in range(20)]
    assert all(on_replica(replica, j) for j in jobs)


async def test_the_actor_waits_for_the_replica_and_reports_an_unconfirmed_write_as_an_outage(
        primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = primary_and_replica
    actor = StoreActor(open_backend(primary.url + "?durability=replica", timeout=0.5), time.time, max_backoff=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        store = Store(actor)
        async with trio.open_nursery() as callers:
            for _ in range(20):
                callers.start_soon(store.submit, JobSpec(type="t"))
        counts = await store.queue_counts("default")
        assert counts["queued"] == 20
        replica.kill()
        with trio.fail_after(5), pytest.raises(StoreUnavailable, match="not replicated"):
            await store.submit(JobSpec(type="t"))
        actor.close()


def test_durability_is_checked_in_the_url() -> None:
    from jobvisor.adapters.errors import BadInput

    with pytest.raises(BadInput, match="durability must be primary or replica"):
        open_backend("redis://127.0.0.1:1/0?durability=always")
    assert parse_redis_url("redis+cluster://127.0.0.1:1?durability=replica").durability == "replica"
