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
from pathlib import Path
from typing import Any

import pytest
import trio

from jobvisor import App
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.replies import Moved
from jobvisor.adapters.store import DirectExecutor, Store
from jobvisor.supervisor.supervise import ChildSpec, SupervisorGaveUp
from tests.harness import TERMINAL, ended, running_daemon
from tests.redis_server import RedisServer

FAST = {"idle_poll": 0.2, "watchdog_interval": 0.2}
TERMINAL_EVENTS = {f"job.{s}" for s in TERMINAL}


@dataclass
class Shared:
    """Where the daemons of one test keep their jobs: a Redis URL, or embedded servers."""

    url: str
    memory: MemoryServers = field(default_factory=MemoryServers)

    def daemon(self, app: App, **settings: Any) -> Any:
        return running_daemon(app, redis=self.url, memory=self.memory, **{**FAST, **settings})

    def store(self) -> Store:
        """A plain store on the same data, with no daemon behind it (so nothing claims)."""
        return Store(DirectExecutor(open_backend(self.url, memory=self.memory)))


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
    assert isinstance(gave_up.last, ConnectionAbortedError)
    assert str(gave_up.last) == "start 3 fails too"
    assert len(starts) == 3
    # two restarts, each after its backoff (0.1 s, then doubled)
    assert starts[1] - starts[0] >= 0.1
    assert starts[2] - starts[1] >= 0.2


async def test_a_daemon_that_gives_up_hands_its_running_jobs_back(shared: Shared) -> None:
    """SPEC: a shutdown that times out or fails must not skip cleanup. The daemon gives up
    (an actor crashes past the intensity) while a handler runs: the job is released, the
    attempt records the interruption and the phase, and it does not sit ``active`` until its
    lease runs out."""
    app = App()
    inside = trio.Event()
    crash = trio.Event()

    @app.handler("steps", phases=["one", "two"], max_retries=3)
    async def steps(ctx: Any) -> None:
        async def forever() -> None:
            inside.set()
            await trio.sleep_forever()

        await ctx.phase("one", forever)

    async def doomed(stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await crash.wait()
        raise RuntimeError("down for good")

    job_id = ""
    with trio.fail_after(20), pytest.RaisesGroup(pytest.RaisesExc(SupervisorGaveUp), flatten_subgroups=True):
        async with shared.daemon(app, restart_intensity=0, lease=30,
                                 extra_children=[ChildSpec("doomed", doomed)]) as (daemon, watcher):
            job_id = (await daemon.store.submit(spec(app, "steps"))).id
            await inside.wait()
            crash.set()
            await trio.sleep_forever()  # ended by the daemon giving up
    view = await shared.store().get_job(job_id)
    assert view.state == "queued", view.state
    [attempt] = view.attempt_records
    assert (attempt.outcome, attempt.interrupted_phase) == ("interrupted", "one")


async def test_a_shutdown_landing_during_a_claim_never_strands_the_claimed_jobs(shared: Shared) -> None:
    """The claim loop is cancelled by a shutdown while its claim is on the way: the jobs that
    claim leased are run and handed back like any other, never left ``active`` and unowned."""
    app = App()

    @app.handler("nap", max_retries=0)
    async def nap(ctx: Any) -> None:
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with shared.daemon(app, grace=0.2, lease=30) as (daemon, watcher):
            real_claim = daemon.store.claim_next  # what the worker pool calls

            async def claim_as_the_shutdown_lands(*args: Any, **kwargs: Any) -> Any:
                leased = await real_claim(*args, **kwargs)  # Redis has leased the jobs ...
                daemon.shutdown.set()
                await trio.sleep(0.05)  # ... and the shutdown cancels the loop before it hears so
                return leased

            daemon.store.claim_next = claim_as_the_shutdown_lands  # type: ignore[method-assign]
            replies = await shared.store().submit_many([spec(app, "nap") for _ in range(3)])
            jobs = [r.id for r in replies]
            daemon.pool.deps.hub.work_available()
            await daemon.shutdown.wait()
    views = [await shared.store().get_job(j) for j in jobs]
    assert [v.state for v in views] == ["queued"] * 3  # none stranded active
    claimed = [v for v in views if v.attempts]
    assert claimed
    assert all(v.attempt_records[0].outcome == "interrupted" for v in claimed)


# -- 2. cancel across daemons -----------------------------------------------------------------------


class Gates:
    """Per-job events a handler sets and waits on, so a test can drive it."""

    def __init__(self) -> None:
        self.inside: dict[str, trio.Event] = {}
        self.gate: dict[str, trio.Event] = {}
        self.cancelled: dict[str, trio.Event] = {}

    def of(self, table: dict[str, trio.Event], job_id: str) -> trio.Event:
        return table.setdefault(job_id, trio.Event())


def gated_app(gates: Gates) -> App:
    app = App()

    @app.handler("gated", timeout=60, max_retries=0)
    async def gated(ctx: Any) -> str:
        gates.of(gates.inside, ctx.job_id).set()
        try:
            await gates.of(gates.gate, ctx.job_id).wait()
        except trio.Cancelled:
            gates.of(gates.cancelled, ctx.job_id).set()
            raise
        return "done"

    return app


@pytest.mark.parametrize("through", ["daemon B's store", "a Client"])
async def test_cancel_through_another_daemon_cancels_the_handler_where_it_runs(
    shared: Shared, through: str
) -> None:
    from jobvisor import Client

    gates = Gates()
    app = gated_app(gates)
    async with shared.daemon(app, worker_id="A") as (a, watcher_a), \
            shared.daemon(app, worker_id="B", queues=["other"]) as (b, _):
        job = await a.store.submit(spec(app, "gated"))
        with trio.fail_after(10):
            await gates.of(gates.inside, job.id).wait()
            if through == "a Client":
                with Client(shared.url, memory=shared.memory) as client:
                    reply = await trio.to_thread.run_sync(client.cancel, job.id)
            else:
                reply = await b.store.cancel(job.id)
            assert (reply.kind, reply.from_, reply.to) == ("moved", "active", "cancelled")
            await gates.of(gates.cancelled, job.id).wait()  # A's handler saw trio.Cancelled
            # A ran nothing more for the job: a second job proves its slot was freed and reused
            follow = await a.store.submit(spec(app, "gated"))
            await gates.of(gates.inside, follow.id).wait()
            gates.of(gates.gate, follow.id).set()
            await watcher_a.until(ended(watcher_a, follow.id))
        view = await a.store.get_job(job.id)
        events = await terminal_events(a, job.id)
    assert view.state == "cancelled"
    assert [(r.worker, r.outcome) for r in view.attempt_records] == [("A", "cancelled")]
    assert view.result is None
    assert events == ["job.cancelled"]


async def test_cancel_racing_completion_across_two_daemons_ends_in_exactly_one_terminal_event(
    shared: Shared,
) -> None:
    gates = Gates()
    app = gated_app(gates)
    rounds = 30
    outcomes: list[tuple[str, str]] = []
    async with shared.daemon(app, worker_id="A", concurrency=1) as (a, _), \
            shared.daemon(app, worker_id="B", queues=["other"]) as (b, _):
        ids = []
        with trio.fail_after(30):
            for _round in range(rounds + 1):
                # concurrency 1: this job starting proves A is done with the one before
                job = await a.store.submit(spec(app, "gated"))
                await gates.of(gates.inside, job.id).wait()
                if _round == rounds:  # the sentinel
                    gates.of(gates.gate, job.id).set()
                    break
                ids.append(job.id)
                replies = []

                async def cancel(job_id: str = job.id) -> None:
                    replies.append(await b.store.cancel(job_id))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel)
                    if _round % 2:  # let the cancel go first every other round
                        await trio.lowlevel.checkpoint()
                    gates.of(gates.gate, job.id).set()
                reply = replies[0]
                outcomes.append((reply.kind, reply.to if isinstance(reply, Moved) else reply.state))
        events = await a.store.events("default", "-", 100_000)
        views = [await a.store.get_job(i) for i in ids]
    for job_id, view, (kind, state) in zip(ids, views, outcomes, strict=True):
        terminal = [e.type for e in events if e.id == job_id and e.type in TERMINAL_EVENTS]
        assert terminal == [f"job.{view.state}"], (job_id, terminal, view.state)
        assert view.state in ("cancelled", "completed")
        # the cancel either won (moved) or found the job already completed (absorbed)
        assert (kind, state) in (("moved", "cancelled"), ("absorbed", "completed")), (kind, state)
        assert state == view.state
        [attempt] = view.attempt_records
        assert attempt.outcome == ("succeeded" if view.state == "completed" else "cancelled")
        assert (view.result == "done") == (view.state == "completed")


# -- 3. metrics and health over real HTTP -----------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus text page as {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return page.get((name, frozenset(labels.items())))


async def test_metrics_count_transitions_depths_durations_and_restarts(shared: Shared) -> None:
    import httpx

    app = echo_app()

    @app.handler("boom", max_retries=1, backoff=0.01, backoff_max=0.01)
    async def boom(ctx: Any) -> None:
        raise ValueError("no")

    @app.handler("steps", phases=["one", "two"])
    async def steps(ctx: Any) -> None:
        async def nothing() -> None:
            return None

        await ctx.phase("one", nothing)
        await ctx.phase("two", nothing)

    restarted = trio.Event()
    runs = []

    async def crashes_once(stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs.append(1)
        task_status.started()
        if len(runs) == 1:
            raise RuntimeError("once")
        restarted.set()
        await stop.wait()

    async with shared.daemon(app, metrics_port=0,
                             extra_children=[ChildSpec("fragile", crashes_once)]) as (daemon, watcher):
        assert daemon.metrics_port
        base = f"http://127.0.0.1:{daemon.metrics_port}"
        with trio.fail_after(10):
            echoes = [await daemon.store.submit(spec(app, "echo", input=i)) for i in range(3)]
            failing = await daemon.store.submit(spec(app, "boom"))
            waiting = await daemon.store.submit(spec(app, "echo", delay=600))
            phased = await daemon.store.submit(spec(app, "steps"))
            batch = await daemon.store.create_batch(BatchSpec())
            closed = await daemon.store.close_batch(batch.id)  # no members: closes, then settles at once
            for job in (*echoes, failing, phased):
                await watcher.until(ended(watcher, job.id))
            await restarted.wait()
            async with httpx.AsyncClient(base_url=base) as http:
                health = await http.get("/healthz")
                metrics = await http.get("/metrics")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert metrics.status_code == 200
    page = samples(metrics.text)
    transitions = "jobvisor_transitions_total"
    assert sample(page, transitions, machine="job", trigger="complete", outcome="moved") == 4
    assert sample(page, transitions, machine="job", trigger="fail", outcome="moved") == 2  # a retry, then failed
    assert sample(page, transitions, machine="job", trigger="claim", outcome="moved") == 6  # 4 + 2 attempts
    assert sample(page, transitions, machine="phase", trigger="start", outcome="moved") == 2
    assert sample(page, transitions, machine="phase", trigger="complete", outcome="moved") == 2
    assert (closed.machine, closed.to) == ("batch", "completed")
    assert sample(page, transitions, machine="batch", trigger=closed.trigger, outcome="moved") == 1
    assert sample(page, transitions, machine="job", trigger="wake", outcome="moved") == 1  # the retry's
    assert sample(page, transitions, machine="job", trigger="cancel", outcome="moved") is None
    depth = {state: sample(page, "jobvisor_queue_depth", queue="default", state=state)
             for state in ("queued", "scheduled", "active", "validating", "finished", "outbox")}
    assert depth == {"queued": 0, "scheduled": 1, "active": 0, "validating": 0, "finished": 5, "outbox": 0}
    durations = "jobvisor_handler_duration_seconds_count"
    assert (sample(page, durations, type="echo", outcome="complete"),
            sample(page, durations, type="boom", outcome="fail")) == (3, 2)
    assert sample(page, durations, type="echo", outcome="fail") is None
    assert sample(page, "jobvisor_handler_duration_seconds_bucket", type="echo", outcome="complete", le="+Inf") == 3
    assert sample(page, "jobvisor_actor_restarts_total", actor="fragile") == 1
    assert sample(page, "jobvisor_actor_restarts_total", actor="workers") is None
    assert waiting.state == "scheduled"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (AOF on), to kill and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_healthz_is_503_while_redis_is_down_and_200_once_it_is_back(private_redis: RedisServer) -> None:
    import httpx

    app = echo_app()
    async with (
        running_daemon(app, redis=private_redis.url, metrics_port=0, **FAST) as (daemon, watcher),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.metrics_port}") as http,
    ):
        with trio.fail_after(20):
            up = await http.get("/healthz")
            await trio.to_thread.run_sync(private_redis.kill)
            down = await http.get("/healthz")
            scrape = await http.get("/metrics")  # still served, with the depths last read
            await trio.to_thread.run_sync(private_redis.start)
            mark = len(watcher.replies)
            await watcher.until(lambda: len(watcher.replies) > mark)  # the daemon's store answers again
            back = await http.get("/healthz")
            job = await daemon.store.submit(spec(app, "echo", input="after"))
            await watcher.until(ended(watcher, job.id))
    assert (up.status_code, up.text) == (200, "ok\n")
    assert down.status_code == 503
    assert down.text.startswith(f"unhealthy: Redis is unavailable at {private_redis.url}")
    assert down.text.count("\n") == 1
    assert scrape.status_code == 200
    assert "jobvisor_queue_depth" in scrape.text
    assert (back.status_code, back.text) == (200, "ok\n")


# -- 4. Redis restarted under a running daemon ------------------------------------------------------


async def test_a_redis_restart_under_a_running_daemon_loses_and_doubles_nothing(private_redis: RedisServer) -> None:
    gates = Gates()
    app = gated_app(gates)
    runs: dict[str, int] = {}

    @app.handler("echo", max_retries=0)
    async def echo(ctx: Any) -> Any:
        runs[ctx.job_id] = runs.get(ctx.job_id, 0) + 1
        return ctx.input

    async with running_daemon(app, redis=private_redis.url, concurrency=2, lease=5, **FAST) as (daemon, watcher):
        with trio.fail_after(30):
            done_before = [await daemon.store.submit(spec(app, "echo", input=i)) for i in range(3)]
            for job in done_before:
                await watcher.until(ended(watcher, job.id))
            running = [await daemon.store.submit(spec(app, "gated")) for _ in range(2)]
            for job in running:
                await gates.of(gates.inside, job.id).wait()
            waiting = [await daemon.store.submit(spec(app, "echo", input=f"w{i}")) for i in range(3)]

            await trio.to_thread.run_sync(private_redis.kill)
            for job in running:  # the handlers finish while Redis is away: their reports must wait
                gates.of(gates.gate, job.id).set()
            await trio.to_thread.run_sync(private_redis.start)

            for job in (*running, *waiting):
                await watcher.until(ended(watcher, job.id))
            after = [await daemon.store.submit(spec(app, "echo", input=f"a{i}")) for i in range(3)]
            for job in after:
                await watcher.until(ended(watcher, job.id))
        every = [*done_before, *running, *waiting, *after]
        views = [await daemon.store.get_job(j.id) for j in every]
        events = await daemon.store.events("default", "-", 100_000)
        restarts = dict(daemon.supervisor.restarts)
    assert [v.state for v in views] == ["completed"] * len(every)
    assert [v.result for v in views] == [0, 1, 2, "done", "done", "w0", "w1", "w2", "a0", "a1", "a2"]
    for view in views:
        assert [e.type for e in events if e.id == view.id and e.type in TERMINAL_EVENTS] == ["job.completed"]
        assert [a.outcome for a in view.attempt_records] == ["succeeded"], view.attempt_records
    assert all(n == 1 for n in runs.values())
    assert len(runs) == 9
    assert set(restarts.values()) == {0}, restarts  # the actors backed off; none crashed


# -- 5. an idle daemon does not spin ----------------------------------------------------------------


def commands_processed(url: str) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``; scripts' calls included)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_an_idle_daemon_costs_redis_a_few_commands_per_interval(private_redis: RedisServer) -> None:
    """One queue, every polling interval 1 s: each second the scheduler, the claim loop, the
    watchdog (its queue and the daemon registry), the validator and the batch monitor make one
    FCALL each (a couple of reads inside); the webhook deliverer (no secret here) and the
    evaluator and retention (minutes apart) make none. Nothing spins while idle."""
    app = echo_app()
    window, interval = 2.0, 1.0
    pollers = 6  # scheduler, claim loop, watchdog x2, validator, batch monitor
    # the lease renewals and registry heartbeat come every lease/3: a long lease keeps them out of the window
    async with running_daemon(app, redis=private_redis.url, idle_poll=interval, lease=300.0,
                              watchdog_interval=interval, batch_interval=interval) as (daemon, watcher):
        # measured once start-up is over: the daemon registered and each poller made its first call
        await watcher.until(lambda: len(watcher.replies) >= 2 * pollers, timeout=5.0)
        # (its registration may come before the watcher is attached: read the registry itself)
        assert [w.id for w in await daemon.store.workers()] == ["test-worker"]
        before = await trio.to_thread.run_sync(commands_processed, private_redis.url)
        await trio.sleep(window)  # the measured window itself, not a wait for anything
        after = await trio.to_thread.run_sync(commands_processed, private_redis.url)
    spent = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    spent["info"] -= 1  # the second INFO counted itself
    spent = {name: n for name, n in spent.items() if n}
    ticks = window / interval + 1  # a tick at each end of the window at most
    assert spent.get("fcall", 0) <= pollers * ticks, spent
    assert sum(spent.values()) < 60, spent
    # (the evaluator reads its filing counts once at start: HGETALL, ZCARD; and what waits for a
    # type nobody serves: SMEMBERS of the queued types, the registry's ZRANGE and HGETALL; each
    # watchdog sweep stamps its time, GET and SET, for outage accounting; each claim first asks
    # whether its queue is paused: EXISTS; the schedule actor reads its queue's schedule index,
    # the due ones and the next: ZRANGEBYSCORE twice, no FCALL while nothing is due)
    assert set(spent) <= {"fcall", "zpopmin", "zrangebyscore", "zrange", "zcard", "hgetall", "smembers",
                          "hello", "ping", "role", "get", "set", "exists"}, spent
