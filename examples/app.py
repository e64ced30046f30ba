"""A small app: the README walkthrough runs it (``jobvisor run --app examples.app:app``), and
``jobvisor demo`` runs the same handlers against its local service.

``transcode`` is the interesting one: it hands work to an external service, records the
service's job id, and returns when the service says the work is done. The service's status
API lags behind its own progress, which is exactly the incident the validator prevents: the
job reaches ``completed`` (and its webhook goes out) only once the service's status agrees.
If the worker dies after handing the work over, the watchdog asks the service (the status
query) instead of running the handler again.
"""

from __future__ import annotations

import os

import httpx
import trio

from jobvisor import App, ServiceStatus, StatusAnswer

SERVICE_URL = os.environ.get("EXAMPLE_SERVICE_URL", "http://127.0.0.1:8765")


async def echo(ctx):
    """Returns its input."""
    return {"echo": ctx.input}


async def flaky(ctx):
    """Fails its first two attempts, then succeeds."""
    if ctx.attempt <= 2:
        raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")
    return {"attempts": ctx.attempt}


async def report(ctx):
    """A phased job: a retry resumes at the first unfinished phase.
    Input ``{"pause": seconds}`` makes each phase take that long."""
    pause = ctx.input.get("pause", 0.05) if isinstance(ctx.input, dict) else 0.05

    async def fetch():
        await trio.sleep(pause)
        return {"rows": 3}

    async def render(data):
        await trio.sleep(pause)
        return {"pages": data["rows"]}

    async def publish(doc):
        await trio.sleep(pause)
        return {"url": f"https://reports.example/{ctx.job_id}", "pages": doc["pages"]}

    data = await ctx.phase("fetch", fetch)
    doc = await ctx.phase("render", render, data)
    return await ctx.phase("publish", publish, doc)


async def slow(ctx):
    """Sleeps past its timeout."""
    await trio.sleep(ctx.input.get("seconds", 5) if isinstance(ctx.input, dict) else 5)
    return "done"


def make_app(service_url: str = SERVICE_URL, *, queue: str = "default") -> App:
    """The handlers on one queue, with ``transcode`` talking to the service at ``service_url``."""
    app = App()
    app.handler("echo", queue=queue, timeout=10, max_retries=2)(echo)
    app.handler("flaky", queue=queue, timeout=10, max_retries=3, backoff=0.2)(flaky)
    app.handler("report", queue=queue, phases=["fetch", "render", "publish"], timeout=30, max_retries=2,
                required_outputs=["url", "pages"])(report)
    app.handler("slow", queue=queue, timeout=1, max_retries=0)(slow)

    @app.handler("transcode", queue=queue, phases=["submit", "encode"], timeout=30, max_retries=2,
                 required_outputs=["output"])
    async def transcode(ctx):
        """Hand the work to the service, then wait until its progress says done."""
        async with httpx.AsyncClient(timeout=5) as http:

            async def submit():
                if ctx.service_job_id:  # a retry picks up the work already handed over
                    return ctx.service_job_id
                answer = await http.post(f"{service_url}/jobs", json={"job_id": ctx.job_id, **(ctx.input or {})})
                answer.raise_for_status()
                service_job_id = answer.json()["id"]
                await ctx.record_service_job_id(service_job_id)
                return service_job_id

            async def encode(service_job_id):
                while True:
                    progress = (await http.get(f"{service_url}/jobs/{service_job_id}/progress")).json()
                    if progress["done"]:
                        return {"output": progress["output"]}
                    await trio.sleep(0.05)

            service_job_id = await ctx.phase("submit", submit)
            return await ctx.phase("encode", encode, service_job_id)

    @app.status_query("transcode")
    async def transcode_status(service_job_id):
        """What the service says of work a lost worker had handed over."""
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(f"{service_url}/jobs/{service_job_id}")
        if answer.status_code == 404:
            return StatusAnswer(status=ServiceStatus.UNKNOWN)
        body = answer.json()
        if body["status"] == "completed":
            return StatusAnswer(status=ServiceStatus.COMPLETED, result={"output": body["output"]})
        if body["status"] == "failed":
            return StatusAnswer(status=ServiceStatus.FAILED)
        return StatusAnswer(status=ServiceStatus.RUNNING)

    # The source of truth: the service's status API must say completed, with a completed_at.
    app.http_validator("transcode", url=service_url + "/jobs/{job_id}")
    return app


app = make_app()
