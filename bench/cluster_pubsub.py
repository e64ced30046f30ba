"""What plain pub/sub costs on a Redis Cluster: the wake and cancel channels' price.

A script's ``PUBLISH`` on a Cluster is sent to every node over the cluster bus, so a daemon
subscribed on any node hears every queue's wake and cancel. This measures, with redis-server
processes started here (free loopback ports, temp dirs): PUBLISH/s from one client in
pipelines of 100 on a single server and on a 3-master cluster (no subscriber, the worst case
for the bus: every message crosses it for nobody), and the CPU each cluster node spends per
1,000 messages (``INFO cpu``), min/median/max of RUNS runs.

Run: .venv/bin/python bench/cluster_pubsub.py [N] [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.redis_cluster import RedisCluster  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def publish_rate(client: redis.Redis, n: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, 100):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 100)):
            pipe.publish("jv:{default}:wake", str(i))
        pipe.execute()
    return n / (time.perf_counter() - t0)


def show(label: str, values: list[float], unit: str) -> None:
    print(f"  {label:<44}{min(values):>10,.1f}{statistics.median(values):>10,.1f}{max(values):>10,.1f} {unit}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        single = RedisServer(Path(tmp) / "single", appendonly=False)
        cluster = RedisCluster(Path(tmp) / "cluster")
        single.start()
        cluster.start()
        try:
            one = redis.Redis(host="127.0.0.1", port=single.port)
            nodes = cluster.clients()
            rates_single, rates_cluster, cpu_here, cpu_others = [], [], [], []
            for _ in range(runs):
                rates_single.append(publish_rate(one, n))
                before = [cpu(c) for c in nodes]
                rates_cluster.append(publish_rate(nodes[0], n))
                after = [cpu(c) for c in nodes]
                spent = [(a - b) * 1000 / n * 1000 for a, b in zip(after, before, strict=True)]  # ms per 1,000
                cpu_here.append(spent[0])
                cpu_others.append(statistics.mean(spent[1:]))
            print(f"plain PUBLISH, {n:,} messages in pipelines of 100, {runs} runs (min / median / max)")
            show("single server: PUBLISH/s", rates_single, "/s")
            show("3-master cluster: PUBLISH/s", rates_cluster, "/s")
            show("cluster, publishing node: CPU per 1,000", cpu_here, "ms")
            show("cluster, each other node: CPU per 1,000", cpu_others, "ms")
        finally:
            cluster.stop()
            single.stop()


if __name__ == "__main__":
    main()
