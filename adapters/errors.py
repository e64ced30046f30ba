"""The exceptions jobvisor raises, in one tree.

Third-party errors (redis-py, httpx, msgspec) are caught where they enter,
in ``adapters/``, and re-raised as one of these with ``raise ... from exc``,
so supervisor code and users never catch a library's exception::

    JobvisorError
    ├── BadInput            a value the caller gave is wrong (CLI exit 2)
    ├── NotFound            no such job, batch or delivery (CLI exit 3)
    ├── Rejected            the store refused an op (adding to a finalized batch...) (exit 2)
    ├── StoreError          the store failed for good: refused (NOPERM, WRONGTYPE, a script
    │   │                   error) or closed (CLI exit 1)
    │   └── StoreUnavailable    transient: Redis cannot serve now (connection lost or refused,
    │       │                   timeout, BUSY, TRYAGAIN, MASTERDOWN, READONLY, CLUSTERDOWN...);
    │       │                   the outcome of the request is unknown, nothing was retried
    │       ├── StoreLoading        Redis is loading its dataset (LOADING)
    │       └── StoreOutOfMemory    Redis refuses writes: maxmemory reached (OOM)
    └── HttpFailure         an HTTP request (webhook, validator) got no usable answer
        ├── HttpTimeout         no complete answer within the request's time limit
        └── HttpUnreachable     refused, reset, DNS, TLS, or not HTTP at all
"""

from __future__ import annotations

__all__ = [
    "JobvisorError",
    "BadInput",
    "NotFound",
    "Rejected",
    "StoreError",
    "StoreUnavailable",
    "StoreLoading",
    "StoreOutOfMemory",
    "transient_reply",
    "HttpFailure",
    "HttpTimeout",
    "WaitTimeout",
    "HttpUnreachable",
]


class JobvisorError(Exception):
    """Base of every error jobvisor raises on purpose."""


class BadInput(JobvisorError, ValueError):
    """A value given by the caller is invalid; the message names the field."""


class NotFound(JobvisorError, LookupError):
    """No job, batch or delivery has this id."""


class Rejected(JobvisorError):
    """The store refused an op for a reason the caller can fix."""


class StoreError(JobvisorError):
    """The store failed to run a request."""


class WaitTimeout(JobvisorError, TimeoutError):
    """A client's ``wait`` for a job ended at its timeout with the job not yet terminal
    (``state``: the job's state when the wait began or last saw it change). Also a
    builtin :class:`TimeoutError`."""

    def __init__(self, job_id: str, timeout: float, state: str) -> None:
        super().__init__(f"job {job_id} is still {state} after {timeout:g} s")
        self.job_id = job_id
        self.state = state


class StoreUnavailable(StoreError):
    """Redis did not answer. Whether the request was applied is unknown.

    The store never re-sends a request by itself: every op is either
    idempotent by its guard (a second ``complete`` is absorbed) or must not
    run twice (a submit without idempotency key), so the caller decides.
    """

    condition = "unavailable"
    """One word naming why (``unavailable``, ``loading``, ``out of memory``, ``busy``...),
    for logs and ``/healthz``."""

    def __init__(self, url: str, detail: str = "", *, condition: str | None = None) -> None:
        self.url = redact(url)
        self.detail = detail
        if condition is not None:
            self.condition = condition
        super().__init__(self._headline() + (f": {detail}" if detail else ""))

    def _headline(self) -> str:
        if self.condition == "unavailable":
            return f"Redis is unavailable at {self.url}"
        return f"Redis at {self.url} cannot serve now ({self.condition})"

    def again(self) -> StoreUnavailable:
        """The same error as a new exception (each waiting caller gets its own)."""
        return type(self)(self.url, self.detail, condition=self.condition)


class StoreLoading(StoreUnavailable):
    """Redis is loading its dataset into memory (after a restart): nothing runs until it is done."""

    condition = "loading"


class StoreOutOfMemory(StoreUnavailable):
    """Redis reached ``maxmemory`` with a policy that refuses writes: reads still work,
    no transition can be written until memory is freed."""

    condition = "out of memory"


# Error reply codes (the first word of a Redis error reply) that mean "not now": the server
# is loading, busy, failing over or out of memory, and the same request may succeed later.
# Everything else (NOPERM, WRONGTYPE, ERR, a script error...) is permanent.
_TRANSIENT_CODES: dict[str, tuple[type[StoreUnavailable], str]] = {
    "LOADING": (StoreLoading, "loading"),
    "OOM": (StoreOutOfMemory, "out of memory"),
    "BUSY": (StoreUnavailable, "busy running a script"),
    "TRYAGAIN": (StoreUnavailable, "resharding"),
    "MASTERDOWN": (StoreUnavailable, "failover"),
    "READONLY": (StoreUnavailable, "failover"),
    "CLUSTERDOWN": (StoreUnavailable, "cluster down"),
    "NOREPLICAS": (StoreUnavailable, "not enough replicas"),
    "MISCONF": (StoreUnavailable, "persistence failing"),
}


def transient_reply(url: str, message: str) -> StoreUnavailable | None:
    """The transient error a Redis error reply ``message`` stands for, or ``None`` when the
    reply is permanent. ``message`` is the reply's text, error code first
    (``"LOADING Redis is loading the dataset in memory"``)."""
    code = message.split(None, 1)[0] if message.strip() else ""
    found = _TRANSIENT_CODES.get(code)
    if found is None and "max number of clients reached" in message:
        found = (StoreUnavailable, "too many clients")  # ERR, but over once others disconnect
    if found is None:
        return None
    kind, condition = found
    return kind(url, message.strip(), condition=condition)


class HttpFailure(JobvisorError):
    """An HTTP request got no usable answer; ``reason`` is one short line for the records."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = reason
        super().__init__(f"{self.url}: {reason}")


class HttpTimeout(HttpFailure):
    """No complete answer within the time limit (a receiver that hangs or drips)."""


class HttpUnreachable(HttpFailure):
    """The request could not be completed: connection refused or reset, DNS, TLS, garbage."""


def redact(url: str) -> str:
    """``url`` with every secret in it replaced by ``***``: its whole user part (a user name
    alone is often a token), and the values of query parameters whose names look like
    secrets (``token``, ``key``, ``secret``, ``password``, ``signature``, ``sig``, ``auth``,
    ``api_key``, ``access_token``, ``X-Amz-Signature``...). A URL that does not parse is
    shown as its scheme only, never as given (errors and logs never show secrets)."""
    import re
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port, like a bad netloc
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://***" if scheme.isalnum() else "***"
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[-1])

    def secret(name: str) -> bool:
        words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
        return any(
            w in ("sig", "key", "pwd", "pw", "pass", "passwd", "credential", "credentials", "session", "jwt",
                  "hmac", "code")
            or w.endswith(("token", "key", "secret", "password", "signature"))
            or w.startswith("auth")
            for w in words if w)

    for name in ("query", "fragment"):
        text = getattr(parts, name)
        if "=" not in text:
            continue
        pairs = parse_qsl(text, keep_blank_values=True)
        if any(secret(k) for k, _ in pairs):
            parts = parts._replace(**{name: urlencode([(k, "***" if secret(k) else v) for k, v in pairs], safe="*")})
    return urlunsplit(parts)
