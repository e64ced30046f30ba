"""``jobvisor queues`` shows the rate limit the claims of a queue enforce, next to the queued
jobs of each limited type (text and ``--json``); an unlimited type has no such field."""

from __future__ import annotations

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.rates import parse_rate, wire
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.cli_support import jv, ok_json


def test_queues_shows_the_limits_of_the_queued_types(redis_url: str) -> None:
    with SyncStore(open_backend(redis_url)) as store:
        store.publish_rate_limits("default", {"send": wire(parse_rate("10/s"), "customer"),
                                              "sync": wire(parse_rate("2/m"))})
        for job_type in ("send", "send", "sync", "echo"):
            store.submit(JobSpec(type=job_type))
    types = ok_json(jv("queues", "--json", "--redis", redis_url))["default"]["types"]
    assert types == {"echo": {"queued": 1, "daemons": 0},
                     "send": {"queued": 2, "daemons": 0, "rate_limit": {"interval": 0.1, "key": "customer"}},
                     "sync": {"queued": 1, "daemons": 0, "rate_limit": {"interval": 30.0, "key": None}}}
    text = jv("queues", "--redis", redis_url)
    assert text.returncode == 0, text.stderr
    assert ("queued by type: echo 1 (no live daemon serves it), send 2 (no live daemon serves it, one start "
            "every 100 ms per customer), sync 1 (no live daemon serves it, one start every 30000 ms)") in text.stdout
