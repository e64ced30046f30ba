"""The app of the re-drive fault test (``tests/e2e/test_redrive_faults.py``): ``report``
requires the output ``total`` and re-runs a job filed ``missing_output`` once, :data:`DELAY`
seconds after its filing. Each run is recorded in Redis (``RPUSH`` of the job id to
:data:`RUNS`, through a plain synchronous client on ``$JOBVISOR_REDIS``); the first run
returns no ``total`` (so it is filed ``missing_output``), every later one returns it.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from jobvisor import App, JobContext, Redrive

__all__ = ["app", "RUNS", "DELAY"]

RUNS = "test:redrive_fault:runs"
DELAY = 2.0  # seconds from the filing to the re-run

app = App()


@app.handler("report", required_outputs=["total"], timeout=10.0, max_retries=0,
             redrive=Redrive(missing_output=1, delay=DELAY))
async def report(ctx: JobContext) -> dict[str, Any]:
    client = redis.Redis.from_url(os.environ["JOBVISOR_REDIS"])
    try:
        runs = int(client.rpush(RUNS, ctx.job_id))
    finally:
        client.close()
    return {} if runs == 1 else {"total": runs}
