"""The cost of tracing: end-to-end jobs/s with OpenTelemetry off and on, in one run.

Off: no tracer provider (the API's no-op spans; nothing stored with the job). On: the SDK with
an exporter that drops every span (bench/traced_app.py), in the submitting process and in the
daemon, so each job stores a trace context and makes its submit, claim and attempt spans.
N no-op jobs are submitted one at a time through :class:`jobvisor.Client` (a span per submit)
by one process while one ``jobvisor run`` (64 slots) runs them; from the first submit to the
last job finished. Runs alternate off/on; min/median/max of each.

Run: .venv/bin/python bench/tracing.py [N] [RUNS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobvisor.adapters.backend import open_backend  # noqa: E402
from jobvisor.adapters.keys import Keys  # noqa: E402
from jobvisor.adapters.store import SyncStore  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SUBMITTER = """
import sys, time
if sys.argv[3] == "on":
    import bench.traced_app  # noqa: F401  (installs the tracer provider)
    from opentelemetry import trace
    tracer = trace.get_tracer("bench")
from jobvisor import Client
n = int(sys.argv[2])
with Client(sys.argv[1]) as client:
    for _ in range(n):
        if sys.argv[3] == "on":
            with tracer.start_as_current_span("request"):
                client.submit("noop")
        else:
            client.submit("noop")
"""


def run(url: str, n: int, mode: str) -> float:
    store = SyncStore(open_backend(url))
    raw = store.backend.client
    raw.flushall()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app = "bench.traced_app:app" if mode == "on" else "bench.noop_app:app"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "jobvisor", "run", "--redis", url, "--app", app, "--concurrency", "64",
         "--worker-id", "bench", "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        end = time.monotonic() + 30
        while not raw.hexists("jv:types", "noop"):
            if time.monotonic() > end:
                raise RuntimeError("daemon did not start")
            time.sleep(0.05)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", SUBMITTER, url, str(n), mode], cwd=ROOT, env=env, check=True)
        while raw.zcard(Keys("default").finished) < n:
            time.sleep(0.005)
        return n / (time.perf_counter() - t0)
    finally:
        daemon.terminate()
        daemon.wait(20)
        store.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    figures: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            for _ in range(runs):
                for mode in ("off", "on"):
                    figures[mode].append(run(server.url, n, mode))
        finally:
            server.stop()
    for mode, values in figures.items():
        print(f"tracing {mode:>3}: {min(values):,.0f} / {statistics.median(values):,.0f} / "
              f"{max(values):,.0f} jobs/s (min / median / max of {runs}, {n} jobs each)")
    ratio = statistics.median(figures["on"]) / statistics.median(figures["off"])
    print(f"on / off (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
