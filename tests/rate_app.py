"""The app of the rate-limit e2e test (``tests/e2e/test_rate_limit_daemons.py``): one job type,
``send``, limited to 10 starts a second across every daemon, whose handler does nothing."""

from __future__ import annotations

from typing import Any

from jobvisor import App

app = App()


@app.handler("send", timeout=5.0, max_retries=3, rate_limit="10/s")
async def send(ctx: Any) -> None:
    return None
