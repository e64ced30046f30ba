"""Handlers for ``tests/test_daemon_signals.py``, run by real ``jobvisor run`` subprocesses.

``jobvisor run --app tests.daemon_app:app``. Every phase execution is counted
in Redis (``INCR`` of :func:`executions_key`) through a plain synchronous
client on ``$JOBVISOR_REDIS``, so a test can tell from outside the daemon
which phases ran, and how often, across daemons.

``phased`` input (all optional)::

    {"sleep": {"render": 30}, "first_attempt_only": true}

sleeps that many seconds inside each named phase; with ``first_attempt_only``
only the first attempt sleeps, so a job interrupted by a shutdown finishes
quickly when a second daemon picks it up.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import trio

from jobvisor import App, JobContext

__all__ = ["app", "PHASES", "executions_key"]

PHASES = ("fetch", "render", "publish")

app = App()


def executions_key(job_id: str, phase: str) -> str:
    """The counter of executions of ``phase`` for ``job_id`` (a Redis string)."""
    return f"test:exec:{job_id}:{phase}"


def _count_execution(job_id: str, phase: str) -> None:
    client = redis.Redis.from_url(os.environ["JOBVISOR_REDIS"])
    try:
        client.incr(executions_key(job_id, phase))
    finally:
        client.close()


def _plan(ctx: JobContext) -> dict[str, float]:
    spec: dict[str, Any] = ctx.input if isinstance(ctx.input, dict) else {}
    if spec.get("first_attempt_only") and ctx.attempt > 1:
        return {}
    return {str(k): float(v) for k, v in (spec.get("sleep") or {}).items()}


@app.handler("phased", phases=PHASES, timeout=120, max_retries=2, backoff=0.1)
async def phased(ctx: JobContext) -> dict[str, Any]:
    """Three phases; each counts its execution, then sleeps what the input says."""
    sleeps = _plan(ctx)

    async def step(name: str) -> dict[str, Any]:
        _count_execution(ctx.job_id, name)
        await trio.sleep(sleeps.get(name, 0.0))
        return {"phase": name, "attempt": ctx.attempt}

    results = {}
    for name in PHASES:
        results[name] = await ctx.phase(name, step, name)
    return results


@app.handler("sleeper", timeout=120, max_retries=0)
async def sleeper(ctx: JobContext) -> str:
    """No phases: counts its execution as phase ``run`` and sleeps ``input["seconds"]``."""
    _count_execution(ctx.job_id, "run")
    await trio.sleep(float(ctx.input.get("seconds", 3600)) if isinstance(ctx.input, dict) else 3600)
    return "slept"
