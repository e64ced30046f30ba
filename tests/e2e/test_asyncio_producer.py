"""``examples/asyncio_producer.py`` under asyncio, against a real redis-server and a real daemon
serving ``examples.app``: every job it submits comes back completed, with its result, once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from examples.asyncio_producer import produce
from jobvisor import Client
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.store import SyncStore
from tests.cli_support import ROOT, cli_env
from tests.daemon_process import daemon, wait_until


def test_the_asyncio_producer_submits_and_waits(redis_url: str, tmp_path: Path) -> None:
    with daemon(redis_url, tmp_path, "producer-d", app="examples.app:app",
                env={"JOBVISOR_ALLOW_DESTINATIONS": "127.0.0.1"}) as d:  # the app's service is on loopback
        with Client(redis_url) as client:  # the producer reads the job types the daemon published
            wait_until(lambda: "echo" in client.types(), timeout=30, what="published job types", alive=d)
        outcomes = asyncio.run(produce(redis_url, [{"n": n} for n in range(5)], seconds=30))
        assert [(o["state"], o["result"]) for o in outcomes] == [
            ("completed", {"echo": {"n": n}}) for n in range(5)]
        ran = subprocess.run([sys.executable, "-m", "examples.asyncio_producer", redis_url], cwd=ROOT,
                             env=cli_env(), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert len(ran.stdout.splitlines()) == 3
    assert all('"state": "completed"' in line for line in ran.stdout.splitlines())
    with SyncStore(open_backend(redis_url)) as store:
        completed = [e.id for e in store.events("default") if e.type == "job.completed"]
    assert len(completed) == len(set(completed)) == 8  # 5 + 3 jobs, each completed once
