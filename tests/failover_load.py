"""Failover under load, shared by ``tests/e2e/test_failover_daemons.py`` and ``bench/failover.py``.

One run: ``n`` jobs (50 ms naps) spread over the topology's queues, submitted and replicated
first; 2 ``jobvisor run`` subprocesses serve them. Once a quarter of them ended, the master of
the first queue loses its replicas (each SIGSTOPped by pid, then their links closed by the
master: ``CLIENT KILL TYPE replica``) for ``cut`` seconds, then is SIGKILLed; its replicas go
on (SIGCONT) and one is promoted. The daemons go on to the end. Without that cut a bare SIGKILL
on one host loses next to nothing (local replicas are fast, and a stopped one still has the
stream in its socket's buffer); with it, what the master took in those ``cut`` seconds is what
a failover can lose.

Counted (:class:`Figures`), from what the daemons acknowledged (their one log line per job
outcome, written once the store took the outcome) against what the store holds at the end:

* ``doubled``: jobs with more than one acknowledged outcome (an ending lost in the failover,
  the job recovered by a watchdog and ended again);
* ``lost``: jobs whose first acknowledged outcome is not their final state, or missing from
  the final event stream (an acknowledged ending the store no longer has);
* ``repeated``: jobs with more than one terminal event in the final event streams;
* ``pause``: the longest time between two consecutive terminal events in the final streams
  (stream ids are stamped by Redis's clock);
* ``promotion``: from the SIGKILL to a replica serving as master.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.errors import StoreUnavailable
from jobvisor.adapters.keys import Keys, key_slot
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore
from jobvisor.machines import JOB
from tests.daemon_process import TERMINAL_EVENTS, DaemonProcess, daemon
from tests.redis_cluster import RedisCluster
from tests.redis_sentinel import SentinelSet
from tests.redis_server import RedisServer

__all__ = ["Figures", "Topology", "SentinelTopology", "ClusterTopology", "run_failover"]

TERMINAL_STATES = frozenset(str(s.value) for s in JOB.terminal)
STREAM_READ = 100_000


@dataclass(frozen=True)
class Figures:
    jobs: int
    acknowledged: int
    lost: int
    doubled: int
    repeated: int
    unfinished: int
    expired: int  # jobs ended by a watchdog (their worker declared lost) rather than by their worker
    pause: float
    promotion: float


class Topology(Protocol):
    url: str
    queues: list[str]

    def replicas(self) -> list[RedisServer]: ...
    def master_port(self) -> int: ...
    def replicated(self) -> None: ...
    def kill_and_promote(self, cut: list[RedisServer]) -> float: ...


class SentinelTopology:
    def __init__(self, sentinels: SentinelSet) -> None:
        self.sentinels = sentinels
        self.url = sentinels.url
        self.queues = ["default"]

    def replicas(self) -> list[RedisServer]:
        return self.sentinels.live_replicas()

    def master_port(self) -> int:
        return self.sentinels.primary_port()

    def replicated(self) -> None:
        _wait_all(self.sentinels.primary_port(), len(self.sentinels.replicas))

    def kill_and_promote(self, cut: list[RedisServer]) -> float:
        old = self.sentinels.kill_primary()
        start = time.monotonic()
        self.sentinels.resume(cut)
        self.sentinels.wait_promoted(old, timeout=30)
        return time.monotonic() - start


class ClusterTopology:
    def __init__(self, cluster: RedisCluster, queues: list[str]) -> None:
        self.cluster = cluster
        self.url = cluster.url
        self.queues = queues
        self.slot = key_slot(Keys(queues[0]).prefix)

    def replicas(self) -> list[RedisServer]:
        return self.cluster.replicas_of(self.cluster.master_of_slot(self.slot))

    def master_port(self) -> int:
        return self.cluster.nodes[self.cluster.master_of_slot(self.slot)].port

    def replicated(self) -> None:
        for index in self.cluster.master_indices():
            _wait_all(self.cluster.nodes[index].port, self.cluster.replicas)

    def kill_and_promote(self, cut: list[RedisServer]) -> float:
        old = self.cluster.kill_master_of_slot(self.slot)
        start = time.monotonic()
        self.cluster.resume(cut)
        self.cluster.wait_promoted(self.slot, old, timeout=30)
        return time.monotonic() - start


def _wait_all(port: int, replicas: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=15)
    try:
        assert client.execute_command("WAIT", replicas, 10_000) >= replicas
    finally:
        client.close()


def _drop_replica_links(port: int) -> None:
    """The master closes its replicas' links (stopped, they cannot come back): what it takes
    from now on reaches no replica. (A stopped replica alone is not cut off: the stream keeps
    flowing into its socket's buffer and is read when it resumes.)"""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")
    finally:
        client.close()


def _with_durability(url: str, durable: bool) -> str:
    return url + ("?durability=replica" if durable else "")


_WATCHDOG = re.compile(r"job (\S+) lost its worker .*; now (\w+)\Z")
_ABSORBED = re.compile(r"late \w+ for (\S+) absorbed: the job is already (\w+)\Z")


def outcomes(processes: list[DaemonProcess]) -> dict[str, list[str]]:
    """job id -> the outcomes the daemons acknowledged, from their JSON log lines: a worker's
    report, a watchdog's decision that ended a job whose worker it declared lost, or a report
    sent again after an outage and found already applied (the first answer was lost with the
    connection: the store answers that the job already ended, and how)."""
    found: dict[str, list[str]] = {}
    for process in processes:
        for line in process.stderr().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line still being written (read while running)
                continue
            if record.get("logger") == "jobvisor.jobs" and record.get("job_id") and \
                    record.get("outcome") not in (None, "stale", "scheduled"):
                found.setdefault(record["job_id"], []).append(record["outcome"])
            elif (match := _WATCHDOG.match(str(record.get("message", ""))) or _ABSORBED.match(
                    str(record.get("message", "")))) and match[2] in TERMINAL_STATES:
                found.setdefault(match[1], []).append(match[2])
    return found


def _until(condition: Callable[[], Any], timeout: float, what: str, alive: list[DaemonProcess]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for process in alive:
            process.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                                 + "\n".join(p.stderr()[-3000:] for p in alive))
        time.sleep(0.02)  # other processes' progress: nothing to await but its effects


def _ended(store: SyncStore, queues: list[str]) -> int:
    try:
        counts = [store.queue_counts(q) for q in queues]
    except StoreUnavailable:
        return 0
    return sum(c.get("finished", 0) for c in counts)


def run_failover(topology: Topology, directory: Path, n: int, *, durable: bool, cut: float = 0.5,
                 concurrency: int = 8) -> Figures:
    """One run of the scenario (module docstring); the topology is not usable for another."""
    url = _with_durability(topology.url, durable)
    queues = topology.queues
    with SyncStore(open_backend(_with_durability(topology.url, True), timeout=10)) as store:
        ids: list[str] = []
        for i, queue in enumerate(queues):
            share = n // len(queues) + (1 if i < n % len(queues) else 0)
            for start in range(0, share, 500):
                ids += [r.id for r in store.submit_many(
                    [JobSpec(type="nap", queue=queue, max_retries=0) for _ in range(min(500, share - start))])]
    topology.replicated()
    env = {"JOBVISOR_LOG_FORMAT": "json", "JOBVISOR_LOG_OUTCOMES": "info"}
    extra = ("--queues", ",".join(queues), "--concurrency", str(concurrency))
    with daemon(url, directory, "a", app="tests.failover_app:app", extra=extra, env=env, lease=2.0, grace=5.0) as a, \
            daemon(url, directory, "b", app="tests.failover_app:app", extra=extra, env=env, lease=2.0,
                   grace=5.0) as b:
        both = [a, b]
        _until(lambda: sum(map(len, outcomes(both).values())) >= n // 4, 60, "a quarter of the jobs ended", both)
        cut_off = topology.replicas()
        for replica in cut_off:
            assert replica.process is not None
        SentinelSet.pause(cut_off)
        try:
            _drop_replica_links(topology.master_port())
            time.sleep(cut)  # the fault itself: the replicas stay cut off this long before the kill
            promotion = topology.kill_and_promote(cut_off)
        finally:
            SentinelSet.resume(cut_off)
        with SyncStore(open_backend(topology.url, timeout=2)) as reader:
            _until(lambda: _ended(reader, queues) >= n, 90, f"all {n} jobs ended", both)
        for process in both:
            process.signal()
        for process in both:
            assert process.wait(30) == 0, process.stderr()[-3000:]
        acknowledged = outcomes(both)
    with SyncStore(open_backend(topology.url, timeout=10)) as store:
        events = [e for q in queues for e in store.events(q, count=STREAM_READ)]
        final = {i: store.get_job(i).state for i in ids}
    terminal = [e for e in events if e.type in TERMINAL_EVENTS]
    per_job = Counter(e.id for e in terminal)
    lost = sum(1 for job_id, said in acknowledged.items() if final.get(job_id) != said[0] or not per_job[job_id])
    stamps = sorted(int(e.stream_id.split("-")[0]) for e in terminal)
    pause = max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=0) / 1000
    return Figures(jobs=n, acknowledged=len(acknowledged), lost=lost,
                   doubled=sum(1 for said in acknowledged.values() if len(said) > 1),
                   repeated=sum(1 for c in per_job.values() if c > 1),
                   unfinished=sum(1 for s in final.values() if s not in TERMINAL_STATES),
                   expired=sum(1 for said in acknowledged.values() if "failed" in said), pause=pause,
                   promotion=promotion)
