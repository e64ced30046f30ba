"""Job listings (adapters/listing.py) on redis-server and the embedded store: a job that changes
state while one page is read is listed once on that page, not once per index it passed through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from jobvisor.adapters.backend import CommandCall
from jobvisor.adapters.calls import Call
from jobvisor.adapters.listing import list_jobs
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store
from tests.store_fixtures import K, Target


class _AfterFirstRead:
    """An executor that runs ``then`` once, right after the first read of ``index`` (the world
    moving between two reads of one page)."""

    def __init__(self, inner: Any, index: str, then: Callable[[], Awaitable[None]]) -> None:
        self.inner, self.index, self.then, self.done = inner, index, then, False

    async def execute(self, calls: Sequence[Call]) -> list[Any]:
        results: list[Any] = await self.inner.execute(calls)
        if not self.done and any(isinstance(c, CommandCall) and c.args[:2] == ("ZRANGE", self.index) for c in calls):
            self.done = True
            await self.then()
        return results

    def now(self) -> float:
        now: float = self.inner.now()
        return now


async def test_a_job_finishing_while_a_page_is_read_is_listed_once(target: Target, trio_store: Store) -> None:
    job = (await trio_store.submit(JobSpec(type="echo"))).id
    other = (await trio_store.submit(JobSpec(type="echo"))).id
    [claimed] = await trio_store.claim("default", "w", types=["echo"])
    assert claimed.id == job

    async def finish() -> None:  # after the active index was read, before the finished one is
        assert (await trio_store.complete(job, claimed.token, {"ok": True})).to == "completed"

    moving = Store(_AfterFirstRead(trio_store.executor, K.prefix + "active", finish))
    page = await list_jobs(moving, "default")
    assert sorted((j.id, j.state) for j in page.jobs) == sorted([(job, "completed"), (other, "queued")])
    assert page.next_cursor is None
