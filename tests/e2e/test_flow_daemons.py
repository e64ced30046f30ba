"""Flows across real ``jobvisor run`` daemons on a real redis-server.

Four flows of a parent and 5 children, submitted before 2 daemons start: one whose children
all succeed, and one per policy with child 2 failing. Each parent runs exactly once (one
attempt, one claim), never before every dependency its policy waits for has finished, and
sees its children's outcomes and results (its result is what ``ctx.dependencies`` held);
under ``fail`` the parent never runs: ``failed`` with reason ``dependency_failed``. Waits are
the client's event-driven ``wait``, bounded."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from jobvisor import Client, Step
from tests.daemon_process import daemon, events_of
from tests.flow_app import app

APP = "tests.flow_app:app"
CHILDREN = 5
FAILING = 2


def _children(fail: bool) -> list[Step]:
    return [Step("child", {"n": n, "fail": fail and n == FAILING}) for n in range(CHILDREN)]


def test_five_children_over_two_daemons_then_their_parent_once(redis_url: str, tmp_path: Path) -> None:
    with Client(redis_url, app=app) as client:
        flows = {
            "ok": client.flow("parent", _children(False)),
            **{policy: client.flow("parent", _children(True), on_dependency_failure=policy)
               for policy in ("fail", "ignore", "continue")},
        }
        assert {name: client.status(f.parent).state for name, f in flows.items()} == {
            "ok": "waiting", "fail": "waiting", "ignore": "waiting", "continue": "waiting"}
        with ExitStack() as stack:
            procs = [stack.enter_context(daemon(redis_url, tmp_path, f"d{i}", app=APP, grace=1.0, lease=5.0,
                                                extra=("--concurrency", "3")))
                     for i in range(2)]
            parents = {name: client.wait(f.parent, timeout=30) for name, f in flows.items()}
            children = {name: [client.wait(c, timeout=30) for c in f.children] for name, f in flows.items()}
            for p in procs:
                p.check_alive()
    assert {name: v.state for name, v in parents.items()} == {
        "ok": "completed", "fail": "failed", "ignore": "completed", "continue": "completed"}
    for name, kids in children.items():
        expected = ["completed"] * CHILDREN
        if name != "ok":
            expected[FAILING] = "failed"
        assert [k.state for k in kids] == expected, name
    # fail: never ran, failed by the failing child
    failed = parents["fail"]
    assert (failed.attempts, failed.reason) == (0, "dependency_failed")
    for name in ("ok", "ignore", "continue"):
        view, flow = parents[name], flows[name]
        assert view.attempts == 1, name
        assert [e.type for e in events_of(redis_url, flow.parent)].count("job.claim") == 1, name
        seen = view.result["seen"]
        assert list(seen) == flow.children, name
        started = view.attempt_records[0].started_at
        waited_for = children[name] if name != "continue" else [children[name][FAILING]]
        assert all(k.finished_at is not None and k.finished_at <= started for k in waited_for), name
        if name != "continue":  # every child was terminal when it started: all five outcomes
            assert seen == {c: ({"state": "completed", "result": {"doubled": 2 * n}} if k.state == "completed"
                                else {"state": "failed", "result": None})
                            for n, (c, k) in enumerate(zip(flow.children, children[name], strict=True))}, name
        else:
            assert seen[flow.children[FAILING]] == {"state": "failed", "result": None}
    assert len({k.attempt_records[0].worker for kids in children.values() for k in kids}) == 2
