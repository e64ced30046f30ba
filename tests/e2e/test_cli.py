"""The ``jobvisor`` command line as a user runs it: a subprocess against a real redis-server.

SPEC.md, "Interfaces" and "Bad input": exit 0 success, 2 bad input (one clear line
naming the field, nothing written), 3 not found, 1 other failure (Redis unreachable,
naming the URL). "Nothing written" is checked by dumping the whole Redis database,
every key with its type-aware contents, before and after the command.

Every bad-input case that reaches Redis runs against a seeded database of its own (a
queued job, a cancelled job, open, closed and cancelled batches, another queue), so a
write anywhere shows up; the cases run side by side, each in one of Redis's databases 1-15.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.app import app as example_app
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.cli_support import (
    ROOT,
    TYPES,
    UNKNOWN_BATCH,
    UNKNOWN_JOB,
    Seeded,
    assert_nothing_written,
    assert_one_line_error,
    cli_env,
    dump,
    json_lines,
    jv,
    ok_json,
    seed,
)
from tests.redis_server import RedisServer, free_port

# -- bad input, for every command -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One refused command line. ``@name`` arguments are filled from :class:`Seeded` and the files.

    ``redis``: ``seeded`` (a database of its own, seeded, dumped before and after),
    ``invalid`` (``--redis ftp://x``) or ``unreachable`` (a free port nobody listens on).
    """

    id: str
    argv: tuple[str, ...]
    code: int | tuple[int, ...]
    patterns: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    redis: str = "seeded"


def _c(id: str, argv: list[str], code: int | tuple[int, ...], patterns: list[str], *,
       env: dict[str, str] | None = None, redis: str = "seeded") -> Case:
    return Case(id, tuple(argv), code, tuple(patterns), tuple((env or {}).items()), redis)


APP = ["--app", "examples.app:app"]
# examples.app's transcode validator asks a service on loopback: a daemon allows it explicitly
RUN_APP = [*APP, "--allow-destinations", "127.0.0.1"]
CASES: list[Case] = [
    # submit
    _c("submit-malformed-json", ["submit", "echo", "--input", "{bad"], 2, ["input", "JSON"]),
    _c("submit-malformed-json-file", ["submit", "echo", "--input-file", "@bad_json_file"], 2, ["input"]),
    _c("submit-missing-input-file", ["submit", "echo", "--input-file", "@missing_file"], 2, ["input-file"]),
    _c("submit-oversized-input", ["submit", "echo", "--input-file", "@big_file"], 2, ["input", "limit"]),
    _c("submit-unknown-type", ["submit", "nosuch"], 2, ["type", "nosuch"]),
    _c("submit-priority-500", ["submit", "echo", "--priority", "500"], 2, ["priority"]),
    _c("submit-priority-not-int", ["submit", "echo", "--priority", "high"], 2, ["priority"]),
    _c("submit-max-retries-negative", ["submit", "echo", "--max-retries", "-1"], 2, ["max[_-]retries"]),
    _c("submit-timeout-0", ["submit", "echo", "--timeout", "0"], 2, ["timeout"]),
    _c("submit-delay-negative", ["submit", "echo", "--delay", "-5"], 2, ["delay"]),
    _c("submit-delay-absurd", ["submit", "echo", "--delay", "1e12"], 2, ["delay"]),
    _c("submit-webhook-ftp", ["submit", "echo", "--webhook-url", "ftp://x"], 2, ["webhook"]),
    _c("submit-webhook-no-host", ["submit", "echo", "--webhook-url", "http://"], 2, ["webhook"]),
    _c("submit-queue-bad-name", ["submit", "echo", "--queue", "bad queue"], 2, ["queue"]),
    _c("submit-idempotency-key-empty", ["submit", "echo", "--idempotency-key", ""], 2, ["idempotency"]),
    _c("submit-batch-malformed-id", ["submit", "echo", "--batch", "nodot"], 2, ["batch"]),
    _c("submit-batch-unknown", ["submit", "echo", "--batch", UNKNOWN_BATCH], 3, ["batch", "not found"]),
    _c("submit-batch-closed", ["submit", "echo", "--batch", "@closed_batch"], 2, ["batch", "closed"]),
    _c("submit-batch-finalized", ["submit", "echo", "--batch", "@cancelled_batch"], 2, ["batch", "cancelled"]),
    _c("submit-batch-other-queue", ["submit", "echo", "--batch", "@other_batch"], 2, ["batch"]),
    _c("submit-batch-completed", ["submit", "echo", "--batch", "@completed_batch"], 2, ["batch", "completed"]),
    _c("submit-batch-full", ["submit", "echo", "--batch", "@full_batch"], 2, ["batch", "expects 1"]),
    _c("submit-app-not-importable", ["submit", "echo", "--app", "no_such_module:app"], 2, ["app"]),
    _c("submit-app-attr-missing", ["submit", "echo", "--app", "examples.app:nope"], 2, ["app"]),
    # status, cancel, retry
    _c("status-malformed-id", ["status", "nodot"], 2, ["id", "nodot"]),
    _c("status-unknown-id", ["status", UNKNOWN_JOB], 3, ["not found"]),
    _c("cancel-malformed-id", ["cancel", "nodot"], 2, ["id", "nodot"]),
    _c("cancel-unknown-id", ["cancel", UNKNOWN_JOB], 3, ["not found"]),
    _c("retry-malformed-id", ["retry", "nodot"], 2, ["id", "nodot"]),
    _c("retry-unknown-id", ["retry", UNKNOWN_JOB, "--from-start"], 3, ["not found"]),
    _c("retry-queued-job", ["retry", "@queued"], 2, ["queued", "retry"]),
    # events
    _c("events-queue-bad-name", ["events", "--queue", "bad!"], 2, ["queue"]),
    _c("events-limit-0", ["events", "--limit", "0"], 2, ["limit"]),
    _c("events-limit-negative", ["events", "--limit", "-1"], 2, ["limit"]),
    _c("events-job-malformed-id", ["events", "--job", "nodot"], 2, ["job|id"]),
    _c("events-job-unknown-id", ["events", "--job", UNKNOWN_JOB], 3, ["not found"]),
    # report
    _c("report-queue-bad-name", ["report", "--queue", "bad!"], 2, ["queue"]),
    # batch create
    _c("batch-create-threshold-0", ["batch", "create", "--threshold", "0"], 2, ["threshold"]),
    _c("batch-create-threshold-101", ["batch", "create", "--threshold", "101"], 2, ["threshold"]),
    _c("batch-create-progress-every-0", ["batch", "create", "--progress-every", "0"], 2, ["progress[_-]every"]),
    _c("batch-create-expected-negative", ["batch", "create", "--expected", "-1"], 2, ["expected"]),
    _c("batch-create-stuck-after-0", ["batch", "create", "--stuck-after", "0"], 2, ["stuck[_-]after"]),
    _c("batch-create-webhook-ftp", ["batch", "create", "--webhook-url", "ftp://x"], 2, ["webhook"]),
    _c("batch-create-queue-bad-name", ["batch", "create", "--queue", "x y"], 2, ["queue"]),
    # batch add
    _c("batch-add-to-closed", ["batch", "add", "@closed_batch", "@queued"], 2, ["closed"]),
    _c("batch-add-to-finalized", ["batch", "add", "@cancelled_batch", "@queued"], 2, ["cancelled"]),
    _c("batch-add-unknown-batch", ["batch", "add", UNKNOWN_BATCH, "@queued"], 3, ["not found"]),
    _c("batch-add-to-completed", ["batch", "add", "@completed_batch", "@queued"], 2, ["completed"]),
    _c("batch-add-over-expected", ["batch", "add", "@full_batch", "@queued"], 2, ["expects 1 members"]),
    _c("batch-create-threshold-not-int", ["batch", "create", "--threshold", "most"], 2, ["threshold"]),
    _c("batch-add-malformed-batch", ["batch", "add", "nodot", "@queued"], 2, ["id", "nodot"]),
    _c("batch-add-malformed-job", ["batch", "add", "@open_batch", "nodot"], 2, ["nodot"]),
    _c("batch-add-unknown-job", ["batch", "add", "@open_batch", UNKNOWN_JOB], 3, ["not found"]),
    _c("batch-add-job-of-other-queue", ["batch", "add", "@open_batch", "@other_job"], 2, ["queue"]),
    # batch close, status, cancel
    _c("batch-close-malformed-id", ["batch", "close", "nodot"], 2, ["id", "nodot"]),
    _c("batch-close-unknown-id", ["batch", "close", UNKNOWN_BATCH], 3, ["not found"]),
    _c("batch-close-already-closed", ["batch", "close", "@closed_batch"], 2, ["close"]),
    _c("batch-status-malformed-id", ["batch", "status", "nodot"], 2, ["id", "nodot"]),
    _c("batch-status-unknown-id", ["batch", "status", UNKNOWN_BATCH], 3, ["not found"]),
    _c("batch-cancel-malformed-id", ["batch", "cancel", "nodot"], 2, ["id", "nodot"]),
    _c("batch-cancel-unknown-id", ["batch", "cancel", UNKNOWN_BATCH], 3, ["not found"]),
    # run: every setting is refused before anything connects
    _c("run-concurrency-0", ["run", *RUN_APP, "--concurrency", "0"], 2, ["concurrency"]),
    _c("run-lease-negative", ["run", *RUN_APP, "--lease", "-1"], 2, ["lease"]),
    _c("run-grace-negative", ["run", *RUN_APP, "--grace", "-1"], 2, ["grace"]),
    _c("run-metrics-port-70000", ["run", *RUN_APP, "--metrics-port", "70000"], 2, ["metrics[_-]port"]),
    _c("run-queues-bad-name", ["run", *RUN_APP, "--queues", "a b"], 2, ["queues"]),
    _c("run-restart-intensity-negative", ["run", *RUN_APP, "--restart-intensity", "-1"], 2,
       ["restart[_-]intensity"]),
    _c("run-idle-poll-0", ["run", *RUN_APP, "--idle-poll", "0"], 2, ["idle[_-]poll"]),
    _c("run-batch-interval-0", ["run", *RUN_APP, "--batch-interval", "0"], 2, ["batch[_-]interval"]),
    _c("run-batch-sweep-size-0", ["run", *RUN_APP, "--batch-sweep-size", "0"], 2, ["batch[_-]sweep[_-]size"]),
    _c("run-env-batch-interval-abc", ["run", *RUN_APP], 2, ["setting", "batch_interval"],
       env={"JOBVISOR_BATCH_INTERVAL": "abc"}),
    _c("run-env-concurrency-abc", ["run", *RUN_APP], 2, ["setting", "concurrency"],
       env={"JOBVISOR_CONCURRENCY": "abc"}),
    _c("run-env-lease-negative", ["run", *RUN_APP], 2, ["setting", "lease"], env={"JOBVISOR_LEASE": "-3"}),
    _c("run-app-not-importable", ["run", "--app", "no_such_module:app"], 2, ["app", "no_such_module"]),
    _c("run-app-attr-missing", ["run", "--app", "examples.app:nope"], 2, ["app"]),
    _c("run-app-not-module-attr", ["run", "--app", "examples.app"], 2, ["app"]),
    _c("run-evaluator-interval-0", ["run", *RUN_APP, "--evaluator-interval", "0"], 2, ["evaluator[_-]interval"]),
    _c("run-retention-completed-negative", ["run", *RUN_APP, "--retention-completed", "-1"], 2,
       ["retention[_-]completed"]),
    _c("run-retention-batch-0", ["run", *RUN_APP, "--retention-batch", "0"], 2, ["retention[_-]batch"]),
    _c("run-env-retention-failed-abc", ["run", *RUN_APP], 2, ["setting", "retention_failed"],
       env={"JOBVISOR_RETENTION_FAILED": "abc"}),
    _c("run-sanitize-max-string-10", ["run", *RUN_APP, "--sanitize-max-string", "10"], 2,
       ["sanitize[_-]max[_-]string"]),
    _c("run-log-level-bogus", ["run", *RUN_APP, "--log-level", "bogus"], 2, ["log[_-]level"]),
    _c("run-metrics-host-unresolvable", ["run", *RUN_APP, "--metrics-port", "0", "--metrics-host", "999.1.1.1"],
       (1, 2), ["metrics"]),
    # diagram
    _c("diagram-unknown-machine", ["diagram", "nosuch"], 2, ["machine", "nosuch"], redis="none"),
    # an invalid Redis URL is bad input, whatever the command
    *[_c(f"invalid-redis-url-{name}", argv, 2, ["redis", re.escape("ftp://x")], redis="invalid")
      for name, argv in [("submit", ["submit", "echo"]), ("batch-create", ["batch", "create"]),
                         ("run", ["run", *RUN_APP])]],
    # Redis unreachable: exit 1, naming the URL (`run` waits for it instead:
    # tests/test_redis_weather.py)
    *[_c(f"unreachable-{name}", argv, 1, ["@url"], redis="unreachable")
      for name, argv in [("submit", ["submit", "echo", *APP]), ("status", ["status", UNKNOWN_JOB])]],
]


@dataclass
class Outcome:
    result: subprocess.CompletedProcess[str]
    url: str
    before: dict[bytes, Any] | None = None
    after: dict[bytes, Any] | None = None


def _files(directory: Path) -> dict[str, str]:
    big = directory / "big.json"
    big.write_text(json.dumps({"blob": "x" * (1 << 20)}))  # encodes to just over 1 MiB
    bad = directory / "bad.json"
    bad.write_text("{'single': 'quotes'}")
    return {"big_file": str(big), "bad_json_file": str(bad), "missing_file": str(directory / "nope.json")}


def _bounded(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``jv`` with a time limit that fails this case alone (a command that wrongly starts a daemon)."""
    try:
        return jv(*args, env=env, timeout=20)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -9, "", f"(killed after 20s) stderr: {exc.stderr!r}\n")


def _run_case(case: Case, base_url: str, databases: queue.Queue[int], files: dict[str, str]) -> Outcome:
    def fill(arg: str, values: dict[str, str]) -> str:
        return values[arg[1:]] if arg.startswith("@") else arg

    if case.redis != "seeded":
        url = {"invalid": "ftp://x", "none": "",
               "unreachable": f"redis://127.0.0.1:{free_port()}/0"}[case.redis]
        args = [fill(a, files) for a in case.argv] + (["--redis", url] if url else [])
        return Outcome(_bounded(args, dict(case.env)), url)
    db = databases.get()
    url = base_url.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        values = {**{k: str(v) for k, v in vars(seed(url)).items()}, **files}
        before = dump(url)
        result = _bounded([fill(a, values) for a in case.argv] + ["--redis", url], dict(case.env))
        return Outcome(result, url, before, dump(url))
    finally:
        client.flushdb()
        client.close()
        databases.put(db)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Run every selected case at once, each seeded case in a Redis database of its own (1-15).

    A CLI start costs about half a second of CPU; running the cases side by side keeps the
    file fast while every case still gets its own before/after dump and its own test.
    """
    selected = {item.callspec.id for item in request.session.items
                if getattr(item, "originalname", "") == "test_refused" and hasattr(item, "callspec")}
    cases = [c for c in CASES if c.id in selected]
    databases: queue.Queue[int] = queue.Queue()
    for db in range(1, 16):
        databases.put(db)
    files = _files(tmp_path_factory.mktemp("cli-files"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(_run_case, c, redis_server.url, databases, files) for c in cases}
        return {case_id: f.result() for case_id, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused(case: Case, outcomes: dict[str, Outcome]) -> None:
    """Exit code, exactly one stderr line naming the field or setting, and nothing written."""
    outcome = outcomes[case.id]
    patterns = [re.escape(outcome.url) if p == "@url" else p for p in case.patterns]
    assert_one_line_error(outcome.result, case.code, *patterns)
    if outcome.before is not None:
        assert outcome.after is not None
        assert_nothing_written(outcome.before, outcome.after)


def test_a_bad_setting_line_reads_setting_name_colon(redis_url: str) -> None:
    """config.py's docstring: ``setting concurrency: Expected `int` >= 1, got 0``."""
    result = jv("run", "--redis", redis_url, "--app", "examples.app:app", "--concurrency", "0")
    line = assert_one_line_error(result, 2)
    assert line.startswith("jobvisor: setting concurrency: "), line


@pytest.mark.parametrize(("flag", "value", "setting"), [
    ("--allowed-hosts", "hooks.example.com\nevil.example", "allowed_hosts"),
    ("--worker-id", "w1\nforged log line", "worker_id"),
    ("--metrics-host", "127.0.0.1\n", "metrics_host"),
])
def test_a_setting_with_a_trailing_newline_or_control_character_is_refused(
        redis_url: str, flag: str, value: str, setting: str) -> None:
    """Names are checked whole: a newline cannot ride along into logs or the registry."""
    result = jv("run", "--redis", redis_url, *RUN_APP, flag, value)
    line = assert_one_line_error(result, 2)
    assert line.startswith(f"jobvisor: setting {setting}: "), line


def test_submit_to_an_unknown_batch_on_an_empty_database_writes_nothing(redis_url: str) -> None:
    before = dump(redis_url)
    assert before == {}
    result = jv("submit", "echo", "--app", "examples.app:app", "--batch", UNKNOWN_BATCH, "--redis", redis_url)
    assert_one_line_error(result, 3, "batch", "not found")
    assert_nothing_written(before, dump(redis_url))


def test_metrics_port_in_use_is_one_line_exit_1(seeded: Seeded) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = dump(seeded.url)
        result = jv("run", "--redis", seeded.url, *RUN_APP, "--metrics-port", str(port),
                    timeout=20)
    assert_one_line_error(result, 1, "metrics|port|" + str(port))
    assert_nothing_written(before, dump(seeded.url))


@pytest.mark.parametrize("machine", ["job", "phase", "batch", "webhook"])
def test_diagram_prints_mermaid(machine: str) -> None:
    result = jv("diagram", machine)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stateDiagram-v2\n")
    assert result.stderr == ""


def test_diagram_takes_redis_like_every_command(redis_url: str) -> None:
    """README: 'Every command takes ``--redis URL``'."""
    result = jv("diagram", "job", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stateDiagram-v2\n")


# -- happy paths ---------------------------------------------------------------------------------


def test_submit_with_app_then_status_queues_and_events(redis_url: str) -> None:
    """No daemon has run: ``--app`` supplies the type's defaults."""
    submitted = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--input", '{"hello": "world"}',
                           "--priority", "7", "--json", "--redis", redis_url))
    assert submitted["created"] is True
    assert submitted["state"] == "queued"
    job_id = submitted["id"]
    assert job_id.startswith("default.")

    status = ok_json(jv("status", job_id, "--json", "--redis", redis_url))
    assert status["id"] == job_id
    assert status["type"] == "echo"
    assert status["queue"] == "default"
    assert status["state"] == "queued"
    assert status["input"] == {"hello": "world"}
    assert status["priority"] == 7
    assert (status["max_retries"], status["timeout"], status["retry_count"]) == (2, 10.0, 0)
    assert status["attempts"] == 0
    assert status["attempt_records"] == []
    assert "raw" not in status

    queues = ok_json(jv("queues", "--json", "--redis", redis_url))
    assert queues == {"default": {"queued": 1, "waiting": 0, "scheduled": 0, "active": 0, "validating": 0,
                                  "finished": 0, "outbox": 0, "types": {"echo": {"queued": 1, "daemons": 0}},
                                  "unserved": 1, "untyped": 0, "paused": False, "paused_since": None}}

    events = json_lines(jv("events", "--json", "--redis", redis_url))
    assert [(e["type"], e["id"], e["fields"]) for e in events] == [
        ("job.submitted", job_id, {"to": "queued", "job_type": "echo"})
    ]


def test_submit_uses_the_types_a_daemon_published(redis_url: str) -> None:
    with SyncStore(open_backend(redis_url)) as store:
        store.register_types(TYPES)
    job_id = ok_json(jv("submit", "report", "--json", "--redis", redis_url))["id"]
    status = ok_json(jv("status", job_id, "--json", "--redis", redis_url))
    assert status["phases"] == {"fetch": "pending", "render": "pending", "publish": "pending"}
    assert status["timeout"] == 30.0


def test_submit_reads_input_from_stdin_and_honours_jobvisor_redis(redis_url: str, tmp_path: Path) -> None:
    env = {"JOBVISOR_REDIS": redis_url}
    from_stdin = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--input-file", "-", "--json",
                            env=env, stdin='{"from": "stdin"}'))
    path = tmp_path / "input.json"
    path.write_text('[1, 2, {"from": "file"}]')
    from_file = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--input-file", str(path), "--json",
                           env=env))
    with SyncStore(open_backend(redis_url)) as store:
        assert store.get_job(from_stdin["id"]).input == {"from": "stdin"}
        assert store.get_job(from_file["id"]).input == [1, 2, {"from": "file"}]


def test_submit_with_a_delay_is_scheduled(redis_url: str) -> None:
    submitted = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--delay", "60", "--json",
                           "--redis", redis_url))
    assert submitted["state"] == "scheduled"
    queues = ok_json(jv("queues", "--json", "--redis", redis_url))
    assert (queues["default"]["queued"], queues["default"]["scheduled"]) == (0, 1)


def test_input_exactly_at_the_limit_is_accepted_one_byte_over_is_refused(redis_url: str, tmp_path: Path) -> None:
    at_limit = tmp_path / "at.json"
    at_limit.write_text(json.dumps("x" * ((1 << 20) - 2)))  # a JSON string: 2 quotes + body = 1 MiB
    over = tmp_path / "over.json"
    over.write_text(json.dumps("x" * ((1 << 20) - 1)))
    before = dump(redis_url)
    refused = jv("submit", "echo", "--app", "examples.app:app", "--input-file", str(over), "--redis", redis_url)
    assert_one_line_error(refused, 2, "input", str(1 << 20))
    assert_nothing_written(before, dump(redis_url))
    accepted = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--input-file", str(at_limit), "--json",
                          "--redis", redis_url))
    assert accepted["created"] is True


def test_the_same_idempotency_key_returns_the_same_job(redis_url: str) -> None:
    argv = ["submit", "echo", "--app", "examples.app:app", "--idempotency-key", "order-42", "--redis", redis_url]
    first = ok_json(jv(*argv, "--input", '{"n": 1}', "--json"))
    before = dump(redis_url)
    second = ok_json(jv(*argv, "--input", '{"n": 2}', "--json"))
    assert second["id"] == first["id"]
    assert (first["created"], second["created"]) == (True, False)
    assert_nothing_written(before, dump(redis_url))
    text = jv(*argv)  # the plain output names the same id too
    assert text.returncode == 0
    assert text.stdout.split()[0] == first["id"]
    events = json_lines(jv("events", "--json", "--redis", redis_url))
    assert [e["type"] for e in events] == ["job.submitted"]
    with SyncStore(open_backend(redis_url)) as store:
        assert store.get_job(first["id"]).input == {"n": 1}


def test_cancel_then_cancel_again_then_retry(redis_url: str) -> None:
    job_id = ok_json(jv("submit", "report", "--app", "examples.app:app", "--json", "--redis", redis_url))["id"]

    cancelled = ok_json(jv("cancel", job_id, "--json", "--redis", redis_url))
    assert (cancelled["outcome"], cancelled["from"], cancelled["to"]) == ("moved", "queued", "cancelled")
    with SyncStore(open_backend(redis_url)) as store:
        job = store.get_job(job_id)
    assert job.state == "cancelled"
    assert job.finished_at is not None
    assert set(job.phases.values()) == {"cancelled"}  # every unfinished phase is cancelled

    before = dump(redis_url)
    again = jv("cancel", job_id, "--redis", redis_url)
    assert again.returncode == 0
    assert again.stderr == ""
    assert "no change" in again.stdout
    again_json = ok_json(jv("cancel", job_id, "--json", "--redis", redis_url))
    assert (again_json["outcome"], again_json["state"]) == ("absorbed", "cancelled")
    assert_nothing_written(before, dump(redis_url))

    retried = ok_json(jv("retry", job_id, "--json", "--redis", redis_url))
    assert (retried["outcome"], retried["from"], retried["to"]) == ("moved", "cancelled", "queued")
    with SyncStore(open_backend(redis_url)) as store:
        job = store.get_job(job_id)
    assert job.state == "queued"
    assert job.finished_at is None

    before = dump(redis_url)
    assert_one_line_error(jv("retry", job_id, "--redis", redis_url), 2, "queued")
    assert_nothing_written(before, dump(redis_url))

    events = json_lines(jv("events", "--json", "--job", job_id, "--redis", redis_url))
    assert [(e["type"], e["fields"].get("from"), e["fields"]["to"]) for e in events] == [
        ("job.submitted", None, "queued"), ("job.cancelled", "queued", "cancelled"),
        ("job.retry", "cancelled", "queued"),
    ]


def test_events_filters_by_job_and_by_queue(redis_url: str) -> None:
    a = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--json", "--redis", redis_url))["id"]
    b = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--queue", "other", "--json",
                   "--redis", redis_url))["id"]
    every = json_lines(jv("events", "--json", "--redis", redis_url))
    assert sorted(e["id"] for e in every) == sorted([a, b])
    only_a = json_lines(jv("events", "--json", "--job", a, "--redis", redis_url))
    assert [e["id"] for e in only_a] == [a]
    only_other = json_lines(jv("events", "--json", "--queue", "other", "--redis", redis_url))
    assert [(e["id"], e["queue"]) for e in only_other] == [(b, "other")]


def test_events_prints_the_latest_limit_events_and_a_jobs_own_history(redis_url: str) -> None:
    """History is the newest ``--limit`` events (oldest first), and ``--job`` finds a job's
    events however far back they are."""
    from jobvisor import Client

    with Client(redis_url, app=example_app) as client:
        first = client.submit("echo")
        later = [client.submit("echo") for _ in range(5)]
    latest = json_lines(jv("events", "--json", "--limit", "3", "--redis", redis_url))
    assert [e["id"] for e in latest] == later[-3:]
    own = json_lines(jv("events", "--json", "--limit", "3", "--job", first, "--redis", redis_url))
    assert [(e["id"], e["type"]) for e in own] == [(first, "job.submitted")]


def test_events_piped_into_a_reader_that_quits_exits_quietly(redis_url: str) -> None:
    from jobvisor import Client

    with Client(redis_url, app=example_app) as client:
        client.store.submit_many([JobSpec(type="echo") for _ in range(2000)])  # more than a pipe holds
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobvisor", "events", "--limit", "2000", "--redis", redis_url],
        cwd=ROOT, env=cli_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""


def test_events_follow_prints_new_events_until_sigint_then_exits_0(redis_url: str) -> None:
    """Started on an empty database: it follows queues as they appear; Ctrl-C ends it cleanly."""
    from jobvisor import Client

    follower = subprocess.Popen(
        [sys.executable, "-m", "jobvisor", "events", "--follow", "--json", "--redis", redis_url],
        cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as a terminal sends it, even when this run itself was started in the background
        # (where a shell has SIGINT ignored, which a child inherits: Python then never raises it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout or ()], daemon=True)
    reader.start()

    def next_event() -> Any:
        try:
            return json.loads(lines.get(timeout=15))
        except queue.Empty:
            follower.kill()
            raise AssertionError(f"no event printed within 15s; stderr: {follower.communicate()[1]}") from None

    try:
        with Client(redis_url, app=example_app) as client:
            first = client.submit("echo", {"n": 1})
            submitted = next_event()
            second = client.submit("echo", {"n": 2}, queue="other")  # a queue that did not exist yet
            elsewhere = next_event()
            client.cancel(first)
            cancelled = next_event()
        follower.send_signal(signal.SIGINT)
        code = follower.wait(15)
        reader.join(5)
        stderr = follower.stderr.read() if follower.stderr else ""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
    assert [(e["type"], e["id"], e["queue"]) for e in (submitted, elsewhere, cancelled)] == [
        ("job.submitted", first, "default"), ("job.submitted", second, "other"),
        ("job.cancelled", first, "default")]
    assert lines.empty()  # nothing printed twice
    assert (code, stderr) == (0, "")


def test_batch_create_add_close_status_cancel(redis_url: str) -> None:
    created = ok_json(jv("batch", "create", "--expected", "2", "--threshold", "50", "--progress-every", "1",
                         "--stuck-after", "60", "--json", "--redis", redis_url))
    assert created["state"] == "open"
    batch = created["id"]
    status = ok_json(jv("batch", "status", batch, "--json", "--redis", redis_url))
    assert status["id"] == batch
    assert status["state"] == "open"
    assert (status["expected"], status["threshold"], status["progress_every"], status["stuck_after"]) == (
        2, 50, 1, 60.0)
    assert (status["members"], status["closed"]) == (0, False)

    member = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--batch", batch, "--json",
                        "--redis", redis_url))["id"]
    loose = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--json", "--redis", redis_url))["id"]
    added = ok_json(jv("batch", "add", batch, loose, "--json", "--redis", redis_url))
    assert added == {"id": batch, "added": 1}
    # its 2 expected members are in: membership closed itself, and a close is refused
    status = ok_json(jv("batch", "status", batch, "--json", "--redis", redis_url))
    assert (status["state"], status["members"], status["closed"]) == ("running", 2, True)
    before = dump(redis_url)
    refused = jv("batch", "close", batch, "--json", "--redis", redis_url)
    assert (refused.returncode, refused.stderr) == (2, f"jobvisor: {batch} is running: cannot close it\n")
    assert_nothing_written(before, dump(redis_url))

    cancelled = ok_json(jv("batch", "cancel", batch, "--json", "--redis", redis_url))
    assert (cancelled["outcome"], cancelled["to"]) == ("moved", "cancelled")
    with SyncStore(open_backend(redis_url)) as store:
        for job_id in (member, loose):
            job = store.get_job(job_id)
            assert (job.state, job.batch) == ("cancelled", batch)
    before = dump(redis_url)
    again = ok_json(jv("batch", "cancel", batch, "--json", "--redis", redis_url))
    assert (again["outcome"], again["state"]) == ("absorbed", "cancelled")
    assert_nothing_written(before, dump(redis_url))


def test_adding_a_member_again_changes_nothing(seeded: Seeded) -> None:
    """A no-op writes nothing (STYLE.md 4): not even a ``batch.members_added`` event with ``added 0``."""
    before = dump(seeded.url)
    again = ok_json(jv("batch", "add", seeded.open_batch, seeded.member, "--json", "--redis", seeded.url))
    assert again == {"id": seeded.open_batch, "added": 0}
    assert_nothing_written(before, dump(seeded.url))


def test_batch_status_shows_how_a_batch_ended(redis_url: str) -> None:
    created = ok_json(jv("batch", "create", "--expected", "2", "--threshold", "50", "--json", "--redis", redis_url))
    batch = created["id"]
    member = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--batch", batch, "--json",
                        "--redis", redis_url))["id"]
    with SyncStore(open_backend(redis_url)) as store:
        assert store.finalize_batch(batch, stuck=True).to == "failed"  # what the batch monitor does
    status = ok_json(jv("batch", "status", batch, "--json", "--redis", redis_url))
    assert (status["state"], status["reason"], status["members"], status["completed"]) == ("failed", "stuck", 1, 0)
    text = jv("batch", "status", batch, "--redis", redis_url)
    assert text.returncode == 0, text.stderr
    assert "failed    reason stuck" in text.stdout
    assert "members    1 of 2 expected" in text.stdout
    with SyncStore(open_backend(redis_url)) as store:  # a late completion: counters only
        [claimed] = store.claim("default", "w")
        assert claimed.id == member
        store.complete(member, claimed.token)
    status = ok_json(jv("batch", "status", batch, "--json", "--redis", redis_url))
    assert (status["state"], status["completed"]) == ("failed", 1)


def test_queues_skips_a_name_left_by_an_earlier_version_that_no_queue_may_have(redis_url: str) -> None:
    """Older versions let ``default\\n`` through the name check into ``jv:queues``: the listing
    shows the real queues, one line each, and no traceback."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.sadd("jv:queues", "default\n", "reports")
    finally:
        client.close()
    result = jv("queues", "--json", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"reports"}


def test_a_watchdog_interval_too_long_for_the_lease_is_refused_and_a_short_lease_shortens_the_default(
        redis_url: str) -> None:
    """An outage is told from a lost worker only while 3 sweeps fit in two thirds of a lease."""
    from jobvisor.supervisor.config import load_config

    result = jv("run", "--redis", redis_url, *RUN_APP, "--lease", "2", "--watchdog-interval", "1")
    line = assert_one_line_error(result, 2)
    assert line.startswith("jobvisor: setting watchdog_interval: "), line
    assert "lease of 2 s" in line, line
    assert load_config({"lease": 2}, environ={}).watchdog_interval == pytest.approx(4 / 9)
    assert load_config({}, environ={}).watchdog_interval == 1.0


def test_run_against_a_replica_is_one_line_exit_1_naming_it(tmp_path: Path) -> None:
    """A daemon pointed at a read-only replica would wait forever on READONLY (transient during
    a failover): at start it is told apart by ROLE."""
    from tests.redis_server import RedisServer

    primary = RedisServer(tmp_path / "primary", appendonly=False)
    primary.start()
    try:
        port = primary.url.rsplit(":", 1)[1].split("/")[0]
        replica = RedisServer(tmp_path / "replica", appendonly=False,
                              extra_args=["--replicaof", "127.0.0.1", port])
        replica.start()
        try:
            result = jv("run", "--redis", replica.url, *RUN_APP, timeout=30)
            assert_one_line_error(result, 1, "replica", "primary")
        finally:
            replica.stop()
    finally:
        primary.stop()
