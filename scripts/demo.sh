#!/usr/bin/env bash
# The README's first command: sets up .venv and runs `jobvisor demo` (arguments pass through).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- demo; fi
exec "$VENV/bin/jobvisor" "$@"
