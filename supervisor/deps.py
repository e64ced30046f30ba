"""What every actor is given: the store, the app, the settings, the hub, the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from jobvisor.adapters.store import Store

from .app import App
from .config import DaemonConfig
from .hub import Hub
from .metrics import Metrics

__all__ = ["Deps", "TrioWallClock"]


class TrioWallClock:
    """Epoch seconds that advance with trio's clock (so MockClock moves them too).

    Anchored once (at first use) to ``time.time()``; afterwards only ``trio.current_time()``
    is read, so every timer, lease and timestamp of a daemon comes from trio.
    """

    def __init__(self, epoch: float | None = None) -> None:
        self._epoch = epoch
        self._base: float | None = None

    def __call__(self) -> float:
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio (a sync caller): plain wall time
            return time.time()
        if self._base is None:
            # anchored at first use, both readings together, so the clock does not lag behind
            # wall time by however long ago it was created
            self._base = now
            if self._epoch is None:
                self._epoch = time.time()
        assert self._epoch is not None
        return self._epoch + (now - self._base)


@dataclass
class Deps:
    store: Store
    app: App
    config: DaemonConfig
    hub: Hub
    metrics: Metrics
    clock: Callable[[], float] = field(default_factory=TrioWallClock)

    @property
    def queues(self) -> tuple[str, ...]:
        return self.config.queues or tuple(self.app.queues)
