"""Rate-limited job types in a daemon on the embedded store, under trio's MockClock (autojump).

The worker pool sleeps until the moment a claim says a held-back job may start (the reply's
``next_at``), so starts are spaced by exactly one interval (to the store's 1 ms), far below
the idle poll (1 s) that would space them without it, and every job runs once: attempts 1,
retry count 0. A keyed limit spaces each key's jobs and lets different keys start together.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from jobvisor import App
from jobvisor.adapters.replies import Claimed
from tests.harness import ended, running_daemon, spec


async def test_starts_are_spaced_by_one_interval_with_no_retry_and_no_hot_claims(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    starts: list[float] = []

    @app.handler("send", rate_limit="10/s")
    async def send(ctx: Any) -> None:
        starts.append(trio.current_time())

    async with running_daemon(app, concurrency=8) as (daemon, watcher):
        jobs = [(await daemon.store.submit(spec(app, "send"))).id for _ in range(20)]
        for job in jobs:
            await watcher.until(ended(watcher, job))
        views = [await daemon.store.get_job(j) for j in jobs]
    assert [(v.state, v.attempts, v.retry_count) for v in views] == [("completed", 1, 0)] * 20
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 19
    assert all(0.099 <= g <= 0.102 for g in gaps), gaps  # to the store's 1 ms
    claims = sum(isinstance(r, Claimed) for r in watcher.replies)
    assert claims <= 3 * 20, claims  # a claim per start and per wake-up, never a busy loop


async def test_a_keyed_limit_spaces_each_key_and_not_across_keys(autojump_clock: trio.testing.MockClock) -> None:
    app = App()
    starts: dict[str, list[float]] = {"a": [], "b": []}

    @app.handler("send", rate_limit="1/s", rate_key="customer")
    async def send(ctx: Any) -> None:
        starts[ctx.input["customer"]].append(trio.current_time())

    async with running_daemon(app, concurrency=4) as (daemon, watcher):
        jobs = [(await daemon.store.submit(spec(app, "send", input={"customer": c}))).id
                for _ in range(4) for c in ("a", "b")]
        for job in jobs:
            await watcher.until(ended(watcher, job))
    assert starts["a"][0] == pytest.approx(starts["b"][0], abs=0.01)
    for key in ("a", "b"):
        gaps = [y - x for x, y in zip(starts[key], starts[key][1:], strict=False)]
        assert len(gaps) == 3
        assert all(0.999 <= g <= 1.002 for g in gaps), (key, gaps)


@pytest.mark.parametrize(("options", "message"), [
    ({"rate_limit": "10/d"}, r"^handler 'send': rate_limit: '10/d' is not <count>/<s\|m\|h> \(for example"),
    ({"rate_limit": "5000/s"}, r"^handler 'send': rate_limit: '5000/s' is more than 1000 starts a second"),
    ({"rate_key": "customer"}, r"^handler 'send': rate_key: needs a rate_limit$"),
    ({"rate_limit": "1/s", "rate_key": "a b"}, r"^handler 'send': rate_key: 'a b' is not an input field name"),
])
def test_a_bad_limit_is_refused_at_declaration_in_one_line(options: dict[str, Any], message: str) -> None:
    app = App()
    with pytest.raises(ValueError, match=message) as refused:
        app.handler("send", **options)
    assert "\n" not in str(refused.value)
    assert app.handlers == {}


def test_the_limit_is_published_with_the_type() -> None:
    app = App()

    @app.handler("send", rate_limit="100/m", rate_key="customer_id")
    async def send(ctx: Any) -> None: ...

    described = app.handlers["send"].describe()
    assert (described["rate_limit"], described["rate_key"]) == ("100/m", "customer_id")
    assert app.handlers["send"].rate_wire() == "600 customer_id"
