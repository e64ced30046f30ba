"""The handler of the failover scenario (``tests/failover_load.py``): a short nap, so that a
run of jobs lasts long enough for a master to be killed in the middle of it."""

from __future__ import annotations

import trio

from jobvisor import App

app = App()


@app.handler("nap", max_retries=0)
async def nap(ctx):  # type: ignore[no-untyped-def]
    await trio.sleep(0.05)
