"""The store's notifications reach a daemon in another process well before its slower paths would.

A cancel made anywhere publishes on the queue's ``cancel`` channel, and the daemon running the
handler stops it at once; without that message it would only learn at its next lease renewal
(a third of a lease). A submit publishes on ``wake``, and an idle daemon claims at once; without
it, at its next idle poll. Each bound below is well under the slower path, so removing either
``PUBLISH`` from the Lua library fails these tests (checked by ``bench/lua_mutants.py``).

Real ``jobvisor run`` processes on a real redis-server; the handlers announce themselves on a
pub/sub channel (``tests/notify_app.py``) that the test hears under ``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
import trio

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.notify import listen
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from tests.daemon_process import daemon
from tests.notify_app import CHANNEL

LEASE = 30.0  # renewals every 10 s: the path a cancel takes without its message
IDLE_POLL = 30.0  # the path a new job takes to an idle daemon without the wake message
BOUND = 2.0  # well under both
APP = "tests.notify_app:app"


class Heard:
    """The handlers' announcements, as trio events by message."""

    def __init__(self) -> None:
        self.events: dict[str, trio.Event] = {}

    def event(self, message: str) -> trio.Event:
        return self.events.setdefault(message, trio.Event())

    def __call__(self, channel: str, data: str) -> None:
        self.event(data).set()


@asynccontextmanager
async def hearing(url: str) -> AsyncIterator[Heard]:
    heard = Heard()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen, open_backend(url), [CHANNEL], heard)
        await _until_subscribed(url, CHANNEL)  # before anything can be announced
        yield heard
        nursery.cancel_scope.cancel()


def _subscribed(url: str, channel: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.pubsub_numsub(channel)[0][1] >= 1)
    finally:
        client.close()


async def _until_subscribed(url: str, channel: str) -> None:
    """Until someone listens on ``channel`` (another process's progress: checked, not awaited)."""
    with trio.fail_after(20):
        while not _subscribed(url, channel):  # noqa: ASYNC110 - another process: no event to await
            await trio.sleep(0.02)


async def test_a_cancel_reaches_a_handler_on_another_daemon_through_its_message(
    redis_url: str, tmp_path: Path
) -> None:
    extra = ("--idle-poll", str(IDLE_POLL))
    with daemon(redis_url, tmp_path, "holder", lease=LEASE, extra=extra, app=APP) as holder:
        async with hearing(redis_url) as heard:
            await _until_subscribed(redis_url, Keys("default").cancel_channel)
            with SyncStore(open_backend(redis_url)) as store:
                job = store.submit(JobSpec(type="waiter", max_retries=0, timeout=600)).id
                with trio.fail_after(20):  # the daemon's start-up and first claim
                    await heard.event(f"started {job}").wait()
                assert store.cancel(job).kind == "moved"
                with trio.fail_after(BOUND):
                    await heard.event(f"cancelled {job}").wait()
                assert store.get_job(job).state == "cancelled"
        holder.check_alive()


async def test_an_idle_daemon_claims_a_new_job_through_the_wake_message(redis_url: str, tmp_path: Path) -> None:
    extra = ("--idle-poll", str(IDLE_POLL))
    with daemon(redis_url, tmp_path, "idle", lease=LEASE, extra=extra, app=APP) as idle:
        async with hearing(redis_url) as heard:
            await _until_subscribed(redis_url, Keys("default").wake_channel)
            with SyncStore(open_backend(redis_url)) as store:
                # the daemon's first claim found nothing: it now naps for the idle poll
                warm = store.submit(JobSpec(type="waiter", input={"seconds": 0}, max_retries=0)).id
                with trio.fail_after(20):
                    await heard.event(f"started {warm}").wait()
                with trio.fail_after(BOUND):
                    await heard.event(f"finished {warm}").wait()
                job = store.submit(JobSpec(type="waiter", input={"seconds": 0}, max_retries=0)).id
                with trio.fail_after(BOUND):
                    await heard.event(f"started {job}").wait()
        idle.check_alive()
