"""``examples/service.py``, the service ``examples/app.py``'s ``transcode`` talks to and the demo
runs: its progress says done at once, its status API only ``lag`` seconds later; and it runs
as the README says (``python -m examples.service``)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from examples.service import Service, serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service() -> Iterator[tuple[Service, str]]:
    svc = Service(lag=0.3)
    server = serve(svc, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield svc, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_status_api_lags_behind_the_progress(service: tuple[Service, str]) -> None:
    svc, url = service
    with httpx.Client(base_url=url, timeout=5) as http:
        sid = http.post("/jobs", json={"job_id": "default.J1", "work": 0}).json()["id"]
        done_at = time.time()
        assert http.get(f"/jobs/{sid}/progress").json()["done"] is True
        first = http.get("/jobs/default.J1").json()  # by jobvisor's job id, as the validator asks
        assert first["status"] == "processing"
        assert first["completed_at"] is None
        assert first["output"] is None
        answers = [first]
        deadline = time.monotonic() + 10
        while answers[-1]["status"] != "completed":  # the lag is the service's own, in real time
            assert time.monotonic() < deadline, "the status never caught up"
            time.sleep(0.02)  # a poll interval, as the validator's
            answers.append(http.get(f"/jobs/{sid}").json())
        assert time.time() - done_at >= 0.3
        assert answers[-1]["completed_at"].endswith("Z")
        assert answers[-1]["output"] == f"s3://demo/{sid}.mp4"
        assert {a["status"] for a in answers[:-1]} == {"processing"}
        assert http.get("/jobs/nope").status_code == 404
        assert http.post("/jobs", content=b"not json").status_code == 400
    assert svc.submissions == {"default.J1": 1}
    assert svc.status_of("default.J1") == "completed"
    assert svc.status_of("default.J2") == "unknown"


def test_it_runs_as_the_readme_says() -> None:
    process = subprocess.Popen([sys.executable, "-m", "examples.service", "--port", "0"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), (line, process.poll())
        url = line.split()[-1]
        answer = httpx.post(url + "jobs", json={"job_id": "default.J1", "work": 5}, timeout=5)
        assert answer.status_code == 201
        progress = httpx.get(f"{url}jobs/{answer.json()['id']}/progress", timeout=5).json()
        assert progress["done"] is False
    finally:
        process.terminate()
        process.communicate(timeout=10)
