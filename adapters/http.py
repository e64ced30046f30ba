"""HTTP for the validator and the webhook deliverer: httpx below, our errors above.

One :class:`HttpClient` per actor wraps ``httpx.AsyncClient`` pools (keep-alive,
no redirects followed, proxy variables of the environment ignored). httpx's pool
spends time per request in proportion to the requests and connections it holds,
so a large ``max_connections`` is split into pools of at most ``POOL_SIZE``
connections, and each request goes to the least busy one.
Every request is bounded as a whole by ``timeout`` (a trio cancel scope around
connect, send and reading the answer), so a receiver that hangs or drips bytes
costs exactly one time limit. An answer with any status code is returned as an
:class:`HttpAnswer`; everything else becomes one of ours, raised ``from`` the
httpx exception::

    HttpFailure          (adapters.errors)
    ├── HttpTimeout      no complete answer within ``timeout``
    ├── HttpUnreachable  refused, reset, DNS, TLS, an answer that is not HTTP
    └── DestinationRefused (adapters.destinations) the policy refused where it would go

Destinations (:mod:`adapters.destinations`): before a request, the URL's host
is checked by name; at connect time, httpcore's network backend is ours
(:class:`CheckedBackend`, over httpcore's trio backend): it resolves the name
once through ``resolver``, checks every address, and connects to a checked
address. httpcore then starts TLS on that stream with the URL's host name as
SNI and certificate name, and httpx sends the URL's ``Host`` header, so the
receiver sees the name while the socket goes where the policy looked. A
refusal is :class:`~adapters.destinations.DestinationRefused` (an
``HttpFailure``); nothing is sent.

``transport`` is the port: tests of retry policy under trio's MockClock pass an
``httpx.MockTransport`` (then only the name check applies); everything else
talks to real sockets. ``resolver`` is the DNS port: tests pass a stand-in.

Cancellation: a cancelled request is abandoned with its connection (httpx
closes it), never half-read into the pool.
"""

from __future__ import annotations

import email.utils
import ipaddress
import ssl
import time
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import httpcore
import httpx
import msgspec
import trio

from .destinations import DestinationPolicy, DestinationRefused
from .errors import HttpFailure, HttpTimeout, HttpUnreachable
from .redaction import install_log_redaction, redact_text

__all__ = ["HttpAnswer", "HttpClient", "CheckedBackend", "Resolver", "system_resolver",
           "parse_retry_after", "USER_AGENT"]

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: how a host name becomes IP addresses (tests pass a stand-in)."""

USER_AGENT = "jobvisor/0.1"
POOL_SIZE = 8


class HttpAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A complete HTTP answer: status, body (at most ``max_body`` bytes) and Retry-After."""

    status: int
    body: bytes = b""
    truncated: bool = False
    retry_after: float | None = None  # seconds from now, when the answer says so


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    ``None`` when absent or unreadable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact_text(f"{type(exc).__name__}: {text}")[:300]


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (``getaddrinfo`` in a trio worker thread), addresses in its order."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, connecting only to addresses the policy allows.

    ``connect_tcp`` resolves ``host`` once (an IP literal is not resolved), refuses the
    destination when *any* address is refused (a name that mixes public and internal
    answers is not trusted), then connects to the checked addresses in order. The stream
    it returns is httpcore's own, so ``start_tls`` uses the name httpcore passes as
    ``server_hostname`` (the URL's host), never the address.
    """

    def __init__(self, policy: DestinationPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self.resolver = resolver
        self._inner = httpcore.TrioBackend()

    async def _addresses(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            found = await self.resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = []
        for text in found:
            try:
                addresses.append(ipaddress.ip_address(str(text).split("%", 1)[0]))
            except ValueError:
                raise httpcore.ConnectError(f"{host!r} resolved to {text!r}, not an address") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} resolved to no address")
        return addresses

    async def connect_tcp(  # httpcore's network-backend interface, timeout and all
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port)
        for address in addresses:
            refusal = self.policy.check_address(address, host)
            if refusal is not None:
                raise DestinationRefused(host, refusal.reason, check="address")
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(  # httpcore's network-backend interface
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (and its mapping of httpcore errors), over a connection pool
    whose network backend is a :class:`CheckedBackend`. httpx has no argument for the
    backend, so the pool it built is replaced; tests/test_outbound.py pins that the
    backend is the one used (a stand-in resolver's answers are where connections go)."""

    def __init__(self, backend: CheckedBackend, *, ssl_context: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class HttpClient:
    """An httpx client with one time limit per request and our errors (module docstring)."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
        clock: Callable[[], float] = time.time,
        destinations: DestinationPolicy | None = None,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.clock = clock
        self.destinations = destinations if destinations is not None else DestinationPolicy()
        install_log_redaction()  # httpx and httpcore log request URLs (info, debug): never in clear
        pools = 1 if transport is not None else max(1, -(-max_connections // POOL_SIZE))
        size = -(-max_connections // pools)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        if transport is None:  # one TLS context and one checked backend for every pool
            context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
                verify, trust_env=False)
            backend = CheckedBackend(self.destinations, resolver)
        self._clients = [
            httpx.AsyncClient(
                transport=transport or _CheckedTransport(backend, ssl_context=context, limits=limits),
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": USER_AGENT},
                limits=limits,
            )
            for _ in range(pools)
        ]
        self._busy = [0] * pools

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    # The time limit is part of each request (httpx's own timeouts get it too, and running
    # out of it is HttpTimeout, not a Cancelled): hence a `timeout` parameter here.
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float,  # noqa: ASYNC109
        *, max_body: int = 4096,
    ) -> HttpAnswer:
        """POST ``body``; raises :class:`HttpTimeout` or :class:`HttpUnreachable`."""
        return await self._request("POST", url, timeout, max_body, content=body, headers=dict(headers))

    async def get(self, url: str, timeout: float, *, max_body: int = 1 << 20) -> HttpAnswer:  # noqa: ASYNC109
        """GET ``url`` (JSON expected); raises :class:`HttpTimeout` or :class:`HttpUnreachable`."""
        return await self._request("GET", url, timeout, max_body, headers={"accept": "application/json"})

    async def _request(
        self, method: str, url: str, timeout: float, max_body: int, **kwargs: object  # noqa: ASYNC109
    ) -> HttpAnswer:
        answer: HttpAnswer | None = None
        try:
            host = urlsplit(url).hostname or ""
        except ValueError as exc:
            raise HttpUnreachable(url, "invalid URL") from exc
        refusal = self.destinations.check_host(host)
        if refusal is not None:
            raise DestinationRefused(url, refusal.reason, check="name")
        pool = self._busy.index(min(self._busy))
        self._busy[pool] += 1
        with trio.move_on_after(timeout):
            try:
                async with self._clients[pool].stream(
                    method, url, timeout=httpx.Timeout(timeout), **kwargs  # type: ignore[arg-type]
                ) as response:
                    chunks: list[bytes] = []
                    size = 0
                    truncated = False
                    async for chunk in response.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > max_body:
                            truncated = True
                            break
                    answer = HttpAnswer(
                        status=response.status_code,
                        body=b"".join(chunks)[:max_body],
                        truncated=truncated,
                        retry_after=parse_retry_after(response.headers.get("retry-after"), self.clock()),
                    )
            except DestinationRefused as exc:  # from CheckedBackend: name it by the URL
                raise DestinationRefused(url, exc.reason, check=exc.check) from None
            except httpx.TimeoutException as exc:
                raise HttpTimeout(url, f"no answer within {timeout:g}s ({_short(exc)})") from exc
            except httpx.ConnectError as exc:
                raise HttpUnreachable(url, f"cannot connect ({_short(exc)})") from exc
            except httpx.RemoteProtocolError as exc:
                raise HttpUnreachable(url, f"not a valid HTTP answer ({_short(exc)})") from exc
            except httpx.TransportError as exc:
                raise HttpUnreachable(url, f"connection failed ({_short(exc)})") from exc
            except httpx.InvalidURL as exc:
                raise HttpUnreachable(url, f"invalid URL ({_short(exc)})") from exc
            except httpx.HTTPError as exc:  # the rest of httpx's tree, mapped at the boundary
                raise HttpFailure(url, _short(exc)) from exc
            except (UnicodeError, ValueError) as exc:  # e.g. a host IDNA refuses only at send time
                raise HttpUnreachable(url, f"invalid URL ({_short(exc)})") from exc
            finally:
                self._busy[pool] -= 1
        if answer is None:
            raise HttpTimeout(url, f"no answer within {timeout:g}s")
        return answer
