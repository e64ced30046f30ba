"""Layers point one way: ``supervisor/ -> adapters/ -> machines/``, all under ``jobvisor.``.

Two kinds of check: a fresh interpreter imports a module and reads ``sys.modules`` (so an
indirect import counts too), and a static scan of every module's imports holds each room to
its rules (so an import in a function or a ``TYPE_CHECKING`` block counts too). Each check
is shown to fail on a module that breaks it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


@pytest.mark.parametrize("module",
                         ["jobvisor.machines", "jobvisor.machines.embed", "jobvisor.machines.mermaid"])
def test_machines_import_no_runtime(module: str) -> None:
    leaked = _imported_after(module) & set(FORBIDDEN_FOR_MACHINES)
    assert leaked == set(), f"{module} pulled in {sorted(leaked)}"


def test_the_check_itself_can_fail() -> None:
    # The probe must see an import when there is one, or the test above proves nothing.
    assert "json" in _imported_after("json")
    assert "trio" in _imported_after("trio")


# -- every room, read statically ---------------------------------------------------------------
#
# Every module of the package is parsed and each import it can make is listed: ``import`` and
# ``from ... import`` statements anywhere (functions and ``TYPE_CHECKING`` blocks too), relative
# ones resolved against the module, and ``importlib.import_module("...")`` with a literal name.
# The rules below are then checked on that list; each rule is also fed a module that breaks it.

ROOT = Path(__file__).resolve().parents[2]
ROOMS = {"jobvisor": "jobvisor", "machines": "jobvisor.machines", "adapters": "jobvisor.adapters",
         "supervisor": "jobvisor.supervisor"}
BARE = ("machines", "adapters", "supervisor")
OUTSIDE = ("examples", "tests", "bench")
THIRD_PARTY_IN_ADAPTERS = ("redis", "httpx", "httpcore", "fakeredis")
# Looked up by name at run time, never imported: the demo ships with the source checkout only,
# and the CLI says so in one line when it is not there (tests/test_demo.py).
RUN_TIME_LOOKUPS = {"examples.demo"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, jobvisor.<room>.<name>
    target: str  # what it imports (dotted)
    line: int
    by_name: bool = False  # importlib.import_module("...") rather than a statement


def package_modules() -> dict[str, tuple[str, bool]]:
    """Every module of the package -> (its source, whether it is a package), under the name it
    is installed as."""
    modules: dict[str, tuple[str, bool]] = {}
    for folder, package in ROOMS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join((package, *(parts[:-1] if is_package else parts)))
            modules[name] = (path.read_text("utf-8"), is_package)
    return modules


def imports_of(module: str, source: str, *, is_package: bool = False) -> list[Import]:
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # the imported name may be a module itself (``from jobvisor import supervisor``)
            found += [Import(module, f"{target}.{alias.name}", node.lineno) for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in ("import_module",
                                                                                          "__import__")):
            found.append(Import(module, node.args[0].value, node.lineno, by_name=True))
    return found


def _top(target: str) -> str:
    return target.split(".", 1)[0]


def _under(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def violations(imports: list[Import]) -> list[str]:
    """Each import that breaks a room's rule, as ``module:line imports target (rule)``."""
    broken: list[str] = []

    def refuse(imp: Import, rule: str) -> None:
        broken.append(f"{imp.module}:{imp.line} imports {imp.target} ({rule})")

    for imp in imports:
        if _top(imp.target) in BARE:
            refuse(imp, "not jobvisor.-prefixed")
        if _top(imp.target) in OUTSIDE and not (imp.by_name and imp.target in RUN_TIME_LOOKUPS):
            refuse(imp, "the package never imports examples, tests or bench")
        if _under(imp.module, "jobvisor.supervisor") and _top(imp.target) in THIRD_PARTY_IN_ADAPTERS:
            refuse(imp, "the supervisor reaches redis and HTTP through adapters")
        if _under(imp.module, "jobvisor.adapters") and _under(imp.target, "jobvisor.supervisor"):
            refuse(imp, "adapters never import the supervisor")
        if _under(imp.module, "jobvisor.machines") and any(
                _under(imp.target, f) for f in FORBIDDEN_FOR_MACHINES):
            refuse(imp, "machines are pure")
    return broken


def all_imports() -> list[Import]:
    return [imp for name, (source, is_package) in package_modules().items()
            for imp in imports_of(name, source, is_package=is_package)]


def test_the_scan_reads_every_room() -> None:
    modules = package_modules()
    assert {"jobvisor", "jobvisor.machines.job", "jobvisor.adapters.store", "jobvisor.supervisor.daemon",
            "jobvisor.supervisor.cli"} <= set(modules)
    targets = {(i.module, i.target) for i in all_imports()}
    assert ("jobvisor.supervisor.daemon", "trio") in targets
    assert any(m == "jobvisor.adapters.backend" and _top(t) == "redis" for m, t in targets)
    assert ("jobvisor.supervisor.supervise", "jobvisor.supervisor.outage.StoreOutage") in targets  # relative


def test_every_room_keeps_its_direction() -> None:
    assert violations(all_imports()) == []


@pytest.mark.parametrize(("module", "source", "rule"), [
    ("jobvisor.supervisor.x", "import redis.asyncio", "through adapters"),
    ("jobvisor.supervisor.x", "from httpx import AsyncClient", "through adapters"),
    ("jobvisor.supervisor.x", "def f():\n    import httpcore", "through adapters"),
    ("jobvisor.supervisor.x", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fakeredis",
     "through adapters"),
    ("jobvisor.supervisor.x", "from adapters.store import Store", "not jobvisor.-prefixed"),
    ("jobvisor.adapters.x", "import machines.job", "not jobvisor.-prefixed"),
    ("jobvisor.machines.x", "from supervisor import app", "not jobvisor.-prefixed"),
    ("jobvisor.adapters.x", "from jobvisor.supervisor.app import App", "never import the supervisor"),
    ("jobvisor.adapters.x", "from ..supervisor import app", "never import the supervisor"),
    ("jobvisor.adapters.x", "from jobvisor import supervisor", "never import the supervisor"),
    ("jobvisor.supervisor.x", "from examples.app import make_app", "never imports examples"),
    ("jobvisor.x", "import tests.harness", "never imports examples"),
    ("jobvisor.adapters.x", "import importlib\nimportlib.import_module('bench.x')", "never imports examples"),
    ("jobvisor.supervisor.x", "import importlib\nimportlib.import_module('examples.app')", "never imports"),
    ("jobvisor.machines.x", "import trio", "machines are pure"),
    ("jobvisor.machines.x", "from ..adapters import keys", "machines are pure"),
])
def test_each_rule_refuses_a_module_that_breaks_it(module: str, source: str, rule: str) -> None:
    [refusal] = violations(imports_of(module, source))
    assert rule in refusal
    assert refusal.startswith(f"{module}:")


def test_what_each_room_may_import_passes() -> None:
    allowed = [
        ("jobvisor.supervisor.x", "import trio\nfrom jobvisor.adapters.store import S\nfrom .app import A"),
        ("jobvisor.adapters.x", "import redis\nimport httpx\nfrom ..machines import J\nfrom . import k"),
        ("jobvisor.machines.x", "import enum\nfrom ._table import Row\nimport transitions"),
        ("jobvisor.supervisor.cli", "import importlib\nimportlib.import_module('examples.demo')"),
    ]
    assert violations([i for module, source in allowed for i in imports_of(module, source)]) == []


# -- and in a fresh interpreter: what an import really brings along -------------------------------

RUNTIME = {"trio", "redis", "httpx", "httpcore", "fakeredis"}


@pytest.mark.parametrize(("module", "forbidden"), [
    ("jobvisor", RUNTIME),  # the public names are loaded on first use
    ("jobvisor.supervisor", RUNTIME),
    ("jobvisor.supervisor.supervise", RUNTIME - {"trio"}),  # supervision needs trio, not the outside
    ("jobvisor.supervisor.outage", RUNTIME - {"trio"}),
])
def test_supervisor_modules_bring_no_third_party_client_along(module: str, forbidden: set[str]) -> None:
    leaked = _imported_after(module) & forbidden
    assert leaked == set(), f"{module} pulled in {sorted(leaked)}"
