"""The daemon's settings: flags over ``JOBVISOR_*`` environment variables over defaults.

Every setting is validated by msgspec; a bad value is one line naming the
setting (``setting concurrency: Expected `int` >= 1, got 0``) and exit code 2.

==========================  =================================  =========================
setting                     environment variable               default
==========================  =================================  =========================
redis                       JOBVISOR_REDIS                     redis://127.0.0.1:6379/0
app                         JOBVISOR_APP                       (none)
queues                      JOBVISOR_QUEUES (comma list)       the app's queues
concurrency                 JOBVISOR_CONCURRENCY               16 handler slots
lease                       JOBVISOR_LEASE                     30 s
grace                       JOBVISOR_GRACE                     10 s
idle_poll                   JOBVISOR_IDLE_POLL                 1 s (safety net when idle)
watchdog_interval           JOBVISOR_WATCHDOG_INTERVAL         1 s
status_query_timeout        JOBVISOR_STATUS_QUERY_TIMEOUT      10 s per status query
status_query_concurrency    JOBVISOR_STATUS_QUERY_CONCURRENCY  8 queries at once
abandon_after               JOBVISOR_ABANDON_AFTER             10 s, then a cancelled
                                                               handler is abandoned
metrics_port                JOBVISOR_METRICS_PORT              (off)
metrics_host                JOBVISOR_METRICS_HOST              127.0.0.1
restart_intensity           JOBVISOR_RESTART_INTENSITY         5 restarts ...
restart_period              JOBVISOR_RESTART_PERIOD            ... within 30 s
==========================  =================================  =========================
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from adapters.errors import BadInput
from adapters.keys import QUEUE_NAME

__all__ = ["DaemonConfig", "load_config", "ENV_PREFIX"]

ENV_PREFIX = "JOBVISOR_"

Seconds = Annotated[float, Meta(gt=0, le=86400)]


class DaemonConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    redis: str = "redis://127.0.0.1:6379/0"
    app: str | None = None
    queues: tuple[Annotated[str, Meta(pattern=QUEUE_NAME.pattern)], ...] = ()
    concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 16
    lease: Seconds = 30.0
    grace: Annotated[float, Meta(ge=0, le=3600)] = 10.0
    idle_poll: Seconds = 1.0
    watchdog_interval: Seconds = 1.0
    status_query_timeout: Seconds = 10.0
    status_query_concurrency: Annotated[int, Meta(ge=1, le=1000)] = 8
    abandon_after: Seconds = 10.0
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"
    restart_intensity: Annotated[int, Meta(ge=0, le=1000)] = 5
    restart_period: Seconds = 30.0
    worker_id: str = ""

    @property
    def heartbeat(self) -> float:
        """How often leases are renewed: a third of the lease."""
        return self.lease / 3

    def with_worker_id(self) -> DaemonConfig:
        if self.worker_id:
            return self
        return msgspec.structs.replace(self, worker_id=f"{socket.gethostname()}:{os.getpid()}")


_LISTS = {"queues"}


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
        field = found.group(1) if found else "?"
        raise BadInput(f"setting {field}: {message.split(' - at ')[0]}") from None
    return config.with_worker_id()
