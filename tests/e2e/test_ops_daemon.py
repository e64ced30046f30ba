"""The operator's commands against a running ``jobvisor run`` subprocess, a real redis-server
and a real loopback receiver.

* Pause: while ``held`` is paused the daemon claims nothing of it (``job.claim`` events of
  ``held``: 0), which the window proves by an event, not a sleep: a job of the unpaused
  ``open`` queue, submitted after ``held``'s jobs, was claimed and finished. Resume wakes the
  idle daemon: its idle poll is 30 s, so the held jobs finishing within a few seconds is the
  wake's doing; each is claimed exactly once.
* Redeliver: a delivery the receiver answered 410 is ``dead``; once the receiver is healthy,
  ``jobvisor redeliver --type ...`` sends it again with the same ``webhook-id``, and its
  Standard Webhooks signature verifies.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.cli_support import jv
from tests.daemon_process import daemon, wait_until
from tests.http_servers import ScriptedServer, Step

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
APP = "tests.webhook_app:app"


def counts(url: str, queue: str) -> Counter[str]:
    with SyncStore(open_backend(url)) as store:
        return Counter(e.type for e in store.events(queue, count=10_000))


def states(url: str, ids: list[str]) -> Counter[str]:
    with SyncStore(open_backend(url)) as store:
        return Counter(store.get_job(i).state for i in ids)


def test_a_paused_queue_is_not_claimed_and_resume_wakes_the_daemon(redis_url: str, tmp_path: Path) -> None:
    with SyncStore(open_backend(redis_url)) as store:
        held = [store.submit(JobSpec(type="notify_me", queue="held")).id]
        assert jv("queue", "pause", "held", "--redis", redis_url).returncode == 0
        first_open = store.submit(JobSpec(type="notify_me", queue="open")).id
        with daemon(redis_url, tmp_path, "d1", app=APP,
                    extra=("--queues", "held,open", "--idle-poll", "30")) as d1:
            wait_until(lambda: states(redis_url, [first_open])["completed"] == 1, timeout=20,
                       what="the open queue's first job", alive=d1)
            held += [store.submit(JobSpec(type="notify_me", queue="held")).id for _ in range(5)]
            last_open = store.submit(JobSpec(type="notify_me", queue="open")).id  # after held's submits
            wait_until(lambda: states(redis_url, [last_open])["completed"] == 1, timeout=20,
                       what="the open queue's job submitted after the held ones", alive=d1)
            assert counts(redis_url, "held")["job.claim"] == 0
            assert states(redis_url, held) == Counter({"queued": 6})
            resumed = jv("queue", "resume", "held", "--redis", redis_url)
            assert resumed.stdout == "held: paused -> running\n", resumed.stderr
            wait_until(lambda: states(redis_url, held)["completed"] == 6, timeout=10,
                       what="the held jobs, woken by the resume (the idle poll is 30 s)", alive=d1)
    held_events = counts(redis_url, "held")
    assert (held_events["job.claim"], held_events["queue.paused"], held_events["queue.resumed"]) == (6, 1, 1)


def test_a_dead_delivery_is_re_sent_with_its_webhook_id_once_the_receiver_is_healthy(
        redis_url: str, tmp_path: Path) -> None:
    with ScriptedServer([Step(status=410)], then=Step(status=200)) as receiver, \
            SyncStore(open_backend(redis_url)) as store, \
            daemon(redis_url, tmp_path, "d1", app=APP, env={"JOBVISOR_WEBHOOK_SECRET": SECRET},
                   extra=("--allow-private-destinations", "--webhook-backoff", "0.1")) as d1:
        job = store.submit(JobSpec(type="notify_me", webhook_url=receiver.url_for("/hook"))).id
        [refused] = receiver.wait_for(1, timeout=20)

        def dead() -> bool:
            return [d.state for d in store.job_deliveries(job, 0)] == ["dead"]

        wait_until(dead, timeout=20, what="the delivery to be dead", alive=d1)
        result = jv("redeliver", "--type", "notify_me", "--since", "10m", "--redis", redis_url)
        assert (result.returncode, result.stdout) == (0, "re-sent 1 of 1 dead deliveries\n"), result.stderr
        requests = receiver.wait_for(2, timeout=20)
        wait_until(lambda: [d.state for d in store.job_deliveries(job, 0)] == ["delivered"], timeout=20,
                   what="the delivery to be delivered", alive=d1)
    again = requests[1]
    assert len(requests) == 2
    assert again.headers["webhook-id"] == refused.headers["webhook-id"] == f"{job}~job.completed~0"
    body = Webhook(SECRET).verify(again.body, again.headers)
    assert (body["type"], body["data"]["id"], body["data"]["state"]) == ("job.completed", job, "completed")
