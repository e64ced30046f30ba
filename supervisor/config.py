"""The daemon's settings, defined once: flags over ``JOBVISOR_*`` environment variables over defaults.

Each field of :class:`DaemonConfig` carries everything said about it: its type and bounds
(checked by msgspec), its default, and a :class:`Doc` with its help text. :data:`SETTINGS` is
read from those fields, and every other view of a setting is generated from it: the flags of
``jobvisor run`` and their ``--help`` (default and variable shown), the ``JOBVISOR_<NAME>``
variable :func:`load_config` reads, and the configuration table of README.md
(:func:`reference_table`; a test keeps the README's copy equal to it).

A bad value is one line naming the setting, its flag and its variable, and exit code 2:
``setting concurrency: Expected `int` >= 1, got 0 (from --concurrency '0'; variable
JOBVISOR_CONCURRENCY)``.

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

Importing this module is cheap (msgspec and the key names only): the command line builds
its parser from it for every command, so the checks' heavier modules are imported when a
config is made.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

import msgspec
from msgspec import Meta

from jobvisor.adapters.errors import BadInput, redact
from jobvisor.adapters.keys import QUEUE_NAME

if TYPE_CHECKING:
    from jobvisor.adapters.destinations import DestinationPolicy
    from jobvisor.adapters.sanitize import Sanitizer

__all__ = ["DaemonConfig", "Doc", "ENV_PREFIX", "SETTINGS", "Setting", "load_config", "reference_table"]

ENV_PREFIX = "JOBVISOR_"

HOST_ENTRY = r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?"
"""An allowed host: a host name, ``*.domain`` (any host below it), or an IP address."""


@dataclass(frozen=True, slots=True)
class Doc:
    """What a setting means, carried in its field's annotation (msgspec ignores it).

    ``shown`` is the default as people read it, when the value alone does not say it
    (``None`` that means "the app's queues"); ``metavar`` names the flag's value;
    ``flag=False`` keeps a setting out of the command line (a secret: argv is public).
    """

    help: str
    shown: str | None = None
    metavar: str | None = None
    flag: bool = True


Seconds = Annotated[float, Meta(gt=0, le=86400), Doc("", metavar="SECONDS")]
Retention = Annotated[float, Meta(gt=0, le=3650 * 86400), Doc("", metavar="SECONDS")]
Count = Annotated[int, Meta(ge=1, le=10_000), Doc("", metavar="N")]
HostList = tuple[Annotated[str, Meta(min_length=1, max_length=253)], ...]
DAY = 86400.0
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class DaemonConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Every setting of a daemon. The order of the fields is the order of ``--help`` and README."""

    redis: Annotated[str, Doc("Redis URL (memory:// = the embedded store)", metavar="URL")] = \
        "redis://127.0.0.1:6379/0"
    app: Annotated[str | None, Doc("the App with the handlers", metavar="MODULE:ATTR")] = None
    queues: Annotated[tuple[Annotated[str, Meta(pattern=QUEUE_NAME.pattern)], ...],
                      Doc("queues served (comma list)", shown="the app's queues", metavar="Q,...")] = ()
    concurrency: Annotated[Count, Doc("handler slots")] = 16
    lease: Annotated[Seconds, Doc("lease of a claimed job (renewed every third)")] = 30.0
    grace: Annotated[float, Meta(ge=0, le=3600), Doc("shutdown grace period", metavar="SECONDS")] = 10.0
    worker_id: Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{0,200}\Z"),
                         Doc("this daemon's id (workers, attempts); unique per daemon",
                             shown="<host>:<pid>", metavar="ID")] = ""
    log_level: Annotated[LogLevel, Doc("log level: debug, info, warning, error or critical",
                                       metavar="LEVEL")] = "info"
    log_format: Annotated[Literal["text", "json"], Doc(
        "log format: text, or json (one object per line, with the job fields)", metavar="FORMAT")] = "text"
    log_outcomes: Annotated[Literal["debug", "info"], Doc(
        "the level of the one-line log of each success (completed, retry scheduled): debug or info",
        metavar="LEVEL")] = "debug"
    idle_poll: Annotated[Seconds, Doc("idle safety poll")] = 1.0
    watchdog_interval: Annotated[Seconds, Doc(
        "watchdog sweep (at most 2/9 of the lease: a shorter lease shortens the default; "
        "a longer explicit value is refused)")] = 1.0
    status_query_timeout: Annotated[Seconds, Doc("time limit of one status query")] = 10.0
    status_query_concurrency: Annotated[int, Meta(ge=1, le=1000), Doc("status queries at once",
                                                                      metavar="N")] = 8
    abandon_after: Annotated[Seconds, Doc("a cancelled handler's extra time before it is abandoned")] = 10.0
    batch_interval: Annotated[Seconds, Doc("batch monitor: longest wait between sweeps")] = 1.0
    batch_sweep_size: Annotated[Count, Doc("batch monitor: batches per sweep and queue")] = 100
    metrics_port: Annotated[Annotated[int, Meta(ge=0, le=65535)] | None,
                            Doc("port of /metrics and /healthz (0 = any free)", shown="off",
                                metavar="PORT")] = None
    metrics_host: Annotated[str, Meta(pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}\Z"),
                            Doc("host /metrics and /healthz listen on", metavar="HOST")] = "127.0.0.1"
    restart_intensity: Annotated[int, Meta(ge=0, le=1000), Doc("actor restarts allowed per period",
                                                               metavar="N")] = 5
    restart_period: Annotated[Seconds, Doc("the period of the restart intensity")] = 30.0
    validation_attempts: Annotated[int, Meta(ge=1, le=1000), Doc("validation checks, then validation_failed",
                                                                 metavar="N")] = 5
    validation_interval: Annotated[Seconds, Doc("between validation checks")] = 2.0
    validation_jitter: Annotated[float, Meta(ge=0, le=1), Doc("jitter of the validation interval",
                                                              metavar="FRACTION")] = 0.1
    validation_timeout: Annotated[Seconds, Doc("time limit of one validation check")] = 5.0
    validation_concurrency: Annotated[Count, Doc("validation checks at once")] = 16
    webhook_url: Annotated[str | None, Doc("default webhook URL (for --notify jobs and batches)",
                                           metavar="URL")] = None
    webhook_secret: Annotated[str | None, Doc("webhook signing secret (whsec_..., at least 16 bytes)",
                                              shown="none: deliveries wait", flag=False)] = None
    webhook_attempts: Annotated[int, Meta(ge=1, le=1000), Doc("webhook attempts, then dead", metavar="N")] = 8
    webhook_backoff: Annotated[Seconds, Doc("webhook backoff (doubling per attempt)")] = 5.0
    webhook_backoff_max: Annotated[Seconds, Doc("cap of the webhook backoff (also caps Retry-After)")] = \
        3600.0
    webhook_timeout: Annotated[Seconds, Doc("time limit of one delivery attempt")] = 10.0
    webhook_concurrency: Annotated[Count, Doc("webhook deliveries at once")] = 16
    allowed_hosts: Annotated[HostList | None, Doc(
        "hosts webhook and validator URLs may name (comma list, *.domain allowed; submit reads it too)",
        shown="any", metavar="HOST,...")] = None
    allow_destinations: Annotated[HostList, Doc(
        "internal destinations allowed on purpose: hosts, *.domain, IP addresses, CIDR ranges "
        "(comma list; submit reads it too)", metavar="HOST,...")] = ()
    allow_private_destinations: Annotated[bool, Doc(
        "allow every internal destination (development only; submit reads it too)")] = False
    evaluator_interval: Annotated[Seconds, Doc("evaluator pass (files finished jobs)")] = 600.0
    retention_interval: Annotated[Seconds, Doc("retention pass (deletes expired jobs)")] = 300.0
    retention_batch: Annotated[Count, Doc("retention: jobs per store call")] = 500
    retention_completed: Annotated[Retention, Doc("retention of completed jobs", shown="604800 (7 days)")] = \
        7 * DAY
    retention_failed: Annotated[Retention, Doc("retention of failed jobs", shown="2592000 (30 days)")] = \
        30 * DAY
    retention_cancelled: Annotated[Retention, Doc("retention of cancelled jobs",
                                                  shown="2592000 (30 days)")] = 30 * DAY
    retention_timed_out: Annotated[Retention, Doc("retention of timed-out jobs",
                                                  shown="2592000 (30 days)")] = 30 * DAY
    retention_validation_failed: Annotated[Retention, Doc("retention of validation-failed jobs",
                                                          shown="2592000 (30 days)")] = 30 * DAY
    sanitize_base64_min: Annotated[int, Meta(ge=16, le=1 << 30), Doc(
        "sanitizer: base64 runs from this many characters are replaced", metavar="CHARS")] = 1024
    sanitize_max_string: Annotated[int, Meta(ge=256, le=1 << 30), Doc(
        "sanitizer: strings are cut beyond this many characters", metavar="CHARS")] = 64 * 1024
    sanitize_max_value: Annotated[int, Meta(ge=1024, le=1 << 30), Doc(
        "sanitizer: a whole value is replaced beyond this many bytes of JSON", metavar="BYTES")] = 256 * 1024
    max_result_bytes: Annotated[int, Meta(ge=1024, le=512 << 20), Doc(
        "a handler's result larger than this (bytes of JSON) fails its attempt",
        shown="16777216 (16 MiB)", metavar="BYTES")] = 16 << 20
    loop_lag_warning: Annotated[Annotated[float, Meta(gt=0, le=86400)] | None, Doc(
        "an event-loop stall longer than this logs a warning naming the handler",
        shown="a quarter of the lease", metavar="SECONDS")] = None

    def __post_init__(self) -> None:
        from jobvisor.adapters.urls import check_url
        from jobvisor.adapters.webhooks import check_secret

        for entry in self.allowed_hosts or ():
            if not re.fullmatch(HOST_ENTRY, entry):
                raise ValueError(f"allowed_hosts: {redact(entry)!r} is not a host name, *.domain or IP "
                                 "address")
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
        from jobvisor.adapters.destinations import DestinationPolicy

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
        from jobvisor.machines import JOB, JobState

        # one setting per terminal state of the job machine (a test checks there is one for each)
        return {s.value: float(getattr(self, f"retention_{s.value}")) for s in JobState if s in JOB.terminal}

    @property
    def sanitizer(self) -> Sanitizer:
        from jobvisor.adapters.sanitize import Sanitizer

        return Sanitizer(base64_min=self.sanitize_base64_min, max_string=self.sanitize_max_string,
                         max_value=self.sanitize_max_value)

    def with_worker_id(self) -> DaemonConfig:
        if self.worker_id:
            return self
        return msgspec.structs.replace(self, worker_id=f"{socket.gethostname()}:{os.getpid()}")


# -- the settings, as read from the fields ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of :class:`DaemonConfig`, with every name it goes by.

    ``kind`` says how a flag or variable's text becomes the value: ``value`` as given (msgspec
    converts it), ``list`` split at commas, ``switch`` a flag without a value (the variable
    takes ``true``/``false``).
    """

    name: str
    help: str
    default: Any
    shown: str
    env: str
    flag: str | None
    kind: Literal["value", "list", "switch"]
    metavar: str


def _shown(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _settings() -> tuple[Setting, ...]:
    hints = get_type_hints(DaemonConfig, include_extras=True)
    defaults = {f.name: f.default for f in msgspec.structs.fields(DaemonConfig)}  # no instance: no checks run
    found = []
    for name in DaemonConfig.__struct_fields__:
        docs = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Doc)]
        if not docs or not docs[-1].help:
            raise TypeError(f"DaemonConfig.{name} has no Doc(help): every setting says what it is")
        doc = docs[-1]
        metavar = next((d.metavar for d in reversed(docs) if d.metavar), "VALUE")
        default = defaults[name]
        kind: Literal["value", "list", "switch"] = (
            "switch" if isinstance(default, bool) else "list" if "tuple[" in str(hints[name]) else "value")
        found.append(Setting(
            name=name, help=doc.help, default=default, shown=doc.shown or _shown(default),
            env=ENV_PREFIX + name.upper(), flag="--" + name.replace("_", "-") if doc.flag else None,
            kind=kind, metavar=metavar))
    return tuple(found)


SETTINGS: tuple[Setting, ...] = _settings()
"""Every setting, in the order of :class:`DaemonConfig`'s fields."""

_BY_NAME = {s.name: s for s in SETTINGS}


def reference_table() -> str:
    """The settings as README.md's Markdown table (a test keeps README's copy equal to this)."""
    rows = ["| setting | flag | environment | default |", "|---|---|---|---|"]
    for s in SETTINGS:
        cells = (s.help, f"`{s.flag}`" if s.flag else "environment only", f"`{s.env}`", s.shown)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


# -- loading ---------------------------------------------------------------------------------------


def load_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """Merge defaults, ``JOBVISOR_*`` variables and flags (``None`` flags are unset).

    A list setting's text (a flag's or a variable's) is split at commas; a bad value is
    :class:`BadInput` naming the setting, its flag and its variable, and where it came from.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # setting -> where its value came from, as the user wrote it
    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is not None and raw != "":
            values[s.name], given[s.name] = _parsed(s, raw), f"{s.env}={_quoted(s, raw)}"
    for name, value in flags.items():
        flagged = _BY_NAME.get(name)
        if value is not None and flagged is not None:
            values[name] = _parsed(flagged, value)
            shown = flagged.flag or name
            given[name] = shown if flagged.kind == "switch" else f"{shown} {_quoted(flagged, value)}"
    try:
        config = msgspec.convert(values, DaemonConfig, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc).split(" - at ")[0]
        found = re.search(r"\$\.([A-Za-z_]+)", str(exc))
        if found is None:  # __post_init__'s checks: the message starts with the setting's name
            field, _, message = message.partition(": ")
        else:
            field = found.group(1)
        if field == "webhook_secret":  # msgspec may quote the value: never echo a secret
            message = message if found is None else "Expected a whsec_ secret"
        raise BadInput(f"setting {field}: {message} {_where(field, given)}") from None
    return _sweeps_fit_the_lease(config, given).with_worker_id()


def _parsed(s: Setting, value: Any) -> Any:
    if s.kind == "list" and isinstance(value, str):
        # spaces around an item are trimmed; a newline is refused, not trimmed
        return [item.strip(" ") for item in value.split(",") if item.strip(" ")]
    if s.name in ("log_level", "log_format", "log_outcomes") and isinstance(value, str):
        return value.lower()
    return value


def _quoted(s: Setting, value: Any) -> str:
    if s.name == "webhook_secret":
        return "(not shown)"
    text = repr(redact(value) if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _where(name: str, given: Mapping[str, str]) -> str:
    """``(from --lease '0'; variable JOBVISOR_LEASE)``: both names, and which one was used."""
    s = _BY_NAME.get(name)
    if s is None:
        return ""
    names = [n for n in (s.flag, s.env) if n is not None]
    source = given.get(name)
    if source is None:
        return f"({' or '.join(names)})"
    other = [f"{'flag' if n.startswith('--') else 'variable'} {n}" for n in names if not source.startswith(n)]
    return f"(from {source}; {other[0] if other else 'environment only'})"


WATCHDOG_SHARE = 2 / 9
"""The longest watchdog interval, as a share of the lease. A store outage is told from a lost
worker by a pause of every sweep longer than ``max(lease / 4, 3 x interval)``; a holder renews
every third of the lease, so that pause must stay under two thirds of it: 3 x interval <= 2/3 lease."""


def _sweeps_fit_the_lease(config: DaemonConfig, given: Mapping[str, str]) -> DaemonConfig:
    """A short lease shortens the default watchdog interval to fit; an explicit one that does
    not fit is refused, naming both settings."""
    longest = config.lease * WATCHDOG_SHARE
    if config.watchdog_interval <= longest:
        return config
    if "watchdog_interval" in given:
        raise BadInput(f"setting watchdog_interval: {config.watchdog_interval:g} s is too long for a lease "
                       f"of {config.lease:g} s (at most {longest:.3g} s, 2/9 of the lease, so that a store "
                       f"outage is told from a lost worker) {_where('watchdog_interval', given)}")
    return msgspec.structs.replace(config, watchdog_interval=longest)
