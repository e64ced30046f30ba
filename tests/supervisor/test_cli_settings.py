"""Settings from one place: ``jobvisor run --help`` shows every setting's flag, default and
variable (generated from DaemonConfig), a bad value given by flag or by variable is one line
naming both, exit code 2, nothing written; ``jobvisor --version`` prints the package version."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import redis

import jobvisor
from jobvisor.supervisor.config import SETTINGS, DaemonConfig, Setting

ROOT = Path(__file__).resolve().parents[2]
APP = ("--app", "examples.app:app")


def jv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBVISOR_")}
    environ["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "jobvisor-test-pycache")
    environ["COLUMNS"] = "1000"  # argparse wraps help at the terminal's width: one line per option
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "jobvisor", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=30)


def everything(url: str) -> dict[bytes, Any]:
    client = redis.Redis.from_url(url)
    try:
        return {key: (client.type(key), client.dump(key)) for key in client.scan_iter(count=1000)}
    finally:
        client.close()


@pytest.fixture(scope="module")
def run_help() -> str:
    result = jv("run", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.flag is not None], ids=lambda s: s.name)
def test_each_settings_flag_default_and_variable_are_in_run_help(setting: Setting, run_help: str) -> None:
    entries = re.split(r"\n(?=  -)|\n\n", run_help)  # one per option: its line and any continuation
    [entry] = [e for e in entries if re.match(rf"\s*{re.escape(setting.flag)}(\s|$)", e)]
    line = " ".join(entry.split())
    assert f"(default: {setting.shown}; env {setting.env})" in line, line
    assert setting.help in line, line


def test_the_secret_is_named_in_run_help_as_environment_only(run_help: str) -> None:
    assert "--webhook-secret" not in run_help
    assert "JOBVISOR_WEBHOOK_SECRET is read from the environment only" in " ".join(run_help.split())


def test_the_help_defaults_are_the_configs() -> None:
    """The default shown is the field's own value wherever no reading is given for it."""
    defaults = DaemonConfig()
    for s in SETTINGS:
        value = getattr(defaults, s.name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and re.fullmatch(r"[\d.]+", s.shown):
            assert float(s.shown) == value, s.name
    assert {s.name: s.shown for s in SETTINGS}["concurrency"] == "16"


BAD = [  # setting, a bad value
    ("concurrency", "abc"), ("lease", "0"), ("metrics_port", "70000"), ("validation_jitter", "2"),
    ("queues", "a b"), ("log_level", "loud"), ("webhook_url", "ftp://hooks.example"),
]


@pytest.mark.parametrize(("name", "value"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("via", ["flag", "env"])
def test_a_bad_setting_is_one_line_naming_flag_and_variable_exit_2_nothing_written(
        redis_url: str, name: str, value: str, via: str) -> None:
    s = next(s for s in SETTINGS if s.name == name)
    assert s.flag is not None
    before = everything(redis_url)
    if via == "flag":
        result = jv("run", "--redis", redis_url, *APP, s.flag, value)
    else:
        result = jv("run", "--redis", redis_url, *APP, env={s.env: value})
    where = f"exit {result.returncode}; stdout={result.stdout!r}; stderr={result.stderr!r}"
    assert result.returncode == 2, where
    assert result.stdout == "", where
    assert len(result.stderr.splitlines()) == 1, where
    line = result.stderr.strip()
    assert line.startswith(f"jobvisor: setting {name}: "), line
    assert s.flag in line, line
    assert s.env in line, line
    said = f"from {s.flag} " if via == "flag" else f"from {s.env}="
    assert said in line, line  # and which of the two it came from
    assert everything(redis_url) == before


def test_the_secret_refused_from_the_environment_names_its_variable_and_no_flag(redis_url: str) -> None:
    result = jv("run", "--redis", redis_url, *APP, env={"JOBVISOR_WEBHOOK_SECRET": "whsec_c2hvcnQ="})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert "JOBVISOR_WEBHOOK_SECRET" in line, line
    assert "environment only" in line, line
    assert "c2hvcnQ" not in line, line


def test_a_flag_beats_its_variable() -> None:
    from jobvisor.supervisor.config import load_config

    config = load_config({"concurrency": "3", "queues": "a, b"},
                         environ={"JOBVISOR_CONCURRENCY": "abc", "JOBVISOR_LOG_LEVEL": "ERROR"})
    assert (config.concurrency, config.queues, config.log_level) == (3, ("a", "b"), "error")


def test_version_prints_the_package_version_exit_0() -> None:
    result = jv("--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"jobvisor {jobvisor.__version__}\n"
    assert jobvisor.__version__ == importlib.metadata.version("jobvisor")


def test_the_diagram_choices_are_the_machines() -> None:
    from jobvisor.machines import MACHINES
    from jobvisor.supervisor.cli_parser import MACHINE_NAMES

    assert tuple(sorted(MACHINES)) == MACHINE_NAMES
