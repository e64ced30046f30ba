"""Claim throughput with mixed job types, against a real redis-server started here.

A queue holds N jobs of 4 types (round robin, priorities mixed); one client claims them
back to back (the store over a direct executor: one FCALL per claim, as a daemon's claim
loop makes), ``n`` jobs per claim. Scenarios:

* ``4 of 4``: the daemon serves every type (it claims all N);
* ``2 of 4``: it serves 2 of the 4 types (it claims N/2; the others stay queued);
* ``1 type``: every job of one type (the simplest queue).

Jobs claimed per second, min / median / max of ``--runs`` runs. With ``--baseline DIR``
(a checkout of an earlier version, outside this tree) the same measurement runs on that
version's code in the same run, interleaved run by run with this one, on the same server;
a version whose claim takes no types claims every type (it has no other way).

Run: .venv/bin/python bench/claim_routing.py [--jobs N] [--runs R] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
TYPES = ("resize", "thumb", "ocr", "mail")
SCENARIOS = (("4 of 4", TYPES, TYPES), ("2 of 4", TYPES, TYPES[:2]), ("1 type", TYPES[:1], TYPES[:1]))
BATCHES = (1, 16)


def measure(url: str, jobs: int) -> dict[str, float]:
    """In a child process whose ``sys.path`` starts at the code under test: jobs claimed/s
    per scenario and claim size."""
    import redis

    from adapters.backend import open_backend
    from adapters.records import JobSpec
    from adapters.store import SyncStore

    client = redis.Redis.from_url(url)
    store = SyncStore(open_backend(url))
    typed = "types" in inspect.signature(store.store.claim).parameters
    out: dict[str, float] = {}
    for name, present, served in SCENARIOS:
        for n in BATCHES:
            client.flushdb()
            specs = [JobSpec(type=present[i % len(present)], priority=(i * 7) % 3, input={"i": i})
                     for i in range(jobs)]
            for i in range(0, jobs, 1000):
                store.submit_many(specs[i:i + 1000])
            extra = {"types": list(served)} if typed else {}
            want = jobs * len(served) // len(present) if typed else jobs
            claimed = 0
            t0 = time.perf_counter()
            while claimed < want:
                got = store.claim("default", "bench", n=n, lease=600, **extra)
                if not got:
                    raise SystemExit(f"{name}: the queue ran dry after {claimed} of {want}")
                claimed += len(got)
            out[f"{name}|{n}"] = claimed / (time.perf_counter() - t0)
    store.close()
    client.close()
    return out


def child(root: Path, url: str, jobs: int) -> dict[str, float]:
    code = (f"import sys, json; sys.path.insert(0, {str(root)!r}); sys.path.insert(1, {str(HERE / 'bench')!r});"
            f"import adapters; assert adapters.__file__.startswith({str(root)!r}), adapters.__file__;"
            f"import claim_routing as b; print(json.dumps(b.measure({url!r}, {jobs})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {root} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier version, to measure alongside")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from tests.redis_server import RedisServer

    versions = {"this": HERE} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    results: dict[str, list[dict[str, float]]] = {v: [] for v in versions}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            print(f"redis-server on {server.url}; {args.jobs} jobs per scenario; {args.runs} runs\n")
            for run in range(args.runs):
                for version, root in versions.items():  # interleaved: both see the same load
                    results[version].append(child(root, server.url, args.jobs))
                    print(f"  run {run + 1} {version} done", file=sys.stderr)
        finally:
            server.stop()
    header = f"{'jobs claimed/s':<22}{'n':>4}" + "".join(f"{v + ' min/median/max':>32}" for v in versions)
    print(header + ("    median ratio" if "baseline" in versions else ""))
    for name, _, _ in SCENARIOS:
        for n in BATCHES:
            key = f"{name}|{n}"
            cells, medians = [], {}
            for version in versions:
                xs = [r[key] for r in results[version]]
                medians[version] = statistics.median(xs)
                cells.append(f"{min(xs):>10,.0f} /{medians[version]:>8,.0f} /{max(xs):>8,.0f}")
            line = f"{name:<22}{n:>4}" + "".join(f"{c:>32}" for c in cells)
            if "baseline" in versions:
                line += f"{medians['this'] / medians['baseline']:>14.2f}x"
            print(line)
    if "baseline" in versions:
        print("\n(baseline: its claim takes no types, so in \"2 of 4\" it claims every type: the cost of"
              " today's claim on the same queue)")


if __name__ == "__main__":
    main()
