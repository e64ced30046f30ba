"""Schedules through the Python API: ``App.schedule`` refuses a bad declaration at once (a
``ValueError`` naming the field), and ``Client`` and ``AsyncClient`` add, list, pause, resume and
remove schedules over the embedded store, the job built from the type's defaults."""

from __future__ import annotations

from typing import Any

import pytest

from jobvisor import App, AsyncClient, Client
from jobvisor.adapters.backend import MemoryServers, open_backend
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.store import Store
from jobvisor.adapters.store_core import DirectExecutor


def make_app() -> App:
    app = App()

    @app.handler("report", queue="reports", max_retries=5)
    async def report(ctx: Any) -> None:
        return None

    return app


@pytest.mark.parametrize(("options", "error"), [
    ({"cron": "nope"}, "^cron:"),
    ({"every": 5, "missed": "later"}, "^missed:"),
    ({"every": 5, "catch_up_max": 0}, "^catch_up_max:"),
    ({"every": 5, "tz": "Nowhere/City"}, "^tz:"),
    ({}, "^cron:"),
])
def test_a_bad_declaration_is_refused_when_made(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        make_app().schedule("s", type="report", **options)


def test_a_declaration_names_a_handler_or_a_type() -> None:
    app = make_app()

    async def stray(ctx: Any) -> None:
        return None

    with pytest.raises(ValueError, match="is not a registered handler"):
        app.schedule("s", every=5)(stray)
    app.schedule("s", every=5)(app.handlers["report"].fn)
    assert app.schedules["s"].type == "report"
    with pytest.raises(ValueError, match="already declared"):
        app.schedule("s", every=5, type="report")


def test_the_client_adds_lists_pauses_resumes_and_removes() -> None:
    with Client("memory://clients", app=make_app(), memory=MemoryServers()) as client:
        assert client.add_schedule("r", "report", {"n": 1}, every=60, missed="catch_up").kind == "created"
        [view] = client.schedules()
        assert (view.name, view.queue, view.job_type, view.every, view.missed) == (
            "r", "reports", "report", 60.0, "catch_up")
        assert client.schedules("default") == []
        assert client.pause_schedule("r").kind == "moved"
        assert client.schedule("r").state == "paused"
        assert client.resume_schedule("r").kind == "moved"
        assert client.remove_schedule("r").kind == "moved"
        assert client.schedules() == []
        with pytest.raises(BadInput, match="^type: unknown job type"):
            client.add_schedule("x", "nope", every=5)
        with pytest.raises(BadInput, match="^retries: not a schedule option"):
            client.add_schedule("x", "report", every=5, retries=3)


async def test_the_async_client_does_the_same() -> None:
    backend = open_backend("memory://async-clients", memory=MemoryServers())
    client = AsyncClient(Store(DirectExecutor(backend)), app=make_app())
    assert (await client.add_schedule("r", "report", cron="*/5 * * * *", tz="Europe/Paris")).kind == "created"
    assert [(v.name, v.cron, v.tz) for v in await client.schedules()] == [("r", "*/5 * * * *", "Europe/Paris")]
    assert (await client.pause_schedule("r")).kind == "moved"
    assert (await client.resume_schedule("r")).kind == "moved"
    assert (await client.remove_schedule("r")).kind == "moved"
    assert (await client.schedule("r")).state == "removed"
    backend.close()
