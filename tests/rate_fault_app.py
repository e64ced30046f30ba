"""The app of the rate-limit fault test (``tests/e2e/test_rate_limit_faults.py``): ``send``,
limited to 10 starts a second across every daemon, records each handler start and end in
Redis (``RPUSH`` of ``<job id> <daemon>`` to :data:`STARTS` and :data:`ENDS`, through a plain
synchronous client on ``$JOBVISOR_REDIS``), so the test counts from outside what ran where.

A daemon started with ``RATE_FAULT_HANG_AFTER=N`` finishes its first N jobs, then hangs in
every later handler (until it is killed): once its slots are full it claims no more, so the
jobs it holds when it is killed are exactly the ones it started and never ended.
"""

from __future__ import annotations

import os

import redis
import trio

from jobvisor import App, JobContext

__all__ = ["app", "STARTS", "ENDS", "RATE"]

STARTS = "test:rate_fault:starts"
ENDS = "test:rate_fault:ends"
RATE = 10.0  # starts a second: the type's "10/s"

app = App()


def _push(key: str, value: str) -> int:
    client = redis.Redis.from_url(os.environ["JOBVISOR_REDIS"])
    try:
        return int(client.rpush(key, value))
    finally:
        client.close()


@app.handler("send", timeout=20.0, max_retries=3, backoff=0.2, rate_limit="10/s")
async def send(ctx: JobContext) -> None:
    name = os.environ["RATE_FAULT_DAEMON"]
    _push(STARTS, f"{ctx.job_id} {name}")
    hang_after = os.environ.get("RATE_FAULT_HANG_AFTER")
    if hang_after is not None:
        client = redis.Redis.from_url(os.environ["JOBVISOR_REDIS"])
        try:
            mine = int(client.incr(f"test:rate_fault:started:{name}"))
        finally:
            client.close()
        if mine > int(hang_after):
            await trio.sleep_forever()  # held until the daemon is killed
    await trio.sleep(0.05)  # some work
    _push(ENDS, f"{ctx.job_id} {name}")
