"""The public names, pinned: what ``from jobvisor import ...`` and ``from jobvisor.machines
import ...`` offer. The lists below are written by hand; a name added to or dropped from an
``__all__`` fails here until the change is made on purpose (and README says so)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import jobvisor
import jobvisor.machines

JOBVISOR = [
    "App", "AsyncClient", "Client", "Daemon", "DaemonConfig", "HttpValidator", "JobContext",
    "ServiceStatus", "StatusAnswer", "Step", "SupervisorGaveUp", "ValidationResult", "__version__",
    "Redrive", "load_config", "run_daemon",
]

MACHINES = [
    "BATCH", "JOB", "MACHINES", "PHASE", "WEBHOOK",
    "BatchMachine", "BatchModel", "BatchState", "BatchTrigger",
    "DeliveryModel", "DeliveryState", "DeliveryTrigger",
    "EmbeddedMachine", "InvalidTransition",
    "JobMachine", "JobModel", "JobState", "JobTrigger",
    "Kind", "MachineDef", "Outcome",
    "PhaseMachine", "PhaseState", "PhaseTrigger",
    "Row", "WebhookMachine", "to_mermaid",
]


@pytest.mark.parametrize(("module", "expected"), [(jobvisor, JOBVISOR), (jobvisor.machines, MACHINES)],
                         ids=["jobvisor", "jobvisor.machines"])
def test_all_is_pinned(module: Any, expected: list[str]) -> None:
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name is listed twice"
    assert sorted(set(exported) - set(expected)) == [], "new public names"
    assert sorted(set(expected) - set(exported)) == [], "public names gone"


@pytest.mark.parametrize(("module", "expected"), [(jobvisor, JOBVISOR), (jobvisor.machines, MACHINES)],
                         ids=["jobvisor", "jobvisor.machines"])
def test_every_public_name_resolves(module: Any, expected: list[str]) -> None:
    for name in expected:
        value = getattr(module, name)
        assert value is not None, name
        if name != "__version__" and hasattr(value, "__module__"):
            assert value.__module__.startswith("jobvisor."), (name, value.__module__)
    assert set(expected) <= set(dir(module))


def test_the_top_level_names_are_those_of_the_rooms() -> None:
    from jobvisor.supervisor.app import App
    from jobvisor.supervisor.client import Client
    from jobvisor.supervisor.supervise import SupervisorGaveUp

    assert (jobvisor.App, jobvisor.Client, jobvisor.SupervisorGaveUp) == (App, Client, SupervisorGaveUp)
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert jobvisor.__version__ == pyproject["project"]["version"]


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match=r"^module 'jobvisor' has no attribute 'Nope'$"):
        jobvisor.Nope  # noqa: B018


def test_star_import_gives_exactly_the_public_names_in_a_fresh_interpreter() -> None:
    code = ("ns = {}\nexec('from jobvisor import *', ns)\nexec('from jobvisor.machines import *', ns)\n"
            "print(' '.join(sorted(k for k in ns if k != '__builtins__')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == sorted(JOBVISOR + MACHINES)
