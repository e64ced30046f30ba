"""Fixtures and helpers for the store tests: every test runs on both backends.

``target`` is parametrized over the real ``redis-server`` of the session
(flushed for each test) and the embedded store (fakeredis running the same
Lua); a module marked ``pytest.mark.cluster`` runs on the session's 3-master
Redis Cluster too (``tests/redis_cluster.py``). From it come:

* ``sync_store``: a :class:`SyncStore` whose clock the test drives
  (:class:`ManualClock`), so lease expiry, backoff and due times are exact;
* ``trio_store``: a :class:`StoreActor` serving a :class:`Store` in a
  nursery, on the wall clock.

``Target.raw()`` is a plain redis-py (or FakeRedis) client on the same
database, used only to *read* what the store wrote: :func:`snapshot` dumps
every key by type, so "nothing was written" is an equality of two dumps.
Nothing here writes to Redis behind the store's back (one test simulates a
duplicate outbox row with a raw write, and says so).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import trio

from jobvisor.adapters.backend import Backend, MemoryServers, open_backend
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_actor import StoreActor

__all__ = [
    "Target",
    "ManualClock",
    "target",
    "sync_store",
    "clock",
    "trio_store",
    "snapshot",
    "diff_keys",
    "stream",
    "event_counts",
    "job_ids",
    "delivery_ids",
    "index_membership",
    "K",
]

QUEUE = "default"
K = Keys(QUEUE)


@dataclass
class Target:
    """One backend under test: the session's redis-server or an embedded store."""

    kind: str  # "redis" | "memory" | "cluster"
    url: str
    memory: MemoryServers | None = None
    _raw: Any = None
    _opened: list[Backend] = field(default_factory=list)

    def backend(self) -> Backend:
        """A new backend (its own connection) on the same database."""
        b = open_backend(self.url, memory=self.memory)
        self._opened.append(b)
        return b

    def raw(self) -> Any:
        """A read-only view (by convention) of the same database."""
        if self._raw is None:
            if self.kind == "redis":
                self._raw = redis.Redis.from_url(self.url)
            elif self.kind == "cluster":
                self._raw = redis.RedisCluster(startup_nodes=[
                    redis.cluster.ClusterNode(h, int(p)) for h, p in
                    (n.rsplit(":", 1) for n in self.url.split("://", 1)[1].split(","))])
            else:
                import fakeredis

                assert self.memory is not None
                self._raw = fakeredis.FakeRedis(server=self.memory.get(self.url[len("memory://"):]))
        return self._raw

    def close(self) -> None:
        for b in self._opened:
            b.close()
        if self._raw is not None:
            self._raw.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``target``: redis-server and the embedded store; the Cluster too where marked ``cluster``."""
    if "target" in metafunc.fixturenames:
        kinds = ["redis", "memory"]
        if metafunc.definition.get_closest_marker("cluster") is not None:
            kinds.append("cluster")
        metafunc.parametrize("target", kinds, indirect=True)


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "redis":
        t = Target("redis", request.getfixturevalue("redis_url"))
    elif request.param == "cluster":
        t = Target("cluster", request.getfixturevalue("cluster_url"))
    else:
        t = Target("memory", f"memory://{uuid.uuid4().hex}", memory=MemoryServers())
    try:
        yield t
    finally:
        t.close()


class ManualClock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sync_store(target: Target, clock: ManualClock) -> SyncStore:
    return SyncStore(target.backend(), clock=clock)


@pytest.fixture
async def trio_store(target: Target) -> AsyncIterator[Store]:
    actor = StoreActor(target.backend(), time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        yield Store(actor)
        actor.close()


# -- reading what the store wrote ---------------------------------------------------------


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def snapshot(raw: Any) -> dict[str, tuple[str, Any]]:
    """Every key of the database, dumped by type: ``{key: (type, contents)}``."""
    out: dict[str, tuple[str, Any]] = {}
    for key in sorted(_s(k) for k in raw.scan_iter(match="*", count=1000)):
        kind = _s(raw.type(key))
        if kind == "hash":
            value: Any = {_s(a): _s(b) for a, b in raw.hgetall(key).items()}
        elif kind == "zset":
            value = [(_s(m), s) for m, s in raw.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            value = [(_s(i), {_s(a): _s(b) for a, b in f.items()}) for i, f in raw.xrange(key)]
        elif kind == "string":
            value = _s(raw.get(key))
        elif kind == "set":
            value = sorted(_s(m) for m in raw.smembers(key))
        elif kind == "list":
            value = [_s(m) for m in raw.lrange(key, 0, -1)]
        elif kind == "none":  # expired between SCAN and TYPE
            continue
        else:  # pragma: no cover - the store writes no other type
            raise AssertionError(f"unexpected key type {kind} for {key}")
        out[key] = (kind, value)
    return out


def diff_keys(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """Keys created, deleted or changed between two snapshots."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def stream(raw: Any, queue: str = QUEUE) -> list[dict[str, str]]:
    """The queue's events, oldest first, each as its fields (``type``, ``id``...)."""
    return [{_s(a): _s(b) for a, b in f.items()} for _, f in raw.xrange(Keys(queue).events)]


def event_counts(raw: Any, queue: str = QUEUE) -> Counter[tuple[str, str]]:
    """How many events each (object id, event type) has."""
    return Counter((e["id"], e["type"]) for e in stream(raw, queue))


def job_ids(raw: Any, queue: str = QUEUE) -> set[str]:
    prefix = Keys(queue).job("")
    return {_s(k)[len(prefix):] for k in raw.scan_iter(match=prefix + "*", count=1000)}


def delivery_ids(raw: Any, queue: str = QUEUE) -> set[str]:
    prefix = Keys(queue).delivery("")
    return {_s(k)[len(prefix):] for k in raw.scan_iter(match=prefix + "*", count=1000)}


def index_membership(raw: Any, job_id: str, queue: str = QUEUE) -> list[str]:
    """The names of the job indexes (queued, due, active, validating, finished) holding ``job_id``."""
    keys = Keys(queue)
    job_type = _s(raw.hget(keys.job(job_id), "type") or b"")
    names = {"queued": keys.queued_of(job_type), "due": keys.due, "active": keys.active,
             "validating": keys.validating, "finished": keys.finished}
    found = sorted(n for n, k in names.items() if raw.zscore(k, job_id) is not None)
    if raw.zscore(keys.queued, job_id) is not None:  # the earlier versions' index: never written
        found.append("untyped")
    return found
