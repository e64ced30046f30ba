"""The distribution a user installs: one top-level package, ``jobvisor``, typed, with its Lua.

The wheel is built offline from a copy of the files it is made of (``pip wheel --no-deps
--no-build-isolation``, with this environment's setuptools and wheel), installed with
``--no-deps`` into a fresh virtual environment, and imported from outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from jobvisor.adapters.scripts import LUA_FILES

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "jobvisor", "machines", "adapters", "supervisor")
NOT_INSTALLED = {"machines", "adapters", "supervisor", "examples", "tests", "bench"}


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def _site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / relative


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """site-packages of a fresh venv holding only the wheel (and nothing else: no pip either)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", dist, source, cwd=work)
    [wheel] = dist.glob("jobvisor-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    site = _site_packages(venv)
    assert site.is_dir()
    assert sorted(p.name for p in site.iterdir()) == []
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps",
         "--no-index", "-q", wheel, cwd=work)
    return site


def test_the_wheel_installs_exactly_one_top_level_package(installed: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    top = sorted(p.name for p in installed.iterdir())
    assert top == ["jobvisor", f"jobvisor-{version}.dist-info"]
    assert not NOT_INSTALLED & set(top)
    # and the record agrees: every installed file lives under those two
    record = (installed / f"jobvisor-{version}.dist-info" / "RECORD").read_text().splitlines()
    paths = [line.rsplit(",", 2)[0] for line in record if line]
    inside = {p.split("/", 1)[0] for p in paths if not p.startswith("../")}
    assert inside == {"jobvisor", f"jobvisor-{version}.dist-info"}
    assert [p.rsplit("/", 2)[-2:] for p in paths if p.startswith("../")] == [["bin", "jobvisor"]]  # the CLI


def test_the_wheel_ships_py_typed_the_rooms_and_the_lua_library(installed: Path) -> None:
    package = installed / "jobvisor"
    assert (package / "py.typed").is_file()
    for room in ("machines", "adapters", "supervisor"):
        assert (package / room / "__init__.py").is_file(), room
    lua = sorted(p.name for p in (package / "adapters" / "lua").glob("*.lua"))
    assert lua == sorted(p.name for p in (ROOT / "adapters" / "lua").glob("*.lua"))
    assert lua == sorted(LUA_FILES)  # every file the library is concatenated from
    assert not (package / "supervisor" / "demo.py").exists()  # the demo ships with the source only
    assert not list(package.rglob("examples"))


def test_the_installed_package_imports_from_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    """The project's interpreter supplies the dependencies; the wheel's files come first on the
    path, and every module read must come from them (never from this checkout)."""
    code = (
        "import json, sys\n"
        "import jobvisor\n"
        "from jobvisor import App, Client\n"
        "import jobvisor.machines\n"
        "from jobvisor.adapters.scripts import LuaLibrary\n"
        "mods = {n: m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'jobvisor'}\n"
        "print(json.dumps({'mods': mods, 'app': App.__module__, 'client': Client.__module__,\n"
        "                  'lua': 'local M = {' in LuaLibrary().source}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    out = json.loads(_run(sys.executable, "-c", code, cwd=tmp_path, env=env))
    assert out["app"] == "jobvisor.supervisor.app"
    assert out["client"] == "jobvisor.supervisor.client"
    assert out["lua"] is True
    assert {"jobvisor", "jobvisor.machines", "jobvisor.supervisor.app"} <= set(out["mods"])
    outside = {n: f for n, f in out["mods"].items() if not Path(f).is_relative_to(installed)}
    assert outside == {}, "imported from the checkout instead of the wheel"
