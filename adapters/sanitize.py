"""Payload hygiene: what a handler returns is made small before it is stored.

Handlers return whatever their service gave them, and services like to
inline images as base64 (SPEC.md: 269 MB of rows). Before results, errors,
phase results and attempt records reach Redis, :meth:`Sanitizer.sanitize`
rewrites the value, keeping its structure:

* a string that *is* base64 (a ``data:...;base64,`` URI, or a bare run of
  the base64 alphabet) at least ``base64_min`` characters long becomes a
  descriptor object::

      {"$omitted": "base64", "media_type": "image/png", "size": 5000022,
       "sha256": "<hex digest of the original string>"}

  (``media_type`` only for data URIs);
* such a run *inside* a longer string (on one line) is replaced in place by
  ``[base64 omitted: <size> chars, sha256 <hex>]`` (``data:<type>;`` kept
  in front of it);
* any other string longer than ``max_string`` characters is cut to
  ``max_string`` characters, ending in ``…[truncated: <size> chars, sha256 <hex>]``;
* when the whole value, encoded as JSON, is still over ``max_value`` bytes
  it becomes ``{"$omitted": "oversized", "size": ..., "sha256": ...,
  "preview": "<first bytes of the JSON>"}``; a value nested too deeply to
  walk becomes ``{"$omitted": "too_deep"}``.

Dicts stay dicts with the same keys, lists keep their length; numbers,
booleans and ``None`` pass through. A run counts as base64 only when it
mixes upper case, lower case and digits, so long words, hex digests under
the threshold and repeated characters are left alone. The hash is of the
original string's UTF-8 bytes, so the payload can be matched later.

It is a pure function of the value and the policy: no I/O, no clock, same
input, same output. Job input is never passed through it (input is stored
byte for byte; oversized input is refused at submit instead).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

__all__ = ["Sanitizer", "OMITTED", "sanitize"]

OMITTED = "$omitted"
"""The key that marks a descriptor standing in for a removed payload."""

_B64_CHARS = r"A-Za-z0-9+/_\-"
_DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,\s]*)*);base64,", re.I)
_encode = msgspec.json.Encoder().encode


def _mixed(text: str) -> bool:
    """Base64 of binary data mixes upper case, lower case and digits; prose runs do not."""
    return (re.search(r"[A-Z]", text) is not None and re.search(r"[a-z]", text) is not None
            and re.search(r"[0-9]", text) is not None)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Sanitizer(msgspec.Struct, frozen=True, kw_only=True):
    """The policy, and the function that applies it (see the module docstring).

    ``base64_min``: base64 runs this long or longer are replaced (default 1 KiB).
    ``max_string``: longer strings are truncated (default 64 KiB).
    ``max_value``: a whole value whose JSON is longer is replaced (default 256 KiB).
    """

    base64_min: int = 1024
    max_string: int = 64 * 1024
    max_value: int = 256 * 1024
    preview: int = 256

    def __post_init__(self) -> None:
        if self.base64_min < 16:
            raise ValueError("sanitize_base64_min: must be at least 16")
        if self.max_string < 256:
            raise ValueError("sanitize_max_string: must be at least 256")
        if self.max_value < 1024:
            raise ValueError("sanitize_max_value: must be at least 1024")

    @property
    def _run(self) -> re.Pattern[str]:
        # Compiled per policy; `re` caches compiled patterns, so this costs a dict lookup.
        return re.compile(
            rf"(?P<uri>{_DATA_URI.pattern})?(?<![{_B64_CHARS}])(?P<run>[{_B64_CHARS}]{{{self.base64_min},}}=?=?)",
            re.I,
        )

    # -- the function ----------------------------------------------------------------------

    def sanitize(self, value: Any) -> Any:
        """``value`` (anything msgspec can encode) with its payloads made small."""
        try:
            clean = self._walk(msgspec.to_builtins(value))
            encoded = _encode(clean)
        except RecursionError:
            return {OMITTED: "too_deep"}
        if len(encoded) > self.max_value:
            return {OMITTED: "oversized", "size": len(encoded), "sha256": hashlib.sha256(encoded).hexdigest(),
                    "preview": encoded[: self.preview].decode("utf-8", "ignore")}
        return clean

    def sanitize_json(self, raw: bytes) -> bytes:
        """The same over encoded JSON: decoded, sanitized and encoded again only if it could change."""
        if len(raw) < min(self.base64_min, self.max_string, self.max_value):
            return raw
        clean = self.sanitize(msgspec.json.decode(raw))
        return _encode(clean)

    def sanitize_text(self, text: str) -> str:
        """One string field (an id, a status), truncated like any string; never a descriptor."""
        return self._truncate(text) if len(text) > self.max_string else text

    # -- walking ---------------------------------------------------------------------------------

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._string(value)
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        return value

    def _string(self, text: str) -> Any:
        if len(text) < self.base64_min:
            return text if len(text) <= self.max_string else self._truncate(text)
        whole = self._whole_base64(text)
        if whole is not None:
            return whole
        replaced = self._run.sub(self._replace_run, text)
        return replaced if len(replaced) <= self.max_string else self._truncate(replaced)

    def _whole_base64(self, text: str) -> dict[str, Any] | None:
        uri = _DATA_URI.match(text)
        payload = text[uri.end():] if uri else text
        if len(payload) < self.base64_min:
            return None
        if re.fullmatch(rf"[{_B64_CHARS}\r\n]+=?=?\s*", payload) is None or not _mixed(payload):
            return None
        descriptor: dict[str, Any] = {OMITTED: "base64"}
        if uri is not None:
            descriptor["media_type"] = (uri.group("type") or "text/plain").lower()
        descriptor["size"] = len(text.encode("utf-8", "surrogatepass"))
        descriptor["sha256"] = _sha256(text)
        return descriptor

    def _replace_run(self, match: re.Match[str]) -> str:
        run = match.group("run")
        if not _mixed(run):
            return match.group(0)
        uri = match.group("uri") or ""
        prefix = uri[: -len("base64,")] if uri else ""
        return f"{prefix}[base64 omitted: {len(run)} chars, sha256 {_sha256(run)}]"

    def _truncate(self, text: str) -> str:
        marker = f"…[truncated: {len(text)} chars, sha256 {_sha256(text)}]"
        return text[: self.max_string - len(marker)] + marker


def sanitize(value: Any, policy: Sanitizer | None = None) -> Any:
    """:meth:`Sanitizer.sanitize` with ``policy`` (the defaults when ``None``)."""
    return (policy or Sanitizer()).sanitize(value)
