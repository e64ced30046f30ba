"""The daemon's coredis connections (adapters/redis_async.py) against a real redis-server.

They must give every reply the shape the synchronous redis-py client gives, select the URL's
database, never let a cancelled or failed round trip leave a reply behind for the next one,
turn a server that is gone or silent into one clear error naming the URL, and speak TLS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from jobvisor.adapters.backend import Backend, open_backend
from jobvisor.adapters.errors import StoreError, StoreUnavailable
from jobvisor.adapters.notify import listen
from tests.redis_server import RedisServer, free_port


async def round_trip(backend: Backend, commands: list[tuple[Any, ...]], client: Any = None) -> list[Any]:
    """``commands`` in one round trip over the daemon's client (a new one unless given)."""
    if client is not None:
        return await backend.run_commands(client, commands)
    async with backend.async_client() as fresh:
        return await backend.run_commands(fresh, commands)


async def ask(backend: Backend, commands: list[tuple[Any, ...]], client: Any = None) -> list[Any]:
    """:func:`round_trip`, raising the first error among the replies (as the actor's callers see it)."""
    replies = await round_trip(backend, commands, client)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _seed(client: redis.Redis) -> None:
    client.hset("h", mapping={"a": "1", "b": "two"})
    client.xadd("s", {"type": "x", "id": "1"})
    client.xadd("s", {"type": "y", "id": "2"})
    client.sadd("set", "p", "q")
    client.zadd("z", {"m": 1.5, "n": 2})


READS = [
    ("HGETALL", "h"),
    ("HGETALL", "missing"),
    ("HMGET", "h", "a", "nope"),
    ("XRANGE", "s", "-", "+", "COUNT", 10),
    ("SMEMBERS", "set"),
    ("ZCARD", "z"),
    ("ZRANGE", "z", 0, -1, "WITHSCORES"),
    ("ZRANGEBYSCORE", "z", "-inf", "+inf", "WITHSCORES"),
    ("EXISTS", "h"),
    ("GET", "missing"),
    ("PING",),
]


async def test_replies_have_the_synchronous_clients_shapes(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    _seed(sync)
    expected = [sync.execute_command(*c) for c in READS]
    assert await round_trip(open_backend(redis_url), READS) == expected


async def test_the_urls_database_is_selected(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/5"
    await round_trip(open_backend(url), [("SET", "where", "five")])
    assert redis.Redis.from_url(url).get("where") == b"five"
    assert redis.Redis.from_url(redis_url).get("where") is None


async def test_an_error_reply_is_a_value_and_the_connection_goes_on(redis_url: str) -> None:
    backend = open_backend(redis_url)
    async with backend.async_client() as client:
        bad, good = await round_trip(backend, [("HGET", "only-one-arg"), ("PING",)], client)
        assert isinstance(bad, StoreError)
        assert not isinstance(bad, StoreUnavailable)
        assert "wrong number of arguments" in str(bad)
        assert good in (b"PONG", True, "PONG")
        assert await round_trip(backend, [("PING",)], client) in ([b"PONG"], [True])


async def test_a_cancelled_round_trip_leaves_no_reply_for_the_next(redis_url: str) -> None:
    """Cancelled while Redis still owes a reply (BLPOP): the connection is dropped, so the
    late reply can never be read as the answer to the next command (the server may still
    serve the dropped BLPOP, whose reply then goes nowhere: LLEN is 0 or 1)."""
    backend = open_backend(redis_url)
    async with backend.async_client() as client:
        with trio.move_on_after(0.2) as scope:
            await round_trip(backend, [("BLPOP", "nothing-here", 2)], client)
        assert scope.cancelled_caught
        redis.Redis.from_url(redis_url).rpush("nothing-here", "late")
        got, length = await round_trip(backend, [("GET", "k"), ("LLEN", "nothing-here")], client)
        assert got is None
        assert length in (0, 1)


async def test_a_server_that_goes_away_is_one_error_then_a_reconnect(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=False)
    server.start()
    backend = open_backend(server.url)
    try:
        async with backend.async_client() as client:
            await ask(backend, [("SET", "k", "v")], client)
            server.kill()
            with pytest.raises(StoreUnavailable) as caught:
                await ask(backend, [("GET", "k")], client)
            assert server.url.split("//")[1].split("/")[0] in str(caught.value)
            server.start()
            assert await ask(backend, [("PING",)], client) in ([b"PONG"], [True], ["PONG"])
    finally:
        server.stop()


async def test_an_idle_connection_outlives_a_restart_without_a_failed_round_trip(tmp_path: Path) -> None:
    """Redis restarted while the connection sat unused (the daemon's loop running meanwhile,
    as it does): the next round trip just works."""
    server = RedisServer(tmp_path)
    server.start()
    backend = open_backend(server.url)
    try:
        async with backend.async_client() as client:
            await ask(backend, [("SET", "k", "v")], client)
            await trio.to_thread.run_sync(server.kill)
            await trio.to_thread.run_sync(server.start)
            assert await ask(backend, [("GET", "k")], client) == [b"v"]  # AOF kept it
    finally:
        server.stop()


async def test_a_server_that_never_answers_costs_one_timeout() -> None:
    async def accept_and_stay_silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, accept_and_stay_silent, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        backend = open_backend(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        with trio.fail_after(5), pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
            await ask(backend, [("PING",)])
        nursery.cancel_scope.cancel()


async def test_nothing_listening_names_the_url() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        await ask(open_backend(f"redis://127.0.0.1:{port}/0", timeout=1), [("PING",)])


async def test_listen_delivers_messages_and_comes_back_after_a_restart(tmp_path: Path) -> None:
    """The daemon's pub/sub listener: messages reach ``deliver`` in trio; when redis-server
    restarts, it reconnects and hears the next message (it is never silently deaf)."""
    server = RedisServer(tmp_path, appendonly=False)
    server.start()
    backend = open_backend(server.url)
    got: list[tuple[str, str]] = []
    arrived = trio.Event()

    def deliver(channel: str, data: str) -> None:
        got.append((channel, data))
        arrived.set()

    async def publish_until_heard(data: str) -> None:
        # a subscription becomes live a moment after connecting: publish until it is heard
        nonlocal arrived
        arrived = trio.Event()
        with trio.fail_after(10):
            while not arrived.is_set():
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    redis.Redis.from_url(server.url).publish("jv:{q}:wake", data)
                with trio.move_on_after(0.05):
                    await arrived.wait()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(listen, backend, ["jv:{q}:wake", "jv:{q}:cancel"], deliver))
            await publish_until_heard("before")
            server.restart()
            await publish_until_heard("after")
            nursery.cancel_scope.cancel()
        assert got[0] == ("jv:{q}:wake", "before")
        assert got[-1] == ("jv:{q}:wake", "after")
        assert {d for _, d in got} == {"before", "after"}
    finally:
        server.stop()


async def test_listen_refused_by_an_acl_is_an_error_not_a_retry(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", "nosub", "on", ">pw", "~*", "&*", "+@all", "-subscribe")
    try:
        backend = open_backend(redis_url.replace("redis://", "redis://nosub:pw@", 1))
        with trio.fail_after(5), pytest.raises(StoreError, match="refused pub/sub"):
            await listen(backend, ["jv:{q}:wake"], lambda channel, data: None)
    finally:
        admin.execute_command("ACL", "DELUSER", "nosub")


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server that also speaks TLS, with a certificate from a throwaway CA."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    tls_port = free_port()
    server = RedisServer(tmp_path / "data", appendonly=False, extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no"])
    server.start()
    try:
        yield server, tls_port, ca_file
    finally:
        server.stop()


async def test_rediss_urls_speak_tls_with_the_urls_ca(tls_redis: tuple[RedisServer, int, Path]) -> None:
    server, port, ca_file = tls_redis
    verified = open_backend(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca_file}")
    assert await ask(verified, [("SET", "k", "over tls"), ("GET", "k")]) == [True, b"over tls"]
    # the system's CAs do not know this server's certificate: one clear error, no plain-text fallback
    with pytest.raises(StoreUnavailable, match="certificate verify failed"):
        await ask(open_backend(f"rediss://127.0.0.1:{port}/0"), [("PING",)])


async def test_a_daemon_runs_jobs_over_tls(tls_redis: tuple[RedisServer, int, Path]) -> None:
    """The store actor and the pub/sub listener both connect over TLS (rediss://)."""
    from jobvisor import App
    from jobvisor.adapters.records import JobSpec
    from jobvisor.adapters.store import SyncStore
    from tests.harness import running_daemon

    server, port, ca_file = tls_redis
    app = App()

    @app.handler("echo", max_retries=0)
    async def echo(ctx: object) -> object:
        return ctx.input

    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
    with trio.fail_after(20):
        async with running_daemon(app, redis=url, idle_poll=5.0) as (daemon, watcher):
            # submitted by another client (the synchronous one, over TLS too): only the listener's
            # wake message, over TLS, brings it to the daemon before the 5 s idle poll
            job = SyncStore(open_backend(url)).submit(JobSpec(type="echo", input={"x": 1}, max_retries=0))
            await watcher.until(lambda: any(r.id == job.id and r.to == "completed" for r in watcher.moves),
                                timeout=4.0)
            assert (await daemon.store.get_job(job.id)).result == {"x": 1}
