"""The operator's commands as subprocesses against a real redis-server: ``jobs`` (table, JSON,
cursor paging while jobs are added), bulk ``retry`` (a dry run writes nothing, the keyspace
compared whole; 50 failed jobs make exactly 50 new epochs), ``queue pause|resume`` shown by
``queues``, ``redeliver`` by filter, ``submit --idempotency-ttl``; bad input for each: one
line, exit 2, nothing written."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.cli_support import TYPES, assert_nothing_written, assert_one_line_error, dump, jv, ok_json, seed


def failed(url: str, n: int, *, job_type: str = "echo", webhook_url: str | None = None) -> list[str]:
    with SyncStore(open_backend(url)) as store:
        store.register_types(TYPES)
        ids = [store.submit(JobSpec(type=job_type, max_retries=0, webhook_url=webhook_url)).id for _ in range(n)]
        for job in store.claim("default", "w1", n=n, types=[job_type]):
            store.fail(job.id, job.token, {"type": "Boom", "message": "no"})
    return ids


def test_jobs_pages_through_every_job_once_while_jobs_are_added(redis_url: str) -> None:
    seeded = seed(redis_url)
    with SyncStore(open_backend(redis_url)) as store:
        before = {j for q in ("default", "other") for j in _all_ids(redis_url, q)}
        pages: list[list[str]] = []
        cursor: list[str] = []
        while True:
            page = ok_json(jv("jobs", "--limit", "2", *cursor, "--json", "--redis", redis_url))
            pages.append([j["id"] for j in page["jobs"]])
            if page["next_cursor"] is None:
                break
            cursor = ["--cursor", page["next_cursor"]]
            store.submit(JobSpec(type="echo"))  # a job added between pages
            store.submit(JobSpec(type="echo", queue="other", priority=5))
    listed = [i for page in pages for i in page]
    assert len(listed) == len(set(listed))
    assert before <= set(listed)
    assert seeded.other_job in listed
    table = jv("jobs", "--queue", "default", "--state", "cancelled", "--redis", redis_url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "type", "state"]
    assert [line.split()[:3] for line in lines[1:]] == [[seeded.cancelled, "report", "cancelled"]]
    assert jv("jobs", "--type", "nothing", "--redis", redis_url).stdout == "no jobs match\n"


def _all_ids(url: str, queue: str) -> set[str]:
    prefix = Keys(queue).job("")
    client = redis.Redis.from_url(url)
    try:
        return {k.decode()[len(prefix):] for k in client.scan_iter(match=prefix + "*")}
    finally:
        client.close()


def test_bulk_retry_dry_run_writes_nothing_then_50_jobs_get_exactly_50_new_epochs(redis_url: str) -> None:
    ids = failed(redis_url, 50)
    before = dump(redis_url)
    dry = ok_json(jv("retry", "--state", "failed", "--type", "echo", "--since", "1h", "--dry-run", "--json",
                     "--redis", redis_url))
    assert (dry["matched"], dry["done"], sorted(dry["ids"])) == (50, 0, sorted(ids))
    text = jv("retry", "--state", "failed", "--dry-run", "--redis", redis_url)
    assert text.stdout.splitlines()[0] == "would retry 50 jobs"
    assert sorted(text.stdout.splitlines()[1:]) == sorted(ids)
    assert_nothing_written(before, dump(redis_url))
    done = jv("retry", "--state", "failed", "--queue", "default", "--redis", redis_url)
    assert (done.returncode, done.stdout) == (0, "retried 50 of 50 jobs\n"), done.stderr
    with SyncStore(open_backend(redis_url)) as store:
        events = Counter((e.id, e.type) for e in store.events("default", count=10_000))
        assert {i: events[(i, "job.retry")] for i in ids} == dict.fromkeys(ids, 1)
        assert sum(n for (_, kind), n in events.items() if kind == "job.retry") == 50
        assert {store.get_job(i).epoch for i in ids} == {1}
    again = jv("retry", "--state", "failed", "--redis", redis_url)
    assert again.stdout == "retried 0 of 0 jobs\n"


def test_single_retry_keeps_working(redis_url: str) -> None:
    [job] = failed(redis_url, 1)
    moved = ok_json(jv("retry", job, "--json", "--redis", redis_url))
    assert (moved["from"], moved["to"]) == ("failed", "queued")


def test_pause_and_resume_are_shown_by_queues(redis_url: str) -> None:
    seed(redis_url)
    assert jv("queue", "pause", "default", "--redis", redis_url).stdout == "default: running -> paused\n"
    before = dump(redis_url)
    assert jv("queue", "pause", "default", "--redis", redis_url).stdout == "default is paused already (no change)\n"
    assert_nothing_written(before, dump(redis_url))
    shown = ok_json(jv("queues", "--json", "--redis", redis_url))
    assert (shown["default"]["paused"], shown["other"]["paused"]) == (True, False)
    rows = {line.split()[0]: line for line in jv("queues", "--redis", redis_url).stdout.splitlines()[1:]
            if not line.startswith(" ")}
    assert "paused since" in rows["default"]
    assert rows["other"].endswith("running")
    assert ok_json(jv("queue", "resume", "default", "--json", "--redis", redis_url)) == {
        "queue": "default", "outcome": "moved", "paused": False}
    assert ok_json(jv("queues", "--json", "--redis", redis_url))["default"]["paused"] is False


def test_redeliver_by_filter_re_sends_the_dead_deliveries(redis_url: str) -> None:
    ids = failed(redis_url, 3, webhook_url="https://hooks.example/in")
    with SyncStore(open_backend(redis_url)) as store:
        for d in store.take_deliveries("default", n=10, max_attempts=1):
            assert store.delivery_outcome("default", d.id, d.token, "reject", max_attempts=1, status=410).to == "dead"
    before = dump(redis_url)
    dry = ok_json(jv("redeliver", "--type", "echo", "--dry-run", "--json", "--redis", redis_url))
    assert sorted(dry["ids"]) == sorted(f"{i}~job.failed~0" for i in ids)
    assert_nothing_written(before, dump(redis_url))
    one = ok_json(jv("redeliver", ids[0], "--json", "--redis", redis_url))
    assert (one["matched"], one["done"]) == (1, 1)
    rest = jv("redeliver", "--queue", "default", "--since", "1h", "--redis", redis_url)
    assert (rest.returncode, rest.stdout) == (0, "re-sent 2 of 2 dead deliveries\n"), rest.stderr


def test_submit_with_an_idempotency_lifetime(redis_url: str) -> None:
    job = ok_json(jv("submit", "echo", "--app", "examples.app:app", "--idempotency-key", "k1",
                     "--idempotency-ttl", "60", "--json", "--redis", redis_url))["id"]
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(Keys("default").idem("k1")) == job.encode()
        assert 59_000 < client.pttl(Keys("default").idem("k1")) <= 60_000
    finally:
        client.close()


@pytest.mark.parametrize(("argv", "code", "patterns"), [
    (["jobs", "--state", "stuck"], 2, ["^jobvisor: state: 'stuck' is not a job state"]),
    (["jobs", "--limit", "0"], 2, ["limit: must be between 1 and 500"]),
    (["jobs", "--limit", "x"], 2, ["invalid int value"]),
    (["jobs", "--queue", "a b"], 2, ["queue: 'a b' is not a queue name"]),
    (["jobs", "--since", "yesterday"], 2, ["since: 'yesterday' is not a time"]),
    (["jobs", "--cursor", "nonsense"], 2, ["cursor: not a cursor this listing gave"]),
    (["retry"], 2, ["state: a bulk retry needs --state"]),
    (["retry", "--state", "queued"], 2, ["state: 'queued' cannot be retried"]),
    (["retry", "--state", "completed", "--dry-run"], 2, ["state: 'completed' cannot be retried"]),
    (["retry", "default.01ARZ3NDEKTSV4RRFFQ69G5FAV", "--state", "failed"], 2, ["not both"]),
    (["retry", "--state", "failed", "--since", "-3"], 2, ["since: "]),
    (["retry", "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"], 3, ["not found"]),
    (["queue", "pause", "no such"], 2, ["queue: 'no such' is not a queue name"]),
    (["queue", "pause", "never"], 3, ["queue 'never' not found"]),
    (["queue", "stop", "default"], 2, ["invalid choice"]),
    (["redeliver", "default.01ARZ3NDEKTSV4RRFFQ69G5FAV~job.failed~x"], 2, ["not a delivery id"]),
    (["redeliver", "nope~job.failed~1"], 2, ["not a jobvisor id"]),
    (["redeliver", "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"], 3, ["not found"]),
    (["redeliver", "default.01ARZ3NDEKTSV4RRFFQ69G5FAV", "--type", "echo"], 2, ["not both"]),
    (["redeliver", "--since", "soon"], 2, ["since: "]),
    (["redeliver", "default.01ARZ3NDEKTSV4RRFFQ69G5FAV~job.failed~0", "--dry-run"], 2, ["^jobvisor: dry-run: "]),
    (["submit", "echo", "--idempotency-ttl", "60"], 2, ["idempotency_ttl: needs an idempotency_key"]),
    (["submit", "echo", "--idempotency-key", "k", "--idempotency-ttl", "0"], 2, ["idempotency_ttl"]),
    (["submit", "echo", "--idempotency-key", "k", "--idempotency-ttl", "9e9"], 2, ["idempotency_ttl"]),
], ids=lambda v: "-".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(redis_url: str, argv: list[str], code: int,
                                                         patterns: list[str]) -> None:
    seed(redis_url)
    before = dump(redis_url)
    assert_one_line_error(jv(*argv, "--redis", redis_url), code, *patterns)
    assert_nothing_written(before, dump(redis_url))


def test_bad_filters_are_refused_before_redis_is_asked() -> None:
    unreachable = "redis://127.0.0.1:1/0"
    for argv in (["jobs", "--state", "nope"], ["retry", "--state", "queued"], ["jobs", "--since", "x"]):
        assert_one_line_error(jv(*argv, "--redis", unreachable), 2)
