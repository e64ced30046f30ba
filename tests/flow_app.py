"""The app of the flow e2e test (``tests/e2e/test_flow_daemons.py``): ``child`` returns its
input's ``n`` doubled after 0.2 s of work (or fails when its input says so); ``parent`` returns what it saw of its
dependencies (``ctx.dependencies``), so the test reads from the store what the parent saw.
``elsewhere`` is of another queue (the CLI's ``flow`` and ``chain`` refuse mixing it in)."""

from __future__ import annotations

from typing import Any

import trio

from jobvisor import App

app = App()


@app.handler("child", timeout=10.0, max_retries=0)
async def child(ctx: Any) -> dict[str, int]:
    await trio.sleep(0.2)  # some work: the children of one flow spread over both daemons
    if ctx.input.get("fail"):
        raise RuntimeError(f"child {ctx.input['n']} fails on purpose")
    return {"doubled": 2 * ctx.input["n"]}


@app.handler("parent", timeout=10.0, max_retries=0)
async def parent(ctx: Any) -> dict[str, Any]:
    return {"seen": ctx.dependencies}


@app.handler("elsewhere", queue="other", timeout=10, max_retries=0)
async def elsewhere(ctx: Any) -> None:
    """A type of another queue: a flow or chain naming it with ``child`` mixes queues."""
