"""Hostile input, every class of it: one stderr line, the documented exit code, nothing written.

SPEC.md, "Bad input": a clear one-line error naming the field, exit code 2, nothing written,
never a traceback. Each row of :data:`ROWS` is a command line someone could type (or a script
could build) that once ended in a traceback or was silently accepted: input nested 1,000 deep,
argv bytes that are not UTF-8, ``--input-file /dev/zero``, Redis URLs naming no database,
names with a trailing newline (``$`` where ``\\Z`` was meant), durations under the store's 1 ms
resolution. "Nothing written" is Redis's own ``DEBUG DIGEST`` of the whole keyspace, taken
before and after each row, on one seeded redis-server shared by the module.

Rows run in process through :func:`supervisor.cli.main` (fast); rows whose argv must carry raw
bytes, ``run`` rows (a wrong acceptance would start a daemon) and endless input (a wrong
acceptance would read it all, under a 2 GiB address-space limit) run as subprocesses.
"""

from __future__ import annotations

import io
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.app import app as example_app
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.limits import MAX_INPUT_BYTES, MAX_INPUT_DEPTH
from jobvisor.adapters.records import BatchSpec, JobSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.supervisor.cli import main
from jobvisor.supervisor.client import Client, build_spec
from tests.cli_support import cli_env
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
TYPES = {t: h.describe() for t, h in example_app.handlers.items()}
APP = ["--app", "examples.app:app"]
RUN_APP = [*APP, "--allow-destinations", "127.0.0.1"]  # the example's validator is on loopback


@dataclass(frozen=True)
class World:
    server: RedisServer
    url: str
    raw: Any
    job: str  # a queued echo job
    batch: str  # an open batch
    files: dict[str, str]

    def digest(self) -> bytes:
        return bytes(self.raw.execute_command("DEBUG", "DIGEST"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One redis-server for the whole table (``DEBUG`` enabled for its digest), seeded once."""
    directory = tmp_path_factory.mktemp("hostile")
    server = RedisServer(directory / "redis", extra_args=["--enable-debug-command", "local"])
    server.start()
    raw = redis.Redis.from_url(server.url)
    try:
        with SyncStore(open_backend(server.url)) as store:
            store.register_types(TYPES)
            job = store.submit(build_spec(TYPES, "echo", {"n": 1}, idempotency_key="seeded")).id
            batch = store.create_batch(BatchSpec(expected=3)).id
        files = {
            "deep_file": directory / "deep.json", "over_file": directory / "over.json",
            "dir": directory, "missing": directory / "missing.json",
        }
        files["deep_file"].write_text("[" * 1000 + "]" * 1000)
        files["over_file"].write_text(" " * MAX_INPUT_BYTES + "{}")  # valid JSON, but more text than the limit
        yield World(server, server.url, raw, job, batch, {k: str(v) for k, v in files.items()})
    finally:
        raw.close()
        server.stop()


@dataclass(frozen=True)
class Row:
    """One refused command line. ``@job``, ``@batch``, ``@url`` and the file names are filled in
    from :class:`World`; ``--redis @url`` is appended unless the row names its own ``--redis``.
    ``stdin`` feeds ``--input-file -``; ``bytes_argv`` runs it as a subprocess with ``\\xff``
    in an argument written as ``<ff>``."""

    id: str
    argv: tuple[str, ...]
    patterns: tuple[str, ...]
    code: int = 2
    env: tuple[tuple[str, str], ...] = ()
    stdin: bytes | None = None
    subprocess: bool = False


def _r(id: str, argv: list[str], *patterns: str, code: int = 2, env: dict[str, str] | None = None,
       stdin: bytes | None = None, subprocess: bool = False) -> Row:
    return Row(id, tuple(argv), patterns, code, tuple((env or {}).items()), stdin, subprocess)


DEEP_ARRAYS = "[" * 1000 + "]" * 1000
DEEP_OBJECTS = '{"a":' * 1000 + "1" + "}" * 1000
JUST_TOO_DEEP = "[" * (MAX_INPUT_DEPTH + 1) + "]" * (MAX_INPUT_DEPTH + 1)
SUB = ["submit", "echo", *APP]

ROWS: list[Row] = [
    # nesting: a limit, not the interpreter's recursion limit
    _r("input-nested-1000-arrays", [*SUB, "--input", DEEP_ARRAYS], "input", "nested", str(MAX_INPUT_DEPTH)),
    _r("input-nested-1000-objects", [*SUB, "--input", DEEP_OBJECTS], "input", "nested"),
    _r("input-nested-one-over-the-limit", [*SUB, "--input", JUST_TOO_DEEP], "input", "nested"),
    _r("input-file-nested-1000", [*SUB, "--input-file", "@deep_file"], "input", "nested"),
    _r("stdin-nested-1000", [*SUB, "--input-file", "-"], "input", "nested", stdin=DEEP_ARRAYS.encode()),
    # bounded reading: refused once past the limit, never read to the end
    _r("input-file-dev-zero", [*SUB, "--input-file", "/dev/zero"], "input-file", str(MAX_INPUT_BYTES),
       subprocess=True),
    _r("input-file-over-the-limit", [*SUB, "--input-file", "@over_file"], "input-file", str(MAX_INPUT_BYTES)),
    _r("stdin-over-the-limit", [*SUB, "--input-file", "-"], "input-file", "limit",
       stdin=b"\0" * (2 * MAX_INPUT_BYTES), subprocess=True),
    _r("input-argument-over-the-limit", [*SUB, "--input", '"' + "x" * MAX_INPUT_BYTES + '"'], "input", "limit"),
    _r("input-file-a-directory", [*SUB, "--input-file", "@dir"], "input-file"),
    _r("input-file-missing", [*SUB, "--input-file", "@missing"], "input-file"),
    _r("input-file-name-with-nul", [*SUB, "--input-file", "a\0b"], "input-file", "not a file name"),
    # argv bytes that are not UTF-8, in every kind of argument
    _r("argv-latin1-input", [*SUB, "--input", '"caf<ff>"'], "input", "UTF-8", subprocess=True),
    _r("argv-latin1-queue", [*SUB, "--queue", "caf<ff>"], "queue", "UTF-8", subprocess=True),
    _r("argv-latin1-idempotency-key", [*SUB, "--idempotency-key", "k<ff>"], "idempotency-key", "UTF-8",
       subprocess=True),
    _r("argv-latin1-webhook-url", [*SUB, "--webhook-url", "http://h/<ff>"], "webhook-url", "UTF-8",
       subprocess=True),
    _r("argv-latin1-type", ["submit", "ech<ff>"], "type", "UTF-8", subprocess=True),
    _r("argv-latin1-status-id", ["status", "default.<ff>"], "id", "UTF-8", subprocess=True),
    _r("argv-latin1-batch-add-job", ["batch", "add", "@batch", "@job", "default.<ff>"], "jobs", "UTF-8",
       subprocess=True),
    _r("argv-latin1-redis", ["queues", "--redis", "redis://127.0.0.1:1/<ff>"], "redis", "UTF-8", subprocess=True),
    _r("env-latin1-jobvisor-redis", ["queues"], "JOBVISOR_REDIS", "UTF-8",
       env={"JOBVISOR_REDIS": "redis://h<ff>/0"}, subprocess=True),
    # Redis URLs: the database, empty values, options redis-py does not know
    _r("redis-db-99", ["queues", "--redis", "@base/99"], "redis", "database"),
    _r("redis-db-16-submit", [*SUB, "--redis", "@base/16"], "redis", "database"),
    _r("redis-db-minus-1", ["queues", "--redis", "@base/-1"], "redis", "database"),
    _r("redis-db-abc", ["status", "@job", "--redis", "@base/abc"], "redis", "database"),
    _r("redis-db-1-slash-2", ["queues", "--redis", "@base/1/2"], "redis", "database"),
    _r("redis-db-space-1", ["queues", "--redis", "@base/ 1"], "redis"),
    _r("redis-db-query-minus-1", ["queues", "--redis", "@base/0?db=-1"], "redis", "database"),
    _r("redis-empty", ["queues", "--redis", ""], "redis", "empty"),
    _r("redis-empty-submit", [*SUB, "--redis", ""], "redis", "empty"),
    _r("redis-trailing-newline", ["queues", "--redis", "@base/0\n"], "redis", "whitespace"),
    _r("redis-unknown-option", ["queues", "--redis", "@base/0?colour=blue"], "redis", "colour"),
    _r("redis-bad-ipv6", ["queues", "--redis", "redis://[::1/0"], "redis"),
    _r("redis-port-99999", ["queues", "--redis", "redis://127.0.0.1:99999/0"], "redis", "[Pp]ort"),
    _r("env-jobvisor-redis-db-99", ["queues"], "redis", "database", env={"JOBVISOR_REDIS": "@base/99"}),
    # Cluster and Sentinel URLs: refused in one line, credentials never shown
    _r("redis-sentinel-no-service", ["queues", "--redis", "redis+sentinel://u:hunter2@127.0.0.1:1"], "redis",
       "service"),
    _r("redis-cluster-with-db", ["queues", "--redis", "redis+cluster://127.0.0.1:1/3"], "redis", "database"),
    _r("redis-cluster-bad-node", [*SUB, "--redis", "redis+cluster://127.0.0.1:1,nohost:"], "redis", "host:port"),
    _r("demo-redis-db-abc", ["demo", "--redis", "@base/abc"], "redis", "database"),
    # names and ids: a full match, so a trailing newline is refused
    _r("queue-trailing-newline", [*SUB, "--queue", "default\n"], "queue"),
    _r("type-trailing-newline", ["submit", "echo\n"], "type"),
    _r("batch-id-trailing-newline", [*SUB, "--batch", "@batch\n"], "batch", "jobvisor id"),
    _r("idempotency-key-trailing-newline", [*SUB, "--idempotency-key", "seeded\n"], "idempotency_key"),
    _r("idempotency-key-control-char", [*SUB, "--idempotency-key", "a\x1bb"], "idempotency_key"),
    _r("status-id-trailing-newline", ["status", "@job\n"], "id", "jobvisor id"),
    _r("cancel-id-trailing-newline", ["cancel", "@job\n"], "id", "jobvisor id"),
    _r("retry-id-trailing-newline", ["retry", "@job\n"], "id", "jobvisor id"),
    _r("events-queue-trailing-newline", ["events", "--queue", "default\n"], "queue"),
    _r("events-job-trailing-newline", ["events", "--job", "@job\n"], "job", "jobvisor id"),
    _r("report-queue-trailing-newline", ["report", "--queue", "default\n"], "queue"),
    _r("batch-create-queue-trailing-newline", ["batch", "create", "--queue", "default\n"], "queue"),
    _r("batch-add-job-trailing-newline", ["batch", "add", "@batch", "@job\n"], "id", "jobvisor id"),
    _r("batch-status-id-trailing-newline", ["batch", "status", "@batch\n"], "id", "jobvisor id"),
    _r("run-queues-trailing-newline", ["run", *RUN_APP, "--queues", "default\n"], "queues", subprocess=True),
    # durations under the store's 1 ms resolution
    _r("timeout-0.1ms", [*SUB, "--timeout", "0.0001"], "timeout", "0.001"),
    _r("timeout-1ns", [*SUB, "--timeout", "1e-9"], "timeout"),
    _r("timeout-nan", [*SUB, "--timeout", "nan"], "timeout"),
    _r("delay-0.5ms", [*SUB, "--delay", "0.0005"], "delay", "1 ms"),
    _r("stuck-after-0.1ms", ["batch", "create", "--stuck-after", "0.0001"], "stuck_after", "0.001"),
    # whatever else hostile values found
    _r("app-empty", [*SUB[:2], "--app", ""], "app"),
    _r("events-limit-huge", ["events", "--limit", "9" * 30], "limit"),
    _r("events-limit-over-the-stream-cap", ["events", "--limit", "100001"], "limit", "100000"),
    _r("webhook-url-newline", [*SUB, "--webhook-url", "http://h/\nx"], "webhook_url"),
    _r("status-id-huge", ["status", "default." + "A" * 100_000], "id"),
    _r("priority-huge", [*SUB, "--priority", "9" * 400], "priority"),
    _r("run-redis-empty", ["run", *RUN_APP, "--redis", ""], "redis", subprocess=True),
    _r("run-redis-db-abc", ["run", *RUN_APP, "--redis", "@base/abc"], "redis", "database", subprocess=True),
    _r("run-redis-db-99", ["run", *RUN_APP, "--redis", "@base/99"], "redis", "database", subprocess=True),
]


def _fill(arg: str, world: World) -> str:
    base = world.url.rsplit("/", 1)[0]
    values = {"@job": world.job, "@batch": world.batch, "@base": base, "@url": world.url,
              **{f"@{k}": v for k, v in world.files.items()}}
    for name in sorted(values, key=len, reverse=True):
        arg = arg.replace(name, values[name])
    return arg


def _argv(row: Row, world: World) -> list[str]:
    argv = [_fill(a, world) for a in row.argv]
    if "--redis" not in argv and row.argv[0] != "diagram" and not dict(row.env).get("JOBVISOR_REDIS"):
        argv += ["--redis", world.url]
    return argv


def _in_process(row: Row, world: World, capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    for name, value in row.env:
        monkeypatch.setenv(name, _fill(value, world))
    if row.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(row.stdin)))
    capsys.readouterr()
    try:
        code = main(_argv(row, world))
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _as_bytes(arg: str) -> bytes:
    return arg.encode().replace(b"<ff>", b"\xff")


def _limit_memory() -> None:
    """A CLI that read ``/dev/zero`` to the end would fail here, not exhaust the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _subprocess(row: Row, world: World) -> tuple[int, str, str]:
    env = {k.encode(): _as_bytes(_fill(v, world)) for k, v in row.env}
    environ = {k.encode(): v.encode() for k, v in cli_env().items()}
    try:
        done = subprocess.run([sys.executable.encode(), b"-m", b"jobvisor", *map(_as_bytes, _argv(row, world))],
                              cwd=ROOT, env={**environ, **env}, input=row.stdin, capture_output=True, timeout=20,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired as exc:  # a wrongly accepted `run` is a daemon: this row fails alone
        return -9, "", f"(killed after 20s) {exc.stderr!r}"
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def assert_one_line(code: int, out: str, err: str, expected: int, patterns: tuple[str, ...]) -> None:
    where = f"exit {code}; stdout={out[:300]!r}; stderr={err[:600]!r}"
    assert code == expected, where
    assert "Traceback" not in err, where
    assert len(err.splitlines()) == 1, where
    assert err.endswith("\n"), where
    assert err.startswith("jobvisor: "), where
    for pattern in patterns:
        assert re.search(pattern, err), f"{pattern!r} not in {err!r}"
    assert out == "", where


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input_is_one_line_and_writes_nothing(row: Row, world: World, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    before = world.digest()
    if row.subprocess:
        code, out, err = _subprocess(row, world)
    else:
        code, out, err = _in_process(row, world, capsys, monkeypatch)
    assert_one_line(code, out, err, row.code, row.patterns)
    assert world.digest() == before, "the keyspace changed"


def test_an_oom_while_loading_the_library_is_one_line_exit_1(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A server-side failure, not bad input: exit 1 (SPEC "other failure"), one line naming the
    URL and Redis's reason, nothing written; the next submit, with memory back, loads it and works."""
    world.raw.function_flush()
    world.raw.config_set("maxmemory-policy", "noeviction")
    world.raw.config_set("maxmemory", 1)  # every write refused: used memory is over the limit
    before = world.digest()
    try:
        code = main([*SUB, "--redis", world.url])
        out, err = capsys.readouterr()
    finally:
        world.raw.config_set("maxmemory", 0)
    assert_one_line(code, out, err, 1, (re.escape(world.url), "memory"))
    assert world.digest() == before
    assert world.raw.function_list() == []
    assert main(["queues", "--redis", world.url]) == 0  # reads need no library
    capsys.readouterr()


def test_every_row_class_of_the_issue_is_in_the_table() -> None:
    """The table keeps a row for each class it was built for (a deleted row shows here)."""
    ids = {r.id for r in ROWS}
    for prefix in ("input-nested", "input-file-dev-zero", "stdin-over", "argv-latin1", "env-latin1", "redis-db-99",
                   "redis-db-minus-1", "redis-db-abc", "redis-empty", "queue-trailing-newline", "timeout-0.1ms"):
        assert any(i.startswith(prefix) for i in ids), prefix


# -- the Python client refuses the same things, before anything is written ----------------------------


def _self_containing() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep(n: int) -> Any:
    value: Any = []
    for _ in range(n):
        value = [value]
    return value


CLIENT_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("input-nested-5000", {"input": _deep(5000)}, "input: nested"),
    ("input-containing-itself", {"input": _self_containing()}, "input: nested"),
    ("input-lone-surrogate", {"input": {"name": "caf\udce9"}}, "input: .*UTF-8"),
    ("input-not-json", {"input": {"when": object()}}, "input: cannot be encoded"),
    ("queue-trailing-newline", {"queue": "default\n"}, "queue"),
    ("batch-trailing-newline", {"batch": "default.ABC\n"}, "batch: .*jobvisor id"),
    ("idempotency-key-newline", {"idempotency_key": "k\n"}, "idempotency_key"),
    ("idempotency-key-surrogate", {"idempotency_key": "k\udcff"}, "idempotency_key"),
    ("timeout-0.1ms", {"timeout": 0.0001}, "timeout"),
    ("backoff-0.1ms", {"backoff": 0.0001}, "backoff: .*1 ms"),
    ("delay-1ns", {"delay": 1e-9}, "delay: .*1 ms"),
    ("webhook-url-surrogate", {"webhook_url": "http://h/\udcff"}, "webhook_url"),
]


@pytest.mark.parametrize(("options", "pattern"), [r[1:] for r in CLIENT_ROWS], ids=[r[0] for r in CLIENT_ROWS])
def test_the_client_refuses_hostile_submits(world: World, options: dict[str, Any], pattern: str) -> None:
    before = world.digest()
    with Client(world.url) as client, pytest.raises(BadInput, match=pattern) as refused:
        client.submit("echo", **options)
    assert "\n" not in str(refused.value)
    assert world.digest() == before


@pytest.mark.parametrize("url", ["", "redis://127.0.0.1:1/abc", "redis://127.0.0.1:1/-1", "redis://h/0?colour=1",
                                 "redis://h/0\n"])
def test_the_client_refuses_a_bad_redis_url_before_connecting(url: str) -> None:
    with pytest.raises(BadInput, match="redis"):
        Client(url)


def test_a_jobspec_built_directly_is_checked_too() -> None:
    """``Store.submit`` accepts a JobSpec: its own checks refuse what decode_spec would."""
    with pytest.raises(ValueError, match="nested"):
        JobSpec(type="t", input=_deep(MAX_INPUT_DEPTH))  # one level over
    assert JobSpec(type="t", input=_deep(MAX_INPUT_DEPTH - 1)).input is not None  # exactly at the limit
