"""The command line for validation and webhooks: URLs refused at submit, settings refused
at start (exit 2, one line, nothing written, the secret never echoed), and ``status``
showing each validation check and each webhook delivery. Real redis-server, subprocesses.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.cli_support import assert_nothing_written, assert_one_line_error, dump, jv, seed

APP = ["--app", "examples.app:app"]
SHORT_SECRET = "whsec_c2hvcnQta2V5"  # valid base64 of 9 bytes: too short


@pytest.mark.parametrize(("argv", "env", "patterns"), [
    (["submit", "echo", "--validator-url", "ftp://truth.example/{job_id}"], {}, ["validator_url", "http or https"]),
    (["submit", "echo", "--validator-url", "http:///jobs/{job_id}"], {}, ["validator_url", "no host"]),
    (["submit", "echo", "--webhook-url", "http://hooks.example/a b"], {}, ["webhook_url", "whitespace"]),
    (["submit", "echo", "--webhook-url", "https://evil.example/in"], {"JOBVISOR_ALLOWED_HOSTS": "hooks.example"},
     ["webhook_url", "evil.example", "allowed hosts"]),
    (["submit", "echo", "--validator-url", "https://other.example/{job_id}"],
     {"JOBVISOR_ALLOWED_HOSTS": "*.corp.example"}, ["validator_url", "other.example", "allowed hosts"]),
    (["run", *APP, "--webhook-url", "ftp://x"], {}, ["^jobvisor: setting webhook_url: ", "http or https"]),
    (["run", *APP, "--webhook-attempts", "0"], {}, ["setting webhook_attempts"]),
    (["run", *APP, "--validation-interval", "-2"], {}, ["setting validation_interval"]),
    (["run", *APP], {"JOBVISOR_WEBHOOK_SECRET": SHORT_SECRET}, ["setting webhook_secret", "9 bytes"]),
    (["run", *APP], {"JOBVISOR_WEBHOOK_SECRET": "whsec_not base64!"}, ["setting webhook_secret", "not a whsec_"]),
    (["run", "--app", "tests.webhook_app:validated", "--allowed-hosts", "hooks.example"], {},
     ["validator url of 'synced'", "truth.example", "allowed hosts"]),
], ids=["validator-ftp", "validator-no-host", "webhook-space", "webhook-not-allowed", "validator-not-allowed",
        "run-webhook-ftp", "run-attempts-0", "run-interval-negative", "run-secret-short", "run-secret-garbage",
        "run-validator-host-not-allowed"])
def test_refused(redis_url: str, argv: list[str], env: dict[str, str], patterns: list[str]) -> None:
    seed(redis_url)
    before = dump(redis_url)
    result = jv(*argv, "--redis", redis_url, env=env, timeout=20)
    line = assert_one_line_error(result, 2, *patterns)
    for secret in (SHORT_SECRET, "whsec_not base64!"):
        assert secret[6:] not in line
    assert_nothing_written(before, dump(redis_url))


def test_submit_with_a_validator_url_and_the_default_webhook(redis_url: str) -> None:
    result = jv("submit", "echo", *APP, "--validator-url", "https://truth.example/jobs/{job_id}", "--notify",
                "--json", "--redis", redis_url, env={"JOBVISOR_ALLOWED_HOSTS": "truth.example"})
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["id"]
    with SyncStore(open_backend(redis_url)) as store:
        raw = store.get_job(job_id).raw
    assert (raw["validator_url"], raw["has_validator"], raw["notify"], raw.get("webhook_url", "")) == (
        "https://truth.example/jobs/{job_id}", "1", "1", "")


def _a_job_with_history(url: str) -> str:
    """Validated on the second check, its webhook failed once (HTTP 503): driven by store ops."""
    with SyncStore(open_backend(url)) as s:
        job = s.submit(JobSpec(type="echo", has_validator=True, webhook_url="http://hooks.example/in")).id
        [claimed] = s.claim("default", "w1")
        s.complete(job, claimed.token, {"echo": 1})
        [check] = s.validations_due("default", ["echo"]).items
        s.validation_outcome(job, check.token, ok=False, status="processing",
                             reason="status is 'processing', expected 'completed'", retry_at=time.time() - 1)
        [check] = s.validations_due("default", ["echo"]).items
        s.validation_outcome(job, check.token, ok=True, status="completed")
        [delivery] = s.take_deliveries("default")
        s.delivery_outcome("default", delivery.id, delivery.token, "fail", max_attempts=8,
                           retry_at=time.time() + 60, status=503, error="HTTP 503")
    return job


def test_status_shows_validation_checks_and_webhook_deliveries(redis_url: str) -> None:
    job = _a_job_with_history(redis_url)
    text = jv("status", job, "--redis", redis_url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "validation completed" in lines
    checks = [line for line in lines if line.startswith("check ")]
    assert len(checks) == 2
    assert re.match(r"check 1  failed  \S+  status processing  status is 'processing', expected 'completed'$",
                    checks[0]), checks[0]
    assert re.match(r"check 2  passed  \S+  status completed$", checks[1]), checks[1]
    [hook] = [line for line in lines if line.startswith("webhook ")]
    assert hook == ("webhook    job.completed retry_wait, 1 attempt(s), last HTTP 503, last error HTTP 503"
                    f"  -> http://hooks.example/in  [{job}~job.completed~0]")  # the id redeliver takes
    data: Any = json.loads(jv("status", job, "--json", "--redis", redis_url).stdout)
    assert [(c["n"], c["ok"], c["status"]) for c in data["validation_checks"]] == [
        (1, False, "processing"), (2, True, "completed")]
    [delivery] = data["deliveries"]
    assert (delivery["id"], delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        f"{job}~job.completed~0", "retry_wait", 1, 503)


def test_webhooks_redeliver_re_sends_a_dead_delivery_once(redis_url: str) -> None:
    with SyncStore(open_backend(redis_url)) as s:  # a deliverer's work by hand: rejected, dead
        job = s.submit(JobSpec(type="echo", webhook_url="http://hooks.example/in")).id
        s.cancel(job)
        [taken] = s.take_deliveries("default", max_attempts=1)
        assert s.delivery_outcome("default", taken.id, taken.token, "reject", max_attempts=1, status=404).to == "dead"
    moved = jv("webhooks", "redeliver", taken.id, "--json", "--redis", redis_url)
    assert moved.returncode == 0, moved.stderr
    shown = json.loads(moved.stdout)
    assert (shown["id"], shown["outcome"], shown["from"], shown["to"]) == (taken.id, "moved", "dead", "pending")
    before = dump(redis_url)
    assert_one_line_error(jv("webhooks", "redeliver", taken.id, "--redis", redis_url), 2,
                          "is pending: cannot re-send it")
    assert_one_line_error(jv("webhooks", "redeliver", f"{job}~job.failed~0", "--redis", redis_url), 3,
                          "not found")
    assert_one_line_error(jv("webhooks", "redeliver", "nope", "--redis", redis_url), 2, "not a delivery id")
    assert_nothing_written(before, dump(redis_url))
    with SyncStore(open_backend(redis_url)) as s:
        [again] = s.take_deliveries("default", max_attempts=1)
    assert (again.id, again.attempt) == (taken.id, 1)
