"""``jobvisor run --web-port``: the daemon serves the API and the dashboard over its own store
actor. Real redis-server, the daemon as a subprocess; refused settings are one line, exit 2,
nothing written."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from tests.cli_support import assert_nothing_written, assert_one_line_error, dump, jv, seed
from tests.web_support import ADMIN, ROOT, TOKENS, auth, env, wait_for_state


def test_the_daemon_serves_the_api_runs_what_it_takes_and_stops_on_sigterm(redis_url: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobvisor", "run", "--redis", redis_url, "--app", "tests.web_app:app",
         "--web-port", "0", "--idle-poll", "0.2", "--grace", "1"],
        cwd=ROOT, env=env({"JOBVISOR_WEB_TOKENS": TOKENS}), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr = process.stderr
    assert stderr is not None

    def pump() -> None:
        for line in stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while "API and dashboard on " not in (line := lines.get(timeout=30)):
            assert "Traceback" not in line, line
        base = line.strip().rsplit(" ", 1)[-1]
        answer = httpx.post(f"{base}/api/v1/jobs", headers=auth(), json={"type": "echo", "input": {"n": 7}})
        assert answer.status_code == 201, answer.text
        job = wait_for_state(base, answer.json()["id"], {"completed"})
        assert job["result"] == {"n": 7}
        [daemon] = httpx.get(f"{base}/api/v1/daemons", headers=auth()).json()
        assert "echo" in daemon["types"]
        assert httpx.post(f"{base}/api/v1/jobs", json={"type": "echo"}).status_code == 401
        assert ADMIN not in "".join(list(lines.queue))
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.parametrize(("args", "patterns"), [
    (["--web-port", "0", "--web-host", "0.0.0.0"], ["host: 0.0.0.0", "no tokens are configured"]),
    (["--web-port", "http"], ["port: 'http' is not a port number"]),
    (["--web-port", "70000"], ["port: 70000"]),
], ids=["public-without-tokens", "not-a-number", "out-of-range"])
def test_refused_web_settings_are_one_line_and_write_nothing(redis_url: str, args: list[str],
                                                             patterns: list[str]) -> None:
    seed(redis_url)
    before = dump(redis_url)
    result = jv("run", "--app", "tests.web_app:app", "--redis", redis_url, *args, timeout=30)
    assert_one_line_error(result, 2, *patterns)
    assert_nothing_written(before, dump(redis_url))


def test_web_port_needs_redis_server() -> None:
    result = jv("run", "--app", "tests.web_app:app", "--redis", "memory://", "--web-port", "0", timeout=30)
    assert_one_line_error(result, 2, "web-port", "memory://")


def test_a_taken_port_ends_the_daemon_with_one_line(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = jv("run", "--app", "tests.web_app:app", "--redis", redis_url, "--web-port", str(port),
                    "--grace", "1", "--log-level", "warning", timeout=60)
    assert_one_line_error(result, 1, f"web: cannot listen on 127.0.0.1:{port}")
