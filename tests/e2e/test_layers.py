"""Layers point one way: machines/ imports nothing of the runtime.

Each check runs in a fresh interpreter and reads ``sys.modules`` after the
import, so an indirect import counts too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN_FOR_MACHINES = (
    "trio", "redis", "httpx", "jobvisor.adapters", "jobvisor.supervisor", "fakeredis", "msgspec",
)


def _imported_after(module: str) -> set[str]:
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted({'.'.join(m.split('.')[:2 if m.startswith('jobvisor.') else 1])"
        " for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", ["jobvisor.machines", "jobvisor.machines.embed", "jobvisor.machines.mermaid"])
def test_machines_import_no_runtime(module: str) -> None:
    leaked = _imported_after(module) & set(FORBIDDEN_FOR_MACHINES)
    assert leaked == set(), f"{module} pulled in {sorted(leaked)}"


def test_the_check_itself_can_fail() -> None:
    # The probe must see an import when there is one, or the test above proves nothing.
    assert "json" in _imported_after("json")
    assert "trio" in _imported_after("trio")
