"""Handlers for ``tests/e2e/test_notifications.py``, run by real ``jobvisor run`` subprocesses.

``waiter`` publishes ``started <job id>`` on :data:`CHANNEL` when it starts, ``finished <job id>``
when it returns and ``cancelled <job id>`` when its handler is cancelled, so a test in another
process hears each as it happens (no polling).
"""

from __future__ import annotations

import os

import redis
import trio

from jobvisor import App, JobContext

__all__ = ["CHANNEL", "app"]

CHANNEL = "test:notify-app"

app = App()


def _publish(message: str) -> None:
    client = redis.Redis.from_url(os.environ["JOBVISOR_REDIS"])
    try:
        client.publish(CHANNEL, message)
    finally:
        client.close()


@app.handler("waiter", timeout=600, max_retries=0)
async def waiter(ctx: JobContext) -> str:
    """Runs until cancelled (or for ``input["seconds"]``)."""
    _publish(f"started {ctx.job_id}")
    try:
        await trio.sleep(float(ctx.input.get("seconds", 3600)) if isinstance(ctx.input, dict) else 3600)
    except trio.Cancelled:
        _publish(f"cancelled {ctx.job_id}")
        raise
    _publish(f"finished {ctx.job_id}")
    return "done"
