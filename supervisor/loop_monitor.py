"""How long the daemon's event loop ran without yielding, and which handler held it.

An ``async def`` handler that blocks (``time.sleep``, a synchronous SDK,
heavy CPU) holds the whole event loop: no lease is renewed, no report sent,
no signal handled until it yields. Nothing can interrupt it; what the daemon
can do is notice, name it, and recover at once when it lets go.

A trio instrument marks each turn of the loop: it leaves its I/O wait, runs
the tasks that are ready, and goes back to wait. The time between the two is
how long the loop was held; a blocked handler shows up as one long turn. The
two hooks cost a clock read each per turn, not per task step.

Every ``interval``, :meth:`LoopMonitor.run` observes the longest turn since
its last look into a histogram (the loop's lag). A sampler thread meanwhile
watches the turn in progress; once it has lasted ``threshold`` seconds, it
reads the loop thread's current Python stack (``sys._current_frames``) for
the frame of a running handler and remembers whose it is. When the loop is
back, one WARNING names the job and its type and how long the loop was held,
and ``on_stall`` runs (the worker pool renews its leases at once). A loop
that stays held past ``lease`` gets one ERROR from the sampler thread, since
the loop itself may never log again.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import trio

__all__ = ["LoopMonitor"]

log = logging.getLogger("jobvisor.loop")


class _Turns(trio.abc.Instrument):
    """Marks when the loop leaves and re-enters its I/O wait (read by both threads)."""

    def __init__(self) -> None:
        # (when the turn in progress began, whether the loop is waiting instead), published as
        # one tuple so the sampler thread never reads one half of a change
        self.state: tuple[float, bool] = (time.monotonic(), False)
        self.longest = 0.0  # the longest finished turn since the monitor last looked

    def after_io_wait(self, timeout: float) -> None:
        self.state = (time.monotonic(), False)

    def before_io_wait(self, timeout: float) -> None:
        held = time.monotonic() - self.state[0]
        if held > self.longest:
            self.longest = held
        self.state = (self.state[0], True)


class LoopMonitor:
    """See the module docstring. ``culprit(frame)`` names the handler a stack frame runs, or None."""

    def __init__(
        self,
        *,
        interval: float,
        threshold: float,
        lease: float,
        observe: Callable[[float], None],
        culprit: Callable[[FrameType], str | None],
        on_stall: Callable[[], None] = lambda: None,
    ) -> None:
        self.interval = interval
        self.threshold = threshold
        self.lease = lease
        self._observe = observe
        self._culprit = culprit
        self._on_stall = on_stall
        self._turns = _Turns()
        self._loop_thread = threading.get_ident()
        self._seen: str | None = None  # the handler found holding the current stall
        self._alarmed = False  # the sampler logged this stall already
        self._stop = threading.Event()
        self.stalls = 0

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        trio.lowlevel.add_instrument(self._turns)
        sampler = threading.Thread(target=self._sample, name="jobvisor-loop-sampler", daemon=True)
        sampler.start()
        task_status.started()
        try:
            while not stop.is_set():
                with trio.move_on_after(self.interval):
                    await stop.wait()
                held, self._turns.longest = self._turns.longest, 0.0
                self._observe(held)
                if held >= self.threshold:
                    self._stalled(held)
                self._seen, self._alarmed = None, False
        finally:
            self._stop.set()
            with contextlib.suppress(KeyError):
                trio.lowlevel.remove_instrument(self._turns)

    def _stalled(self, held: float) -> None:
        self.stalls += 1
        holder = self._seen or "no handler found on the loop's stack (daemon code or a library)"
        log.warning("the event loop was blocked for %.2fs by %s; leases could not be renewed meanwhile "
                    "(an async handler must not block: make it a plain def to run it in a thread, "
                    "or use isolation='process')", held, holder)
        self._on_stall()

    def _sample(self) -> None:
        step = max(0.01, min(self.interval, self.threshold) / 4)
        while not self._stop.wait(step):
            started, waiting = self._turns.state
            held = time.monotonic() - started
            if waiting or held < self.threshold:
                continue
            if self._seen is None:
                self._seen = self._find_culprit()
            if held >= self.lease and not self._alarmed:
                self._alarmed = True
                log.error("the event loop has been blocked for %.0fs by %s: this daemon's leases are running "
                          "out", held, self._seen or "unknown code")

    def _find_culprit(self) -> str | None:
        frame: Any = sys._current_frames().get(self._loop_thread)
        while frame is not None:
            name = self._culprit(frame)
            if name is not None:
                return name
            frame = frame.f_back
        return None
