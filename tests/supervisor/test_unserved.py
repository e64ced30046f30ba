"""Jobs waiting for a type no live daemon serves: never filed, gauged, in virtual time.

The evaluator and the metrics over the embedded store called inline (MockClock,
autojump), as in ``tests/test_hygiene_actors.py``: a queued job of a type nobody serves
is not finished, so no pass files it, however many pass; the
``jobvisor_unserved_jobs{queue,type}`` gauge counts it, and drops the pair once a live
daemon of the queue serves the type.
"""

from __future__ import annotations

import trio
import trio.testing

from jobvisor.adapters.records import JobSpec
from jobvisor.supervisor.evaluator import run_evaluator
from tests.hygiene_support import DAY, actors, filed, finish, until

Q = "default"


async def test_waiting_jobs_are_never_filed_and_the_gauge_follows_the_registry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actors(run=(run_evaluator,), evaluator_interval=600) as (deps, watcher, timeline):
        store, sample = deps.store, deps.metrics.registry.get_sample_value
        done = await finish(deps, "failed")  # one finished job, to see the passes file something
        waiting = [(await store.submit(JobSpec(type="B", max_retries=0))).id for _ in range(3)]
        other = (await store.submit(JobSpec(type="A"))).id
        await until(watcher, filed(timeline, done))
        await trio.sleep(10 * 600)  # ten more passes
        assert set(timeline.times("filed")) == {done}
        for job in [*waiting, other]:
            view = await store.get_job(job)
            assert (view.state, view.attempts, view.retry_count, view.category) == ("queued", 0, 0, None)
        assert (await store.filing_counts(Q))[0] == {("filed", "retries_exhausted"): 1}
        assert sample("jobvisor_unserved_jobs", {"queue": Q, "type": "B"}) == 3
        assert sample("jobvisor_unserved_jobs", {"queue": Q, "type": "A"}) == 1

        # a daemon of this queue that serves B registers: B is served, A still waits
        await store.heartbeat("new", {"queues": Q, "types": "B,C"}, ttl=DAY, start=True)
        await trio.sleep(601)  # the next pass (they fall on multiples of 600 from the start)
        assert sample("jobvisor_unserved_jobs", {"queue": Q, "type": "B"}) is None
        assert sample("jobvisor_unserved_jobs", {"queue": Q, "type": "A"}) == 1

        # a scrape reads them too: a daemon of another queue serving A changes nothing
        await store.heartbeat("elsewhere", {"queues": "other", "types": "A"}, ttl=DAY, start=True)
        assert await deps.metrics.refresh(store, deps.queues)
        assert sample("jobvisor_unserved_jobs", {"queue": Q, "type": "A"}) == 1
        await store.worker_stopped("new")
        assert await deps.metrics.refresh(store, deps.queues)
        assert sample("jobvisor_unserved_jobs", {"queue": Q, "type": "B"}) == 3
