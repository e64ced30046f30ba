"""The documents say what the code does: diagrams are the tables', commands are real."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobvisor.machines import MACHINES, to_mermaid

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_architecture_diagram_is_the_generated_one(name: str) -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    match = re.search(rf"### {name}\n\n```mermaid\n(.*?)\n```", text, re.S)
    assert match is not None, f"ARCHITECTURE.md has no diagram for {name}"
    assert match.group(1) == to_mermaid(MACHINES[name])


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_cli_prints_the_diagram(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jobvisor", "diagram", name], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == to_mermaid(MACHINES[name])
    assert out.stdout.startswith("stateDiagram-v2\n")


def test_cli_rejects_an_unknown_machine_with_exit_2() -> None:
    out = subprocess.run([sys.executable, "-m", "jobvisor", "diagram", "nope"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice: 'nope'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_readme_commands_are_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh\n" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "bash scripts/test.sh"
