"""What a phase of work cost one redis-server, from its own exact counters.

A :class:`Snapshot` reads ``INFO commandstats`` (calls and microseconds per command;
commands run inside a script count too, under their own names), ``INFO cpu`` (the
server's user + system CPU seconds), ``INFO stats`` (``total_reads_processed``: one per
request read off a socket, i.e. round trips) and ``INFO memory`` (``used_memory``).
The difference of two snapshots is a :class:`Cost`; dividing it by a number of jobs gives
per-job figures. The reader's own commands (the INFO calls, the polls of a waiting loop)
are counted by :class:`Counters` and taken out, so a figure is the work's alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

SCRIPT_COMMANDS = frozenset({"fcall", "fcall_ro", "evalsha", "eval", "evalsha_ro", "eval_ro"})


@dataclass
class Snapshot:
    calls: dict[str, int]
    usec: dict[str, int]
    cpu: float
    reads: int
    memory: int

    @classmethod
    def take(cls, client: redis.Redis) -> Snapshot:
        stats = client.info("commandstats")
        info: dict[str, Any] = client.info("everything")
        return cls(
            calls={k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()},
            usec={k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items()},
            cpu=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            reads=int(info["total_reads_processed"]),
            memory=int(info["used_memory"]),
        )


@dataclass
class Cost:
    """The work between two snapshots, the reader's own requests taken out."""

    calls: dict[str, int]
    usec: dict[str, int]
    cpu_us: float
    reads: int
    memory: int
    seconds: float = 0.0

    def per(self, jobs: int) -> dict[str, float]:
        script_us = sum(self.usec.get(c, 0) for c in SCRIPT_COMMANDS)
        script_calls = sum(self.calls.get(c, 0) for c in SCRIPT_COMMANDS)
        commands = sum(self.calls.values())
        return {
            "commands": commands / jobs,
            "reads": self.reads / jobs,
            "script_us": script_us / jobs,
            "script_calls": script_calls / jobs,
            "cpu_us": self.cpu_us / jobs,
            "memory_b": self.memory / jobs,
        }


@dataclass
class Counters:
    """Reads a server's counters and keeps count of its own requests to it."""

    client: redis.Redis
    own: dict[str, int] = field(default_factory=dict)
    own_reads: int = 0

    def counted(self, command: str, n: int = 1) -> None:
        self.own[command] = self.own.get(command, 0) + n
        self.own_reads += n

    def snapshot(self) -> Snapshot:
        snap = Snapshot.take(self.client)
        self.counted("info", 2)
        return snap

    def cost(self, before: Snapshot, after: Snapshot, own_before: tuple[dict[str, int], int]) -> Cost:
        """``after - before`` without this reader's requests made in between (``own_before``
        is :meth:`mark` taken right after ``before``)."""
        own_calls, own_reads = own_before
        calls = {}
        for name in set(after.calls) | set(before.calls):
            n = after.calls.get(name, 0) - before.calls.get(name, 0)
            n -= self.own.get(name, 0) - own_calls.get(name, 0)
            if n:
                calls[name] = n
        usec = {name: after.usec.get(name, 0) - before.usec.get(name, 0) for name in calls}
        reads = after.reads - before.reads - (self.own_reads - own_reads)
        return Cost(calls, usec, (after.cpu - before.cpu) * 1e6, max(reads, 0), after.memory - before.memory)

    def mark(self) -> tuple[dict[str, int], int]:
        return dict(self.own), self.own_reads
