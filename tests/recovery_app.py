"""Handlers and status queries for the recovery tests, run by real ``jobvisor run`` subprocesses.

``jobvisor run --app tests.recovery_app:app``. Every handler execution is counted in
Redis (``RPUSH`` of the daemon's pid to :func:`executions_key`), so a test sees from
outside how often, and where, a handler ran. ``$TEST_SERVICE_URL`` is the loopback
:class:`tests.external_service.ExternalService` of the test.

* ``external``: hands the job to the external service, records the service job id, then
  polls the service until it says completed (returns its result) or failed (raises);
  its status query asks the service.
* ``plain``: sleeps ``input["seconds"]`` (a list: by attempt; only on attempt 1 with
  ``first_attempt_only``) and returns the attempt number; no status query.
* ``shielded``: the same, but its sleep is shielded: cancelled, it still finishes and
  returns (so a late success is reported and must be fenced out).
* ``stuck``: blocks in a thread that cannot be interrupted (``time.sleep``).
* ``chaos`` and ``chaos_svc``: no-op-ish handlers for the chaos test (sleep a few
  milliseconds); ``chaos_svc`` also records a service job id and, before returning,
  its result where its status query (Redis-backed) finds it.
"""

from __future__ import annotations

import functools
import json
import os
import random
import time
from typing import Any

import httpx
import redis
import trio

from jobvisor import App, JobContext, ServiceStatus, StatusAnswer

__all__ = ["app", "executions_key"]

app = App()


def executions_key(job_id: str) -> str:
    """The list of executions of ``job_id``'s handler: one daemon pid per execution."""
    return f"test:exec:{job_id}"


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["JOBVISOR_REDIS"])


async def _count_execution(job_id: str) -> None:
    await trio.to_thread.run_sync(_redis().rpush, executions_key(job_id), os.getpid())


def _service() -> str:
    return os.environ["TEST_SERVICE_URL"]


# -- external ----------------------------------------------------------------------------------


@app.handler("external", timeout=60, max_retries=2, backoff=0.1)
async def external(ctx: JobContext) -> Any:
    await _count_execution(ctx.job_id)
    async with httpx.AsyncClient(base_url=_service(), timeout=5) as client:
        created = (await client.post("/jobs", json={"job": ctx.job_id})).json()
        await ctx.record_service_job_id(created["id"])
        while True:
            answer = (await client.get(f"/jobs/{created['id']}")).json()
            if answer["status"] == "completed":
                return answer["result"]
            if answer["status"] == "failed":
                raise RuntimeError(f"the service failed job {created['id']}")
            await trio.sleep(0.05)


@app.status_query("external")
async def ask_external(service_job_id: str) -> StatusAnswer:
    async with httpx.AsyncClient(base_url=_service(), timeout=30) as client:
        response = await client.get(f"/jobs/{service_job_id}")
        response.raise_for_status()
        answer = response.json()
    return StatusAnswer(status=ServiceStatus(answer["status"]), result=answer.get("result"))


# -- plain, shielded, stuck ----------------------------------------------------------------------


def _seconds(ctx: JobContext) -> float:
    """``input["seconds"]``: a number, or a list by attempt (attempts past its end: 0)."""
    spec: dict[str, Any] = ctx.input if isinstance(ctx.input, dict) else {}
    seconds = spec.get("seconds", 0.0)
    if isinstance(seconds, list):
        return float(seconds[ctx.attempt - 1]) if ctx.attempt <= len(seconds) else 0.0
    if spec.get("first_attempt_only") and ctx.attempt > 1:
        return 0.0
    return float(seconds)


@app.handler("plain", timeout=60, max_retries=2, backoff=0.1)
async def plain(ctx: JobContext) -> dict[str, Any]:
    await _count_execution(ctx.job_id)
    await trio.sleep(_seconds(ctx))
    return {"attempt": ctx.attempt}


@app.handler("shielded", timeout=60, max_retries=2, backoff=0.1)
async def shielded(ctx: JobContext) -> dict[str, Any]:
    await _count_execution(ctx.job_id)
    with trio.CancelScope(shield=True):
        await trio.sleep(_seconds(ctx))
    return {"attempt": ctx.attempt}


@app.handler("stuck", timeout=0.5, max_retries=0)
async def stuck(ctx: JobContext) -> str:
    await _count_execution(ctx.job_id)
    await trio.to_thread.run_sync(time.sleep, _seconds(ctx))
    return "unstuck"


# -- chaos -----------------------------------------------------------------------------------------


async def _chaos_sleep(ctx: JobContext) -> None:
    low, high = ctx.input.get("sleep_ms", (5, 50)) if isinstance(ctx.input, dict) else (5, 50)
    await trio.sleep(random.uniform(low, high) / 1000)


@app.handler("chaos", timeout=30, max_retries=6, backoff=0.05, backoff_max=0.2)
async def chaos(ctx: JobContext) -> dict[str, Any]:
    await _count_execution(ctx.job_id)
    await _chaos_sleep(ctx)
    return {"n": ctx.input.get("n") if isinstance(ctx.input, dict) else None}


def _svc_key(service_job_id: str) -> str:
    return f"test:svc:{service_job_id}"


@app.handler("chaos_svc", timeout=30, max_retries=6, backoff=0.05, backoff_max=0.2)
async def chaos_svc(ctx: JobContext) -> dict[str, Any]:
    await _count_execution(ctx.job_id)
    service_job_id = f"{ctx.job_id}~{ctx.attempt}"
    await ctx.record_service_job_id(service_job_id)
    await _chaos_sleep(ctx)
    result = {"n": ctx.input.get("n") if isinstance(ctx.input, dict) else None, "by": "service"}
    await trio.to_thread.run_sync(_redis().set, _svc_key(service_job_id), json.dumps(result))
    return result


@app.status_query("chaos_svc")
async def ask_chaos_svc(service_job_id: str) -> StatusAnswer:
    raw = await trio.to_thread.run_sync(_redis().get, _svc_key(service_job_id))
    if raw is None:
        return StatusAnswer(status=ServiceStatus.FAILED)  # the work died with its worker
    return StatusAnswer(status=ServiceStatus.COMPLETED, result=json.loads(raw))
