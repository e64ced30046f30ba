"""The README is true: its configuration reference is the table generated from the settings'
definition (:class:`DaemonConfig`), whose flags are ``jobvisor run``'s (read from the argparse
parser), and its embedding examples run as written."""

from __future__ import annotations

import argparse
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from examples.app import app as example_app
from jobvisor import Client
from jobvisor.supervisor.cli import build_parser
from jobvisor.supervisor.config import ENV_PREFIX, SETTINGS, DaemonConfig, reference_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above (outside code)."""
    level = len(heading.split(" ", 1)[0])
    lines = README.splitlines()
    start = lines.index(heading)
    fenced = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
    else:
        end = len(lines)
    return "\n".join(lines[start:end])


def first_python_block(heading: str) -> str:
    match = re.search(r"```python\n(.*?)```", section(heading), re.S)
    assert match is not None, f"README has no Python example under {heading!r}"
    return match.group(1)


def run_options() -> dict[str, str]:
    """Every option string of ``jobvisor run`` (but ``--help``) -> its dest."""
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    run = sub.choices["run"]
    return {option: action.dest for action in run._actions for option in action.option_strings
            if option not in ("-h", "--help")}


def test_the_configuration_table_is_the_generated_one() -> None:
    """README's settings table is ``reference_table()``, generated from DaemonConfig's fields."""
    text = section("### Configuration")
    table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    assert table == reference_table(), (
        "README's configuration table differs from the settings: paste "
        "`python -c 'from jobvisor.supervisor.config import reference_table; print(reference_table())'`")


def test_every_setting_is_a_config_field_and_every_run_flag_a_setting() -> None:
    assert [s.name for s in SETTINGS] == list(DaemonConfig.__struct_fields__)
    assert {s.env for s in SETTINGS} == {ENV_PREFIX + name.upper() for name in DaemonConfig.__struct_fields__}
    options = run_options()
    assert "--webhook-url" in options  # the parser was read
    assert "--log-level" in options
    # and the web server's, which `jobvisor web` shares (its own settings, not the daemon's)
    web = {"--web-port": "web_port", "--web-host": "web_host"}
    assert options == {s.flag: s.name for s in SETTINGS if s.flag is not None} | web


def test_the_webhook_secret_has_no_flag() -> None:
    [secret] = [s for s in SETTINGS if s.flag is None]
    assert secret.name == "webhook_secret"
    assert "--webhook-secret" not in run_options()
    row = next(line for line in reference_table().splitlines() if "`JOBVISOR_WEBHOOK_SECRET`" in line)
    assert "| environment only |" in row


def test_the_machines_embedding_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(first_python_block("### The machines in your own service"), "README.md", "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out == "moved moved moved moved absorbed\n"
    db: sqlite3.Connection = namespace["db"]
    assert db.execute("SELECT * FROM jobs").fetchall() == [("j1", "completed", 1, 2)]


def test_the_machines_embedding_example_decides_again_when_another_writer_moved_the_row() -> None:
    namespace: dict[str, Any] = {}
    code = first_python_block("### The machines in your own service").split("\nprint(", 1)[0]
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    db: sqlite3.Connection = namespace["db"]
    moved_first: list[str] = []

    def racing_writer(statement: str) -> None:  # after our SELECT, before our UPDATE: another writer wins
        if statement.startswith("UPDATE") and not moved_first:
            moved_first.append(statement)
            db.execute("UPDATE jobs SET state = 'cancelled' WHERE id = 'j1'")

    db.set_trace_callback(racing_writer)
    try:
        kind = namespace["fire"]("j1", "complete")
    finally:
        db.set_trace_callback(None)
    assert moved_first
    assert kind == "absorbed"  # decided again on 'cancelled': the late complete is absorbed
    assert db.execute("SELECT state, retries FROM jobs").fetchall() == [("cancelled", 0)]


async def test_the_supervisor_embedding_example_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(first_python_block("### The whole supervisor inside a trio program"), "README.md", "exec"),  # noqa: S102
         namespace)
    with trio.fail_after(30):
        await namespace["main"]()


def printed_in_comments(code: str) -> list[str]:
    """What a block says it prints: the comment after each ``print(`` line."""
    return [line.split("#", 1)[1].strip() for line in code.splitlines()
            if line.lstrip().startswith("print(") and "#" in line]


def test_the_clients_example_runs_as_printed(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = first_python_block("### Clients")
    assert code.count("redis://127.0.0.1:6379/0") == 1
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("redis://127.0.0.1:6379/0", redis_url), "README.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out.splitlines()
    assert out == printed_in_comments(code) == ["True", "queued", "queued [] []"]
    client = Client(redis_url)
    try:
        job = client.status(namespace["job_id"])
        assert (job.state, job.priority, job.retry_count) == ("queued", 10, 0)  # cancelled, then retried
        assert [e.type for e in client.events("default") if e.id == job.id] == [
            "job.submitted", "job.cancelled", "job.retry_from_start"]
    finally:
        client.close()


def test_a_higher_priority_runs_first_as_the_clients_section_says(redis_url: str) -> None:
    assert "A higher `priority` runs first" in section("### Clients")
    client = Client(redis_url, app=example_app)
    try:
        priorities = [0, 10, -5, 10, 100, -100, 0]
        ids = [client.submit("echo", {"n": n}, priority=p) for n, p in enumerate(priorities)]
        claimed = [c.id for c in client.store.claim("default", "w", n=len(ids), types=["echo"])]
    finally:
        client.close()
    by_hand = [ids[4], ids[1], ids[3], ids[0], ids[6], ids[2], ids[5]]  # 100, 10, 10, 0, 0, -5, -100
    assert claimed == by_hand
