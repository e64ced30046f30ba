"""Daemons in process on the real clock: the fixture's redis-server, and the embedded store.

SPEC.md, "Actors" and "Bad input": an actor that crashes is restarted with backoff and
the daemon carries on; one that keeps crashing stops the daemon; a cancel reaches the
handler on whichever daemon runs it; Redis going away costs time, never a job.

Waits are event driven (the store's replies through ``Watcher``, events the handlers
set) and bounded by ``trio.fail_after``; intervals are short. Several daemons share one
store: one Redis URL, or one set of embedded servers (``MemoryServers``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from adapters.backend import MemoryServers
from adapters.records import JobSpec
from supervisor import App
from supervisor.supervise import ChildSpec, SupervisorGaveUp

from .harness import TERMINAL, Watcher, running_daemon

FAST = {"idle_poll": 0.2, "watchdog_interval": 0.2}
TERMINAL_EVENTS = {f"job.{s}" for s in TERMINAL}


@dataclass
class Shared:
    """Where the daemons of one test keep their jobs: a Redis URL, or embedded servers."""

    url: str
    memory: MemoryServers = field(default_factory=MemoryServers)

    def daemon(self, app: App, **settings: Any) -> Any:
        return running_daemon(app, redis=self.url, memory=self.memory, **{**FAST, **settings})


@pytest.fixture(params=["redis", "memory"])
def shared(request: pytest.FixtureRequest) -> Iterator[Shared]:
    if request.param == "redis":
        yield Shared(request.getfixturevalue("redis_url"))
    else:
        yield Shared(f"memory://{uuid.uuid4().hex}")


def spec(app: App, type_: str, **extra: Any) -> JobSpec:
    h = app.handlers[type_]
    return JobSpec(type=type_, queue=h.queue, phases=h.phases, timeout=h.timeout,
                   max_retries=h.max_retries, backoff=h.backoff, backoff_max=h.backoff_max, **extra)


def ended(watcher: Watcher, job_id: str) -> Any:
    """A condition for ``watcher.until``: the reply that moved ``job_id`` to a terminal state."""
    return lambda: next((r for r in watcher.replies if r.id == job_id and r.trigger and r.to in TERMINAL), None)


async def terminal_events(daemon: Any, job_id: str, queue: str = "default") -> list[str]:
    return [e.type for e in await daemon.store.events(queue, "-", 100_000)
            if e.id == job_id and e.type in TERMINAL_EVENTS]


def leaves(exc: BaseException) -> list[BaseException]:
    """Every exception inside ``exc``, however deep trio's nurseries grouped it."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def echo_app() -> App:
    app = App()

    @app.handler("echo", max_retries=0)
    async def echo(ctx: Any) -> Any:
        return ctx.input

    return app


# -- 1. supervision: restart with backoff, give up past the intensity ------------------------------


async def test_an_actor_that_crashes_once_is_restarted_and_the_daemon_carries_on(shared: Shared) -> None:
    app = echo_app()
    starts: list[float] = []
    crash_now = trio.Event()
    restarted = trio.Event()

    async def flaky(stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        if len(starts) == 1:
            await crash_now.wait()
            raise RuntimeError("flaky actor falls over once")
        restarted.set()
        await stop.wait()

    async with shared.daemon(app, extra_children=[ChildSpec("flaky", flaky, shutdown_s=1.0)]) as (daemon, watcher):
        with trio.fail_after(10):
            before = await daemon.store.submit(spec(app, "echo", input=1))
            await watcher.until(ended(watcher, before.id))
            crash_now.set()
            await restarted.wait()
            after = await daemon.store.submit(spec(app, "echo", input=2))
            await watcher.until(ended(watcher, after.id))
        views = [await daemon.store.get_job(j.id) for j in (before, after)]
        restarts = daemon.deps.metrics.registry.get_sample_value(
            "jobvisor_actor_restarts_total", {"actor": "flaky"})
        others = {a: daemon.supervisor.restarts[a] for a in daemon.supervisor.restarts if a != "flaky"}
    assert [(v.state, v.result) for v in views] == [("completed", 1), ("completed", 2)]
    assert len(starts) == 2
    assert starts[1] - starts[0] >= daemon.supervisor.policy.backoff  # restarted after the backoff
    assert daemon.supervisor.restarts["flaky"] == 1
    assert restarts == 1.0
    assert set(others.values()) == {0}, others


async def test_an_actor_crashing_past_the_intensity_stops_the_daemon_with_supervisor_gave_up(
    shared: Shared,
) -> None:
    app = echo_app()
    starts: list[float] = []

    async def hopeless(stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        raise ConnectionAbortedError(f"start {len(starts)} fails too")

    with trio.fail_after(10), pytest.RaisesGroup(
        pytest.RaisesExc(SupervisorGaveUp, match=r"actor 'hopeless' crashed 3 times within 30s"),
        flatten_subgroups=True,
    ) as caught:
        async with shared.daemon(app, restart_intensity=2, restart_period=30,
                                 extra_children=[ChildSpec("hopeless", hopeless)]) as (daemon, watcher):
            await trio.sleep_forever()  # ended by the daemon giving up, nothing else
    [gave_up] = leaves(caught.value)
    assert isinstance(gave_up, SupervisorGaveUp)
    assert (gave_up.child, gave_up.crashes) == ("hopeless", 3)
    assert isinstance(gave_up.last, ConnectionAbortedError) and str(gave_up.last) == "start 3 fails too"
    assert len(starts) == 3
    # two restarts, each after its backoff (0.1 s, then doubled)
    assert starts[1] - starts[0] >= 0.1 and starts[2] - starts[1] >= 0.2
