"""Supervision as data (after Erlang/OTP): child specs, restart intensity, backoff.

Each actor is a :class:`ChildSpec`. The :class:`Supervisor` starts children
in order, restarts one that crashes after an exponential backoff, and gives
up, raising :class:`SupervisorGaveUp`, when more than ``intensity`` restarts
happen within ``period`` seconds. The restart decision is the pure function
:func:`decide` (its table is in its docstring); the supervisor only performs
it. Stopping goes in reverse start order: each child is asked to stop (its
``stop`` event), given ``shutdown_s`` to finish, then cancelled.

A child is ``async def start(stop: trio.Event, *, task_status)``; it calls
``task_status.started()`` once ready and returns when ``stop`` is set (or
when it has nothing left to do, for a ``transient`` child).

A store outage is not a crash: a child that ends with
:class:`~adapters.errors.StoreUnavailable` (alone, or every leaf of an
exception group) is restarted after the outage's backoff and never counts
against the restart intensity, so a Redis that is restarting, loading or out
of memory for a minute does not stop the daemon. Actors wait such outages
out themselves; this is the safety net for one that let it through.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from jobvisor.adapters.errors import StoreUnavailable

from .outage import StoreOutage

__all__ = [
    "Action", "ChildSpec", "Decision", "Ended", "Policy", "Restart", "Supervisor", "SupervisorGaveUp",
    "decide", "store_outage",
]

log = logging.getLogger("jobvisor.supervisor")


class Restart(enum.StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only when it crashed
    TEMPORARY = "temporary"  # never restarted


Start = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ChildSpec:
    id: str
    start: Start
    restart: Restart = Restart.PERMANENT
    shutdown_s: float = 5.0


@dataclass(frozen=True)
class Policy:
    """At most ``intensity`` restarts within ``period`` seconds; backoff doubles from ``backoff``."""

    intensity: int = 5
    period: float = 30.0
    backoff: float = 0.1
    max_backoff: float = 5.0


class Ended(enum.StrEnum):
    """How one run of a child ended."""

    STOPPED = "stopped"  # it was asked to stop (its stop event is set), however it ended
    RETURNED = "returned"  # it returned by itself
    CRASHED = "crashed"  # it raised
    OUTAGE = "outage"  # it raised a store outage (alone, or every leaf of a group)


class Action(enum.StrEnum):
    """What the supervisor does next with a child whose run ended."""

    DONE = "done"  # the child is over; nothing to report
    RESTART = "restart"  # start it again after ``delay``: the end counted against the intensity
    WAIT_OUTAGE = "wait_outage"  # start it again after the outage's backoff: not counted
    DROP = "drop"  # a temporary child crashed: logged, never restarted
    GIVE_UP = "give_up"  # more than ``intensity`` counted ends within ``period``: SupervisorGaveUp


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    history: tuple[float, ...] = ()  # the counted ends still within the period, this one included

    @property
    def restart(self) -> bool:
        return self.action in (Action.RESTART, Action.WAIT_OUTAGE)


def decide(policy: Policy, history: Sequence[float], now: float, *, ended: Ended = Ended.CRASHED,
           restart: Restart = Restart.PERMANENT) -> Decision:
    """What to do with a child whose run ``ended`` at ``now``, given the times of its earlier
    counted ends (``history``). Pure: the supervisor performs the decision.

    ========== ===================== =========================================================
    ended      restart type          decision
    ========== ===================== =========================================================
    stopped    any                   done
    outage     permanent, transient  wait_outage (the outage's backoff, not counted)
    outage     temporary             drop
    returned   transient, temporary  done
    crashed    temporary             drop
    returned   permanent             counted (a permanent child that returns would spin)
    crashed    permanent, transient  counted
    ========== ===================== =========================================================

    Counted: ends older than ``period`` are forgotten; if those left, this one included,
    exceed ``intensity``, give up; else restart after ``backoff * 2**(n - 1)`` (``n`` of them),
    at most ``max_backoff``.
    """
    kept = tuple(history)
    if ended is Ended.STOPPED:
        return Decision(Action.DONE, history=kept)
    if restart is Restart.TEMPORARY and ended in (Ended.CRASHED, Ended.OUTAGE):
        return Decision(Action.DROP, history=kept)
    if ended is Ended.OUTAGE:
        return Decision(Action.WAIT_OUTAGE, history=kept)
    if ended is Ended.RETURNED and restart is not Restart.PERMANENT:
        return Decision(Action.DONE, history=kept)
    recent = tuple(t for t in history if now - t < policy.period) + (now,)
    if len(recent) > policy.intensity:
        return Decision(Action.GIVE_UP, history=recent)
    delay = min(policy.max_backoff, policy.backoff * 2 ** (len(recent) - 1))
    return Decision(Action.RESTART, delay, recent)


class SupervisorGaveUp(Exception):
    """An actor crashed more often than the restart intensity allows."""

    def __init__(self, child: str, crashes: int, period: float, last: BaseException | None) -> None:
        self.child = child
        self.crashes = crashes
        self.last = last
        cause = _underlying(last) if last is not None else None
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(
            f"actor '{child}' crashed {crashes} times within {period:g}s; giving up{detail}"
        )


def _underlying(exc: BaseException) -> BaseException:
    """What an exception group stands for: its first exception that is not a cancellation
    (nurseries wrap a crash in groups; the message names the crash, not the group)."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)] or list(exc.exceptions)
        exc = leaves[0]
    return exc


@dataclass
class _Running:
    spec: ChildSpec
    stop: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    history: tuple[float, ...] = ()
    outage: StoreOutage | None = None


def store_outage(exc: BaseException | None) -> StoreUnavailable | None:
    """The store outage ``exc`` is, when that is all it is (an exception group counts when
    every exception in it is one); else ``None``."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(StoreUnavailable)
        if match is not None and rest is None:
            first: BaseException = match
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return first if isinstance(first, StoreUnavailable) else None
    return None


class Supervisor:
    """Runs children under one nursery with restarts and an ordered shutdown."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        policy: Policy = Policy(),
        *,
        on_restart: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_restart = on_restart
        self._children = [_Running(spec) for spec in children]
        self.restarts: dict[str, int] = {spec.id: 0 for spec in children}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every child in order; return when all have ended.

        Raises :class:`SupervisorGaveUp` (after cancelling the others) when a
        child exceeds the restart intensity.
        """
        async with trio.open_nursery() as nursery:
            for child in self._children:
                await nursery.start(self._keep, child)
            task_status.started()

    async def _keep(self, child: _Running, *, task_status: trio.TaskStatus[None]) -> None:
        status = _OnceStatus(task_status)
        try:
            with child.scope:
                while True:
                    crash: BaseException | None = None
                    began = trio.current_time()
                    try:
                        await child.spec.start(child.stop, task_status=status)
                    except Exception as exc:  # noqa: BLE001 - a crash of any kind is restarted
                        crash = exc
                    outage = store_outage(crash)
                    ended = (Ended.STOPPED if child.stop.is_set() else Ended.OUTAGE if outage is not None
                             else Ended.CRASHED if crash is not None else Ended.RETURNED)
                    decision = decide(self.policy, child.history, trio.current_time(), ended=ended,
                                      restart=child.spec.restart)
                    child.history = decision.history
                    if decision.action is Action.WAIT_OUTAGE and outage is not None:
                        await trio.sleep(self._outage_delay(child, outage, trio.current_time() - began))
                        continue
                    if ended is not Ended.STOPPED and child.outage is not None:
                        child.outage.reached()  # it ended on something else: any outage is over
                    if decision.action is Action.DONE:
                        return
                    if decision.action is Action.DROP:
                        log.error("actor %s crashed, not restarted: %r", child.spec.id, crash)
                        status.started()
                        return
                    if decision.action is Action.GIVE_UP:
                        raise SupervisorGaveUp(
                            child.spec.id, len(decision.history), self.policy.period, crash
                        ) from crash
                    self.restarts[child.spec.id] += 1
                    if self.on_restart is not None:
                        self.on_restart(child.spec.id, crash or RuntimeError("returned"))
                    log.warning(
                        "actor %s %s; restarting in %.2fs", child.spec.id,
                        f"crashed ({crash!r})" if crash else "returned", decision.delay,
                    )
                    await trio.sleep(decision.delay)
        finally:
            child.done.set()

    def _outage_delay(self, child: _Running, exc: StoreUnavailable, ran: float) -> float:
        """Backoff before restarting a child that ended on a store outage (not a crash)."""
        if child.outage is None:
            child.outage = StoreOutage(f"actor {child.spec.id}", log, min_backoff=self.policy.backoff,
                                       max_backoff=self.policy.max_backoff)
        elif ran > 2 * self.policy.max_backoff:  # it served a while: that outage was over
            child.outage.reached()
        return child.outage.failed(exc)

    async def shutdown(self, *, deadline_s: float | None = None) -> None:
        """Stop children in reverse start order: ask, wait ``shutdown_s``, then cancel.

        Each step is bounded; a child that ignores both its stop event and
        cancellation only delays the step by its own bound.
        """
        for child in reversed(self._children):
            child.stop.set()
            with trio.move_on_after(child.spec.shutdown_s if deadline_s is None else deadline_s):
                await child.done.wait()
            if not child.done.is_set():
                log.warning("actor %s did not stop within %.1fs; cancelling", child.spec.id,
                            child.spec.shutdown_s)
                child.scope.cancel()
                with trio.move_on_after(max(1.0, child.spec.shutdown_s)):
                    await child.done.wait()


class _OnceStatus:
    """Passes ``started()`` on once, whichever run of a restarted child reaches it."""

    def __init__(self, real: trio.TaskStatus[None]) -> None:
        self.real = real
        self.reported = False

    def started(self, value: None = None) -> None:
        if not self.reported:
            self.reported = True
            self.real.started(value)
