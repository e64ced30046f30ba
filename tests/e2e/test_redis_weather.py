"""Redis weather with real ``jobvisor run`` subprocesses: Redis stopped longer than the lease,
restarted with a dataset that takes seconds to load, out of memory, and not there at start.

SPEC.md, "Production weather": connection loss, ``LOADING`` and ``OOM`` are transient: actors
wait them out, a daemon started while Redis is away waits for it, a finished job's report is
kept until its lease token can no longer win, and time during which Redis was unreachable never
counts as a lost worker.

Each scenario owns its ``redis-server`` (AOF on, ``appendfsync always``) in ``tmp_path``. The
handlers (``tests/weather_app.py``) sleep, then succeed; each execution is recorded in a file,
outside Redis. Half the jobs have ``max_retries=0`` (a report lost to the outage would fail them
as ``worker_lost``), half may retry (a lost report would run them twice). Every scenario counts
jobs submitted, completed, lost (anything but ``completed``), doubled (more than one execution),
``job.lease_expired`` events and daemon exits, prints them, and the answer is 0 for all but the
first two. The outage itself is the one sleep: it is the fault, not a wait for something.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from jobvisor import Client
from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.keys import Keys
from jobvisor.adapters.store import SyncStore
from tests.daemon_process import ROOT, DaemonProcess, cli_env, wait_until
from tests.redis_server import RedisServer
from tests.weather_app import app, executions

LEASE = 2.0
APP = "tests.weather_app:app"
K = Keys("default")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A directory for execution records, and every daemon and server killed at the end."""
    execs = tmp_path / "exec"
    execs.mkdir()
    with ExitStack() as stack:
        yield {"dir": tmp_path, "exec": execs, "stack": stack}


def start_daemon(world: dict[str, Any], url: str, name: str, *, concurrency: int = 8,
                 extra: tuple[str, ...] = ()) -> DaemonProcess:
    process = DaemonProcess(url, world["dir"], name, grace=2.0, lease=LEASE, app=APP,
                            env={"TEST_EXEC_DIR": str(world["exec"])},
                            extra=("--concurrency", str(concurrency), *extra))
    world["stack"].callback(process.close)
    return process


def own_redis(world: dict[str, Any], *extra: str, wait: bool = True) -> RedisServer:
    server = RedisServer(world["dir"] / "redis", extra_args=extra)
    server.start(wait=wait)
    world["stack"].callback(server.stop)
    return server


def submit(url: str, n: int, seconds: float) -> list[str]:
    with Client(url, app=app) as client:
        return [client.submit("once" if i % 2 else "again", {"seconds": seconds}) for i in range(n)]


def states(url: str, ids: list[str]) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for i in ids:
            pipe.hget(K.job(i), "state")
        return [(s or b"").decode() for s in pipe.execute()]
    except (redis.ConnectionError, redis.ResponseError):
        return []
    finally:
        client.close()


def active_count(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard(K.active))
    finally:
        client.close()


def figures(url: str, world: dict[str, Any], ids: list[str], daemons: list[DaemonProcess],
            scenario: str) -> dict[str, int]:
    final = states(url, ids)
    runs = [executions(world["exec"], i) for i in ids]
    with SyncStore(open_backend(url)) as store:
        events = store.events("default", "-", 100_000)
    kinds = Counter(e.type for e in events)
    result = {
        "submitted": len(ids),
        "completed": final.count("completed"),
        "lost": len(ids) - final.count("completed"),
        "doubled": sum(1 for n in runs if n > 1),
        "never_ran": sum(1 for n in runs if n == 0),
        "lease_expired": kinds["job.lease_expired"],
        "stale_reports": kinds["job.stale_report"],
        "daemon_exits": sum(1 for d in daemons if d.process.poll() is not None),
    }
    lines = {d.name: sum(outage_lines(d).values()) for d in daemons}
    print(f"\n{scenario}: {json.dumps(result)}; lines about the outage per daemon: {lines}")
    (world["dir"] / f"{scenario}.json").write_text(json.dumps(result))
    return result


def all_finished(url: str, ids: list[str]) -> bool:
    found = states(url, ids)
    return len(found) == len(ids) and all(s in ("completed", "failed") for s in found)


_OUTAGE_LINE = re.compile(r"jobvisor\.\S+: (?P<actor>[\w ]+): (lost the store|the store is back)")


def outage_lines(process: DaemonProcess) -> Counter[str]:
    """Lines about the store going and coming back, per actor (pub/sub as ``pub/sub``)."""
    lines: Counter[str] = Counter()
    for line in process.stderr().splitlines():
        found = _OUTAGE_LINE.search(line)
        if found:
            lines[found["actor"]] += 1
        elif "pub/sub" in line:
            lines["pub/sub"] += 1
    return lines


def assert_quiet_outage(process: DaemonProcess) -> None:
    text = process.stderr()
    assert "crashed" not in text, text
    assert "Traceback" not in text, text
    lines = outage_lines(process)
    assert lines, text
    assert max(lines.values()) <= 2, (lines, text)
    # nothing else about the outage: every WARNING is one of the counted lines
    warnings = [line for line in text.splitlines() if " WARNING " in line]
    assert len(warnings) <= len(lines), (warnings, lines)


def stop_cleanly(process: DaemonProcess) -> None:
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0, process.stderr()


def hold_load(url: str, ids: list[str], at_least: int) -> None:
    wait_until(lambda: active_count(url) >= at_least, timeout=15, what=f"{at_least} jobs running")


# -- Redis stopped for two leases under load ------------------------------------------------------


def test_redis_stopped_for_two_leases_under_load_loses_and_doubles_nothing(world: dict[str, Any]) -> None:
    server = own_redis(world)
    url = server.url
    daemons = [start_daemon(world, url, "a"), start_daemon(world, url, "b")]
    # some handlers finish during the outage (their reports wait), some run on past it
    # (their leases must be renewed after it, before any watchdog judges them)
    ids = submit(url, 8, seconds=3 * LEASE) + submit(url, 16, seconds=1.0)
    hold_load(url, ids, 12)
    server.stop()
    time.sleep(2 * LEASE)  # the outage itself
    server.start()
    wait_until(lambda: all_finished(url, ids), timeout=30, what="every job finished", alive=daemons[0])
    result = figures(url, world, ids, daemons, "stopped_2x_lease")
    assert result == {"submitted": 24, "completed": 24, "lost": 0, "doubled": 0, "never_ran": 0,
                      "lease_expired": 0, "stale_reports": 0, "daemon_exits": 0}
    for d in daemons:
        assert_quiet_outage(d)
        stop_cleanly(d)


# -- restarted with a dataset that takes seconds to load -------------------------------------------

SLOW_LOAD = ("--enable-debug-command", "yes", "--key-load-delay", "30",
             "--loading-process-events-interval-bytes", "1024")


def test_a_restart_that_loads_for_seconds_stops_no_daemon_and_loses_no_report(world: dict[str, Any]) -> None:
    server = own_redis(world, *SLOW_LOAD)
    url = server.url
    filler = redis.Redis.from_url(url)
    filler.execute_command("DEBUG", "POPULATE", 40_000, "filler", 64)
    filler.bgrewriteaof()  # DEBUG POPULATE is not in the AOF: put it in the base file
    wait_until(lambda: not any(filler.info("persistence")[k] for k in
                               ("aof_rewrite_in_progress", "aof_rewrite_scheduled")),
               timeout=20, what="the AOF rewrite")
    filler.close()
    daemons = [start_daemon(world, url, "a"), start_daemon(world, url, "b")]
    ids = submit(url, 24, seconds=1.0)
    hold_load(url, ids, 10)
    server.stop()
    server.start(wait=False)
    late = start_daemon(world, url, "late")  # started while Redis is loading: it waits
    began = time.monotonic()
    probe = redis.Redis.from_url(url, socket_timeout=1)
    saw_loading = False

    def loaded() -> bool:
        nonlocal saw_loading
        try:
            return bool(probe.ping())
        except redis.exceptions.BusyLoadingError:
            saw_loading = True
            return False
        except redis.ConnectionError:
            return False

    wait_until(loaded, timeout=30, what="Redis loaded")
    loading = time.monotonic() - began
    probe.close()
    assert saw_loading, loading
    assert loading > 2.0, loading
    wait_until(lambda: all_finished(url, ids), timeout=30, what="every job finished", alive=daemons[0])
    result = figures(url, world, ids, [*daemons, late], "loading_restart")
    print(f"loading took {loading:.1f}s")
    assert result == {"submitted": 24, "completed": 24, "lost": 0, "doubled": 0, "never_ran": 0,
                      "lease_expired": 0, "stale_reports": 0, "daemon_exits": 0}
    wait_until(lambda: "answers after" in late.stderr(), timeout=10, what="the late daemon started", alive=late)
    assert late.stderr().count("waiting for it") == 1, late.stderr()
    for d in daemons:
        assert_quiet_outage(d)
    for d in [*daemons, late]:
        stop_cleanly(d)


# -- out of memory --------------------------------------------------------------------------------------


def jv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobvisor", *args], cwd=ROOT, env=cli_env({}),
                          capture_output=True, text=True, timeout=30)


def test_out_of_memory_then_freed_stops_no_daemon_and_doubles_nothing(world: dict[str, Any]) -> None:
    """Meanwhile ``submit`` is refused in one line naming the condition, and ``/healthz`` says it."""
    server = own_redis(world, "--maxmemory-policy", "noeviction")
    url = server.url
    admin = redis.Redis.from_url(url)
    daemons = [start_daemon(world, url, "a", extra=("--metrics-port", "0"))]
    found = wait_until(lambda: re.search(r"metrics on http://[\d.]+:(\d+)", daemons[0].stderr()),
                       timeout=15, what="the metrics port", alive=daemons[0])
    health = f"http://127.0.0.1:{found[1]}/healthz"
    ids = submit(url, 16, seconds=1.0)
    hold_load(url, ids, 6)
    admin.config_set("maxmemory", 1)  # far below what is used: every write is refused
    keys_before = admin.dbsize()
    refused = jv("submit", "once", "--input", '{"seconds": 0}', "--app", APP, "--redis", url)
    sick = wait_until(lambda: (r := httpx.get(health, timeout=5)).status_code == 503 and r,
                      timeout=10, what="/healthz unhealthy", alive=daemons[0])
    time.sleep(2 * LEASE)  # the outage itself: handlers finish, their reports are refused
    assert admin.dbsize() == keys_before
    admin.config_set("maxmemory", 0)
    admin.close()
    wait_until(lambda: all_finished(url, ids), timeout=30, what="every job finished", alive=daemons[0])
    wait_until(lambda: httpx.get(health, timeout=5).text == "ok\n", timeout=10, what="/healthz ok again")
    assert sick.text.startswith(f"unhealthy: Redis at {url} cannot serve now (out of memory): OOM"), sick.text
    assert sick.text.count("\n") == 1
    assert refused.returncode == 1, refused
    assert refused.stdout == "", refused.stderr
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "out of memory" in refused.stderr
    assert "Traceback" not in refused.stderr
    result = figures(url, world, ids, daemons, "out_of_memory")
    assert result == {"submitted": 16, "completed": 16, "lost": 0, "doubled": 0, "never_ran": 0,
                      "lease_expired": 0, "stale_reports": 0, "daemon_exits": 0}
    assert_quiet_outage(daemons[0])
    stop_cleanly(daemons[0])


# -- not there at start -----------------------------------------------------------------------------------


def test_a_daemon_started_before_redis_waits_then_serves(world: dict[str, Any]) -> None:
    server = RedisServer(world["dir"] / "redis")  # not started yet
    world["stack"].callback(server.stop)
    early = start_daemon(world, server.url, "early")
    wait_until(lambda: "waiting for it" in early.stderr(), timeout=15, what="the daemon waiting", alive=early)
    server.start()
    ids = submit(server.url, 4, seconds=0.1)
    wait_until(lambda: all_finished(server.url, ids), timeout=20, what="every job finished", alive=early)
    result = figures(server.url, world, ids, [early], "started_before_redis")
    assert result == {"submitted": 4, "completed": 4, "lost": 0, "doubled": 0, "never_ran": 0,
                      "lease_expired": 0, "stale_reports": 0, "daemon_exits": 0}
    text = early.stderr()
    assert text.count("waiting for it") == 1, text
    assert "Traceback" not in text, text
    stop_cleanly(early)


def test_a_daemon_waiting_for_redis_stops_on_a_signal(world: dict[str, Any]) -> None:
    server = RedisServer(world["dir"] / "redis")  # never started
    early = start_daemon(world, server.url, "early")
    wait_until(lambda: "waiting for it" in early.stderr(), timeout=15, what="the daemon waiting", alive=early)
    stop_cleanly(early)


# -- shutting down while Redis is away ------------------------------------------------------------------


def test_a_daemon_shuts_down_while_redis_is_away_and_a_second_signal_gives_up_its_reports(
    world: dict[str, Any],
) -> None:
    """One signal: the finished job's report is kept (Redis may come back); a second: given up.
    An idle daemon stops on one signal, Redis away or not."""
    server = own_redis(world)
    url = server.url
    busy = start_daemon(world, url, "busy")
    idle = start_daemon(world, url, "idle", extra=("--queues", "elsewhere"))
    wait_until(lambda: "webhook deliverer off" in idle.stderr(), timeout=15, what="the idle daemon up", alive=idle)
    only = submit(url, 1, seconds=1.5)[0]
    wait_until(lambda: executions(world["exec"], only) == 1, timeout=15, what="the handler started", alive=busy)
    server.stop()
    time.sleep(2.0)  # the fault: the handler finishes meanwhile, and its report cannot land
    busy.signal(signal.SIGTERM)
    idle.signal(signal.SIGTERM)
    assert idle.wait(timeout=20) == 0, idle.stderr()
    with pytest.raises(subprocess.TimeoutExpired):
        busy.process.wait(LEASE + 2.0)  # still keeping the report
    busy.signal(signal.SIGTERM)
    assert busy.wait(timeout=LEASE + 15) == 0, busy.stderr()
    assert f"could not report complete for {only}" in busy.stderr()
