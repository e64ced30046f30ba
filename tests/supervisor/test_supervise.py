"""The supervision decision (``supervise.decide``), row by row, and the supervisor performing it
under trio's MockClock (exact virtual times: restarts after the backoff, never sooner)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.supervisor.supervise import (
    Action,
    ChildSpec,
    Decision,
    Ended,
    Policy,
    Restart,
    Supervisor,
    SupervisorGaveUp,
    decide,
)

POLICY = Policy(intensity=3, period=10.0, backoff=0.1, max_backoff=0.3)
P, T, X = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY

# (ended, restart type, earlier counted ends, now) -> (action, delay, history after)
ROWS = [
    # asked to stop: done, whatever happened and whatever the type; nothing counted
    (Ended.STOPPED, P, (1.0,), 5.0, Action.DONE, 0.0, (1.0,)),
    (Ended.STOPPED, T, (), 5.0, Action.DONE, 0.0, ()),
    (Ended.STOPPED, X, (), 5.0, Action.DONE, 0.0, ()),
    # a store outage: waited out, never counted (a temporary child is dropped)
    (Ended.OUTAGE, P, (1.0, 2.0, 3.0), 5.0, Action.WAIT_OUTAGE, 0.0, (1.0, 2.0, 3.0)),
    (Ended.OUTAGE, T, (), 5.0, Action.WAIT_OUTAGE, 0.0, ()),
    (Ended.OUTAGE, X, (), 5.0, Action.DROP, 0.0, ()),
    # returned by itself: over, unless permanent (then it counts, or it would spin)
    (Ended.RETURNED, T, (4.0,), 5.0, Action.DONE, 0.0, (4.0,)),
    (Ended.RETURNED, X, (), 5.0, Action.DONE, 0.0, ()),
    (Ended.RETURNED, P, (), 5.0, Action.RESTART, 0.1, (5.0,)),
    # crashed: a temporary child is dropped; the others count
    (Ended.CRASHED, X, (), 5.0, Action.DROP, 0.0, ()),
    (Ended.CRASHED, P, (), 5.0, Action.RESTART, 0.1, (5.0,)),
    (Ended.CRASHED, T, (4.0,), 5.0, Action.RESTART, 0.2, (4.0, 5.0)),
    (Ended.CRASHED, P, (3.0, 4.0), 5.0, Action.RESTART, 0.3, (3.0, 4.0, 5.0)),  # 0.4 capped at 0.3
    # the fourth counted end within 10 s: give up
    (Ended.CRASHED, P, (2.0, 3.0, 4.0), 5.0, Action.GIVE_UP, 0.0, (2.0, 3.0, 4.0, 5.0)),
    (Ended.RETURNED, P, (2.0, 3.0, 4.0), 5.0, Action.GIVE_UP, 0.0, (2.0, 3.0, 4.0, 5.0)),
    # ends 10 s old or older are forgotten: the backoff starts over
    (Ended.CRASHED, P, (-5.0, 0.0, 4.0), 10.0, Action.RESTART, 0.2, (4.0, 10.0)),
    (Ended.CRASHED, T, (0.0, 0.5, 0.9), 10.95, Action.RESTART, 0.1, (10.95,)),
]


@pytest.mark.parametrize(("ended", "restart", "history", "now", "action", "delay", "after"), ROWS)
def test_decide(ended: Ended, restart: Restart, history: tuple[float, ...], now: float, action: Action,
                delay: float, after: tuple[float, ...]) -> None:
    decision = decide(POLICY, history, now, ended=ended, restart=restart)
    assert decision.action is action
    assert decision.delay == pytest.approx(delay)
    assert decision.history == after
    assert decision.restart is (action in (Action.RESTART, Action.WAIT_OUTAGE))


def test_the_table_covers_every_end_and_type() -> None:
    covered = {(row[0], row[1]) for row in ROWS}
    assert covered == {(e, r) for e in Ended for r in Restart}


def test_the_defaults_are_a_crash_of_a_permanent_child() -> None:
    assert decide(Policy(), (), 0.0) == Decision(Action.RESTART, 0.1, (0.0,))
    given_up = decide(Policy(intensity=0), (), 0.0)
    assert given_up.action is Action.GIVE_UP
    assert not given_up.restart


async def test_a_crashing_child_is_restarted_after_each_backoff_then_given_up(
        autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def child(stop: trio.Event, *, task_status: Any) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(1.0)
        raise RuntimeError(f"crash {len(starts)}")

    supervisor = Supervisor([ChildSpec("c", child)], POLICY)
    with pytest.raises(ExceptionGroup) as raised:  # trio's nursery wraps what a child raises
        await supervisor.run()
    assert raised.group_contains(SupervisorGaveUp, match=r"^actor 'c' crashed 4 times within 10s; giving up: "
                                                         r"RuntimeError: crash 4$")
    # runs of 1 s each, restarted after 0.1, 0.2, then 0.3 (capped); the fourth crash gives up
    assert starts == pytest.approx([0.0, 1.1, 2.3, 3.6])
    assert supervisor.restarts == {"c": 3}


async def test_giving_up_names_the_error_inside_a_childs_nursery_not_the_group(
        autojump_clock: trio.testing.MockClock) -> None:
    async def child(stop: trio.Event, *, task_status: Any) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:  # the crash leaves the child as a group
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep(1.0)
            raise LookupError("MOVED 16242 127.0.0.1:7001")

    supervisor = Supervisor([ChildSpec("c", child)], POLICY)
    with pytest.raises(ExceptionGroup) as raised:
        await supervisor.run()
    assert raised.group_contains(SupervisorGaveUp, match=r"giving up: LookupError: MOVED 16242 127\.0\.0\.1:7001$")


async def test_a_store_outage_is_waited_out_and_not_counted(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0

    async def child(stop: trio.Event, *, task_status: Any) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs <= 6:  # more outages than the intensity allows crashes
            raise StoreUnavailable("redis://127.0.0.1:1/0")
        await stop.wait()

    supervisor = Supervisor([ChildSpec("c", child, shutdown_s=1.0)], POLICY)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(60)
        assert runs == 7
        await supervisor.shutdown()
    assert supervisor.restarts == {"c": 0}


@pytest.mark.parametrize(("restart", "runs"),
                         [(Restart.TRANSIENT, 1), (Restart.TEMPORARY, 1), (Restart.PERMANENT, 3)])
async def test_a_child_that_returns_is_over_unless_permanent(autojump_clock: trio.testing.MockClock,
                                                             restart: Restart, runs: int) -> None:
    started = 0

    async def child(stop: trio.Event, *, task_status: Any) -> None:
        nonlocal started
        started += 1
        task_status.started()

    supervisor = Supervisor([ChildSpec("c", child, restart=restart)], Policy(intensity=2, period=10.0))
    if restart is Restart.PERMANENT:
        with pytest.raises(ExceptionGroup) as raised:
            await supervisor.run()
        assert raised.group_contains(SupervisorGaveUp, match=r"^actor 'c' crashed 3 times within 10s")
    else:
        await supervisor.run()
    assert started == runs
