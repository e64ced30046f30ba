"""Failover under load: what a master killed mid-run loses, with and without ``durability=replica``.

The scenario of ``tests/failover_load.py`` (jobs of 50 ms naps, 2 ``jobvisor run`` daemons;
after a quarter of the jobs ended, the master's replicas are cut off for 0.5 s, then the master
is SIGKILLed and a replica promoted), at a larger N, on a Sentinel set (1 master, 2 replicas,
3 sentinels) and on a 3-master Cluster with 2 replicas per master, each topology fresh for each
run (real processes, free loopback ports, temp dirs). RUNS runs per mode, alternated.

Printed per run and as min / median / max: lost and doubled jobs (see ``tests/failover_load.py``),
jobs ended by a watchdog, the pause (longest time with no job ending) and the time from the
SIGKILL to the promotion.

Run: .venv/bin/python bench/failover.py [N] [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.adapters.test_cluster_store import queues_on_every_master  # noqa: E402
from tests.failover_load import ClusterTopology, Figures, SentinelTopology, run_failover  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402
from tests.redis_sentinel import SentinelSet  # noqa: E402


def one(kind: str, n: int, durable: bool) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if kind == "sentinel":
            sentinels = SentinelSet(directory / "topology", replicas=2)
            try:
                sentinels.start()
                return run_failover(SentinelTopology(sentinels), directory, n, durable=durable)
            finally:
                sentinels.stop()
        cluster = RedisCluster(directory / "topology", replicas=2, node_timeout_ms=1000)
        try:
            cluster.start()
            return run_failover(ClusterTopology(cluster, queues_on_every_master(cluster)), directory, n,
                                durable=durable)
        finally:
            cluster.stop()


def spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main(n: int, runs: int) -> None:
    print(f"failover under load: N={n} jobs, 2 daemons, {runs} runs per mode (min / median / max)")
    for kind in ("sentinel", "cluster"):
        found: dict[str, list[Figures]] = {"primary only": [], "durability=replica": []}
        for _ in range(runs):
            for label, durable in (("primary only", False), ("durability=replica", True)):
                began = time.monotonic()
                figures = one(kind, n, durable)
                found[label].append(figures)
                print(f"  {kind:<8} {label:<19} lost {figures.lost:>4}  doubled {figures.doubled:>4}  "
                      f"watchdog-ended {figures.expired:>4}  repeated {figures.repeated}  "
                      f"unfinished {figures.unfinished}  pause {figures.pause:.2f} s  "
                      f"promotion {figures.promotion:.2f} s  ({time.monotonic() - began:.0f} s)", flush=True)
        for label, all_figures in found.items():
            print(f"{kind:<8} {label:<19} lost {spread([f.lost for f in all_figures], '.0f')}, "
                  f"doubled {spread([f.doubled for f in all_figures], '.0f')}, "
                  f"pause {spread([f.pause for f in all_figures], '.2f')} s, "
                  f"promotion {spread([f.promotion for f in all_figures], '.2f')} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
