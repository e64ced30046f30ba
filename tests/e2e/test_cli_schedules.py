"""``jobvisor schedule add|list|pause|resume|remove`` as subprocesses against a real redis-server:
add then list (text and JSON), the guarded triggers, and bad input for each: one line, exit 2
(3 for an unknown schedule), nothing written (the keyspace compared whole)."""

from __future__ import annotations

import pytest

from tests.cli_support import assert_nothing_written, assert_one_line_error, dump, jv, ok_json, seed


def test_add_list_pause_resume_remove(redis_url: str) -> None:
    seed(redis_url)
    added = ok_json(jv("schedule", "add", "nightly", "echo", "--cron", "0 3 * * *", "--tz", "Europe/Paris",
                       "--input", '{"n": 2}', "--missed", "catch_up", "--catch-up-max", "5", "--json",
                       "--redis", redis_url))
    assert (added["name"], added["state"], added["type"], added["created"], added["fired"]) == (
        "nightly", "active", "echo", True, 0)
    assert added["next_at"] is not None
    text = jv("schedule", "list", "--redis", redis_url)
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].split() == ["NAME", "STATE", "QUEUE", "TYPE", "WHEN", "NEXT", "LAST", "FIRED"]
    assert "0 3 * * * (Europe/Paris)" in text.stdout
    assert ok_json(jv("schedule", "pause", "nightly", "--json", "--redis", redis_url))["to"] == "paused"
    before = dump(redis_url)
    assert_one_line_error(jv("schedule", "pause", "nightly", "--redis", redis_url), 2, "nightly is paused")
    assert_nothing_written(before, dump(redis_url))
    assert ok_json(jv("schedule", "resume", "nightly", "--json", "--redis", redis_url))["to"] == "active"
    assert ok_json(jv("schedule", "remove", "nightly", "--json", "--redis", redis_url))["to"] == "removed"
    assert ok_json(jv("schedule", "list", "--json", "--redis", redis_url)) == []
    assert [s["state"] for s in ok_json(jv("schedule", "list", "--removed", "--json", "--redis", redis_url))] == [
        "removed"]


@pytest.mark.parametrize(("args", "pattern"), [
    (("add", "s", "echo", "--cron", "61 * * * *"), "cron:"),
    (("add", "s", "echo", "--every", "0"), "every:"),
    (("add", "s", "echo", "--every", "5", "--tz", "Nowhere/City"), "tz:"),
    (("add", "s", "echo", "--every", "5", "--missed", "catch_up", "--catch-up-max", "500"), "catch_up_max:"),
    (("add", "s{x}", "echo", "--every", "5"), "name:"),
    (("add", "s", "nope", "--every", "5"), "type: unknown job type"),
    (("add", "s", "echo", "--every", "5", "--input", "{bad"), "input"),
    (("add", "s", "echo", "--every", "5", "--queue", "no queue"), r"\$\.queue"),
    (("add", "s", "echo"), "one of the arguments --cron --every is required"),
    (("add", "s", "echo", "--cron", "* * * * *", "--every", "5"), "not allowed with"),
    (("add", "s", "echo", "--every", "5", "--missed", "sometimes"), "invalid choice"),
    (("pause", "a b"), "name:"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(redis_url: str, args: tuple[str, ...], pattern: str) -> None:
    seed(redis_url)
    before = dump(redis_url)
    assert_one_line_error(jv("schedule", *args, "--redis", redis_url), 2, pattern)
    assert_nothing_written(before, dump(redis_url))


def test_an_unknown_schedule_is_exit_3(redis_url: str) -> None:
    before = dump(redis_url)
    assert_one_line_error(jv("schedule", "resume", "nope", "--redis", redis_url), 3, "schedule nope not found")
    assert_nothing_written(before, dump(redis_url))
