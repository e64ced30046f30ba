"""Schedules in the store, on both backends (real redis-server and the embedded store): add,
the guarded tick (each tick moves once, a tick at or before the last one is blocked and writes
nothing), the tick's job made exactly as a client's submit makes it, pause/resume/remove, and
refusals that write nothing."""

from __future__ import annotations

from typing import Any

import pytest

from jobvisor.adapters.errors import BadInput, NotFound
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.replies import Blocked, Created, Invalid, Moved
from jobvisor.adapters.schedules import ScheduleSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.adapters.timing import Plan
from tests.store_fixtures import ManualClock, Target, snapshot, stream

JOB = JobSpec(type="report", input={"n": 1}, max_retries=2, timeout=30.0)


def every_second(name: str = "tick", **extra: Any) -> ScheduleSpec:
    return ScheduleSpec(name=name, job=JOB, every=1, **extra)


def fire(store: SyncStore, name: str, tick_ms: int) -> list[Any]:
    view = store.get_schedule(name)
    return store.tick_schedule(view, Plan([tick_ms], None, tick_ms + 1000))


def test_add_arms_the_first_tick_after_now(sync_store: SyncStore, clock: ManualClock) -> None:
    clock.t = 1_750_000_000.4
    assert isinstance(sync_store.add_schedule(every_second()), Created)
    view = sync_store.get_schedule("tick")
    assert (view.state, view.queue, view.next_at, view.last_tick, view.fired) == (
        "active", "default", 1_750_000_001.0, None, 0)
    due, later = sync_store.due_schedules("default", clock())
    assert (due, later) == ([], 1_750_000_001.0)
    clock.advance(0.6)
    due, later = sync_store.due_schedules("default", clock())
    assert [v.name for v in due] == ["tick"]
    assert later is None


@pytest.mark.cluster
def test_a_tick_fires_once_and_submits_the_clients_job(sync_store: SyncStore, clock: ManualClock,
                                                       target: Target) -> None:
    sync_store.add_schedule(every_second())
    tick = int(clock() * 1000) + 1000
    clock.advance(1)
    first = fire(sync_store, "tick", tick)
    assert [type(r) for r in first] == [Moved]
    moved = first[0]
    assert (moved.machine, moved.trigger, moved.from_, moved.to, moved.job_kind) == (
        "schedule", "fire", "active", "active", "created")
    assert moved.effects == ("record_tick", "submit_job", "arm", "wake_workers")
    before = snapshot(target.raw())
    again = fire(sync_store, "tick", tick)  # a second daemon offering the same tick
    earlier = fire(sync_store, "tick", tick - 1000)
    assert [type(r) for r in again + earlier] == [Blocked, Blocked]
    assert snapshot(target.raw()) == before  # blocked: nothing written
    ticked = sync_store.get_job(moved.job)
    client = sync_store.get_job(sync_store.submit(JOB).id)
    assert (ticked.state, ticked.type, ticked.input, ticked.max_retries, ticked.timeout) == (
        client.state, client.type, client.input, client.max_retries, client.timeout)
    raw = target.raw()
    job_fields = {k.decode() for k in raw.hgetall(Keys("default").job(moved.job))}
    client_fields = {k.decode() for k in raw.hgetall(Keys("default").job(client.id))}
    assert job_fields == client_fields
    view = sync_store.get_schedule("tick")
    assert (view.fired, view.last_tick, view.last_job, view.next_at) == (1, tick / 1000, moved.job, tick / 1000 + 1)
    kinds = [e["type"] for e in stream(raw) if e["id"] in ("tick", moved.job)]
    assert kinds == ["schedule.added", "job.submitted", "schedule.fire"]


def test_skip_records_the_tick_without_a_submit(sync_store: SyncStore, clock: ManualClock) -> None:
    sync_store.add_schedule(every_second())
    view = sync_store.get_schedule("tick")
    [moved] = sync_store.tick_schedule(view, Plan([], 5000, 6000))
    assert isinstance(moved, Moved)
    assert moved.trigger == "skip"
    assert moved.job == ""
    assert sync_store.queue_counts("default")["queued"] == 0
    [blocked] = sync_store.tick_schedule(view, Plan([5000], None, 6000))
    assert isinstance(blocked, Blocked)


@pytest.mark.cluster
def test_pause_resume_remove_follow_the_table(sync_store: SyncStore, clock: ManualClock, target: Target) -> None:
    sync_store.add_schedule(every_second())
    assert sync_store.pause_schedule("tick").to == "paused"
    assert sync_store.due_schedules("default", clock() + 10) == ([], None)
    assert isinstance(fire(sync_store, "tick", int(clock() * 1000) + 1000)[0], Invalid)
    assert isinstance(sync_store.pause_schedule("tick"), Invalid)
    clock.advance(5.5)
    resumed = sync_store.resume_schedule("tick")
    assert resumed.to == "active"
    assert sync_store.get_schedule("tick").next_at == int(clock()) + 1  # ticks while paused: not fired
    assert sync_store.remove_schedule("tick").to == "removed"
    before = snapshot(target.raw())
    assert sync_store.remove_schedule("tick").kind == "absorbed"
    assert sync_store.pause_schedule("tick").kind == "absorbed"
    assert snapshot(target.raw()) == before
    assert sync_store.list_schedules() == []
    assert [v.state for v in sync_store.list_schedules(removed=True)] == ["removed"]


def test_a_removed_schedule_added_again_never_fires_a_tick_it_fired(sync_store: SyncStore,
                                                                     clock: ManualClock) -> None:
    sync_store.add_schedule(every_second())
    tick = int(clock() * 1000) + 1000
    assert fire(sync_store, "tick", tick)[0].moved
    sync_store.remove_schedule("tick")
    again = sync_store.add_schedule(every_second(missed="catch_up"))
    assert isinstance(again, Moved)
    assert (again.from_, again.to) == ("removed", "active")
    assert isinstance(fire(sync_store, "tick", tick)[0], Blocked)
    assert sync_store.get_schedule("tick").missed == "catch_up"


@pytest.mark.parametrize(("fields", "error"), [
    ({"cron": "not cron"}, "cron:"),
    ({"cron": "* * * * *", "every": 5}, "cron:"),
    ({}, "cron:"),
    ({"every": 0.5}, "every:"),
    ({"every": 5, "tz": "Mars/Olympus"}, "tz:"),
    ({"every": 5, "missed": "sometimes"}, "missed:"),
    ({"every": 5, "missed": "catch_up", "catch_up_max": 101}, "catch_up_max:"),
    ({"every": 5, "catch_up_max": 0}, "catch_up_max:"),
    ({"every": 5, "name": "a{b}"}, "name:"),
    ({"every": 5, "job": JobSpec(type="report", delay=5)}, "delay:"),
])
def test_bad_schedules_are_refused_naming_the_field_and_write_nothing(
        sync_store: SyncStore, target: Target, fields: dict[str, Any], error: str) -> None:
    before = snapshot(target.raw())
    spec: dict[str, Any] = {"name": "bad", "job": JOB, **fields}
    with pytest.raises(BadInput, match=f"^{error}"):
        sync_store.add_schedule(ScheduleSpec(**spec))
    assert snapshot(target.raw()) == before


def test_a_name_lives_in_one_queue(sync_store: SyncStore, target: Target) -> None:
    sync_store.add_schedule(every_second())
    before = snapshot(target.raw())
    with pytest.raises(BadInput, match="^name: schedule 'tick' exists in queue 'default'"):
        sync_store.add_schedule(ScheduleSpec(name="tick", job=JobSpec(type="report", queue="other"), every=1))
    assert snapshot(target.raw()) == before
    with pytest.raises(NotFound):
        sync_store.pause_schedule("nope")


@pytest.mark.cluster
def test_a_redefinition_keeps_the_missed_ticks_and_a_declared_one_writes_nothing(
        sync_store: SyncStore, clock: ManualClock, target: Target) -> None:
    sync_store.add_schedule(every_second(missed="catch_up"))
    armed = sync_store.get_schedule("tick").next_at
    clock.advance(30)  # no daemon ran: 30 ticks missed
    before = snapshot(target.raw())
    declared = sync_store.add_schedule(every_second(missed="catch_up"), keep=True)
    assert declared.kind == "absorbed"
    assert snapshot(target.raw()) == before
    redefined = sync_store.add_schedule(every_second(missed="catch_up", catch_up_max=5), keep=True)
    assert isinstance(redefined, Moved)
    assert (redefined.trigger, redefined.to) == ("add", "active")
    view = sync_store.get_schedule("tick")
    assert (view.next_at, view.catch_up_max) == (armed, 5)
    sync_store.add_schedule(ScheduleSpec(name="tick", job=JOB, every=7))  # new ticks: armed from now
    assert sync_store.get_schedule("tick").next_at == (int(clock()) // 7 + 1) * 7
    sync_store.pause_schedule("tick")
    assert sync_store.add_schedule(every_second()).to == "paused"  # type: ignore[union-attr]
