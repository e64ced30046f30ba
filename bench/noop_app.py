"""Handlers for the benchmarks: a no-op, and one that reports when it started."""

from __future__ import annotations

import time

from jobvisor import App

app = App()


@app.handler("noop", max_retries=0)
async def noop(ctx):  # type: ignore[no-untyped-def]
    return None


@app.handler("stamp", max_retries=0)
async def stamp(ctx):  # type: ignore[no-untyped-def]
    return time.time()


@app.handler("noop_thread", max_retries=0)
def noop_thread(ctx):  # type: ignore[no-untyped-def]
    return None


@app.handler("noop_process", isolation="process", max_retries=0)
def noop_process(ctx):  # type: ignore[no-untyped-def]
    return None
