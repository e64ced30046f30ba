"""Small things a new user hit: ``submit``'s stdout is the id alone (so ``J=$(jobvisor submit
...)`` works) also for an existing idempotency key, whose ``--json`` shows the job's real state;
``events --job`` for an unknown or deleted job names the job, exit code 3 (not found)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.store import SyncStore

ROOT = Path(__file__).resolve().parents[2]
UNKNOWN_JOB = "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well formed, never created


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBVISOR_")}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "jobvisor-test-pycache")
    return env


def jv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobvisor", *args], cwd=ROOT, env=environ(),
                          capture_output=True, text=True, timeout=30)


def test_submit_with_an_existing_idempotency_key_prints_only_the_id_on_stdout(redis_url: str) -> None:
    argv = ["submit", "echo", "--app", "examples.app:app", "--idempotency-key", "order-42",
            "--redis", redis_url]
    first = jv(*argv)
    assert (first.returncode, first.stderr) == (0, "")
    job_id = first.stdout.strip()
    again = jv(*argv)
    assert again.returncode == 0
    assert again.stdout == f"{job_id}\n"
    assert again.stderr == f"jobvisor: {job_id} is the existing job for this idempotency key (queued)\n"
    # as a shell script uses it
    script = f'J=$("{sys.executable}" -m jobvisor {" ".join(argv)}) && printf "<%s>" "$J"'
    shell = subprocess.run(["bash", "-c", script], cwd=ROOT, env=environ(), capture_output=True, text=True,
                           timeout=30)
    assert shell.stdout == f"<{job_id}>", shell


def test_submit_json_for_an_existing_key_shows_its_real_state_and_existing_true(redis_url: str) -> None:
    argv = ["submit", "echo", "--app", "examples.app:app", "--idempotency-key", "k1", "--json",
            "--redis", redis_url]
    created = jv(*argv)
    assert created.returncode == 0
    assert created.stderr == ""
    first = json.loads(created.stdout)
    assert (first["created"], first["existing"], first["state"]) == (True, False, "queued")
    assert jv("cancel", first["id"], "--redis", redis_url).returncode == 0
    again = jv(*argv)
    assert again.returncode == 0
    assert again.stderr == ""
    second = json.loads(again.stdout)
    assert second == {"id": first["id"], "created": False, "existing": True, "state": "cancelled"}


def test_events_for_an_unknown_job_names_the_job_exit_3(redis_url: str) -> None:
    result = jv("events", "--job", UNKNOWN_JOB, "--redis", redis_url)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == f"jobvisor: job {UNKNOWN_JOB} not found (no job or batch has this id)\n"


def test_events_for_a_deleted_job_names_the_job_exit_3(redis_url: str) -> None:
    with SyncStore(open_backend(redis_url)) as store:
        job_id = store.submit(JobSpec(type="echo")).id
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.delete(Keys("default").job(job_id)) == 1  # as retention deletes it
    finally:
        client.close()
    result = jv("events", "--job", job_id, "--redis", redis_url)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == f"jobvisor: job {job_id} not found (no job or batch has this id)\n"


def test_events_for_a_batch_prints_its_events(redis_url: str) -> None:
    with SyncStore(open_backend(redis_url)) as store:
        batch_id = store.create_batch(BatchSpec(queue="default")).id
        store.submit(JobSpec(type="echo"))
    result = jv("events", "--job", batch_id, "--json", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [batch_id]
