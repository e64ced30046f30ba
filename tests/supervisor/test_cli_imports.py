"""CLI start-up: commands other than ``run`` and ``demo`` import neither the daemon nor trio.

Each light command runs for real, in a fresh interpreter, against a real redis-server, and
``sys.modules`` is read after it returns, so a lazy import inside the command counts too.
What the synchronous store pulls in by itself (measured the same way, by importing it alone)
is the store's to shed, not the command line's: only what the CLI adds on top of it is
refused here, so the check tightens by itself once the store is light. The daemon, the HTTP
client's users and the daemon-only libraries are refused outright.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.store import SyncStore

ROOT = Path(__file__).resolve().parents[2]

NEVER = {
    "jobvisor.supervisor.daemon", "jobvisor.supervisor.app", "jobvisor.supervisor.workers",
    "jobvisor.supervisor.cli_daemon", "rich", "trio_parallel", "prometheus_client",
}
"""Modules no light command may import, whatever the store does."""

HEAVY = {"trio", "httpx"}
"""Modules a light command may import only if importing the store alone does."""

PROBE = """
import json, sys
argv, out = json.loads(sys.argv[1]), sys.argv[2]
try:
    if argv[0] == "--import":
        __import__(argv[1])
        code = 0
    else:
        from jobvisor.supervisor.cli import main
        code = main(argv)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def imported(argv: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    """Run ``argv`` (or ``["--import", module]``) in a fresh interpreter: its exit code and
    every module it imported (top-level names, and ``jobvisor.*`` in full)."""
    out = tmp_path / "modules.json"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBVISOR_")}
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), str(out)], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=60)
    assert out.exists(), result.stderr
    found = json.loads(out.read_text())
    return found["code"], {m if m.startswith("jobvisor.") else m.split(".")[0] for m in found["modules"]}


@pytest.fixture(scope="module")
def store_pulls(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    _, modules = imported(["--import", "jobvisor.adapters.store"], tmp_path_factory.mktemp("store"))
    return modules & HEAVY


LIGHT = [
    ["status", "@job"], ["submit", "echo", "--input", "{}"], ["cancel", "@job"], ["retry", "@cancelled"],
    ["events"], ["events", "--job", "@job"], ["queues"], ["report"], ["workers", "--all"],
    ["batch", "create"], ["batch", "status", "@batch"], ["diagram", "job"], ["--version"], ["run", "--help"],
    ["flow", "--parent", "echo", "--child", "echo={}"], ["chain", "echo", "echo"],
]


@pytest.mark.parametrize("argv", LIGHT, ids=lambda a: " ".join(a))
def test_a_light_command_imports_neither_the_daemon_nor_trio(
        argv: list[str], redis_url: str, tmp_path: Path, store_pulls: set[str]) -> None:
    with SyncStore(open_backend(redis_url)) as store:
        store.register_types({"echo": {"queue": "default"}})
        job = store.submit(JobSpec(type="echo", input={"n": 1})).id
        cancelled = store.submit(JobSpec(type="echo")).id
        store.cancel(cancelled)
        batch = store.create_batch(BatchSpec(queue="default")).id
    seeded = {"@job": job, "@cancelled": cancelled, "@batch": batch}
    filled = [seeded.get(a, a) for a in argv]
    redis = [] if argv[0] in ("diagram", "--version") or "--help" in argv else ["--redis", redis_url]
    code, modules = imported([*filled, *redis], tmp_path)
    assert code == 0, (argv, code)
    assert modules & NEVER == set()
    added = modules & HEAVY - store_pulls
    assert added == set(), f"the CLI itself pulled in {sorted(added)}"


def test_the_probe_sees_the_daemons_imports(tmp_path: Path) -> None:
    """``run``'s module imports trio and the daemon when it runs: the probe must see an import
    when there is one, or the test above proves nothing."""
    _, modules = imported(["--import", "jobvisor.supervisor.daemon"], tmp_path)
    assert {"trio", "jobvisor.supervisor.daemon", "jobvisor.supervisor.app"} <= modules


@pytest.mark.parametrize("module", ["jobvisor.supervisor.cli", "jobvisor.supervisor.config"])
def test_the_parser_and_the_settings_import_nothing_heavy(module: str, tmp_path: Path) -> None:
    """What every command imports before it runs (the parser, built from the settings) costs
    neither the store, nor Redis, nor the checks' HTTP and signature libraries."""
    _, modules = imported(["--import", module], tmp_path)
    heavy = modules & (NEVER | HEAVY | {"redis", "fakeredis", "standardwebhooks", "jobvisor.adapters.store",
                                        "jobvisor.adapters.records", "jobvisor.adapters.backend"})
    assert heavy == set()
