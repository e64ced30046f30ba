"""A plain asyncio producer: it submits jobs, then waits for each to end, with no thread and no polling.

A FastAPI or aiohttp service does the same from its handlers: open one client for the life
of the application (``async with AsyncClient.open(url)``), ``submit``, and ``wait`` where a
request should answer with the job's outcome. The job types come from what the running
daemons published, so the producer imports none of the workers' code::

    jobvisor run --redis redis://127.0.0.1:6379/0 --app examples.app:app &
    python -m examples.asyncio_producer redis://127.0.0.1:6379/0

prints one line per job: its id, its terminal state and its result.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from jobvisor import AsyncClient


async def produce(url: str, inputs: list[Any], *, seconds: float = 30.0) -> list[dict[str, Any]]:
    """Submit one ``echo`` job per input, wait for all of them at once
    (each at most ``seconds``), and return their outcomes."""
    async with AsyncClient.open(url) as client:
        ids = [await client.submit("echo", value) for value in inputs]
        views = await asyncio.gather(*(client.wait(job_id, timeout=seconds) for job_id in ids))
    return [{"id": v.id, "state": v.state, "result": v.result} for v in views]


def main(argv: list[str]) -> int:
    url = argv[0] if argv else os.environ.get("JOBVISOR_REDIS", "redis://127.0.0.1:6379/0")
    for outcome in asyncio.run(produce(url, [{"n": n} for n in range(3)])):
        print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
