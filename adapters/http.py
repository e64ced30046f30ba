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
    └── HttpUnreachable  refused, reset, DNS, TLS, an answer that is not HTTP

``transport`` is the port: tests of retry policy under trio's MockClock pass an
``httpx.MockTransport``; everything else talks to real sockets.

Cancellation: a cancelled request is abandoned with its connection (httpx
closes it), never half-read into the pool.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping

import httpx
import msgspec
import trio

from .errors import HttpFailure, HttpTimeout, HttpUnreachable

__all__ = ["HttpAnswer", "HttpClient", "parse_retry_after", "USER_AGENT"]

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
    return f"{type(exc).__name__}: {text}"[:300]


class HttpClient:
    """An httpx client with one time limit per request and our errors (module docstring)."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        pools = 1 if transport is not None else max(1, -(-max_connections // POOL_SIZE))
        size = -(-max_connections // pools)
        self._clients = [
            httpx.AsyncClient(
                transport=transport,
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": USER_AGENT},
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
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
            finally:
                self._busy[pool] -= 1
        if answer is None:
            raise HttpTimeout(url, f"no answer within {timeout:g}s")
        return answer
