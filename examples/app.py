"""A small app for the README walkthrough: ``jobvisor run --app examples.app:app``."""

from __future__ import annotations

import trio

from supervisor import App

app = App()


@app.handler("echo", timeout=10, max_retries=2)
async def echo(ctx):
    """Returns its input."""
    return {"echo": ctx.input}


@app.handler("flaky", timeout=10, max_retries=3, backoff=0.2)
async def flaky(ctx):
    """Fails its first two attempts, then succeeds."""
    if ctx.attempt <= 2:
        raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")
    return {"attempts": ctx.attempt}


@app.handler("report", phases=["fetch", "render", "publish"], timeout=30, max_retries=2,
             required_outputs=["url", "pages"])
async def report(ctx):
    """A phased job: a retry resumes at the first unfinished phase."""

    async def fetch():
        await trio.sleep(0.05)
        return {"rows": 3}

    async def render(data):
        await trio.sleep(0.05)
        return {"pages": data["rows"]}

    async def publish(doc):
        await trio.sleep(0.05)
        return {"url": f"https://reports.example/{ctx.job_id}", "pages": doc["pages"]}

    data = await ctx.phase("fetch", fetch)
    doc = await ctx.phase("render", render, data)
    return await ctx.phase("publish", publish, doc)


@app.handler("slow", timeout=1, max_retries=0)
async def slow(ctx):
    """Sleeps past its timeout."""
    await trio.sleep(ctx.input.get("seconds", 5) if isinstance(ctx.input, dict) else 5)
    return "done"
