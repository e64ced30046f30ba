"""What ``jobvisor web`` is configured with, checked whole before anything listens.

Tokens come from ``$JOBVISOR_WEB_TOKENS`` (``role:token`` pairs, comma-separated) and/or a
file (``--tokens-file`` or ``$JOBVISOR_WEB_TOKENS_FILE``: one ``role:token`` per line, ``#``
comments). Roles are ``read`` (every GET) and ``admin`` (also every mutation). A token must
be at least :data:`MIN_TOKEN_LENGTH` characters of printable ASCII without ``,`` or spaces.
Without any token the server is open (every caller is admin), which is allowed only on a
loopback address. Refusals are :class:`~adapters.errors.BadInput` naming the setting, and
never quote a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from jobvisor.adapters.errors import BadInput

__all__ = ["Role", "WebSettings", "Tokens", "parse_tokens", "MIN_TOKEN_LENGTH"]

MIN_TOKEN_LENGTH = 16


class Role(StrEnum):
    READ = "read"
    ADMIN = "admin"


class Tokens:
    """The configured tokens; :meth:`role_of` compares in constant time against every one."""

    def __init__(self, pairs: list[tuple[Role, str]]) -> None:
        self._pairs = [(role, token.encode()) for role, token in pairs]

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __repr__(self) -> str:  # never the tokens themselves
        return f"Tokens({len(self._pairs)} configured)"

    def role_of(self, presented: str) -> Role | None:
        """The strongest role of a token equal to ``presented``; every configured token is
        compared (no early exit), each with :func:`hmac.compare_digest`."""
        given = presented.encode("utf-8", "replace")
        found: Role | None = None
        for role, token in self._pairs:
            if hmac.compare_digest(given, token) and found is not Role.ADMIN:
                found = role
        return found


def parse_tokens(text: str, source: str) -> list[tuple[Role, str]]:
    """``role:token`` entries (comma- or newline-separated) of ``source`` (named in refusals)."""
    out: list[tuple[Role, str]] = []
    entries = [e.strip() for line in text.splitlines() for e in line.split(",")]
    for n, entry in enumerate(entries, 1):
        if not entry or entry.startswith("#"):
            continue
        role, colon, token = entry.partition(":")
        if not colon or role.strip() not in (Role.READ, Role.ADMIN):
            raise BadInput(f"{source}: entry {n} is not role:token with a role of read or admin")
        token = token.strip()
        if len(token) < MIN_TOKEN_LENGTH or not all(33 <= ord(c) < 127 for c in token):
            raise BadInput(f"{source}: the token of entry {n} must be at least {MIN_TOKEN_LENGTH} printable "
                           "ASCII characters without spaces")
        out.append((Role(role.strip()), token))
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebSettings:
    """Everything ``jobvisor web`` needs; :meth:`load` checks it whole."""

    redis: str
    host: str = "127.0.0.1"
    port: int = 8080
    app: str | None = None
    tokens: Tokens = field(default_factory=lambda: Tokens([]))
    cors_origins: tuple[str, ...] = ()
    max_body: int = 0  # 0: the input limit plus the envelope allowance (see api.body_limit)

    @classmethod
    def load(cls, *, redis: str, host: str, port: str | int, app: str | None, tokens_file: str | None,
             cors_origins: list[str] | None, environ: Mapping[str, str] | None = None) -> WebSettings:
        env = os.environ if environ is None else environ
        try:
            number = int(port)
        except (TypeError, ValueError):
            raise BadInput(f"port: {port!r} is not a port number") from None
        if not 0 <= number <= 65535:
            raise BadInput(f"port: {number} is not between 0 and 65535")
        if not host or any(c.isspace() for c in host):
            raise BadInput(f"host: {host!r} is not a host name or address")
        pairs = parse_tokens(env.get("JOBVISOR_WEB_TOKENS", ""), "JOBVISOR_WEB_TOKENS")
        path = tokens_file if tokens_file is not None else env.get("JOBVISOR_WEB_TOKENS_FILE") or None
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read(1 << 20)
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInput(f"tokens-file: cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
            pairs += parse_tokens(text, "tokens-file")
        if not pairs and not is_loopback(host):
            raise BadInput(f"host: {host} is not a loopback address and no tokens are configured "
                           "(set JOBVISOR_WEB_TOKENS or --tokens-file)")
        origins = [o.strip() for o in (cors_origins or []) + env.get("JOBVISOR_WEB_CORS_ORIGINS", "").split(",")
                   if o.strip()]
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise BadInput(f"cors-origin: {origin!r} is not an origin (https://host[:port])")
        return cls(redis=redis, host=host, port=number, app=app, tokens=Tokens(pairs), cors_origins=tuple(origins))
