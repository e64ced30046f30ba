"""The sanitizer as a pure function: what it replaces, what it leaves alone, and its shape."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random

import msgspec
import pytest

from jobvisor.adapters.sanitize import OMITTED, Sanitizer, sanitize

RNG = random.Random(8)


def b64(n_bytes: int) -> str:
    return base64.b64encode(RNG.randbytes(n_bytes)).decode()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_data_uri_becomes_a_descriptor_with_kind_size_and_hash() -> None:
    uri = "data:image/png;base64," + b64(5_000_000 * 3 // 4)
    out = sanitize({"image": uri})
    assert out == {"image": {OMITTED: "base64", "media_type": "image/png", "size": len(uri), "sha256": sha(uri)}}
    assert len(json.dumps(out)) < 200


def test_a_bare_base64_string_becomes_a_descriptor() -> None:
    blob = b64(3000)
    assert sanitize([blob]) == [{OMITTED: "base64", "size": len(blob), "sha256": sha(blob)}]


def test_line_wrapped_base64_is_recognised_whole() -> None:
    wrapped = base64.encodebytes(RNG.randbytes(4000)).decode()  # 76-column lines
    assert "\n" in wrapped
    assert sanitize(wrapped)[OMITTED] == "base64"


def test_a_run_inside_text_is_replaced_in_place_and_the_text_kept() -> None:
    blob = b64(2000)
    html = f'<p>chart</p><img src="data:image/jpeg;base64,{blob}"> and raw {blob} end'
    out = sanitize({"html": html})["html"]
    marker = f"[base64 omitted: {len(blob)} chars, sha256 {sha(blob)}]"
    assert out == f'<p>chart</p><img src="data:image/jpeg;{marker}"> and raw {marker} end'


def test_the_threshold_is_configurable_and_runs_below_it_stay() -> None:
    blob = b64(600)  # 800 characters
    assert sanitize(blob) == blob  # default threshold 1 KiB
    low = Sanitizer(base64_min=512)
    assert low.sanitize(blob)[OMITTED] == "base64"
    assert Sanitizer(base64_min=len(blob) + 1).sanitize(blob) == blob
    assert Sanitizer(base64_min=len(blob)).sanitize(blob)[OMITTED] == "base64"


@pytest.mark.parametrize("text", [
    "x" * 5000,                       # one repeated character
    "abcdefghij" * 500,               # letters only
    "0123456789abcdef" * 300,         # long hex: no upper case
    "The quick brown fox. " * 300,    # prose
    "ÄÖÜ" * 1000,                     # non-ASCII
])
def test_long_text_that_is_not_base64_is_left_alone(text: str) -> None:
    assert sanitize(text) == text


def test_structure_is_preserved_and_other_values_pass_through() -> None:
    blob = b64(2000)
    value = {"a": [1, 2.5, True, None, {"img": blob, "name": "cat"}], "b": {"c": [blob, "ok"]}, "n": -3}
    out = sanitize(value)
    assert out["a"][:4] == [1, 2.5, True, None]
    assert out["a"][4]["name"] == "cat"
    assert out["a"][4]["img"][OMITTED] == "base64"
    assert out["b"]["c"][1] == "ok"
    assert out["b"]["c"][0][OMITTED] == "base64"
    assert out["n"] == -3
    assert list(out) == list(value)
    assert len(out["a"]) == len(value["a"])


def test_the_argument_is_never_modified() -> None:
    value = {"img": b64(3000), "rows": [{"t": "y" * 100_000}]}
    before = copy.deepcopy(value)
    sanitize(value)
    assert value == before


def test_long_strings_are_truncated_with_a_marker() -> None:
    policy = Sanitizer(max_string=300)
    text = "word " * 100
    out = policy.sanitize({"log": text})["log"]
    marker = f"…[truncated: {len(text)} chars, sha256 {sha(text)}]"
    assert out == text[: 300 - len(marker)] + marker
    assert len(out) == 300
    assert policy.sanitize(text[:300]) == text[:300]


def test_a_whole_value_over_the_cap_becomes_an_oversized_descriptor() -> None:
    policy = Sanitizer(max_value=4096, preview=32)
    value = [f"row {i} " + "v" * 50 for i in range(200)]
    encoded = msgspec.json.encode(value)
    out = policy.sanitize(value)
    assert out == {OMITTED: "oversized", "size": len(encoded), "sha256": hashlib.sha256(encoded).hexdigest(),
                   "preview": encoded[:32].decode()}
    assert policy.sanitize(value[:10]) == value[:10]


def test_msgspec_values_are_sanitized_as_their_json() -> None:
    class Shot(msgspec.Struct):
        png: bytes
        label: str

    out = sanitize(Shot(png=RNG.randbytes(3000), label="front"))
    assert out["label"] == "front"
    assert out["png"][OMITTED] == "base64"


def test_sanitizing_twice_changes_nothing_more() -> None:
    value = {"img": "data:image/gif;base64," + b64(5000), "text": "see " + b64(2000), "log": "z " * 50_000}
    once = sanitize(value)
    assert sanitize(once) == once


def test_sanitize_json_leaves_small_values_byte_for_byte() -> None:
    policy = Sanitizer()
    raw = b'{"b": 1,   "a": [1.50, "x"]}'  # odd spacing: not re-encoded
    assert policy.sanitize_json(raw) is raw
    big = msgspec.json.encode({"img": b64(3000)})
    assert msgspec.json.decode(policy.sanitize_json(big))["img"][OMITTED] == "base64"


def test_deeply_nested_values_do_not_crash() -> None:
    value: list[object] = []
    for _ in range(5000):
        value = [value]
    assert sanitize(value) == {OMITTED: "too_deep"}


@pytest.mark.parametrize(("field", "kwargs"), [
    ("sanitize_base64_min", {"base64_min": 8}),
    ("sanitize_max_string", {"max_string": 255}),
    ("sanitize_max_value", {"max_value": 100}),
])
def test_absurd_policies_are_refused_naming_the_setting(field: str, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=field):
        Sanitizer(**kwargs)
