"""Where outbound requests may go: the destination policy (pure, no I/O).

Every request the daemon makes on a submitter's behalf (webhooks, the HTTP
validator) is checked twice by one :class:`DestinationPolicy`:

* **by name**, at submit and again before the request: the URL's host, read
  the way resolvers read it (``2130706433``, ``0x7f000001``, ``0177.0.0.1``,
  ``127.1`` are all 127.0.0.1; IDNA and trailing dots folded), must not be an
  internal address literal nor a name on a deny rule (:data:`DENIED_NAMES`:
  ``localhost``, ``*.internal``, ``*.local``, names without a dot...);
* **by address**, at connect time (:mod:`adapters.http`): every address the
  name resolves to must be outside :data:`DENIED_V4` / :data:`DENIED_V6`, with
  IPv4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo forms judged by the
  IPv4 address inside them. The connection then goes to the checked address,
  so a second resolution (DNS rebinding) cannot change where it lands.

What is allowed on purpose: ``allow`` entries (host names, ``*.domain``, IP
addresses, CIDR ranges) lift the deny rules for those names and addresses,
and ``allow_private`` lifts them all (development, tests, the demo).
``only_hosts`` is the older restriction (``allowed_hosts``): when set, the
host must also be one of them, whatever it resolves to.

A refusal is a :class:`Refusal` (the reason, one line, never quoting
credentials), raised as ``ValueError`` at submit and as
:class:`DestinationRefused` by the HTTP client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import idna

from .errors import HttpFailure, redact

__all__ = [
    "DestinationPolicy",
    "DestinationRefused",
    "Refusal",
    "DENIED_NAMES",
    "DENIED_V4",
    "DENIED_V6",
    "address_class",
    "literal_address",
    "normal_host",
    "host_matches",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_v4 = ipaddress.IPv4Network
_v6 = ipaddress.IPv6Network

DENIED_V4: tuple[tuple[Network, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified"),
    (_v4("10.0.0.0/8"), "private"),
    (_v4("100.64.0.0/10"), "cgnat"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("169.254.0.0/16"), "link-local"),  # 169.254.169.254: cloud metadata
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.0.0.0/24"), "reserved"),
    (_v4("192.0.2.0/24"), "documentation"),
    (_v4("192.88.99.0/24"), "reserved"),
    (_v4("192.168.0.0/16"), "private"),
    (_v4("198.18.0.0/15"), "benchmark"),
    (_v4("198.51.100.0/24"), "documentation"),
    (_v4("203.0.113.0/24"), "documentation"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("240.0.0.0/4"), "reserved"),  # includes 255.255.255.255, broadcast
)
"""IPv4 ranges refused by default, with the class named in refusals."""

DENIED_V6: tuple[tuple[Network, str], ...] = (
    (_v6("::/128"), "unspecified"),
    (_v6("::1/128"), "loopback"),
    (_v6("100::/64"), "reserved"),
    (_v6("2001:2::/48"), "benchmark"),
    (_v6("2001:db8::/32"), "documentation"),
    (_v6("64:ff9b:1::/48"), "private"),
    (_v6("fc00::/7"), "private"),
    (_v6("fe80::/10"), "link-local"),
    (_v6("fec0::/10"), "private"),
    (_v6("ff00::/8"), "multicast"),
)
"""IPv6 ranges refused by default (embedded IPv4 forms are judged by their IPv4 address)."""

_MAPPED = _v6("::ffff:0:0/96")
_TRANSLATED = _v6("::ffff:0:0:0/96")
_COMPATIBLE = _v6("::/96")
_NAT64 = _v6("64:ff9b::/96")
_SIX_TO_FOUR = _v6("2002::/16")
_TEREDO = _v6("2001::/32")

DENIED_NAMES: tuple[str, ...] = (
    "localhost", "*.localhost", "*.local", "*.internal", "*.localdomain", "*.home.arpa", "*.arpa",
    "metadata", "instance-data", "*.intranet", "*.lan", "*.corp", "*.home", "*.private",
)
"""Names refused by default: local, internal and metadata names (``metadata.google.internal``
is ``*.internal``). A name without a dot is refused too: resolvers complete it with the
local search domains."""


class DestinationRefused(HttpFailure):
    """The policy refused where a request would go: ``check`` is ``name`` (the URL's host)
    or ``address`` (what the host resolved to at connect time). Nothing was sent."""

    def __init__(self, url: str, reason: str, *, check: str = "name") -> None:
        super().__init__(url, reason)
        self.check = check


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a destination is refused: one line, and the class (``loopback``, ``name``...)."""

    reason: str
    kind: str


def _number(part: str) -> int | None:
    """One component of an inet_aton address: decimal, ``0x`` hex or leading-zero octal."""
    try:
        if part[:2] in ("0x", "0X"):
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part[0] == "0":
            return int(part, 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None


def _loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as the C resolver reads an IPv4 literal (``127.1``, ``2130706433``,
    ``0x7f.1``, ``0177.0.0.1``), or ``None`` when it is not one."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or any(not p for p in parts):
        return None
    numbers = [_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    last_bits = 8 * (5 - len(values))
    if any(n > 255 for n in values[:-1]) or values[-1] >= 1 << last_bits:
        return None
    value = values[-1]
    for i, n in enumerate(values[:-1]):
        value |= n << (24 - 8 * i)
    return ipaddress.IPv4Address(value)


def normal_host(host: str) -> str:
    """``host`` as resolvers see it: lower case, IDNA (UTS 46) to ASCII, trailing dots off,
    brackets and an IPv6 zone id removed. ``ValueError`` when it is not a host at all."""
    text = host.strip("[]")
    if "%" in text and ":" in text:
        text = text.split("%", 1)[0]  # an IPv6 zone id: the address decides
    text = text.rstrip(".")
    if not text:
        raise ValueError("an empty host")
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"not a valid international host name ({exc})") from None
        text = text.rstrip(".")
    return text.lower()


def literal_address(host: str) -> Address | None:
    """The IP address ``host`` (already :func:`normal_host`) spells, in any spelling, or ``None``."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return _loose_ipv4(host)


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside an IPv6 one (mapped, compatible, NAT64, 6to4, Teredo)."""
    if address in _MAPPED or address in _TRANSLATED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    if address in _TEREDO and address.teredo is not None:
        return address.teredo[1]  # the client; the server is public by construction
    return None


def address_class(address: Address) -> str | None:
    """The deny class of ``address`` (``loopback``, ``private``...), or ``None`` when public."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # drop a zone id
        for network, kind in DENIED_V6:
            if address in network:
                return kind
        inner = _embedded_v4(address)
        if inner is not None:
            return address_class(inner)
        return None
    for network, kind in DENIED_V4:
        if address in network:
            return kind
    return None


def host_matches(host: str, entry: str) -> bool:
    """``host`` is ``entry``, or lies below it when ``entry`` is ``*.domain``."""
    entry = entry.lower().rstrip(".")
    if entry.startswith("*."):
        return host.endswith(entry[1:])
    return host == entry


def _denied_name(host: str) -> str | None:
    for entry in DENIED_NAMES:
        if host_matches(host, entry):
            return entry
    if "." not in host:
        return "a name without a dot"
    return None


@dataclass(frozen=True)
class DestinationPolicy:
    """Which destinations outbound requests may reach (module docstring).

    ``allow``: host names, ``*.domain``, IP addresses and CIDR ranges allowed even though
    internal; ``allow_private``: allow every internal destination; ``only_hosts``: when
    set, the only host names (or ``*.domain``) that may be used at all.
    """

    allow: tuple[str, ...] = ()
    allow_private: bool = False
    only_hosts: frozenset[str] | None = None
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: list[str] = []
        networks: list[Network] = []
        for entry in self.allow:
            text = entry.strip()
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?", text):
                raise ValueError(f"allow_destinations: {redact(text)!r} is not a host name, *.domain, "
                                 "IP address or CIDR range")
            names.append(text.lower().rstrip("."))
        object.__setattr__(self, "_names", tuple(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, prefix: str = "JOBVISOR_") -> DestinationPolicy:
        """The submitter's policy from ``ALLOW_DESTINATIONS`` (comma list),
        ``ALLOW_PRIVATE_DESTINATIONS`` (true/false, 1/0) and ``ALLOWED_HOSTS`` (comma list)."""
        def items(name: str) -> list[str]:
            return [h.strip() for h in environ.get(prefix + name, "").split(",") if h.strip()]

        private = environ.get(prefix + "ALLOW_PRIVATE_DESTINATIONS", "").strip().lower()
        if private not in ("", "0", "1", "true", "false"):
            raise ValueError(f"allow_private_destinations: {private!r} is not true or false")
        only = items("ALLOWED_HOSTS")
        return cls(allow=tuple(items("ALLOW_DESTINATIONS")), allow_private=private in ("1", "true"),
                   only_hosts=frozenset(only) if only else None)

    # -- the checks ------------------------------------------------------------------------------

    def _name_allowed(self, host: str) -> bool:
        return any(host_matches(host, entry) for entry in self._names)

    def _address_allowed(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address):
            address = ipaddress.IPv6Address(int(address))
            inner = _embedded_v4(address)
            if inner is not None and self._address_allowed(inner):
                return True
        return any(address.version == net.version and address in net for net in self._networks)

    def check_host(self, host: str) -> Refusal | None:
        """The refusal of a URL's host by name (literal addresses in any spelling, deny rules,
        the ``only_hosts`` restriction); ``None`` when it may be used."""
        try:
            name = normal_host(host)
        except ValueError as exc:
            return Refusal(f"host {host!r} is {exc}", "invalid")
        if self.only_hosts is not None and not any(host_matches(name, e) for e in self.only_hosts):
            return Refusal(f"host {name!r} is not in the allowed hosts", "not_allowed")
        if self.allow_private or self._name_allowed(name):
            return None
        address = literal_address(name)
        if address is not None:
            return self.check_address(address, name)
        rule = _denied_name(name)
        if rule is not None:
            return Refusal(f"host {name!r} is an internal name ({rule}); allow it with allow_destinations",
                           "name")
        return None

    def check_address(self, address: Address, host: str = "") -> Refusal | None:
        """The refusal of a (resolved) address; ``host`` is the name it was resolved from."""
        if self.allow_private:
            return None
        try:
            name = normal_host(host) if host else ""
        except ValueError:
            name = ""
        if name and self._name_allowed(name):
            return None
        kind = address_class(address)
        if kind is None or self._address_allowed(address):
            return None
        shown = ipaddress.IPv6Address(int(address)) if isinstance(address, ipaddress.IPv6Address) else address
        # A name's internal address is not told (the reason reaches the submitter, who could map
        # internal DNS with it); a literal address is their own.
        what = f"host {host!r} resolves to" if host and literal_address(host) is None else f"{shown} is"
        article = "an" if kind[0] in "aeiou" else "a"
        return Refusal(f"{what} {article} {kind} address; allow it with allow_destinations "
                       "(or allow_private_destinations)", kind)

    def check_url(self, url: str, field: str) -> None:
        """Refuse at submit (``ValueError`` naming ``field``) a URL whose host is refused by
        name; names that resolve inside are caught at connect time."""
        # Validator URL templates: a placeholder in the host is filled both ways, as a name
        # and as a number, so `http://10.{job_id}/` is judged as the address it can become.
        for filler in ("x", "1"):
            concrete = url
            for placeholder in ("{job_id}", "{service_job_id}"):
                concrete = concrete.replace(placeholder, filler)
            try:
                host = urlsplit(concrete).hostname or ""
            except ValueError:
                return  # the URL checks refuse it with their own message
            refusal = self.check_host(host)
            if refusal is not None:
                raise ValueError(f"{field}: refused destination: {refusal.reason}")

    def describe(self) -> str:
        """One line for the daemon's start-up log."""
        if self.allow_private:
            return "outbound requests: private destinations ALLOWED (allow_private_destinations)"
        allowed = ", ".join(self.allow) or "none"
        return f"outbound requests: internal destinations refused; allowed on purpose: {allowed}"

