#!/usr/bin/env bash
# The README's test command: sets up .venv, redis-server and chromium, checks the code (ruff and
# mypy --strict, scripts/lint.sh), then runs the whole suite. Extra arguments go to pytest (and
# skip the checks). Exit status is the checks', else pytest's (5, "no tests ran", fails too).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_redis_server
ensure_chromium
ensure_venv test
cd "$ROOT"
# The whole run checks the code first (ruff, mypy --strict); a run of chosen tests does not.
if [ "$#" -eq 0 ]; then
    bash "$ROOT/scripts/lint.sh"
fi
exec "$VENV/bin/python" -m pytest "$@"
