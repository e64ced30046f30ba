"""``AsyncClient.flow`` and ``AsyncClient.chain`` under trio, against a real redis-server: the
same jobs, states and dependencies as ``Client``'s, and the same refusals (naming the step,
nothing written).

Each flow is made twice, once by each client, and the two are read back from Redis as
(state, type, input, parent position, dependent positions): positions, not ids, so the two
must be equal.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from jobvisor import AsyncClient, Client, Step
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.keys import Keys
from tests.cli_support import assert_nothing_written, dump
from tests.flow_app import app


def shape(url: str, ids: list[str]) -> list[tuple[Any, ...]]:
    """Each job as (state, type, input, its parent's position, its dependents' positions)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    keys = Keys("default")
    try:
        out = []
        for job_id in ids:
            record = client.hgetall(keys.job(job_id))
            parent = record.get("parent")
            out.append((record["state"], record["type"], record["input"],
                        None if parent is None else ids.index(parent),
                        sorted(ids.index(d) for d in client.smembers(keys.dependents(job_id)))))
        return out
    finally:
        client.close()


PARENT = Step("parent", {"title": "t"})
CHILDREN = [Step("child", {"n": 1}), ("child", {"n": 2}), "child"]
CHAIN = [Step("child", {"n": 1}), "child", ("parent", [1])]


async def test_async_flow_and_chain_make_what_the_sync_client_makes(redis_url: str) -> None:
    with Client(redis_url, app=app) as client:
        sync_flow = client.flow(PARENT, CHILDREN, on_dependency_failure="ignore")
        sync_chain = client.chain(CHAIN)
    async with AsyncClient.open(redis_url, app=app) as aclient:
        async_flow = await aclient.flow(PARENT, CHILDREN, on_dependency_failure="ignore")
        async_chain = await aclient.chain(CHAIN)
        assert (await aclient.status(async_flow.parent)).state == "waiting"
        assert [(await aclient.status(c)).state for c in async_flow.children] == ["queued"] * 3
    flow = shape(redis_url, [async_flow.parent, *async_flow.children])
    assert flow == shape(redis_url, [sync_flow.parent, *sync_flow.children])
    assert flow == [("waiting", "parent", '{"title":"t"}', None, []),
                    ("queued", "child", '{"n":1}', 0, [0]),
                    ("queued", "child", '{"n":2}', 0, [0]),
                    ("queued", "child", "null", 0, [0])]
    chain = shape(redis_url, async_chain)
    assert chain == shape(redis_url, sync_chain)
    assert chain == [("queued", "child", '{"n":1}', None, [1]),
                     ("waiting", "child", "null", None, [2]),
                     ("waiting", "parent", "[1]", None, [])]


@pytest.mark.parametrize(("make", "words"), [
    (lambda c: c.flow("parent", ["child", "nope"]), "children[1]: type: unknown job type 'nope'"),
    (lambda c: c.flow("parent", []), "children: a flow needs at least one child"),
    (lambda c: c.flow("parent", ["child", "elsewhere"]), "flow: job 2 is in queue 'other'"),
    (lambda c: c.flow("parent", ["child"], on_dependency_failure="maybe"), "parent: "),
    (lambda c: c.chain([]), "steps: a chain needs at least one step"),
    (lambda c: c.chain(["child", Step("child", None, {"timeout": -1})]), "steps[1]: "),
    (lambda c: c.flow(Step("parent", None, {"on_dependency_failure": "ignore"}), ["child"]),
     "on_dependency_failure: the flow's or chain's own, not a step's"),
    (lambda c: c.chain(["child", Step("child", None, {"delay": 30})]), "takes no delay"),
], ids=["unknown-type", "no-children", "mixed-queues", "bad-policy", "empty-chain", "bad-option", "step-policy",
        "delay-waiting"])
async def test_async_refusals_are_the_sync_ones_and_write_nothing(redis_url: str, make: Any, words: str) -> None:
    before = dump(redis_url)
    with Client(redis_url, app=app) as client, pytest.raises(BadInput) as sync_refusal:
        make(client)
    async with AsyncClient.open(redis_url, app=app) as aclient:
        with pytest.raises(BadInput) as async_refusal:
            await make(aclient)
    assert str(async_refusal.value) == str(sync_refusal.value)
    assert words in str(async_refusal.value)
    assert_nothing_written(before, dump(redis_url))
