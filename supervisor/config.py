"""The daemon's settings: flags over ``JOBVISOR_*`` environment variables over defaults.

Every setting is validated by msgspec; a bad value is one line naming the
setting (``setting concurrency: Expected `int` >= 1, got 0``) and exit code 2.

===========================  =====================================  ==================================
setting                      environment variable                   default
===========================  =====================================  ==================================
redis                        JOBVISOR_REDIS                         redis://127.0.0.1:6379/0
app                          JOBVISOR_APP                           (none)
queues                       JOBVISOR_QUEUES (comma list)           the app's queues
concurrency                  JOBVISOR_CONCURRENCY                   16 handler slots
lease                        JOBVISOR_LEASE                         30 s
grace                        JOBVISOR_GRACE                         10 s
idle_poll                    JOBVISOR_IDLE_POLL                     1 s (safety net when idle)
watchdog_interval            JOBVISOR_WATCHDOG_INTERVAL             1 s (at most 2/9 of the lease)
status_query_timeout         JOBVISOR_STATUS_QUERY_TIMEOUT          10 s per status query
status_query_concurrency     JOBVISOR_STATUS_QUERY_CONCURRENCY      8 queries at once
abandon_after                JOBVISOR_ABANDON_AFTER                 10 s, then a cancelled handler is abandoned
batch_interval               JOBVISOR_BATCH_INTERVAL                1 s (longest wait between sweeps)
batch_sweep_size             JOBVISOR_BATCH_SWEEP_SIZE              100 batches per sweep and queue
metrics_port                 JOBVISOR_METRICS_PORT                  (off)
metrics_host                 JOBVISOR_METRICS_HOST                  127.0.0.1
restart_intensity            JOBVISOR_RESTART_INTENSITY             5 restarts ...
restart_period               JOBVISOR_RESTART_PERIOD                ... within 30 s
validation_attempts          JOBVISOR_VALIDATION_ATTEMPTS           5 checks, then validation_failed
validation_interval          JOBVISOR_VALIDATION_INTERVAL           2 s between checks ...
validation_jitter            JOBVISOR_VALIDATION_JITTER             ... +/- 10 % (a fraction, 0-1)
validation_timeout           JOBVISOR_VALIDATION_TIMEOUT            5 s per check
validation_concurrency       JOBVISOR_VALIDATION_CONCURRENCY        16 checks at once
webhook_url                  JOBVISOR_WEBHOOK_URL                   (none: only per-job URLs)
webhook_secret               JOBVISOR_WEBHOOK_SECRET                (none: deliveries wait in the outbox)
webhook_attempts             JOBVISOR_WEBHOOK_ATTEMPTS              8 attempts, then dead
webhook_backoff              JOBVISOR_WEBHOOK_BACKOFF               5 s, doubling per attempt ...
webhook_backoff_max          JOBVISOR_WEBHOOK_BACKOFF_MAX           ... up to 1 h (also caps Retry-After)
webhook_timeout              JOBVISOR_WEBHOOK_TIMEOUT               10 s per attempt
webhook_concurrency          JOBVISOR_WEBHOOK_CONCURRENCY           16 deliveries at once
allowed_hosts                JOBVISOR_ALLOWED_HOSTS                 (any; comma list, ``*.domain`` ok)
allow_destinations           JOBVISOR_ALLOW_DESTINATIONS            (none; hosts, ``*.domain``, IPs, CIDRs)
allow_private_destinations   JOBVISOR_ALLOW_PRIVATE_DESTINATIONS    false (true: any internal address)
evaluator_interval           JOBVISOR_EVALUATOR_INTERVAL            600 s (files finished jobs)
retention_interval           JOBVISOR_RETENTION_INTERVAL            300 s (deletes expired jobs)
retention_batch              JOBVISOR_RETENTION_BATCH               500 jobs per store call
retention_completed          JOBVISOR_RETENTION_COMPLETED           604800 s (7 days)
retention_failed             JOBVISOR_RETENTION_FAILED              2592000 s (30 days)
retention_cancelled          JOBVISOR_RETENTION_CANCELLED           2592000 s (30 days)
retention_timed_out          JOBVISOR_RETENTION_TIMED_OUT           2592000 s (30 days)
retention_validation_failed  JOBVISOR_RETENTION_VALIDATION_FAILED   2592000 s (30 days)
sanitize_base64_min          JOBVISOR_SANITIZE_BASE64_MIN           1024 characters
sanitize_max_string          JOBVISOR_SANITIZE_MAX_STRING           65536 characters
sanitize_max_value           JOBVISOR_SANITIZE_MAX_VALUE            262144 bytes of JSON
max_result_bytes             JOBVISOR_MAX_RESULT_BYTES              16 MiB: a larger result fails its attempt
loop_lag_warning             JOBVISOR_LOOP_LAG_WARNING              a quarter of the lease (a stall warns)
log_outcomes                 JOBVISOR_LOG_OUTCOMES                  debug (successes' level; info to see them)
===========================  =====================================  ==================================

Retention counts from a job's finish time, per terminal state; a job is
deleted only once the evaluator has filed it. The sanitizer settings apply
to what this daemon's workers store (results, errors, phase results).

Outbound requests (webhooks, the HTTP validator) follow the destination
policy of :mod:`adapters.destinations`: internal addresses and names are
refused unless ``allow_destinations`` lists them (a team's own receiver) or
``allow_private_destinations`` is on (development, tests, the demo).
``allowed_hosts``, when set, further restricts the host names that may be used.

The webhook secret comes from the environment only (no command-line flag, which
other users could read in the process list) and is never printed: the config's
repr shows ``***`` in its place, and a refused secret is not quoted.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from jobvisor.adapters.destinations import DestinationPolicy
from jobvisor.adapters.errors import BadInput, redact
from jobvisor.adapters.keys import QUEUE_NAME
from jobvisor.adapters.sanitize import Sanitizer
from jobvisor.adapters.urls import check_url
from jobvisor.adapters.webhooks import check_secret

__all__ = ["DaemonConfig", "load_config", "ENV_PREFIX"]

ENV_PREFIX = "JOBVISOR_"

HOST_ENTRY = r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?"
"""An allowed host: a host name, ``*.domain`` (any host below it), or an IP address."""

Seconds = Annotated[float, Meta(gt=0, le=86400)]
Retention = Annotated[float, Meta(gt=0, le=3650 * 86400)]
DAY = 86400.0


class DaemonConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    redis: str = "redis://127.0.0.1:6379/0"
    app: str | None = None
    queues: tuple[Annotated[str, Meta(pattern=QUEUE_NAME.pattern)], ...] = ()
    concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 16
    lease: Seconds = 30.0
    grace: Annotated[float, Meta(ge=0, le=3600)] = 10.0
    idle_poll: Seconds = 1.0
    watchdog_interval: Seconds = 1.0
    batch_interval: Seconds = 1.0
    batch_sweep_size: Annotated[int, Meta(ge=1, le=10_000)] = 100
    status_query_timeout: Seconds = 10.0
    status_query_concurrency: Annotated[int, Meta(ge=1, le=1000)] = 8
    abandon_after: Seconds = 10.0
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    metrics_host: Annotated[str, Meta(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}\Z")] = "127.0.0.1"
    restart_intensity: Annotated[int, Meta(ge=0, le=1000)] = 5
    restart_period: Seconds = 30.0
    evaluator_interval: Seconds = 600.0
    retention_interval: Seconds = 300.0
    retention_batch: Annotated[int, Meta(ge=1, le=10_000)] = 500
    retention_completed: Retention = 7 * DAY
    retention_failed: Retention = 30 * DAY
    retention_cancelled: Retention = 30 * DAY
    retention_timed_out: Retention = 30 * DAY
    retention_validation_failed: Retention = 30 * DAY
    sanitize_base64_min: Annotated[int, Meta(ge=16, le=1 << 30)] = 1024
    sanitize_max_string: Annotated[int, Meta(ge=256, le=1 << 30)] = 64 * 1024
    sanitize_max_value: Annotated[int, Meta(ge=1024, le=1 << 30)] = 256 * 1024
    worker_id: Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{0,200}\Z")] = ""
    validation_attempts: Annotated[int, Meta(ge=1, le=1000)] = 5
    validation_interval: Seconds = 2.0
    validation_jitter: Annotated[float, Meta(ge=0, le=1)] = 0.1
    validation_timeout: Seconds = 5.0
    validation_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 16
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_attempts: Annotated[int, Meta(ge=1, le=1000)] = 8
    webhook_backoff: Seconds = 5.0
    webhook_backoff_max: Seconds = 3600.0
    webhook_timeout: Seconds = 10.0
    webhook_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 16
    allowed_hosts: tuple[Annotated[str, Meta(min_length=1, max_length=253)], ...] | None = None
    max_result_bytes: Annotated[int, Meta(ge=1024, le=512 << 20)] = 16 << 20
    loop_lag_warning: Annotated[float, Meta(gt=0, le=86400)] | None = None
    log_outcomes: Literal["debug", "info"] = "debug"
    allow_destinations: tuple[Annotated[str, Meta(min_length=1, max_length=253)], ...] = ()
    allow_private_destinations: bool = False

    def __post_init__(self) -> None:
        for entry in self.allowed_hosts or ():
            if not re.fullmatch(HOST_ENTRY, entry):
                raise ValueError(f"allowed_hosts: {redact(entry)!r} is not a host name, *.domain or IP address")
        policy = self.destinations  # refuses a bad allow_destinations entry, naming it
        if self.webhook_url is not None:
            check_url(self.webhook_url, "webhook_url", self.allowed_set)
            policy.check_url(self.webhook_url, "webhook_url")
        if self.webhook_secret is not None:
            check_secret(self.webhook_secret)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={'***' if name == 'webhook_secret' and value is not None else repr(value)}"
            for name in self.__struct_fields__
            for value in (getattr(self, name),)
        )
        return f"DaemonConfig({fields})"

    @property
    def allowed_set(self) -> frozenset[str] | None:
        """The host allow-list, or ``None`` when every host is allowed."""
        return None if self.allowed_hosts is None else frozenset(self.allowed_hosts)

    @property
    def destinations(self) -> DestinationPolicy:
        """The destination policy of every outbound request this daemon makes."""
        return DestinationPolicy(allow=self.allow_destinations, allow_private=self.allow_private_destinations,
                                 only_hosts=self.allowed_set)

    @property
    def webhook_lease(self) -> float:
        """How long a delivery being sent stays ours: a dead daemon's sends resume after it."""
        return 2 * self.webhook_timeout + 1.0

    @property
    def validation_lease(self) -> float:
        """How long a check being made stays ours (as :attr:`webhook_lease`)."""
        return 2 * self.validation_timeout + 1.0

    @property
    def loop_lag_threshold(self) -> float:
        """How long the event loop may stall before a warning names the handler holding it."""
        return self.loop_lag_warning if self.loop_lag_warning is not None else self.lease / 4

    @property
    def heartbeat(self) -> float:
        """How often leases are renewed: a third of the lease."""
        return self.lease / 3

    @property
    def retention(self) -> dict[str, float]:
        """Seconds a finished job is kept, by terminal state."""
        return {
            "completed": self.retention_completed,
            "failed": self.retention_failed,
            "cancelled": self.retention_cancelled,
            "timed_out": self.retention_timed_out,
            "validation_failed": self.retention_validation_failed,
        }

    @property
    def sanitizer(self) -> Sanitizer:
        return Sanitizer(base64_min=self.sanitize_base64_min, max_string=self.sanitize_max_string,
                         max_value=self.sanitize_max_value)

    def with_worker_id(self) -> DaemonConfig:
        if self.worker_id:
            return self
        return msgspec.structs.replace(self, worker_id=f"{socket.gethostname()}:{os.getpid()}")


_LISTS = {"queues", "allowed_hosts", "allow_destinations"}


def load_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """Merge defaults, ``JOBVISOR_*`` variables and flags (``None`` flags are unset)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in DaemonConfig.__struct_fields__:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = [q.strip() for q in raw.split(",") if q.strip()] if name in _LISTS else raw
    for name, value in flags.items():
        if value is not None and name in DaemonConfig.__struct_fields__:
            values[name] = value
    try:
        config = msgspec.convert(values, DaemonConfig, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = re.search(r"\$\.([A-Za-z_]+)", message)
        if found is None:  # __post_init__'s checks: the message starts with the setting's name
            raise BadInput(f"setting {message.split(' - at ')[0]}") from None
        field = found.group(1)
        if field == "webhook_secret":  # msgspec may quote the value: never echo a secret
            message = "Expected a whsec_ secret"
        raise BadInput(f"setting {field}: {message.split(' - at ')[0]}") from None
    return _sweeps_fit_the_lease(config, explicit="watchdog_interval" in values).with_worker_id()


WATCHDOG_SHARE = 2 / 9
"""The longest watchdog interval, as a share of the lease. A store outage is told from a lost
worker by a pause of every sweep longer than ``max(lease / 4, 3 x interval)``; a holder renews
every third of the lease, so that pause must stay under two thirds of it: 3 x interval <= 2/3 lease."""


def _sweeps_fit_the_lease(config: DaemonConfig, *, explicit: bool) -> DaemonConfig:
    """A short lease shortens the default watchdog interval to fit; an explicit one that does
    not fit is refused, naming both settings."""
    longest = config.lease * WATCHDOG_SHARE
    if config.watchdog_interval <= longest:
        return config
    if explicit:
        raise BadInput(f"setting watchdog_interval: {config.watchdog_interval:g} s is too long for a lease of "
                       f"{config.lease:g} s (at most {longest:.3g} s, 2/9 of the lease, so that a store "
                       "outage is told from a lost worker)")
    return msgspec.structs.replace(config, watchdog_interval=longest)
