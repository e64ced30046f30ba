"""Cold start of a light command: ``jobvisor status <id> --redis URL``, wall time per process.

A real redis-server is started here (free loopback port, temp dir) with one job in it. Each
run is a new interpreter, as a user's shell starts it; the figures are min/median/max of the
runs, next to ``python -c pass`` (the interpreter alone) and their ratio, and next to importing
the synchronous store alone (what the command cannot start without).

Byte-code: an installed user has ``.pyc`` files (pip compiles them at install). This machine's
environment sets PYTHONDONTWRITEBYTECODE, which would make every run compile the project
again; so it is unset for these runs, and the project and its dependencies are compiled
first (``compileall``, then one untimed run). The output says so.

Run: .venv/bin/python bench/cli_startup.py [RUNS]   (default 9; at least 5)
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.records import JobSpec  # noqa: E402
from jobvisor.adapters.store import SyncStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 0.3  # seconds: issue 16's target for `jobvisor status`


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = subprocess.run(argv, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:4])}... exited {result.returncode}: {result.stderr.strip()}")
    return times


def summary(times: list[float]) -> str:
    return f"min {min(times):.3f} s  median {statistics.median(times):.3f} s  max {max(times):.3f} s"


def main() -> None:
    runs = max(5, int(sys.argv[1]) if len(sys.argv) > 1 else 9)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JOBVISOR_") and k != "PYTHONDONTWRITEBYTECODE"}
    for room in ("jobvisor", "machines", "adapters", "supervisor"):
        compileall.compile_dir(str(ROOT / room), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            with SyncStore(open_backend(server.url)) as store:
                job_id = store.submit(JobSpec(type="bench")).id
            status = [sys.executable, "-m", "jobvisor", "status", job_id, "--redis", server.url]
            timed(status, env, 1)  # untimed: writes what compileall left (dependencies) to the cache
            bare = timed([sys.executable, "-c", "pass"], env, runs)
            store = timed([sys.executable, "-c", "import jobvisor.adapters.store"], env, runs)
            cli = timed(status, env, runs)
        finally:
            server.stop()
    print(f"jobvisor status <id> --redis URL, {runs} runs each, new interpreter per run; byte-code compiled "
          "first and PYTHONDONTWRITEBYTECODE unset (as installed)")
    print(f"  python -c pass         {summary(bare)}")
    print(f"  import the store alone {summary(store)}")
    print(f"  jobvisor status        {summary(cli)}")
    ratio = statistics.median(cli) / statistics.median(bare)
    verdict = "within" if statistics.median(cli) <= BUDGET else "over"
    print(f"  ratio of medians       {ratio:.1f}x the bare interpreter; "
          f"median {verdict} the {BUDGET} s budget")


if __name__ == "__main__":
    main()
