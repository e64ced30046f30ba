"""Handlers for ``tests/test_webhook_restart.py``, run by real ``jobvisor run`` subprocesses.

``jobvisor run --app tests.webhook_app:app``: one job type whose handler returns at once,
so a job completes (and its ``job.completed`` outbox row is written) right after submit.
"""

from __future__ import annotations

from typing import Any

from jobvisor import App, JobContext

__all__ = ["app"]

app = App()


@app.handler("notify_me", max_retries=0)
async def notify_me(ctx: JobContext) -> dict[str, Any]:
    return {"ok": True, "job": ctx.job_id}


validated = App()
"""An app whose job type is checked by the built-in HTTP validator (``--app tests.webhook_app:validated``)."""


@validated.handler("synced", max_retries=0)
async def synced(ctx: JobContext) -> dict[str, Any]:
    return {"ok": True}


validated.http_validator("synced", "https://truth.example/jobs/{job_id}")
