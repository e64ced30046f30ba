"""The Lua library in Redis: one per package version, however many processes load it.

Each process computes the library's text and names; nothing in them may depend on the
per-process hash seed, or every client start loads a library of its own (issue: 40
``jobvisor submit`` calls once left 40 libraries). Loading replaces this version's library
(``FUNCTION LOAD REPLACE``) and removes the per-process libraries of earlier releases,
while another version's library is left for the daemons still running it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
import trio

from examples.app import app as example_app
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.scripts import LEGACY_NAME, LuaLibrary
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_actor import StoreActor
from tests.cli_support import cli_env

ROOT = Path(__file__).resolve().parents[2]
TYPES = {t: h.describe() for t, h in example_app.handlers.items()}


def libraries(raw: Any) -> dict[str, list[str]]:
    """``FUNCTION LIST``: library name -> its function names."""
    out = {}
    for entry in raw.function_list():
        lib = dict(zip(entry[::2], entry[1::2], strict=True))
        functions = [dict(zip(f[::2], f[1::2], strict=True))[b"name"].decode() for f in lib[b"functions"]]
        out[lib[b"library_name"].decode()] = functions
    return out


def load_lua(raw: Any, library: str, function: str) -> None:
    raw.function_load(f"#!lua name={library}\nredis.register_function('{function}', function() return 1 end)")


def plant_older_libraries(raw: Any) -> list[str]:
    """What earlier releases and earlier texts left: three per-process libraries (as the
    hash-named releases loaded them) and another text under this version's own name.
    Command counts start from zero here (the session's server is shared between tests)."""
    raw.config_resetstat()
    legacy = [f"jobvisor_{n:012x}" for n in (0xA1, 0xB2, 0xC3)]
    for name in legacy:
        load_lua(raw, name, "jv_ops_" + name.removeprefix("jobvisor_"))
    load_lua(raw, LuaLibrary().name, LuaLibrary().function[:-12] + "0" * 12)
    assert all(LEGACY_NAME.fullmatch(n) for n in legacy)
    return legacy


def test_the_text_and_names_are_the_same_whatever_the_hash_seed() -> None:
    """Four interpreters with different hash seeds compute the same library, byte for byte."""
    code = "import hashlib; from adapters.scripts import LuaLibrary as L; l = L(); " \
           "print(l.name, l.function, hashlib.sha1(l.source.encode()).hexdigest())"
    seen = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env=cli_env({"PYTHONHASHSEED": str(seed)})).stdout for seed in (0, 1, 2, 3)}
    assert len(seen) == 1, seen
    mine = LuaLibrary()
    assert seen == {f"{mine.name} {mine.function} {hashlib.sha1(mine.source.encode()).hexdigest()}\n"}


def test_forty_client_processes_leave_one_library(redis_url: str) -> None:
    """40 ``jobvisor submit`` processes, each with its own hash seed, released at one moment
    into a Redis holding three earlier per-process libraries and an older text under this
    version's name: every submit succeeds, every process computed the same function, and
    ``FUNCTION LIST`` shows exactly one jobvisor library, this version's, with that function."""
    raw = redis.Redis.from_url(redis_url, socket_timeout=120)  # longer than the BLPOPs below
    with SyncStore(open_backend(redis_url)) as store:
        store.register_types(TYPES)  # a plain HSET: nothing is loaded yet
    legacy = plant_older_libraries(raw)
    assert sorted(libraries(raw)) == sorted([*legacy, LuaLibrary().name])
    n = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.library_proc", redis_url, "test:ready", "test:start",
             "submit", "echo", "--input", f'{{"n": {i}}}', "--redis", redis_url],
            cwd=ROOT, env=cli_env({"PYTHONHASHSEED": str(i)}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(n)
    ]
    try:
        for _ in range(n):
            if raw.blpop(["test:ready"], timeout=60) is None:
                dead = [p.communicate(timeout=5) for p in procs if p.poll() is not None]
                raise AssertionError(f"a client never got ready; ended early: {dead}")
        raw.rpush("test:start", *range(n))  # one start token each: they all BLPOP at once
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in outputs if err]
    assert [err for _, err in outputs] == [""] * n
    ids = {out.splitlines()[0] for out, _ in outputs}
    functions = {out.splitlines()[1] for out, _ in outputs}
    assert len(ids) == n
    assert functions == {f"function {LuaLibrary().function}"}
    assert libraries(raw) == {LuaLibrary().name: [LuaLibrary().function]}
    loads = raw.info("commandstats")["cmdstat_function|load"]["calls"]
    assert 4 + 1 <= loads <= 4 + n  # the four planted, then at most one per process that found it missing
    raw.close()


def test_a_load_keeps_another_versions_library_and_removes_only_stale_ones(redis_url: str) -> None:
    """The synchronous path (CLI, Client): earlier per-process libraries and an older text of
    this version go; a library of another version stays (its daemons may still be running)."""
    raw = redis.Redis.from_url(redis_url)
    plant_older_libraries(raw)
    other = LuaLibrary(version="0.0.9")
    raw.function_load(other.source)
    with SyncStore(open_backend(redis_url)) as store:
        assert store.submit(JobSpec(type="t")).kind == "created"
        assert store.submit(JobSpec(type="t")).kind == "created"
    assert libraries(raw) == {LuaLibrary().name: [LuaLibrary().function], other.name: [other.function]}
    stats = raw.info("commandstats")
    assert stats["cmdstat_function|load"]["calls"] == 6  # five planted, one by the store
    assert stats["cmdstat_function|delete"]["calls"] == 3
    raw.close()


async def test_the_store_actor_loads_the_same_way(redis_url: str) -> None:
    """The daemon's path (trio-native connection) replaces and prunes exactly as the CLI does."""
    raw = redis.Redis.from_url(redis_url)
    plant_older_libraries(raw)
    backend = open_backend(redis_url)
    actor = StoreActor(backend, time.time, min_backoff=0.01, max_backoff=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        with trio.fail_after(10):
            assert (await Store(actor).submit(JobSpec(type="t"))).kind == "created"
        actor.close()
    assert libraries(raw) == {LuaLibrary().name: [LuaLibrary().function]}
    assert raw.info("commandstats")["cmdstat_function|delete"]["calls"] == 3
    raw.close()


def test_the_embedded_store_loads_its_one_library() -> None:
    backend = open_backend("memory://library-test")
    with SyncStore(backend) as store:
        assert store.submit(JobSpec(type="t")).kind == "created"
        names = [dict(zip(e[::2], e[1::2], strict=True))[b"library_name"] for e in backend.client.function_list()]
    assert names == [LuaLibrary().name.encode()]


def test_names_are_valid_redis_identifiers_for_any_version() -> None:
    for version in ("0.1.0", "1.2.3rc1", "2.0.0.dev3+g1a2b3c", "0"):
        library = LuaLibrary(version=version)
        assert library.name.startswith("jobvisor_v")
        assert library.name[len("jobvisor_"):].isidentifier()
        assert not LEGACY_NAME.fullmatch(library.name)
        assert library.function.isidentifier()
