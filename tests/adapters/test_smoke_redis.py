"""The pipeline is real: the fixture's redis-server runs, on loopback, in its own directory."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_a_port_taken_before_the_server_binds_it_is_replaced(tmp_path: Path, redis_server: RedisServer) -> None:
    """The port found free was taken meanwhile (here by the fixture's own server, which also
    answers PING on it): the new server starts on a fresh port, and is the one that answers."""
    server = RedisServer(tmp_path / "second", appendonly=False)
    server.port = redis_server.port
    server.start()
    try:
        assert server.port != redis_server.port
        client = redis.Redis(host="127.0.0.1", port=server.port)
        try:
            assert int(client.info("server")["process_id"]) == server.process.pid  # type: ignore[union-attr]
        finally:
            client.close()
    finally:
        server.stop()


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "bad", extra_args=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="exited at start(.|\n)*no-such-option"):
        server.start()
