"""Handlers for the web tests (``jobvisor run --app tests.web_app:app`` and ``jobvisor web --app``).

``echo`` returns its input. ``fail_once`` has two phases and fails its first attempt (no
retries left: the job is ``failed``), so an operator's retry runs a second attempt that
completes; ``{"fail": "always"}`` makes every attempt fail.
"""

from __future__ import annotations

from typing import Any

from jobvisor import App, JobContext

__all__ = ["app"]

app = App()


@app.handler("echo", timeout=10, max_retries=0)
async def echo(ctx: JobContext) -> Any:
    return ctx.input


@app.handler("fail_once", phases=["prepare", "finish"], timeout=10, max_retries=0)
async def fail_once(ctx: JobContext) -> Any:
    spec = ctx.input if isinstance(ctx.input, dict) else {}

    async def prepare() -> dict[str, int]:
        return {"attempt": ctx.attempt}

    async def finish() -> dict[str, Any]:
        if ctx.attempt == 1 or spec.get("fail") == "always":
            raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
        return {"done": True, "attempt": ctx.attempt}

    await ctx.phase("prepare", prepare)
    return await ctx.phase("finish", finish)
