"""Where Redis is: one URL names a single server, a Cluster or a Sentinel set.

* ``redis://[user:password@]host:port[/db]``, ``rediss://...`` (TLS), ``unix://[user:password@]/path?db=N``:
  one server;
* ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS): a Redis
  Cluster, found from any of the seed nodes (a cluster has one database, so no ``/db``);
* ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` (``rediss+sentinel://``):
  the primary that the Sentinels name ``service``; the credentials are the primary's, a
  ``sentinel_password`` option is the Sentinels' own.

TLS options (query, as redis-py reads them): ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs=required|optional|none``. ``durability=replica`` makes every round trip that
writes wait for one replica to confirm it (``WAIT 1``; on a Cluster, at the end of each master's
pipeline). Anything else in the query is refused. A URL is shown
only redacted (:func:`~adapters.errors.redact`); a bad one is :class:`BadInput` naming what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import BadInput, redact

__all__ = ["RedisTarget", "parse_redis_url"]

Kind = Literal["single", "cluster", "sentinel"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = ("required", "optional", "none")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?\Z")
_DB = re.compile(r"[0-9]{1,9}\Z")
_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """One parsed Redis URL (``url`` is the URL as given: never show it, show :attr:`shown`)."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()  # the server, the cluster's seeds or the Sentinels
    unix_path: str | None = None
    service: str | None = None  # Sentinel: the primary's name
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    durability: str = "primary"  # "replica": each round trip waits for one replica (WAIT 1)

    @property
    def shown(self) -> str:
        return redact(self.url)

    def tls_options(self) -> dict[str, Any]:
        """The TLS settings, as keyword arguments redis-py and coredis both take."""
        if not self.tls:
            return {}
        return {"ssl_ca_certs": self.ssl_ca_certs, "ssl_certfile": self.ssl_certfile,
                "ssl_keyfile": self.ssl_keyfile, "ssl_cert_reqs": self.ssl_cert_reqs}


def _bad(url: str, why: str) -> BadInput:
    return BadInput(f"redis: {redact(url)!r} {why}")


def _node(url: str, text: str) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise _bad(url, f"names a node that is not host:port ({text[:60]!r})")
    port = int(match.group(2) or 6379)
    if not 0 < port < 65536:
        raise _bad(url, f"has a port out of range ({port})")
    return match.group(1).strip("[]"), port


def parse_redis_url(url: str) -> RedisTarget:
    """The topology ``url`` names; :class:`BadInput` (one line, redacted) when it names none."""
    if not isinstance(url, str) or "://" not in url:
        raise BadInput(f"redis: {redact(str(url))!r} is not a Redis URL (redis://host:port/db, "
                       "redis+cluster://host:port,..., redis+sentinel://host:port,.../service or memory://)")
    if any(c.isspace() or not c.isprintable() for c in url):  # urlsplit would drop a newline silently
        raise _bad(url, "contains whitespace or control characters")
    scheme, _, rest = url.partition("://")
    found = _SCHEMES.get(scheme.lower())
    if found is None:
        raise BadInput(f"redis: {redact(url)!r} is not a Redis URL (redis://, rediss://, unix://, "
                       "redis+cluster://, redis+sentinel:// or memory://)")
    kind, tls = found
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad(url, f"is not a valid Redis URL ({exc})") from None
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://secret@host: a password alone, as redis-py reads it
            username, password = None, unquote(user) or None
    try:
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise _bad(url, "has a query that is not name=value&...") from None
    sentinel_password = query.pop("sentinel_password", None)
    if sentinel_password is not None and kind != "sentinel":
        raise _bad(url, "has sentinel_password, which only redis+sentinel:// takes")
    db_option = query.pop("db", None) if kind == "single" else None
    durability = query.pop("durability", "primary")
    if durability not in ("primary", "replica"):
        raise _bad(url, "durability must be primary or replica")
    tls_values = {k: query.pop(k) for k in _TLS_OPTIONS if k in query}
    if query:
        known = ", ".join((*_TLS_OPTIONS, "durability"))
        raise _bad(url, f"has unknown options ({', '.join(sorted(query))}); known: {known}")
    if tls_values and not tls:
        raise _bad(url, f"has TLS options but no TLS scheme (use {'rediss' + scheme[5:]}://)")
    cert_reqs = tls_values.pop("ssl_cert_reqs", "required").lower()
    if cert_reqs not in _CERT_REQS:
        raise _bad(url, f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
    common: dict[str, Any] = dict(username=username, password=password, tls=tls, ssl_cert_reqs=cert_reqs,
                                  durability=durability, **tls_values)
    path = parts.path
    if scheme == "unix":
        if not path or hosts:
            raise _bad(url, "must name a socket path (unix:///path/to/redis.sock?db=0)")
        db = _db(url, db_option or "0")
        return RedisTarget("single", url, unix_path=path, db=db, **common)
    nodes = tuple(_node(url, n) for n in hosts.split(",")) if hosts else ()
    if not nodes:
        raise _bad(url, "names no host")
    if kind == "single":
        if len(nodes) > 1:
            raise _bad(url, "names several hosts; a Cluster is redis+cluster://, Sentinels redis+sentinel://")
        if path not in ("", "/") and not _DB.fullmatch(path[1:]):
            raise _bad(url, "the database must be a number after the port (redis://host:port/0)")
        return RedisTarget("single", url, nodes, db=_db(url, db_option or path[1:] or "0"), **common)
    if kind == "cluster":
        if path not in ("", "/"):
            raise _bad(url, "a Cluster has one database: no /db after the nodes")
        return RedisTarget("cluster", url, nodes, **common)
    segments = [s for s in path.split("/")[1:]]
    if not segments or not _SERVICE.fullmatch(segments[0]) or len(segments) > 2:
        raise _bad(url, "must name the service after the Sentinels (redis+sentinel://host:port,.../service[/db])")
    db = _db(url, segments[1] if len(segments) == 2 and segments[1] else "0")
    return RedisTarget("sentinel", url, nodes, service=segments[0], db=db, sentinel_password=sentinel_password,
                       **common)


def _db(url: str, text: str) -> int:
    if not _DB.fullmatch(text):
        raise _bad(url, "the database must be a number from 0")
    return int(text)
