"""A submit is one round trip: the published job types are read once per ``types_ttl``, and at
once for a type not seen; an app's own types are never read. Counted on a real redis-server
(``INFO commandstats``: the reads of the types hash, the FCALLs of the submits)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from jobvisor import App, Client
from jobvisor.supervisor.published_types import PublishedTypes
from tests.store_fixtures import ManualClock


def calls(raw: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = raw.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    return client


def publish(client: Client, **types: dict[str, Any]) -> None:
    client.store.register_types(types)


def test_submits_of_a_known_type_read_the_types_once_per_ttl(raw: redis.Redis, redis_url: str) -> None:
    clock = ManualClock()
    with Client(redis_url, types_ttl=5.0) as client:
        client.published.clock = clock
        publish(client, echo={"queue": "default", "max_retries": 2})
        client.submit("echo", 1)  # loads the library: counted from here on
        raw.config_resetstat()
        for i in range(10):
            client.submit("echo", i)
        assert (calls(raw, "hgetall"), calls(raw, "fcall")) == (0, 10)
        clock.advance(5.0)
        client.submit("echo", 11)
        client.submit("echo", 12)
        assert (calls(raw, "hgetall"), calls(raw, "fcall")) == (1, 12)


def test_a_type_published_after_the_read_is_accepted_at_once(raw: redis.Redis, redis_url: str) -> None:
    with Client(redis_url, types_ttl=3600.0) as client:
        publish(client, echo={"queue": "default"})
        client.submit("echo", 1)
        publish(client, resize={"queue": "images", "max_retries": 7})
        job = client.status(client.submit("resize", {"w": 10}))
        assert (job.queue, job.max_retries) == ("images", 7)


def test_changed_defaults_reach_the_client_after_the_ttl(raw: redis.Redis, redis_url: str) -> None:
    clock = ManualClock()
    with Client(redis_url, types_ttl=5.0) as client:
        client.published.clock = clock
        publish(client, echo={"queue": "default", "max_retries": 1})
        assert client.status(client.submit("echo")).max_retries == 1
        publish(client, echo={"queue": "default", "max_retries": 4})
        clock.advance(4.9)
        assert client.status(client.submit("echo")).max_retries == 1
        clock.advance(0.1)
        assert client.status(client.submit("echo")).max_retries == 4


def test_ttl_zero_reads_on_every_submit(raw: redis.Redis, redis_url: str) -> None:
    with Client(redis_url, types_ttl=0) as client:
        publish(client, echo={"queue": "default"})
        client.submit("echo")
        raw.config_resetstat()
        for _ in range(3):
            client.submit("echo")
        assert (calls(raw, "hgetall"), calls(raw, "fcall")) == (3, 3)


def test_an_apps_own_types_are_never_read(raw: redis.Redis, redis_url: str) -> None:
    app = App()

    @app.handler("local", queue="default")
    def local(ctx: Any, value: Any) -> Any:
        return value

    with Client(redis_url, app=app) as client:
        client.submit("local")
        raw.config_resetstat()
        client.submit("local")
        assert (calls(raw, "hgetall"), calls(raw, "fcall")) == (0, 1)


def test_an_unknown_type_is_read_again_and_refused(raw: redis.Redis, redis_url: str) -> None:
    from jobvisor.adapters.errors import BadInput

    with Client(redis_url) as client:
        publish(client, echo={"queue": "default"})
        client.submit("echo")
        raw.config_resetstat()
        with pytest.raises(BadInput, match="unknown job type 'nope'"):
            client.submit("nope")
        assert (calls(raw, "hgetall"), calls(raw, "fcall")) == (1, 0)


def test_a_negative_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="types_ttl: must be 0 or more seconds"):
        PublishedTypes(-1)


async def test_the_async_client_reads_as_the_client_does(raw: redis.Redis, redis_url: str) -> None:
    from jobvisor import AsyncClient

    async with AsyncClient.open(redis_url) as client:
        await client.store.register_types({"echo": {"queue": "default"}})
        await client.submit("echo")
        raw.config_resetstat()
        for _ in range(5):
            await client.submit("echo")
        assert (calls(raw, "hgetall"), calls(raw, "fcall")) == (0, 5)
