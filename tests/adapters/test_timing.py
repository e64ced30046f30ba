"""When ticks fall (adapters/timing.py, pure): cron in a time zone across both DST changes (a
skipped local time does not fire, a repeated one fires once), ``every`` on the epoch's
multiples, and the missed-tick policies (skip within a grace, catch-up capped)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from jobvisor.adapters.timing import Plan, Timing, plan


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def utc(tick: int) -> str:
    return datetime.fromtimestamp(tick / 1000, timezone.utc).strftime("%m-%d %H:%M")


def walk(timing: Timing, start: int, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = timing.next_after(t)
        out.append(utc(t))
    return out


def test_a_local_time_the_zone_skips_does_not_fire() -> None:
    # Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    daily = Timing.parse(cron="30 2 * * *", tz="Europe/Paris")
    assert walk(daily, ms("2026-03-27T12:00:00+00:00"), 3) == ["03-28 01:30", "03-30 00:30", "03-31 00:30"]


def test_a_local_time_the_zone_repeats_fires_once() -> None:
    # Paris, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice, fires at the first.
    daily = Timing.parse(cron="30 2 * * *", tz="Europe/Paris")
    assert walk(daily, ms("2026-10-24T12:00:00+00:00"), 2) == ["10-25 00:30", "10-26 01:30"]
    half_hourly = Timing.parse(cron="*/30 * * * *", tz="Europe/Paris")
    assert walk(half_hourly, ms("2026-10-24T23:40:00+00:00"), 4) == [
        "10-25 00:00", "10-25 00:30", "10-25 02:00", "10-25 02:30"]
    # walking back over the repeated hour gives the same instants
    assert [utc(t) for t in half_hourly.latest(ms("2026-10-25T02:10:00+00:00"), 0, 3)] == [
        "10-25 00:00", "10-25 00:30", "10-25 02:00"]


def test_utc_cron_and_every() -> None:
    assert walk(Timing.parse(cron="*/5 * * * *"), ms("2026-01-01T00:03:00+00:00"), 2) == ["01-01 00:05", "01-01 00:10"]
    every = Timing.parse(every=90)
    assert every.next_after(0) == 90_000
    assert every.next_after(90_000) == 180_000
    assert every.latest(400_000, 100_000, 10) == [180_000, 270_000, 360_000]
    assert Timing.parse(every=1, tz="Europe/Paris").next_after(1500) == 2000
    assert ZoneInfo("Europe/Paris") is not None


def test_skip_fires_the_latest_missed_within_the_grace() -> None:
    every = Timing.parse(every=10)
    assert plan(every, 10_000, 9_000, missed="skip", catch_up_max=5, grace_ms=5000) == Plan([], None, 10_000)
    assert plan(every, 10_000, 43_000, missed="skip", catch_up_max=5, grace_ms=5000) == Plan([40_000], None, 50_000)
    assert plan(every, 10_000, 46_000, missed="skip", catch_up_max=5, grace_ms=5000) == Plan([], 40_000, 50_000)


def test_catch_up_fires_the_latest_missed_up_to_the_cap() -> None:
    every = Timing.parse(every=10)
    assert plan(every, 10_000, 200_500, missed="catch_up", catch_up_max=3, grace_ms=1000) == Plan(
        [180_000, 190_000, 200_000], None, 210_000)
    assert plan(every, 10_000, 25_000, missed="catch_up", catch_up_max=3, grace_ms=1000) == Plan(
        [10_000, 20_000], None, 30_000)


@pytest.mark.parametrize(("args", "error"), [
    ({"cron": "61 * * * *"}, "cron:"), ({}, "cron:"), ({"every": 0}, "every:"),
    ({"every": 1.0001}, "every:"), ({"every": 5, "tz": "Nowhere/City"}, "tz:"),
])
def test_bad_timings_name_the_field(args: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=f"^{error}"):
        Timing.parse(**args)  # type: ignore[arg-type]
