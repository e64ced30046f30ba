"""The README is true: its configuration reference names every setting and flag of
``jobvisor run`` (read from :class:`DaemonConfig` and the argparse parser, so the reference
cannot drift), with their defaults, and its embedding examples run as written."""

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
from jobvisor.supervisor.config import ENV_PREFIX, DaemonConfig

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


def config_rows() -> list[list[str]]:
    """The configuration table's body rows, as cells."""
    rows = [line for line in section("### Configuration").splitlines() if line.startswith("|")]
    assert rows[0].startswith("| setting | flag | environment | default |"), rows[0]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


FIELDS = DaemonConfig.__struct_fields__
VARIABLES = {ENV_PREFIX + name.upper(): name for name in FIELDS}


def test_every_jobvisor_variable_is_in_the_configuration_reference() -> None:
    listed = {v for row in config_rows() for v in re.findall(r"`(JOBVISOR_[A-Z0-9_]+)`", row[2])}
    assert sorted(set(VARIABLES) - listed) == [], "settings missing from README's configuration table"
    assert sorted(listed - set(VARIABLES)) == [], "variables in README's configuration table that nothing reads"


def test_every_run_flag_is_in_the_configuration_reference() -> None:
    options = run_options()
    assert "--webhook-url" in options and "--log-level" in options  # the parser was read
    listed = {f for row in config_rows() for f in re.findall(r"`(--[a-z0-9-]+)`", row[1])}
    assert sorted(set(options) - listed) == [], "flags of jobvisor run missing from README's configuration table"
    assert sorted(listed - set(options)) == [], "flags in README's configuration table that jobvisor run lacks"


def test_each_flag_sits_in_the_row_of_its_own_variable() -> None:
    options = run_options()
    for setting, flags, variables, _ in config_rows():
        named = [options[f] for f in re.findall(r"`(--[a-z0-9-]+)`", flags)]
        settings = [VARIABLES[v] for v in re.findall(r"`(JOBVISOR_[A-Z0-9_]+)`", variables)]
        if named and settings:
            assert named == settings, (setting, flags, variables)


def test_the_numeric_defaults_are_the_configs() -> None:
    """A default cell lists one value per variable of its row (or one for all of them)."""
    defaults = DaemonConfig()
    checked = 0
    for setting, _, variables, cell in config_rows():
        names = [VARIABLES[v] for v in re.findall(r"`(JOBVISOR_[A-Z0-9_]+)`", variables)]
        values = [v.strip() for v in cell.split(",")]
        if len(values) == 1:
            values = values * len(names)
        assert len(values) == len(names), (setting, cell)
        for name, value in zip(names, values, strict=True):
            number = re.match(r"-?\d+(\.\d+)?(?=\s|$)", value)
            if number:
                assert float(number.group(0)) == getattr(defaults, name), (setting, name, value)
                checked += 1
    assert checked >= 30


def test_the_webhook_secret_has_no_flag_and_the_log_level_no_variable() -> None:
    secret = next(row for row in config_rows() if "`JOBVISOR_WEBHOOK_SECRET`" in row[2])
    assert secret[1] == "environment only" and "--webhook-secret" not in run_options()
    level = next(row for row in config_rows() if "`--log-level`" in row[1])
    assert level[2] == "flag only" and "log_level" not in FIELDS


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
    assert moved_first and kind == "absorbed"  # decided again on 'cancelled': the late complete is absorbed
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
