# Shared set-up for the README commands: a virtual environment in .venv with the
# project installed, and Debian's redis-server and chromium when they are missing. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JOBVISOR_VENV:-$ROOT/.venv}"

_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

_apt_install() {
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {  # ensure_venv [extras]
    local extras="${1:-}"
    local py="${PYTHON:-python3}"
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            _apt_install python3-venv
            "$py" -m venv "$VENV"
        fi
    fi
    local stamp="$VENV/.installed${extras:+-$extras}"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        local log="$VENV/install.log"
        if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
               "$VENV/bin/python" -m pip install -e "$ROOT${extras:+[$extras]}"; } >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            echo "installing jobvisor into $VENV failed (full log: $log)" >&2
            return 1
        fi
        touch "$stamp"
    fi
}

ensure_redis_server() {
    if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
        _apt_install redis-server
    fi
    # The Debian package starts a system service; tests start their own servers.
}

ensure_chromium() {
    # The dashboard tests drive Debian's headless Chromium through Playwright (no browser download).
    if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
        _apt_install chromium
    fi
}
