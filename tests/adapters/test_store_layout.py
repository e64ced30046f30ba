"""The store's layout: the synchronous client is generated from the op API, and the
synchronous path imports nothing of the runtime.

Import checks run in a fresh interpreter and read ``sys.modules`` afterwards, so an
indirect import counts too.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store, SyncStore
from jobvisor.adapters.store_sync import store_operations

# What the CLI and the Client must not pay for: the daemon's runtime, the HTTP client,
# redis-py's asyncio half, the embedded store, and the embeddable machine form.
FORBIDDEN_FOR_SYNC = ("trio", "httpx", "redis.asyncio", "fakeredis", "transitions")


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in modules or any(m.startswith(n + ".") for m in modules))


def _public_store_methods() -> dict[str, object]:
    # Read from Store here, not through the generator, so a generator that drops one is caught.
    return {n: f for n, f in vars_of(Store).items() if not n.startswith("_") and callable(f)}


def vars_of(cls: type) -> dict[str, object]:
    members: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        members.update(vars(klass))
    return members


def test_every_store_operation_has_a_blocking_counterpart_with_its_signature() -> None:
    ops = _public_store_methods()
    assert len(ops) == 67  # the hand-kept list had 48 (no reclaim, claim_nonce); then redeliver, pause, resume;
    # then the schedules: add, get, list, pause, resume, remove, due, tick;
    # then the rate limits: claim_next, publish_rate_limits, rate_limits; then redrives_due, redrive;
    # then submit_flow
    assert set(store_operations()) == set(ops)
    missing = sorted(name for name in ops if not hasattr(SyncStore, name))
    assert missing == []
    for name, method in ops.items():
        blocking = getattr(SyncStore, name)
        assert not inspect.iscoroutinefunction(blocking), name
        assert inspect.signature(blocking) == inspect.signature(method), name  # type: ignore[arg-type]
        assert blocking.__wrapped__ is method, name


def test_the_generated_client_blocks_and_answers_like_the_store() -> None:
    with SyncStore(open_backend("memory://layout")) as store:
        created = store.submit(JobSpec(type="t", phases=("fetch", "save")))
        assert created.kind == "created"
        assert store.get_job(created.id).phases == {"fetch": "pending", "save": "pending"}
        nonce = store.claim_nonce()
        [claimed] = store.claim("default", "w1", nonce=nonce)
        assert [j.id for j in store.reclaim("default", "w1", nonce)] == [claimed.id] == [created.id]
        assert store.phase(created.id, claimed.token, "fetch", "start").kind == "moved"
        assert store.phase(created.id, claimed.token, "fetch", "complete", {"n": 1}).kind == "moved"
        view = store.get_job(created.id)
        assert view.phases == {"fetch": "completed", "save": "pending"}
        assert view.phase_results == {"fetch": {"n": 1}}
        assert view.attempt_records[0].phase_results == {"fetch": {"n": 1}}


@pytest.mark.parametrize("module", ["jobvisor.adapters.store", "jobvisor.adapters.store_sync",
                                    "jobvisor.adapters.records", "jobvisor.adapters.urls"])
def test_the_synchronous_path_imports_no_runtime(module: str) -> None:
    assert _loaded(_modules_after(f"import {module}"), FORBIDDEN_FOR_SYNC) == []


def test_the_backend_loads_the_redis_client_only() -> None:
    # redis-py's package __init__ imports its asyncio half, so a backend for redis:// has it;
    # the rest of the runtime stays out.
    assert _loaded(_modules_after("import jobvisor.adapters.backend"), ("trio", "httpx", "fakeredis",
                                                                       "transitions")) == []


def test_the_embedded_store_is_loaded_when_a_memory_store_is_opened() -> None:
    opened = _modules_after("from jobvisor.adapters.backend import open_backend\nopen_backend('memory://x')")
    assert _loaded(opened, ("fakeredis",)) == ["fakeredis"]
    assert _loaded(opened, ("trio", "httpx", "transitions")) == []


def test_the_machine_tables_leave_transitions_until_an_embeddable_machine_is_asked_for() -> None:
    assert _loaded(_modules_after("from jobvisor.machines import JOB, MACHINES"), ("transitions",)) == []
    asked = _modules_after("from jobvisor.machines import JobMachine")
    assert _loaded(asked, ("transitions",)) == ["transitions"]


def test_the_check_itself_can_fail() -> None:
    assert _loaded(_modules_after("import trio"), FORBIDDEN_FOR_SYNC) == ["trio"]
    assert _loaded(_modules_after("import redis"), ("redis.asyncio",)) == ["redis.asyncio"]


def test_the_type_stub_of_the_blocking_store_is_rendered_from_store() -> None:
    """``store_sync.pyi`` is what ``store_stub.render()`` makes of today's Store (regenerate it
    with ``python -m jobvisor.adapters.store_stub > adapters/store_sync.pyi``)."""
    from jobvisor.adapters import store_stub

    committed = (Path(store_stub.__file__).parent / "store_sync.pyi").read_text()
    assert committed == store_stub.render()
    for name in store_operations():
        assert f"    def {name}(self" in committed, name
