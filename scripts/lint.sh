#!/usr/bin/env bash
# Static checks, run by the README's test command before the suite: ruff over the repository
# and mypy --strict over the installed package's shape.
#
# The package's rooms live at the root of the repository (machines/, adapters/, supervisor/)
# and are mapped into `jobvisor` at install time, which mypy cannot follow through an editable
# install; it reads a tree of symbolic links with the installed shape instead (build/typecheck).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv test
cd "$ROOT"
tree="$ROOT/build/typecheck/jobvisor"
rm -rf "$ROOT/build/typecheck"
mkdir -p "$tree"
for f in jobvisor/*; do ln -s "$ROOT/$f" "$tree/$(basename "$f")"; done
for room in machines adapters supervisor; do ln -s "$ROOT/$room" "$tree/$room"; done
"$VENV/bin/ruff" check --quiet .
MYPYPATH="$ROOT/build/typecheck" "$VENV/bin/python" -m mypy -p jobvisor
