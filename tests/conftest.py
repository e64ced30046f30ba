"""Shared fixtures: a real redis-server per test session, flushed between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.mutation import bind_mutants

bind_mutants()  # first: under mutation testing, the mutated machines/ (tests/mutation.py)

from tests.redis_server import RedisServer  # noqa: E402

# Fixtures shared across rooms: the store targets (real Redis and memory://, a manual clock) and
# a seeded database for the CLI tests.
# A 3-master Redis Cluster and a Sentinel set, each started once per session when a test asks for it.
pytest_plugins = ["tests.store_fixtures", "tests.cli_support", "tests.redis_cluster", "tests.redis_sentinel"]

# The worker pool's bookkeeping checks raise instead of logging, here and in every daemon
# subprocess the tests start (they inherit the environment).
os.environ.setdefault("JOBVISOR_STRICT_INVARIANTS", "1")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, with an empty database for this test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
        client.function_flush()
    finally:
        client.close()
    return redis_server.url
