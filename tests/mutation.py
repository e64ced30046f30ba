"""Under mutation testing (``mutmut run``, bench/MUTATION.md) the tests import the mutated copy.

mutmut copies ``machines/`` into ``mutants/`` and puts that directory first on ``sys.path``, so the
mutated package imports as ``machines``; the tests import ``jobvisor.machines``, which the
installed package maps to the original files. Here the mutated modules are bound under the
package's names before anything imports them (tests/conftest.py imports this module first).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys


def bind_mutants() -> None:
    """Under ``mutmut``, make ``jobvisor.machines`` the mutated copy (elsewhere, do nothing)."""
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    import jobvisor

    mutated = importlib.import_module("machines")
    sys.modules["jobvisor.machines"] = mutated
    jobvisor.machines = mutated  # type: ignore[attr-defined]
    for info in pkgutil.iter_modules(mutated.__path__):
        sys.modules[f"jobvisor.machines.{info.name}"] = importlib.import_module(f"machines.{info.name}")
