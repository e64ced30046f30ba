"""Running the ``jobvisor`` CLI as a subprocess, and dumping a whole Redis database to prove nothing was written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.app import app as example_app
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import BatchSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.supervisor.client import build_spec

ROOT = Path(__file__).resolve().parent.parent
UNKNOWN_JOB = "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well formed, never created
UNKNOWN_BATCH = "default.01BX5ZZKBKACTAV9WEVGEMMVRZ"
TYPES = {t: h.describe() for t, h in example_app.handlers.items()}


# -- running the CLI ------------------------------------------------------------------------


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its JOBVISOR_* settings (but the strict invariant checks), plus ``extra``.

    Bytecode is cached outside the source tree (``PYTHONPYCACHEPREFIX``): without a cache
    every CLI start compiles the project again, which is a third of its start-up time.
    """
    environ = {k: v for k, v in os.environ.items()
               if (not k.startswith("JOBVISOR_") or k == "JOBVISOR_STRICT_INVARIANTS")
               and k != "PYTHONDONTWRITEBYTECODE"}
    environ["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "jobvisor-test-pycache")
    environ.update(extra or {})
    return environ


def jv(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
       timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobvisor ARGS`` from the repository root, without the caller's JOBVISOR_*."""
    environ = cli_env(env)
    return subprocess.run(
        [sys.executable, "-m", "jobvisor", *args],
        cwd=ROOT, env=environ, input=stdin, capture_output=True, text=True, timeout=timeout,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stderr == ""
    return json.loads(result.stdout)


def json_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    assert result.returncode == 0, (result.returncode, result.stderr)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def assert_one_line_error(result: subprocess.CompletedProcess[str], codes: int | tuple[int, ...],
                          *patterns: str) -> str:
    """Exit code in ``codes``; stderr is exactly one ``jobvisor: ...`` line matching every pattern."""
    codes = (codes,) if isinstance(codes, int) else codes
    where = f"exit {result.returncode}; stdout={result.stdout!r}; stderr={result.stderr!r}"
    assert result.returncode in codes, where
    assert "Traceback" not in result.stderr, where
    lines = result.stderr.splitlines()
    assert len(lines) == 1, where
    assert result.stderr.endswith("\n"), where
    line = lines[0]
    assert line.startswith("jobvisor: "), where
    for pattern in patterns:
        assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    assert result.stdout == "", where
    return line


# -- the database, whole ------------------------------------------------------------------------


def dump(url: str) -> dict[bytes, Any]:
    """Every key with its type, its full contents and whether it carries a TTL."""
    client = redis.Redis.from_url(url)
    try:
        out: dict[bytes, Any] = {}
        for key in sorted(client.scan_iter(count=1000)):
            named = client.type(key)
            kind = named.decode() if isinstance(named, bytes) else str(named)
            if kind == "string":
                value: Any = client.get(key)
            elif kind == "hash":
                value = sorted(client.hgetall(key).items())
            elif kind == "set":
                value = sorted(client.smembers(key))
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "stream":
                value = [(i, sorted((f or {}).items())) for i, f in client.xrange(key) or []]
            else:
                value = f"<{kind}>"
            out[key] = (kind, value, client.pttl(key) >= 0)
        return out
    finally:
        client.close()


def assert_nothing_written(before: dict[bytes, Any], after: dict[bytes, Any]) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert (added, removed, changed) == ([], [], []), f"written: added={added} removed={removed} changed={changed}"


# -- a realistic database to refuse things against ------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    url: str
    queued: str  # an echo job, queued
    cancelled: str  # a report job, cancelled
    open_batch: str  # open, one member
    closed_batch: str  # closed (running), one member still queued
    cancelled_batch: str  # finalized: cancelled
    other_batch: str  # an open batch in queue "other"
    other_job: str  # a queued job in queue "other"
    member: str  # the open batch's member
    completed_batch: str  # finalized: closed with no members, completed
    full_batch: str  # open, expects 1 member and has it


def seed(url: str) -> Seeded:
    with SyncStore(open_backend(url)) as store:
        store.register_types(TYPES)  # what a daemon running examples.app publishes

        def submit(type_: str, **options: Any) -> str:
            return store.submit(build_spec(TYPES, type_, {"n": 1}, **options)).id

        def batch(**options: Any) -> str:
            return store.create_batch(BatchSpec(**options)).id

        queued = submit("echo", idempotency_key="seeded")
        cancelled = submit("report")
        store.cancel(cancelled)
        open_batch = batch(expected=3)
        member = submit("echo", batch=open_batch)
        closed_batch = batch()
        submit("echo", batch=closed_batch)
        assert store.close_batch(closed_batch).to == "running"
        cancelled_batch = batch()
        assert store.cancel_batch(cancelled_batch).to == "cancelled"
        other_batch = batch(queue="other")
        other_job = submit("echo", queue="other")
        completed_batch = batch()
        assert store.close_batch(completed_batch).to == "completed"
        full_batch = batch(expected=1)
        submit("echo", batch=full_batch)
    return Seeded(url, queued, cancelled, open_batch, closed_batch, cancelled_batch, other_batch,
                  other_job, member, completed_batch, full_batch)


@pytest.fixture
def seeded(redis_url: str) -> Seeded:
    return seed(redis_url)


