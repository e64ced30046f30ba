"""The daemon: one trio nursery tree, the store actor at its root.

Start order: the store actor, then (supervised) the pub/sub listener, the
scheduler, the watchdog, the gauges, the webhook deliverer, the validator, and
the workers last. Shutdown on SIGINT/SIGTERM (or the ``shutdown`` event) runs in
reverse: the workers stop claiming, running handlers get the grace period, then
are cancelled and their jobs released with the interrupted attempt recorded;
the other actors are asked to stop, then cancelled (the validator gives its
checks back at once; the webhook deliverer lets sends under way finish within
the grace period and returns the rest to the outbox); the store actor drains
what is queued and closes last. Cleanup runs under a shielded, time-limited
scope, so it always runs and never hangs. A second signal skips the grace period:
running handlers are interrupted at once, and their jobs still released.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from functools import partial

import trio

from adapters.backend import Backend, MemoryServers, open_backend
from adapters.http import HttpClient
from adapters.store import Store
from adapters.store_actor import StoreActor

from .actors import run_gauges, run_listener, run_scheduler, run_watchdog
from .app import App
from .config import DaemonConfig
from .deps import Deps, TrioWallClock
from .hub import Hub
from .metrics import Metrics, MetricsServer
from .supervise import ChildSpec, Policy, Supervisor
from .validation import Validator, check_validator_urls
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


async def run_daemon(
    config: DaemonConfig,
    app: App,
    *,
    memory: MemoryServers | None = None,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    clock: TrioWallClock | None = None,
    extra_children: tuple[ChildSpec, ...] = (),
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until ``shutdown`` is set (or a signal arrives).

    Raises :class:`~adapters.errors.StoreUnavailable` when Redis does not
    answer at start, and :class:`~supervisor.supervise.SupervisorGaveUp`
    (inside an exception group) when an actor keeps crashing.
    """
    shutdown = shutdown or trio.Event()
    check_validator_urls(app, config)
    backend = open_backend(config.redis, memory=memory)
    if backend.inline:
        backend.ping()
    else:
        await trio.to_thread.run_sync(backend.ping)
    if not app.handlers:
        log.warning("no handlers registered (use --app module:attr): this daemon claims nothing it can run")
    metrics = Metrics()
    hub = Hub()
    wall = clock or TrioWallClock()
    actor = StoreActor(backend, wall)
    store = Store(actor, observers=[hub.observe, metrics.observe])
    deps = Deps(store=store, app=app, config=config, hub=hub, metrics=metrics, clock=wall)
    pool = WorkerPool(deps)
    validator_http = HttpClient(max_connections=config.validation_concurrency, clock=wall)
    webhook_http = HttpClient(max_connections=config.webhook_concurrency, clock=wall)
    validator = Validator(deps, validator_http)
    deliverer = Deliverer(deps, webhook_http)
    children = (
        ChildSpec("listener", partial(run_listener, deps, backend), shutdown_s=1.0),
        ChildSpec("scheduler", partial(run_scheduler, deps), shutdown_s=1.0),
        ChildSpec("watchdog", partial(run_watchdog, deps), shutdown_s=1.0),
        ChildSpec("gauges", partial(run_gauges, deps), shutdown_s=1.0),
        *extra_children,
        ChildSpec("webhooks", deliverer.run, shutdown_s=config.grace + config.webhook_lease + 6.0),
        ChildSpec("validator", validator.run, shutdown_s=config.validation_lease + 6.0),
        ChildSpec("workers", pool.run, shutdown_s=2 * config.grace + 10.0),
    )
    supervisor = Supervisor(
        children,
        Policy(intensity=config.restart_intensity, period=config.restart_period),
        on_restart=lambda child, exc: metrics.actor_restarts.labels(child).inc(),
    )
    server = None
    if config.metrics_port is not None:
        server = MetricsServer(metrics, config.metrics_host, config.metrics_port)
        server.start()
    try:
        async with trio.open_nursery() as root:
            await root.start(actor.run)
            try:
                async with trio.open_nursery() as inner:
                    if handle_signals:
                        inner.start_soon(_watch_signals, shutdown, pool.skip_grace)
                    await store.register_types({t: h.describe() for t, h in app.handlers.items()})
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
            server.stop()
        backend.close()
