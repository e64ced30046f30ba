"""A trio-native Redis connection for the store actor: pipelines without a thread hop.

redis-py blocks, so calling it from trio costs a trip through a worker thread
on every round trip (about half a millisecond here, and the GIL contention of a
second busy thread). This connection speaks RESP3 over a trio socket instead:
commands are packed by ``hiredis.pack_command`` and replies parsed by
``hiredis.Reader`` (the C parser redis-py itself uses), then shaped by the
redis-py client's own response callbacks, so every reply has exactly the
shape the synchronous client gives.

Errors: a connection that cannot be made, breaks or times out is
:class:`StoreUnavailable`; a handshake the server refuses is classified by
:func:`~adapters.errors.transient_reply` (``LOADING`` waits, a wrong
password is a permanent :class:`StoreError`). Error replies to commands are
returned as values and classified by the backend.

A connection is never left in an unknown state: any failure or cancellation
in the middle of a round trip closes it, and the next round trip reconnects.
An idle connection the server closed (Redis restarted while it sat unused)
is noticed before anything is sent on it, and replaced: a round trip after
a restart does not fail just because its connection is an old one.
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import trio
from redis.connection import parse_url

from .errors import StoreError, StoreUnavailable, redact, transient_reply

__all__ = ["TrioConnection"]

_READ_SIZE = 1 << 16


def _tls_context(params: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings of a ``rediss://`` URL, as redis-py reads them: ``ssl_ca_certs``,
    ``ssl_certfile``/``ssl_keyfile`` (client certificate), ``ssl_cert_reqs=none|optional``."""
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    if params.get("ssl_certfile"):
        context.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"))
    required = str(params.get("ssl_cert_reqs", "required")).lower()
    if required in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif required in ("optional", "cert_optional"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class TrioConnection:
    """One socket to redis-server, used by one task at a time."""

    def __init__(self, url: str, *, timeout: float, callbacks: Any) -> None:
        self.url = redact(url)
        self._params = parse_url(url)  # type: ignore[no-untyped-call]
        self._timeout = timeout
        self._callbacks = callbacks
        self._stream: trio.abc.Stream | None = None
        self._reader: Any = None

    async def _connect(self) -> None:
        p = self._params
        try:
            with trio.fail_after(self._timeout):
                if "path" in p:
                    stream: trio.abc.Stream = await trio.open_unix_socket(p["path"])
                else:
                    host = p.get("host", "localhost")
                    stream = await trio.open_tcp_stream(host, p.get("port", 6379))
                    if p.get("connection_class") is redis.connection.SSLConnection:  # rediss://
                        stream = trio.SSLStream(stream, _tls_context(p), server_hostname=host)
                        await stream.do_handshake()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            # a TLS failure (say, an unverifiable certificate) is the BrokenResourceError's cause
            raise StoreUnavailable(self.url, str(exc) or str(exc.__cause__ or "") or type(exc).__name__) from exc
        self._stream = stream
        self._reader = hiredis.Reader(replyError=redis.exceptions.ResponseError)
        hello: list[Any] = ["HELLO", 3]
        if p.get("password") is not None:
            hello += ["AUTH", p.get("username") or "default", p["password"]]
        handshake: list[tuple[Any, ...]] = [tuple(hello)]
        if p.get("db"):
            handshake.append(("SELECT", p["db"]))
        for reply in await self._round_trip(handshake):
            if isinstance(reply, Exception):
                self.close()
                # LOADING and friends wait; a wrong password or a missing db does not pass
                transient = transient_reply(self.url, str(reply))
                if transient is not None:
                    raise transient
                raise StoreError(f"Redis at {self.url} refused the connection: {reply}")

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # A plain socket close needs no await (trio's aclose would be a checkpoint); under
            # TLS, the socket is the transport's (no close_notify: the connection is dropped).
            transport = getattr(stream, "transport_stream", stream)
            socket = getattr(transport, "socket", None)
            if socket is not None:
                socket.close()

    def _stale(self) -> bool:
        """Something to read on an idle request/response connection: the server closed it
        (end of file, reset) or it is out of step. Either way it must not be sent on."""
        socket = getattr(self._stream, "socket", None)
        if socket is None or not hasattr(select, "poll"):
            return False
        poller = select.poll()
        poller.register(socket.fileno(), select.POLLIN)
        return bool(poller.poll(0))  # POLLHUP and POLLERR are reported too

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send every command, read every reply; a reply may be a ``ResponseError``."""
        if self._stream is not None and self._stale():
            self.close()
        if self._stream is None:
            await self._connect()
        replies = await self._round_trip(commands)
        shaped = []
        for command, reply in zip(commands, replies, strict=True):
            callback = self._callbacks.get(command[0]) if not isinstance(reply, Exception) else None
            shaped.append(callback(reply) if callback is not None else reply)
        return shaped

    async def send(self, *command: Any) -> None:
        """Send one command without reading its reply (pub/sub: ``SUBSCRIBE``, ``PING``);
        read replies and messages with :meth:`receive`."""
        if self._stream is None:
            await self._connect()
        assert self._stream is not None
        try:
            with trio.fail_after(self._timeout):
                await self._stream.send_all(hiredis.pack_command(command))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            self.close()
            raise StoreUnavailable(self.url, str(exc) or type(exc).__name__) from exc

    async def receive(self, timeout: float) -> Any:  # noqa: ASYNC109  (a poll with a bound, the caller loops)
        """The next reply or push (a pub/sub message is ``[b"message", channel, data]``),
        or ``None`` when nothing came within ``timeout``. Cancelling it loses nothing:
        bytes already read stay in the parser."""
        stream, reader = self._stream, self._reader
        if stream is None:
            raise StoreUnavailable(self.url, "not connected")
        try:
            with trio.move_on_after(timeout):
                while True:
                    reply = reader.gets()
                    if reply is not False:
                        return reply
                    chunk = await stream.receive_some(_READ_SIZE)
                    if not chunk:
                        raise StoreUnavailable(self.url, "connection closed by server")
                    reader.feed(chunk)
            return None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, hiredis.ProtocolError) as exc:
            self.close()
            raise StoreUnavailable(self.url, str(exc) or type(exc).__name__) from exc
        except StoreUnavailable:
            self.close()
            raise

    async def _round_trip(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        stream, reader = self._stream, self._reader
        assert stream is not None
        done = False
        try:
            with trio.fail_after(self._timeout):
                await stream.send_all(b"".join(hiredis.pack_command(c) for c in commands))
                replies: list[Any] = []
                while len(replies) < len(commands):
                    reply = reader.gets()
                    if reply is False:
                        chunk = await stream.receive_some(_READ_SIZE)
                        if not chunk:
                            raise StoreUnavailable(self.url, "connection closed by server")
                        reader.feed(chunk)
                    else:
                        replies.append(reply)
            done = True
            return replies
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, hiredis.ProtocolError) as exc:
            raise StoreUnavailable(self.url, str(exc) or type(exc).__name__) from exc
        except trio.TooSlowError:
            raise StoreUnavailable(self.url, f"no answer within {self._timeout:g} s") from None
        finally:
            if not done:
                self.close()
