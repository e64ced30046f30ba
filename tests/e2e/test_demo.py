"""``jobvisor demo`` as a newcomer runs it: on the embedded store and on a real redis-server.

Its ``--json`` figures are the proof the README promises: every guarantee count as stated,
every job in its expected final state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]

EXPECTED_SCENARIOS = {
    "validated against a lagging source of truth": ("completed", 12),
    "phased": ("completed", 4),
    "fails twice, then retried to success": ("completed", 1),
    "times out": ("timed_out", 1),
    "cancelled mid-phase": ("cancelled", 1),
    "worker lost, recovered by status query": ("completed", 1),
    "batch member": ("completed", 10),
}


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobvisor", "demo", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def check_figures(figures: dict) -> None:
    assert figures["ok"] is True, figures["problems"]
    assert figures["problems"] == []
    g = figures["guarantees"]
    assert g["completion_webhooks_with_stale_data"] == 0
    assert g["duplicate_completion_events"] == 0
    assert g["jobs_with_more_than_one_terminal_event"] == 0
    assert g["batch_finalize_events"] == 1
    assert g["lost_worker_handler_reruns"] == 0
    assert g["batch_progress_events"] == 2  # at 5 and at 10 completions
    # every notifying job (20) and the batch (two progress events, one completion) was heard
    # from, each webhook verified, each delivery once
    assert g["webhooks_received"] == g["webhooks_verified"] == g["distinct_webhook_ids"] == 23
    jobs = figures["jobs"]
    assert Counter(j["scenario"] for j in jobs) == {s: n for s, (_, n) in EXPECTED_SCENARIOS.items()}
    for job in jobs:
        assert job["state"] == job["expected"] == EXPECTED_SCENARIOS[job["scenario"]][0], job
        notifies = job["scenario"] != "batch member"
        assert job["webhooks"] == (1 if notifies else 0), job
        if job["type"] == "transcode":
            assert job["handed_over"] == 1, job  # the service got the work once, even for the lost worker
            assert job["checks"] >= 1, job
            assert job["attempts"] == 1, job
    flaky = next(j for j in jobs if j["type"] == "flaky")
    assert flaky["attempts"] == 3
    lagging = [j for j in jobs if j["scenario"].startswith("validated")]
    assert any(j["checks"] >= 2 for j in lagging)  # the source of truth lagged: not every first check passed
    assert figures["batch"]["state"] == "completed_partial"  # 8 of 10 met the 80% threshold first
    assert figures["batch"]["completed"] == figures["batch"]["members"] == 10
    assert figures["batch"]["webhooks"] == 3  # two progress events and the completion


def test_the_demo_on_the_embedded_store(tmp_path: Path) -> None:
    result = demo("--json", cwd=tmp_path)  # anywhere: no setup, no Redis
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["store"].startswith("embedded")
    check_figures(figures)


def test_the_demo_on_a_real_redis_server_touches_only_its_own_queues(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("someone-elses-key", "untouched")
    client.hset("jv:types", "report", '{"queue": "prod"}')  # a production daemon's published type
    result = demo("--redis", redis_url, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["store"] == "redis-server"
    check_figures(figures)
    assert client.get("someone-elses-key") == b"untouched"
    assert client.hgetall("jv:types") == {b"report": b'{"queue": "prod"}'}  # not republished
    queues = {q.decode() for q in client.smembers("jv:queues")}
    assert queues
    assert all(q.startswith("demo-") for q in queues)


def test_the_demo_prints_its_table_without_json(tmp_path: Path) -> None:
    result = demo(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "the guarantees" in out
    assert "completion webhooks with stale data" in out
    assert "every guarantee held; every job ended in its expected state" in out
    assert out.count("batch member") == 10


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://x", "is not a Redis URL"),
    ("redis://127.0.0.1:1/0", "Redis is unavailable at redis://127.0.0.1:1/0"),
])
def test_the_demo_refuses_a_bad_or_dead_redis_in_one_line(url: str, message: str, tmp_path: Path) -> None:
    result = demo("--redis", url, cwd=tmp_path)
    assert result.returncode == (2 if "ftp" in url else 1)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jobvisor: "), result.stderr
    assert message in lines[0], result.stderr
    assert result.stdout == ""


async def test_a_demo_that_cannot_finish_in_time_says_what_it_waited_for() -> None:
    from examples.demo import run_demo
    from jobvisor.adapters.errors import JobvisorError

    with pytest.raises(JobvisorError, match=r"^the demo did not finish within 0.5 s: it was waiting for "):
        await run_demo(None, time_limit=0.5)


def outside(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``jobvisor demo`` where no source checkout is importable (as from an installed wheel)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "jobvisor", "demo", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=env)


def test_without_the_source_checkout_the_demo_says_where_it_ships_in_one_line(tmp_path: Path) -> None:
    result = outside("--json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == ("jobvisor: demo: the demo ships with the source checkout: run "
                             "`bash scripts/demo.sh` in a clone of jobvisor\n")


def test_an_examples_package_of_someone_elses_is_not_taken_for_the_demo(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "__init__.py").write_text("")  # a service's own examples/, without demo
    result = outside(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "ships with the source checkout" in result.stderr


def test_python_dash_m_examples_demo_is_the_same_command(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "examples.demo", "--redis", "ftp://x"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("jobvisor: redis: 'ftp://x' is not a Redis URL"), result.stderr
