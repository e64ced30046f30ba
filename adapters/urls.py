"""The URL policy: which webhook and validator URLs a spec may name.

A URL is refused before anything is stored when it is not plain http(s) with a
host, when parsers would disagree on its host (a backslash, a percent-encoded
host), when it carries characters that would end it in logs or JSON, or when its
host is outside the allowed hosts. Where a request may actually go (resolved
addresses, private ranges) is :mod:`adapters.destinations`'s job, at send time.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import redact

__all__ = ["MAX_URL_LENGTH", "URL_PLACEHOLDERS", "check_url", "host_allowed"]


MAX_URL_LENGTH = 2048
URL_PLACEHOLDERS = ("{job_id}", "{service_job_id}")


def check_url(url: str, field: str, allowed_hosts: frozenset[str] | None = None) -> str:
    """Return ``url`` if it is an http(s) URL with a host (in ``allowed_hosts`` if given).

    ``{job_id}`` and ``{service_job_id}`` placeholders (validator URL templates) are
    accepted anywhere. A refusal is a ``ValueError`` naming ``field``.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"{field}: must be a non-empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"{field}: URL is {len(url)} characters, over the limit of {MAX_URL_LENGTH}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in url):
        raise ValueError(f"{field}: {redact(url)!r} contains whitespace, control characters or invalid UTF-8")
    if any(c in url for c in "'\"<>`"):  # never raw in a URL; they would also end it in logs and JSON
        raise ValueError(f"{field}: {redact(url)!r} contains a quote or angle bracket (percent-encode it)")
    concrete = url
    for placeholder in URL_PLACEHOLDERS:
        concrete = concrete.replace(placeholder, "x")
    try:
        parts = urlsplit(concrete)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"{field}: {redact(url)!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{field}: {redact(url)!r} must use http or https")
    if not host:
        raise ValueError(f"{field}: {redact(url)!r} has no host")
    # Parsers disagree on these (a backslash ends the host for browsers and some clients,
    # a percent-encoded host is decoded by some): refuse rather than guess.
    authority = parts.netloc.rsplit("@", 1)[-1]
    if "\\" in url or ("%" in authority and not authority.startswith("[")):
        raise ValueError(f"{field}: {redact(url)!r} has a backslash or a percent-encoded host")
    if allowed_hosts is not None and not host_allowed(host, allowed_hosts):
        raise ValueError(f"{field}: host {host!r} is not in the allowed hosts")
    import httpx  # here, not at the top: reading a spec must not load the HTTP client

    try:  # what the HTTP client will make of it (IDNA rules included), refused now, not at send
        httpx.URL(concrete).host  # noqa: B018 - decoding the host is the check
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"{field}: {redact(url)!r} is an invalid URL ({str(exc)[:200]})") from None
    return url


def host_allowed(host: str, allowed_hosts: frozenset[str]) -> bool:
    """``host`` is listed, or matches a ``*.domain`` entry (any depth below ``domain``)."""
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        entry = entry.lower().rstrip(".")
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False
