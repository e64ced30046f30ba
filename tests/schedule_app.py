"""The app of the schedule e2e tests (``tests/e2e/test_schedule_daemons.py``): one job type,
``tick``, whose handler does nothing, and no declared schedule (the test adds it)."""

from __future__ import annotations

from typing import Any

from jobvisor import App

app = App()


@app.handler("tick", timeout=5.0, max_retries=0)
async def tick(ctx: Any) -> None:
    return None
