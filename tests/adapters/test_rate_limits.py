"""Rate limits in the claim (``lua/rate.lua``: the limits and the ``claim`` op in front of its routes) on both
backends (real redis-server and the embedded store), and on the 3-master Cluster: GCRA with a
burst of 1 (one start, then exactly one interval until the next), per-key independence, a limit
raised, lowered and removed (counted from the last start), unlimited types claimed alongside,
and a held-back job left as it was (still queued, retry count 0, nothing written by the claim
that held it back)."""

from __future__ import annotations

import pytest

from jobvisor.adapters.keys import Keys
from jobvisor.adapters.rates import RateLimit, check_rate_key, parse_rate, wire
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.store_fixtures import ManualClock, Target, snapshot

pytestmark = pytest.mark.cluster

Q = "default"


def limit(store: SyncStore, job_type: str, spec: str | None, field: str | None = None) -> None:
    store.publish_rate_limits(Q, {job_type: wire(None if spec is None else parse_rate(spec), field)})


def submit(store: SyncStore, clock: ManualClock, job_type: str, n: int, **input: object) -> list[str]:
    ids = []
    for _ in range(n):
        ids.append(store.submit(JobSpec(type=job_type, input=dict(input) or None)).id)
        clock.advance(0.001)  # distinct enqueue times: a known order
    return ids


def take(store: SyncStore, n: int = 10, types: tuple[str, ...] | None = None) -> tuple[list[str], float | None]:
    jobs, next_at = store.claim_next(Q, "w1", n=n, types=types)
    return [j.id for j in jobs], next_at


def test_one_start_then_exactly_one_interval_and_a_held_back_job_is_untouched(
        target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    limit(sync_store, "send", "10/s")  # one start every 100 ms
    ids = submit(sync_store, clock, "send", 4)
    start = clock()
    assert take(sync_store) == ([ids[0]], pytest.approx(start + 0.1))  # burst 1: one of four
    raw = target.raw()
    before = snapshot(raw)
    got, next_at = take(sync_store)
    assert got == []
    assert next_at == pytest.approx(start + 0.1)
    assert snapshot(raw) == before  # a held-back claim writes nothing
    for i in ids[1:]:
        job = sync_store.get_job(i)
        assert (job.state, job.retry_count, job.attempts) == ("queued", 0, 0)
    clock.advance(0.099)
    assert take(sync_store)[0] == []
    clock.advance(0.001)  # exactly one interval after the first start
    assert take(sync_store)[0] == [ids[1]]
    clock.advance(0.5)  # idle for five intervals: still one start, no burst saved up
    assert take(sync_store)[0] == [ids[2]]
    assert take(sync_store)[0] == []
    clock.advance(0.1)
    assert take(sync_store) == ([ids[3]], None)
    assert take(sync_store) == ([], None)  # nothing queued: nothing held back


def test_each_key_has_its_own_limit(sync_store: SyncStore, clock: ManualClock) -> None:
    limit(sync_store, "send", "1/m", "customer")
    a = submit(sync_store, clock, "send", 2, customer="a")
    b = submit(sync_store, clock, "send", 2, customer="b")
    n = submit(sync_store, clock, "send", 2, customer=7)
    none = submit(sync_store, clock, "send", 2)  # no such field: one shared bucket
    start = clock()
    got, next_at = take(sync_store)
    assert sorted(got) == sorted([a[0], b[0], n[0], none[0]])
    assert next_at == pytest.approx(start + 60)
    assert take(sync_store)[0] == []
    clock.advance(60)
    assert sorted(take(sync_store)[0]) == sorted([a[1], b[1], n[1], none[1]])


def test_unlimited_types_are_claimed_alongside_and_unserved_limits_are_not_reported(
        sync_store: SyncStore, clock: ManualClock) -> None:
    limit(sync_store, "send", "1/s")
    sends = submit(sync_store, clock, "send", 3)
    echoes = submit(sync_store, clock, "echo", 3)
    got, next_at = take(sync_store, n=3, types=("echo", "send"))
    assert got == [sends[0], echoes[0], echoes[1]]
    assert next_at == pytest.approx(clock() + 1)
    got, next_at = take(sync_store, n=3, types=("echo", "send"))
    assert got == [echoes[2]]
    assert next_at is not None
    assert take(sync_store, types=("echo",)) == ([], None)  # a daemon without the type: no wait
    assert take(sync_store, n=1, types=None)[0] == []  # a claim of every type honours it too


def test_a_changed_limit_counts_from_the_last_start_and_a_removed_one_frees(
        sync_store: SyncStore, clock: ManualClock) -> None:
    limit(sync_store, "send", "1/m")
    ids = submit(sync_store, clock, "send", 6)
    assert take(sync_store)[0] == [ids[0]]
    limit(sync_store, "send", "10/s")  # raised: 100 ms after the last start, not a minute
    got, next_at = take(sync_store)
    assert got == []
    assert next_at == pytest.approx(clock() + 0.1)
    clock.advance(0.1)
    assert take(sync_store)[0] == [ids[1]]
    limit(sync_store, "send", "1/h")  # lowered: an hour after the last start
    clock.advance(0.1)
    got, next_at = take(sync_store)
    assert got == []
    assert next_at == pytest.approx(clock() - 0.1 + 3600)
    clock.advance(3600 - 0.1)
    assert take(sync_store)[0] == [ids[2]]
    limit(sync_store, "send", None)
    assert take(sync_store) == (ids[3:], None)


def test_a_paused_queue_stays_paused_with_limits(sync_store: SyncStore, clock: ManualClock) -> None:
    limit(sync_store, "send", "1/s")
    submit(sync_store, clock, "send", 1)
    sync_store.pause(Q)
    assert take(sync_store) == ([], None)
    sync_store.resume(Q)
    assert len(take(sync_store)[0]) == 1


def test_the_limits_live_in_the_queue_hash_tag(target: Target, sync_store: SyncStore, clock: ManualClock) -> None:
    limit(sync_store, "send", "10/s", "customer")
    submit(sync_store, clock, "send", 1, customer="c1")
    assert len(take(sync_store)[0]) == 1
    keys = {k for k in snapshot(target.raw()) if "rate" in k}
    prefix = Keys(Q).prefix
    assert keys == {f"{prefix}rates", f"{prefix}rate:send:c1"}


@pytest.mark.parametrize(("spec", "parsed"), [("100/m", RateLimit(100, 60.0)), ("10/s", RateLimit(10, 1.0)),
                                              ("1000/h", RateLimit(1000, 3600.0)), ("1000/s", RateLimit(1000, 1.0))])
def test_a_rate_limit_reads_count_per_unit(spec: str, parsed: RateLimit) -> None:
    assert parse_rate(spec) == parsed
    assert str(parsed) == spec


@pytest.mark.parametrize("spec", ["", "10", "0/s", "10/d", "10 /s", "-1/m", "1.5/s", "1001/s", "10/S", 10, None])
def test_a_bad_rate_limit_is_one_line_naming_it(spec: object) -> None:
    with pytest.raises(ValueError, match=r"^rate_limit: [^\n]+$"):
        parse_rate(spec)


@pytest.mark.parametrize(("field", "rate"), [("", "1/s"), ("a b", "1/s"), ("x" * 129, "1/s"), (3, "1/s"),
                                             ("customer", None)])
def test_a_bad_rate_key_is_one_line_naming_it(field: object, rate: object) -> None:
    with pytest.raises(ValueError, match=r"^rate_key: [^\n]+$"):
        check_rate_key(field, rate)


def test_the_wire_form_is_the_interval_in_ms_and_the_field() -> None:
    assert wire(parse_rate("3/s"), "customer") == "333.333333 customer"
    assert wire(parse_rate("10/s")) == "100"
    assert wire(None) == ""
