"""Two versions of one app, for ``tests/test_rolling_deploys.py``: real ``jobvisor run``
subprocesses on one queue.

``tests.routing_app:old`` has a handler for ``A`` only; ``tests.routing_app:new`` for
``A`` and ``B`` (a type the old version does not know). ``B`` allows no retry, so one
claim by a daemon without its handler would fail it at once. ``A`` takes a little time,
so that both daemons get some.
"""

from __future__ import annotations

from typing import Any

import trio

from jobvisor import App, JobContext

__all__ = ["old", "new"]


def _make(types: tuple[str, ...]) -> App:
    app = App()
    if "A" in types:
        @app.handler("A", timeout=30, max_retries=3)
        async def a(ctx: JobContext) -> dict[str, Any]:
            await trio.sleep(0.01)
            return {"ok": "A"}
    if "B" in types:
        @app.handler("B", timeout=30, max_retries=0)
        async def b(ctx: JobContext) -> dict[str, Any]:
            return {"ok": "B"}
    return app


old = _make(("A",))
new = _make(("A", "B"))
