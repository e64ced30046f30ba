"""Every Redis key jobvisor uses, built in one place.

All keys of a queue share the hash tag ``{<queue>}``, so every script, which
only ever touches one queue's keys, runs in one Redis Cluster slot. The Lua
library builds job, batch and delivery keys from the same prefix
(``jv:{<queue>}:``); this module and ``lua/jobvisor.lua`` are the only two
places that spell a key, and a test checks they agree.

==============================  ======  ==============================================
key (after ``jv:{q}:``)          type    contents and lifetime
==============================  ======  ==============================================
``job:<id>``                    hash    the job record; until retention deletes it
``queued:<type>``               zset    queued ids of one job type; score = priority
                                        band + enqueue ms; a claim reads only the types
                                        its daemon has handlers for; gone when empty
``queued_types``                set     job types whose ``queued:<type>`` is not empty
``queued_all``                  zset    every id of every ``queued:<type>``, same score: a
                                        daemon serving every queued type claims its head
``queued``                      zset    the earlier versions' queued index (every type in
                                        one zset, same score): never written; the
                                        scheduler's ``wake`` moves its entries into
                                        ``queued:<type>``
``waiting``                     zset    ids waiting on their dependencies; score = submit ms
``dependents:<id>``             set     ids of the waiting jobs that depend on job <id>;
                                        deleted when <id> finishes (it releases them once)
``due``                         zset    scheduled ids (delay or backoff); score = due ms
``active``                      zset    active ids; score = lease deadline ms
``validating``                  zset    validating ids; score = next check (or check lease) ms
``finished``                    zset    terminal ids; score = finish ms
``unfiled``                     zset    terminal ids the evaluator has not filed; score = when to look
``retain:<state>``              zset    filed ids by terminal state; score = finish ms (retention)
``filing``                      hash    ``<category>:<problem>`` -> filed jobs still stored
``redrive``                     zset    filed ids a re-drive policy covers; score = when to
                                        look (README, "Re-drive")
``events``                      stream  one entry per transition; capped (MAXLEN ~)
``outbox``                      zset    delivery ids to send; score = next attempt (or send lease) ms
``delivery:<id>``               hash    one webhook delivery with its own body snapshot
``idem:<key>``                  string  idempotency key -> job id; expires (default 1 day)
``batch:<id>``                  hash    the batch record and its counters
``batch:<id>:members``          set     the batch's member job ids
``batches``                     zset    live batch ids; score = stuck deadline ms (last
                                        member activity + stuck-after; +inf without);
                                        a batch leaves it when it ends
``swept``                       string  when a watchdog last swept the queue (ms); a gap
                                        re-arms the leases (outage accounting)
``paused``                      string  present while an operator has paused the queue
                                        (when, ms): every claim of the queue takes nothing
``rates``                       hash    job type -> its rate limit (interval ms[, input
                                        field]); written by daemons at start
``rate:<type>[:<key>]``         string  when the last job under that limit started (ms);
                                        expires a minute after the next may start
``schedule:<name>``             hash    a schedule: state, definition, job template,
                                        last tick recorded, next tick (ms), fired count
``schedules``                   zset    active schedule names; score = next tick ms
``schedule_names``              set     every schedule name the queue has held
``wake`` (channel)              pubsub  a job became queued: idle workers claim
``cancel`` (channel)            pubsub  a running job was cancelled: its holder stops it
==============================  ======  ==============================================

Outside any queue: ``jv:queues`` (set of queue names ever submitted to) and
``jv:types`` (hash: job type -> JSON of its defaults, published by daemons at start
so that ``jobvisor submit`` can refuse an unknown type), ``jv:schedules`` (hash:
schedule name -> its queue).

The registry of daemons (one per process, with its worker slots) is global, not per
queue: a daemon serves several queues and must be declared lost once, not once per
queue. Its keys share their own hash tag, ``{@workers}`` (``@`` is never part of a
queue name, so no queue can collide with it), and its guarded steps run in the same
Lua library with that prefix (:data:`REGISTRY` is the pseudo-queue that names it):

==============================  ======  ==============================================
key (after ``jv:{@workers}:``)   type    contents and lifetime
==============================  ======  ==============================================
``live``                        zset    daemon ids; score = heartbeat deadline ms;
                                        removed when stopped or declared lost
``daemon:<id>``                 hash    host, pid, queues, slots and their current
                                        jobs, heartbeat; expires a day after the last
``gone``                        zset    stopped or lost daemon ids; score = when;
                                        the latest 1000 kept
``swept``                       string  when a watchdog last swept the registry (ms); a
                                        gap re-arms the heartbeats (outage accounting)
``events``                      stream  worker.started / returned / stopped / lost;
                                        capped (MAXLEN ~)
==============================  ======  ==============================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "command_keys",
    "PREFIX",
    "QUEUE_NAME",
    "REGISTRY",
    "SCHEDULES",
    "Keys",
    "RegistryKeys",
    "queue_of",
    "check_queue_name",
    "script_keys",
    "events_key",
    "key_slot",
]

PREFIX = "jv"
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # \Z, not $: "$" lets a trailing newline through
ID_PART = re.compile(r"[0-9A-Za-z]{1,64}")
"""What follows the queue in an id (a ULID for the ids jobvisor makes)."""
QUEUES = f"{PREFIX}:queues"
TYPES = f"{PREFIX}:types"
SCHEDULES = f"{PREFIX}:schedules"
"""Every schedule's name and the queue it lives in (a hash): a name is one schedule."""
REGISTRY = "@workers"
"""The pseudo-queue of the daemon registry: its ops run with the prefix ``jv:{@workers}:``."""


def check_queue_name(queue: str) -> str:
    """Return ``queue`` or raise ``ValueError`` naming what is wrong with it."""
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise ValueError(
            f"queue: {queue!r} is not a queue name (1-64 of letters, digits, '_' and '-')"
        )
    return queue


def queue_of(object_id: str) -> str:
    """The queue a job or batch id belongs to: ids read ``<queue>.<ulid>``."""
    queue, dot, rest = object_id.rpartition(".")
    if not dot or not ID_PART.fullmatch(rest) or not QUEUE_NAME.fullmatch(queue):
        raise ValueError(f"id: {object_id!r} is not a jobvisor id (<queue>.<id>)")
    return queue


class Keys:
    """The keys of one queue."""

    __slots__ = ("queue", "prefix")

    def __init__(self, queue: str) -> None:
        self.queue = check_queue_name(queue)
        self.prefix = f"{PREFIX}:{{{queue}}}:"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}delivery:{delivery_id}"

    def idem(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    @property
    def queued(self) -> str:
        """The earlier versions' queued index (all types): emptied by ``wake``, never written."""
        return f"{self.prefix}queued"

    def queued_of(self, job_type: str) -> str:
        """The queued jobs of one type."""
        return f"{self.prefix}queued:{job_type}"

    @property
    def queued_types(self) -> str:
        return f"{self.prefix}queued_types"

    @property
    def queued_all(self) -> str:
        """Every queued job of every type (the union of ``queued:<type>``), same scores."""
        return f"{self.prefix}queued_all"

    @property
    def waiting(self) -> str:
        """Jobs waiting on their dependencies (README, "Dependencies, flows and chains")."""
        return f"{self.prefix}waiting"

    def dependents(self, job_id: str) -> str:
        """The waiting jobs that depend on ``job_id``; gone once it finishes."""
        return f"{self.prefix}dependents:{job_id}"

    @property
    def due(self) -> str:
        return f"{self.prefix}due"

    @property
    def active(self) -> str:
        return f"{self.prefix}active"

    @property
    def validating(self) -> str:
        return f"{self.prefix}validating"

    @property
    def finished(self) -> str:
        return f"{self.prefix}finished"

    @property
    def unfiled(self) -> str:
        return f"{self.prefix}unfiled"

    def retain(self, state: str) -> str:
        return f"{self.prefix}retain:{state}"

    @property
    def filing(self) -> str:
        return f"{self.prefix}filing"

    @property
    def redrive(self) -> str:
        return f"{self.prefix}redrive"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}outbox"

    @property
    def batches(self) -> str:
        return f"{self.prefix}batches"

    @property
    def paused(self) -> str:
        """Present while the queue is paused: claims take nothing (``jobvisor queue pause``)."""
        return f"{self.prefix}paused"

    @property
    def rates(self) -> str:
        """Job type -> its rate limit, as the claim reads it (``adapters/rates.py``)."""
        return f"{self.prefix}rates"

    def schedule(self, name: str) -> str:
        return f"{self.prefix}schedule:{name}"

    @property
    def schedules(self) -> str:
        """The active schedules by the epoch ms of their next tick."""
        return f"{self.prefix}schedules"

    @property
    def wake_channel(self) -> str:
        return f"{self.prefix}wake"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}cancel"


class RegistryKeys:
    """The keys of the daemon registry (all under the hash tag ``{@workers}``)."""

    prefix = f"{PREFIX}:{{{REGISTRY}}}:"
    live = f"{prefix}live"
    gone = f"{prefix}gone"
    events = f"{prefix}events"

    @classmethod
    def daemon(cls, daemon_id: str) -> str:
        return f"{cls.prefix}daemon:{daemon_id}"


def script_keys(queue: str) -> tuple[str, str]:
    """KEYS[1] and the key prefix of one call of the Lua library: a queue's, or the registry's."""
    if queue == REGISTRY:
        return RegistryKeys.live, RegistryKeys.prefix
    keys = Keys(queue)
    return keys.queued, keys.prefix


def events_key(queue: str) -> str:
    """The event stream of ``queue`` (or of the registry, :data:`REGISTRY`)."""
    return RegistryKeys.events if queue == REGISTRY else Keys(check_queue_name(queue)).events


def _crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key``: of its ``{tag}`` when it has a non-empty one."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _crc16(raw) % 16384


# Commands whose arguments hold no key at all (the rest: keys as command_keys says)
_KEYLESS = frozenset({"PING", "FUNCTION", "ROLE", "INFO", "PUBLISH", "WAIT", "CLUSTER", "CONFIG", "TIME"})


def command_keys(args: Sequence[Any]) -> list[int]:
    """Positions of the key arguments of one command, as Redis's key specs say, for the
    commands the store sends: ``FCALL fn numkeys k...``, ``XREAD ... STREAMS k... id...``,
    and single-key commands (the key follows the name)."""
    name = str(args[0].decode() if isinstance(args[0], bytes) else args[0]).upper()
    if name in _KEYLESS:
        return []
    if name in ("FCALL", "FCALL_RO", "EVAL", "EVALSHA"):
        return list(range(3, 3 + int(args[2])))
    if name in ("XREAD", "XREADGROUP"):
        at = next(i for i, a in enumerate(args) if str(a).upper() in ("STREAMS", "B'STREAMS'"))
        count = (len(args) - at - 1) // 2
        return list(range(at + 1, at + 1 + count))
    return [1] if len(args) > 1 else []
