#!/usr/bin/env bash
# The README's test command: sets up .venv, redis-server and chromium, then runs the whole suite.
# Extra arguments go to pytest. Exit status is pytest's (5, "no tests ran", fails too).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_redis_server
ensure_chromium
ensure_venv test
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
