"""Handlers for the Redis-weather tests, run by real ``jobvisor run`` subprocesses.

``jobvisor run --app tests.weather_app:app``. Every handler execution is recorded *outside*
Redis (Redis is the thing that goes away): one line, the daemon's pid, appended to the file
``$TEST_EXEC_DIR/<job id>``. A test counts the lines: 1 per job, or the job ran twice.

* ``once``: ``max_retries=0`` (a lost report would fail it as ``worker_lost``);
* ``again``: ``max_retries=3`` (a lost report would run it again).

Both sleep ``input["seconds"]`` and return the attempt number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from jobvisor import App, JobContext

__all__ = ["app", "executions"]

app = App()


def executions(directory: Path, job_id: str) -> int:
    path = directory / job_id
    return len(path.read_text().split()) if path.exists() else 0


def _record(job_id: str) -> None:
    with open(Path(os.environ["TEST_EXEC_DIR"]) / job_id, "a") as record:
        record.write(f"{os.getpid()}\n")


async def _run(ctx: JobContext) -> Any:
    _record(ctx.job_id)
    seconds = ctx.input.get("seconds", 0) if isinstance(ctx.input, dict) else 0
    await trio.sleep(float(seconds))
    return {"attempt": ctx.attempt}


@app.handler("once", timeout=120, max_retries=0)
async def once(ctx: JobContext) -> Any:
    return await _run(ctx)


@app.handler("again", timeout=120, max_retries=3, backoff=0.1)
async def again(ctx: JobContext) -> Any:
    return await _run(ctx)
