"""Handlers that misbehave on purpose, for ``tests/test_handler_isolation.py``.

Module level, so process-isolated ones can be sent to a child process by reference, and
``jobvisor run --app tests.isolation_app:app`` can serve them from a subprocess. Every
execution is counted in Redis (``INCR test:runs:<job id>`` on ``$JOBVISOR_REDIS``), so a
test sees from outside how often a job ran, in any daemon or child process. The URL comes
from the job's input (``{"redis": url}``), else ``$JOBVISOR_REDIS``: a child process's
environment is its fork server's, which may predate the test.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
import trio

from jobvisor import App, JobContext
from jobvisor.supervisor.app import ProcessContext, SyncJobContext

__all__ = ["app", "runs_key", "pid_key"]

app = App()


def runs_key(job_id: str) -> str:
    return f"test:runs:{job_id}"


def pid_key(job_id: str) -> str:
    return f"test:pid:{job_id}"


def _count(ctx: Any, pid: bool = False) -> None:
    job_id = ctx.job_id
    url = (ctx.input.get("redis") if isinstance(ctx.input, dict) else None) or os.environ.get("JOBVISOR_REDIS")
    if not url:
        return
    client = redis.Redis.from_url(url)
    try:
        client.incr(runs_key(job_id))
        client.incr(f"{runs_key(job_id)}:{ctx.attempt}")
        if pid:
            client.set(pid_key(job_id), os.getpid())
    finally:
        client.close()


@app.handler("echo", max_retries=0, timeout=30)
async def echo(ctx: JobContext) -> Any:
    _count(ctx)
    return ctx.input


@app.handler("block_loop", max_retries=3, timeout=60, backoff=0.1)
async def block_loop(ctx: JobContext) -> dict[str, Any]:
    """Blocks the event loop (``time.sleep`` in an async def) on its first attempt only."""
    _count(ctx)
    if ctx.attempt == 1:
        time.sleep(float(ctx.input["block"]))  # noqa: ASYNC251 - blocking the loop is the point
    return {"attempt": ctx.attempt}


@app.handler("sync_echo", max_retries=0, timeout=30)
def sync_echo(ctx: SyncJobContext) -> Any:
    _count(ctx)
    time.sleep(0.01)
    return {"echo": ctx.input, "type": ctx.type}


@app.handler("cpu_spin", isolation="process", max_retries=0, timeout=2)
def cpu_spin(ctx: ProcessContext) -> None:
    """Never yields, never returns: only a kill ends it."""
    _count(ctx, pid=True)
    x = 0
    while True:
        x += 1


@app.handler("exits", isolation="process", max_retries=0, timeout=30)
def exits(ctx: ProcessContext) -> None:
    _count(ctx, pid=True)
    os._exit(3)


@app.handler("process_echo", isolation="process", max_retries=0, timeout=30)
def process_echo(ctx: ProcessContext) -> Any:
    _count(ctx, pid=True)
    return {"echo": ctx.input, "pid": os.getpid()}


@app.handler("process_noop", isolation="process", max_retries=0, timeout=30)
def process_noop(ctx: ProcessContext) -> None:
    return None


@app.handler("thread_noop", max_retries=0, timeout=30)
def thread_noop(ctx: SyncJobContext) -> None:
    return None


@app.handler("loop_noop", max_retries=0, timeout=30)
async def loop_noop(ctx: JobContext) -> None:
    return None


@app.handler("gate", max_retries=0, timeout=30)
async def gate(ctx: JobContext) -> str:
    await trio.sleep(float(ctx.input.get("sleep", 0)))
    return "ok"
