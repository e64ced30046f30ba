"""The app of ``bench/rate_limit.py``'s accuracy run: three limited job types whose handlers do
nothing (10/s, 100/s, and 5/s per value of ``customer``)."""

from __future__ import annotations

from typing import Any

from jobvisor import App

app = App()


@app.handler("r10", timeout=5.0, rate_limit="10/s")
async def r10(ctx: Any) -> None:
    return None


@app.handler("r100", timeout=5.0, rate_limit="100/s")
async def r100(ctx: Any) -> None:
    return None


@app.handler("keyed", timeout=5.0, rate_limit="5/s", rate_key="customer")
async def keyed(ctx: Any) -> None:
    return None
