"""The pipeline is real: the fixture's redis-server runs, on loopback, in its own directory."""

from __future__ import annotations

import redis

from tests.redis_server import RedisServer


def test_fixture_server_is_a_real_redis_on_loopback(redis_server: RedisServer, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        info = client.info("server")
        assert info["tcp_port"] == redis_server.port
        assert client.config_get("dir")["dir"] == str(redis_server.directory)
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.set("smoke", "1")
        assert client.get("smoke") == b"1"
        assert client.eval("return redis.call('INCR', KEYS[1])", 1, "n") == 1
    finally:
        client.close()


def test_each_test_starts_with_an_empty_database(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_restart_keeps_appended_writes(redis_server: RedisServer, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("durable", "yes")
    client.close()
    redis_server.kill()
    redis_server.start()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get("durable") == b"yes"
    finally:
        client.close()
