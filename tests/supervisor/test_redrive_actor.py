"""Re-drive end to end in one process: the webhook deliverer, the evaluator and the re-drive
actor over the embedded store (called inline) under trio's MockClock; the receiver is the
deliverer tests' ``httpx.MockTransport`` receiver, so virtual time is exact. A job whose
``job.completed`` webhook went dead is filed ``notification_failed`` and redelivered (the same
``webhook-id``, signed) ``delay`` after its filing, to a receiver now healthy; against a receiver
that stays down it is re-driven exactly the policy's cap, then left filed. Two daemons' actors
over the same store perform each re-drive once. A bad declaration is refused in one line."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from standardwebhooks.webhooks import Webhook

from jobvisor import App, JobContext, Redrive
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.http import HttpClient
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Redriven
from jobvisor.adapters.store import DirectExecutor, Store
from jobvisor.supervisor.config import load_config
from jobvisor.supervisor.deps import Deps, TrioWallClock
from jobvisor.supervisor.evaluator import run_evaluator
from jobvisor.supervisor.hub import Hub
from jobvisor.supervisor.metrics import Metrics
from jobvisor.supervisor.redrive import run_redrive
from jobvisor.supervisor.webhooks import Deliverer
from tests.harness import Watcher
from tests.supervisor.test_webhooks import SECRET, URL, Receiver, _utc, statuses

DELAY = 600.0
INTERVAL = 60.0  # the evaluator's pass


def report_app(**policy: Any) -> App:
    app = App()

    @app.handler("report", redrive=Redrive(**policy))
    async def report(ctx: JobContext) -> dict[str, Any]:
        return {"ok": True}

    return app


@asynccontextmanager
async def world(
    app: App, *codes: int, daemons: int = 1
) -> AsyncIterator[tuple[Store, Watcher, Receiver, TrioWallClock]]:
    """``daemons`` daemons' deliverer, evaluator and re-drive actor over one embedded store; the
    receiver answers ``codes`` in turn (the last one from then on). Two attempts per delivery."""
    memory = MemoryServers()
    config = load_config({"redis": "memory://redrive", "webhook_secret": SECRET, "webhook_attempts": 2,
                          "webhook_backoff": 1.0, "evaluator_interval": INTERVAL, "idle_poll": 30.0},
                         environ={})
    clock = TrioWallClock(epoch=1_750_000_000.0)
    watcher, receiver = Watcher(), Receiver(statuses(*codes))
    clients = []
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(daemons):
            hub = Hub()
            store = Store(DirectExecutor(open_backend(config.redis, memory=memory), clock),
                          observers=[hub.observe, watcher])
            deps = Deps(store=store, app=app, config=config, hub=hub, metrics=Metrics(), clock=clock)
            http = HttpClient(transport=httpx.MockTransport(receiver), clock=clock)
            clients.append(http)
            await nursery.start(Deliverer(deps, http, rng=random.Random(7)).run, stop)
            await nursery.start(partial(run_evaluator, deps), stop)
            await nursery.start(partial(run_redrive, deps), stop)
        try:
            yield store, watcher, receiver, clock
        finally:
            stop.set()
            for http in clients:
                await http.aclose()


async def completed_job(store: Store) -> str:
    """A ``report`` job completed now (its ``job.completed`` webhook in the outbox)."""
    job = (await store.submit(JobSpec(type="report", webhook_url=URL))).id
    [claimed] = await store.claim("default", "w1")
    await store.complete(job, claimed.token, {"ok": True})
    return job


def wall(clock: TrioWallClock, at: float) -> float:
    """The daemons' epoch time at trio time ``at``."""
    return clock() - (trio.current_time() - at)


def redriven(watcher: Watcher) -> list[Redriven]:
    return [r for r in watcher.replies if isinstance(r, Redriven)]


async def test_a_dead_webhook_is_redelivered_after_the_delay_to_a_receiver_now_healthy(
        autojump_clock: trio.testing.MockClock) -> None:
    async with world(report_app(notification_failed=2, delay=DELAY), 500, 500, 200) as (
            store, watcher, receiver, clock):
        job = await completed_job(store)
        did = f"{job}~job.completed~0"
        await watcher.until(lambda: any(r.to == "delivered" for r in watcher.moves if r.id == did), timeout=3600)
        view = await store.get_job(job)
        filed_at = view.filed_at
        # redelivered as soon as the delay since filing has passed (the actor sleeps until the
        # index's next due time, learnt at its first look after the filing)
        assert wall(clock, receiver.seen[2].at) - (filed_at or 0) == pytest.approx(DELAY, abs=0.01)
        await trio.sleep(10 * DELAY)  # nothing more happens
    assert filed_at is not None
    assert (view.category, view.problem, view.redrives, view.notification) == (
        "filed", "notification_failed", {"notification_failed": 1}, "delivered")
    assert [(r.id, r.count, r.delivery) for r in redriven(watcher)] == [(job, 1, did)]
    assert len(receiver.seen) == 3
    assert {s.headers["webhook-id"] for s in receiver.seen} == {did}
    assert len({s.body for s in receiver.seen}) == 1
    last = receiver.seen[2]
    wh = Webhook(SECRET)
    stamp = last.headers["webhook-timestamp"]
    assert last.headers["webhook-signature"] == wh.sign(did, _utc(int(stamp)), last.body.decode())


async def test_a_receiver_that_stays_down_is_redriven_the_cap_then_left_filed(
        autojump_clock: trio.testing.MockClock) -> None:
    async with world(report_app(notification_failed=2, delay=DELAY), 500, daemons=2) as (
            store, watcher, receiver, _):
        job = await completed_job(store)
        await watcher.until(lambda: len(redriven(watcher)) == 2, timeout=3 * 3600)
        await trio.sleep(20 * DELAY)
        view = await store.get_job(job)
    assert [r.count for r in redriven(watcher)] == [1, 2]  # two daemons: each re-drive once
    assert len(receiver.seen) == 2 * 3  # the first delivery and two re-drives, two attempts each
    assert (view.problem, view.redrives, view.notification) == (
        "notification_failed", {"notification_failed": 2}, "dead")


@pytest.mark.parametrize(("redrive", "message"), [
    (Redrive, r"^handler 'r': redrive is a Redrive\(notification_failed=N, missing_output=N, delay=seconds\), not "),
    ({"notification_failed": 2}, r"^handler 'r': redrive is a Redrive"),
])
def test_a_bad_declaration_is_refused_in_one_line(redrive: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        App().handler("r", redrive=redrive)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("fields", "message"), [
    ({"notification_failed": -1}, r"^redrive: notification_failed must be a whole number from 0 to 100, not -1$"),
    ({"notification_failed": 101}, r"^redrive: notification_failed must be a whole number from 0 to 100, not 101$"),
    ({"notification_failed": 1.5}, r"^redrive: notification_failed must be a whole number"),
    ({"notification_failed": True}, r"^redrive: notification_failed must be a whole number"),
    ({"missing_output": -1}, r"^redrive: missing_output must be a whole number from 0 to 100, not -1$"),
    ({"missing_output": 2.0}, r"^redrive: missing_output must be a whole number"),
    ({"delay": -1}, r"^redrive: delay must be a number of seconds from 0 to 604800, not -1$"),
    ({"delay": float("nan")}, r"^redrive: delay must be a number of seconds"),
    ({"delay": "60"}, r"^redrive: delay must be a number of seconds from 0 to 604800, not '60'$"),
])
def test_a_bad_policy_is_refused_in_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Redrive(**fields)


def test_the_policy_is_published_with_the_type() -> None:
    app = report_app(notification_failed=3, delay=5)
    assert app.handlers["report"].describe()["redrive"] == {"notification_failed": 3, "missing_output": 0, "delay": 5}
    assert re.match(r"^Redrive\(", repr(app.handlers["report"].redrive))



def rerun_app() -> App:
    app = App()

    @app.handler("report", required_outputs=["total"], redrive=Redrive(missing_output=2, delay=DELAY))
    async def report(ctx: JobContext) -> dict[str, Any]:
        return {}

    return app


async def run_once(store: Store, job: str, result: dict[str, Any]) -> None:
    """This test is the worker: the queue's next job is ``job``; it completes with ``result``."""
    [claimed] = await store.claim("default", "w1")
    assert claimed.id == job
    await store.complete(job, claimed.token, result)


async def test_a_job_missing_an_output_runs_again_once_per_filing_over_two_daemons(
        autojump_clock: trio.testing.MockClock) -> None:
    """The first run and its first re-run lack ``total``; the second re-run has it: filed
    ``complete``, and nothing runs again. Two daemons offer every re-drive: each performed once."""
    async with world(rerun_app(), 200, daemons=2) as (store, watcher, _, clock):
        first = (await store.submit(JobSpec(type="report", input={"day": 3}))).id
        chain = [first]
        for result in ({}, {}, {"total": 5}):
            await run_once(store, chain[-1], result)
            if "total" in result:
                break
            await watcher.until(lambda: len(redriven(watcher)) == len(chain), timeout=3600)
            filed = await store.get_job(chain[-1])
            rerun = redriven(watcher)[-1]
            assert wall(clock, trio.current_time()) - (filed.filed_at or 0) == pytest.approx(DELAY, abs=INTERVAL)
            assert rerun.id == chain[-1]
            assert rerun.rerun is not None
            chain.append(rerun.rerun)
        await watcher.until(lambda: any(getattr(r, "kind", "") == "filed" and r.id == chain[-1]
                                        for r in watcher.replies), timeout=3600)
        await trio.sleep(10 * DELAY)  # nothing more happens
        views = [await store.get_job(j) for j in chain]
    assert [(r.id, r.count) for r in redriven(watcher)] == [(chain[0], 1), (chain[1], 2)]
    assert [(v.category, v.problem) for v in views] == [
        ("incomplete", "missing_output"), ("incomplete", "missing_output"), ("complete", "none")]
    assert [(v.rerun_of, v.rerun) for v in views] == [(None, chain[1]), (chain[0], chain[2]), (chain[1], None)]
    assert {v.input["day"] for v in views} == {3}
