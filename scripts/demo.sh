#!/usr/bin/env bash
# The README's first command: sets up .venv and runs the product's main job.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- diagram job; fi
exec "$VENV/bin/jobvisor" "$@"
