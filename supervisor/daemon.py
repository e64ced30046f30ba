"""The daemon: one trio nursery tree, the store actor at its root.

Start order: the store actor, then (supervised) the pub/sub listener, the
scheduler, the watchdog, the batch monitor, the evaluator, the re-drive actor, retention, the
registry, the webhook deliverer, the validator, and the workers last. Shutdown on
SIGINT/SIGTERM (or the ``shutdown`` event) runs in reverse: the workers stop
claiming, running handlers get the grace period, then are cancelled and
their jobs released with the interrupted attempt recorded; the other
actors are asked to stop, then cancelled (the validator gives its checks
back at once; the webhook deliverer lets sends under way finish within the
grace period and returns the rest to the outbox); the store actor drains what
is queued and closes last. Cleanup runs under a shielded, time-limited scope,
so it always runs and never hangs. A second signal skips the grace period:
running handlers are interrupted at once, and their jobs still released.

Redis away at start (down, loading its dataset, out of memory): the daemon
waits for it, with one WARNING and one INFO when it answers, and starts
then; a shutdown while it waits ends the wait. Redis away later is waited
out by every actor (:mod:`supervisor.outage`) and never stops the daemon.

Handlers run in a host nursery outside all of that, so that a handler that
ignores cancellation can be abandoned (its slot freed, its attempt recorded)
without holding up anything. Last of all the daemon waits ``abandon_after``
for such handlers to return; if some never do (blocking code in a thread
cannot be interrupted), ``on_stuck`` is called (the CLI ends the process
there, everything else being cleaned up already); without it, the call
returns when they do.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from jobvisor.adapters.backend import Backend, MemoryServers, open_backend
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.http import HttpClient
from jobvisor.adapters.store import Store
from jobvisor.adapters.store_actor import StoreActor

from .actors import run_listener, run_scheduler
from .app import App
from .batch_monitor import run_batch_monitor
from .config import DaemonConfig
from .deps import Deps, TrioWallClock
from .evaluator import run_evaluator
from .hub import Hub, wait_any
from .metrics import Metrics, MetricsServer
from .outage import StoreOutage
from .redrive import run_redrive
from .registry import Registration, run_registry
from .retention import run_retention
from .schedules import run_schedules
from .supervise import ChildSpec, Policy, Supervisor
from .validation import Validator, check_validator_urls
from .watchdog import run_watchdog
from .webhooks import Deliverer
from .workers import WorkerPool

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger("jobvisor.daemon")

CLEANUP_TIMEOUT = 10.0


@dataclass
class Daemon:
    """A running daemon's parts, handed to ``task_status.started`` for embedding and tests."""

    deps: Deps
    pool: WorkerPool
    supervisor: Supervisor
    actor: StoreActor
    backend: Backend
    shutdown: trio.Event
    metrics_port: int | None = None

    @property
    def store(self) -> Store:
        return self.deps.store


async def _watch_signals(shutdown: trio.Event, skip_grace: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if not shutdown.is_set():
                log.info("received %s: shutting down (again to skip the grace period)", signal.Signals(signum).name)
                shutdown.set()
            else:
                log.info("received %s again: interrupting running handlers now", signal.Signals(signum).name)
                skip_grace.set()


async def _wait_for_store(backend: Backend, shutdown: trio.Event, *, patient: bool = True) -> bool:
    """Until Redis answers a PING (True), or ``shutdown`` is set first (False); not
    ``patient``: the first failure is raised."""
    since: float | None = None
    backoff = 0.05
    while True:
        try:
            if backend.inline:
                backend.ping()
            else:
                await trio.to_thread.run_sync(backend.ping)
                await trio.to_thread.run_sync(backend.check_primary)
        except StoreUnavailable as exc:
            if not patient:
                raise
            if since is None:
                since = trio.current_time()
                log.warning("%s; waiting for it", exc)
            with trio.move_on_after(backoff):
                await shutdown.wait()
            if shutdown.is_set():
                return False
            backoff = min(2.0, backoff * 2)
            continue
        if since is not None:
            log.info("Redis at %s answers after %.1fs; starting", backend.url, trio.current_time() - since)
        return True


async def _healthy(metrics: Metrics, store: Store, queues: tuple[str, ...], actor: StoreActor) -> bool:
    """Whether the store answers and takes transitions (``/healthz``); else ``metrics.problem``
    says why: reads alone still work while Redis is out of memory, scripts do not."""
    answered = await metrics.refresh(store, queues)
    trouble = actor.problem()
    if answered and trouble is not None:
        metrics.problem = str(trouble)
        return False
    return answered


async def _publish_types(deps: Deps, shutdown: trio.Event) -> None:
    """Publish the app's job types; a store outage right after start is waited out (a shutdown
    ends the wait)."""
    outage = StoreOutage("daemon", log)
    while not shutdown.is_set():
        try:
            await deps.store.register_types(deps.app.described_types())
            outage.reached()
            return
        except StoreUnavailable as exc:
            await wait_any(shutdown, outage.failed(exc))


async def _publish_rate_limits(deps: Deps, shutdown: trio.Event) -> None:
    """Publish the app's rate limits to each of its queues, where the claims read them (a type
    without one has its limit removed: the last daemon to start sets them); an outage right
    after start is waited out (a shutdown ends the wait)."""
    outage = StoreOutage("daemon", log)
    limits = {t: h.rate_wire() for t, h in deps.app.handlers.items()}
    for queue in deps.queues:
        while not shutdown.is_set():
            try:
                await deps.store.publish_rate_limits(queue, limits)
                outage.reached()
                break
            except StoreUnavailable as exc:
                await wait_any(shutdown, outage.failed(exc))


async def run_daemon(
    config: DaemonConfig,
    app: App,
    *,
    memory: MemoryServers | None = None,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    publish_types: bool = True,
    clock: TrioWallClock | None = None,
    extra_children: tuple[ChildSpec, ...] = (),
    on_stuck: Callable[[BaseException | None], None] | None = None,
    wait_for_store: bool = True,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until ``shutdown`` is set (or a signal arrives).

    Waits for Redis when it does not answer at start (see the module
    docstring), or with ``wait_for_store=False`` (a one-shot run such as the
    demo) raises :class:`~jobvisor.adapters.errors.StoreUnavailable` at once; raises
    :class:`~jobvisor.supervisor.supervise.SupervisorGaveUp`
    (inside an exception group) when an actor keeps crashing. ``on_stuck``
    is called with the error the daemon is ending with (or ``None``) when
    abandoned handlers are still blocked once everything else is done.
    ``publish_types=False`` keeps the app's job types out of the shared type
    registry (``jv:types``, which ``jobvisor submit`` reads), as the demo does.
    """
    shutdown = trio.Event() if shutdown is None else shutdown
    check_validator_urls(app, config)
    backend = open_backend(config.redis, memory=memory)
    async with trio.open_nursery() as waiting:
        if handle_signals:  # a signal while waiting for Redis ends the wait, cleanly
            waiting.start_soon(_watch_signals, shutdown, trio.Event())
        ready = await _wait_for_store(backend, shutdown, patient=wait_for_store)
        waiting.cancel_scope.cancel()
    if not ready:
        backend.close()
        return
    if not app.handlers:
        log.warning("no handlers registered (use --app module:attr): this daemon claims nothing it can run")
    metrics = Metrics()
    hub = Hub()
    wall = clock or TrioWallClock()
    # A worker whose store comes back must reach it well within a lease (README, "Redis outages").
    actor = StoreActor(backend, wall, max_backoff=min(2.0, config.lease / 4))
    store = Store(actor, sanitizer=config.sanitizer, observers=[hub.observe, metrics.observe])
    deps = Deps(store=store, app=app, config=config, hub=hub, metrics=metrics, clock=wall)
    async with trio.open_nursery() as host:
        pool = WorkerPool(deps, host)
        ending: BaseException | None = None
        try:
            await _run(deps, pool, backend, actor, shutdown, handle_signals, publish_types, extra_children,
                       task_status)
        except BaseException as exc:
            ending = exc
            raise
        finally:
            host.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(config.abandon_after):
                    await pool.wait_handlers_returned()
            if pool.handlers_live:
                log.error("%d abandoned handler(s) still blocked after shutdown (%s); they cannot be interrupted",
                          pool.handlers_live, ", ".join(job for job, _ in pool.abandoned) or "-")
                if on_stuck is not None:
                    on_stuck(ending)


async def _run(
    deps: Deps, pool: WorkerPool, backend: Backend, actor: StoreActor, shutdown: trio.Event,
    handle_signals: bool, publish_types: bool, extra_children: tuple[ChildSpec, ...],
    task_status: trio.TaskStatus[Daemon],
) -> None:
    config, store, metrics = deps.config, deps.store, deps.metrics
    registration = Registration(deps, pool.slots)
    destinations = config.destinations  # checked on the resolved address of every connection
    validator_http = HttpClient(max_connections=config.validation_concurrency, clock=deps.clock,
                                destinations=destinations)
    webhook_http = HttpClient(max_connections=config.webhook_concurrency, clock=deps.clock,
                              destinations=destinations)
    log.debug("%s", destinations.describe())
    validator = Validator(deps, validator_http)
    deliverer = Deliverer(deps, webhook_http)
    children = (
        ChildSpec("listener", partial(run_listener, deps, backend), shutdown_s=1.0),
        ChildSpec("scheduler", partial(run_scheduler, deps), shutdown_s=1.0),
        ChildSpec("schedules", partial(run_schedules, deps), shutdown_s=1.0),
        ChildSpec("watchdog", partial(run_watchdog, deps), shutdown_s=1.0),
        ChildSpec("batch_monitor", partial(run_batch_monitor, deps), shutdown_s=1.0),
        ChildSpec("evaluator", partial(run_evaluator, deps), shutdown_s=1.0),
        ChildSpec("redrive", partial(run_redrive, deps), shutdown_s=1.0),
        ChildSpec("retention", partial(run_retention, deps), shutdown_s=1.0),
        ChildSpec("registry", partial(run_registry, registration), shutdown_s=6.0),
        *extra_children,
        ChildSpec("webhooks", deliverer.run, shutdown_s=config.grace + config.webhook_lease + 6.0),
        ChildSpec("validator", validator.run, shutdown_s=config.validation_lease + 6.0),
        ChildSpec("workers", pool.run, shutdown_s=2 * config.grace + config.abandon_after + 10.0),
    )
    supervisor = Supervisor(
        children,
        Policy(intensity=config.restart_intensity, period=config.restart_period),
        on_restart=lambda child, exc: metrics.actor_restarts.labels(child).inc(),
    )
    server = None
    if config.metrics_port is not None:
        server = MetricsServer(metrics, config.metrics_host, config.metrics_port,
                               partial(_healthy, metrics, store, deps.queues, actor))
        server.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", config.metrics_host, server.port)
    try:
        async with trio.open_nursery() as root:
            await root.start(actor.run)
            try:
                async with trio.open_nursery() as inner:
                    if handle_signals:
                        inner.start_soon(_watch_signals, shutdown, pool.skip_grace)
                    if publish_types:  # what `jobvisor submit` reads to fill in a type's defaults
                        await _publish_types(deps, shutdown)
                    await _publish_rate_limits(deps, shutdown)  # before the first claim
                    await inner.start(supervisor.run)
                    task_status.started(
                        Daemon(deps, pool, supervisor, actor, backend, shutdown,
                               server.port if server else None)
                    )
                    await shutdown.wait()
                    await supervisor.shutdown()
                    inner.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True) as cleanup:
                    cleanup.deadline = trio.current_time() + CLEANUP_TIMEOUT
                    actor.close()
                    await actor.closed.wait()
                    await validator_http.aclose()
                    await webhook_http.aclose()
                root.cancel_scope.cancel()
    finally:
        if server is not None:
            # From a thread: a request in flight may be waiting on this trio run.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(server.stop)
        backend.close()
