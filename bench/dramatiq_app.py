"""The peer of bench/noop_app.py for bench/peers.py: one no-op dramatiq actor on the Redis broker
named by ``BENCH_REDIS_URL``."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    return None
