"""The async client under asyncio and trio, and ``Client.wait``, against a real redis-server and
a real ``jobvisor run`` daemon: submit, wait for the terminal view (the queue's event stream,
no polling), cancel, an already-finished job answered at once, and a wait that times out."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import trio

from jobvisor import AsyncClient, Client
from jobvisor.adapters.errors import StoreError, WaitTimeout
from tests.daemon_app import app
from tests.daemon_process import daemon, terminal_events


async def scenario(url: str) -> dict[str, Any]:
    """Everything the async client promises, in whichever loop runs it; returns what it saw."""
    seen: dict[str, Any] = {}
    async with AsyncClient.open(url, app=app) as client:
        job = await client.submit("phased", {})
        done = await client.wait(job, timeout=30)
        seen["done"] = (done.id == job, done.state, done.phase_results.get("publish") is not None)
        # Already finished: answered from the one read that follows the position (timeout 0
        # allows no blocking read at all, so a wait that needed one would raise).
        seen["again"] = (await client.wait(job, timeout=0)).state

        # Many at once over the one client: each wait wakes on its own job's terminal event.
        many = [await client.submit("phased", {}) for _ in range(12)]
        views: list[Any] = [None] * len(many)
        async with anyio.create_task_group() as group:
            for i, job_id in enumerate(many):
                async def one(i: int = i, job_id: str = job_id) -> None:
                    views[i] = await client.wait(job_id, timeout=30)
                group.start_soon(one)
        seen["many"] = sorted({v.state for v in views}), len(views)

        # A job no daemon serves (its queue has none): the wait times out with our error...
        idle = await client.submit("phased", {}, queue="idle")
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as caught:
            await client.wait(idle, timeout=0.3)
        seen["timeout"] = (isinstance(caught.value, TimeoutError), caught.value.state,
                           time.monotonic() - started >= 0.3)
        # ... and a wait under way wakes when the queued job is cancelled.
        cancelled: list[Any] = []
        async with anyio.create_task_group() as group:
            async def waiter() -> None:
                cancelled.append(await client.wait(idle, timeout=30))
            group.start_soon(waiter)
            seen["cancel"] = (await client.cancel(idle)).kind
        seen["cancelled"] = cancelled[0].state
    return seen


EXPECTED = {
    "done": (True, "completed", True),
    "again": "completed",
    "many": (["completed"], 12),
    "timeout": (True, "queued", True),
    "cancel": "moved",
    "cancelled": "cancelled",
}


def test_async_client_under_asyncio_run(redis_url: str, tmp_path: Path) -> None:
    with daemon(redis_url, tmp_path, "asyncio-d"):
        assert asyncio.run(scenario(redis_url)) == EXPECTED
        # The blocking client: the same wait, against the same daemon.
        with Client(redis_url, app=app) as client:
            job = client.submit("phased", {})
            assert client.wait(job, timeout=30).state == "completed"
            assert client.wait(job, timeout=0).state == "completed"
    assert terminal_events(redis_url, job) == ["job.completed"]


def test_async_client_under_trio(redis_url: str, tmp_path: Path) -> None:
    with daemon(redis_url, tmp_path, "trio-d"):
        assert trio.run(scenario, redis_url) == EXPECTED


def blocking_wait(url: str, job_id: str) -> Any:
    with Client(url) as client:
        return client.wait(job_id, timeout=30)


def _calls(url: str, command: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    finally:
        client.close()


def test_client_wait_reads_the_job_once_and_wakes_on_its_cancel(redis_url: str) -> None:
    """No daemon: the job stays queued. A wait that times out read the job exactly once (no
    polling); a wait under way in another thread returns the view once the job is cancelled."""
    with Client(redis_url, app=app) as client:
        job = client.submit("phased", {})
        before = _calls(redis_url, "hgetall")
        with pytest.raises(WaitTimeout, match=r"is still queued after 0\.5 s"):
            client.wait(job, timeout=0.5)
        assert _calls(redis_url, "hgetall") - before == 1

        answers: list[Any] = []
        thread = threading.Thread(target=lambda: answers.append(blocking_wait(redis_url, job)))
        thread.start()
        assert client.cancel(job).kind == "moved"
        thread.join(30)
        assert [v.state for v in answers] == ["cancelled"]
        assert client.wait(job, timeout=0).state == "cancelled"


def test_the_embedded_store_submits_and_cancels_under_asyncio_but_refuses_wait() -> None:
    async def main() -> tuple[str, str]:
        async with AsyncClient.open("memory://asyncio-client", app=app) as client:
            job = await client.submit("phased", {})
            outcome = (await client.cancel(job)).kind
            with pytest.raises(StoreError, match="wait needs redis-server"):
                await client.wait(job, timeout=1)
            return outcome, (await client.status(job)).state

    assert asyncio.run(main()) == ("moved", "cancelled")


def test_the_readmes_asyncio_example_runs_as_printed(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [code] = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "AsyncClient.open" in block]
    assert code.count("redis://127.0.0.1:6379/0") == 1
    exec(compile(code.replace("redis://127.0.0.1:6379/0", redis_url), "README.md", "exec"), {})  # noqa: S102
    assert capsys.readouterr().out.splitlines() == ["cancelled"]


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_waits_wake_on_a_cancel_under_asyncio_on_one_server_and_a_cluster(
        where: str, request: pytest.FixtureRequest) -> None:
    """No daemon: queued jobs on three queues (three slots); a wait per job, the async client's
    and ``Client.wait`` in a thread, each returns the cancelled view once its job is cancelled."""
    url = request.getfixturevalue(f"{where}_url")

    async def main() -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
        async with AsyncClient.open(url, app=app) as client:
            jobs = [await client.submit("phased", {}, queue=q) for q in ("q1", "q2", "q3")]
            out: list[tuple[str, str]] = []
            blocking: list[Any] = []
            async with anyio.create_task_group() as group:
                for job_id in jobs:
                    async def one(job_id: str = job_id) -> None:
                        view = await client.wait(job_id, timeout=30)
                        out.append((view.id, view.state))
                    group.start_soon(one)
                group.start_soon(anyio.to_thread.run_sync, lambda: blocking.append(blocking_wait(url, jobs[0])))
                for job_id in jobs:
                    assert (await client.cancel(job_id)).kind == "moved"
            return jobs, sorted(out), [(v.id, v.state) for v in blocking]

    jobs, waited, blocked = asyncio.run(main())
    assert waited == sorted((job_id, "cancelled") for job_id in jobs)
    assert blocked == [(jobs[0], "cancelled")]
