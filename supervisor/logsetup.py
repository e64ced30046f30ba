"""The daemon's logging: level, format (text or one JSON object per line), URL redaction.

``text`` is ``<time> <LEVEL> <logger>: <message>``. ``json`` is one object per line with
``timestamp`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, plus every attribute a
record carries beyond the standard ones: the job fields of :mod:`supervisor.joblog`
(``job_id``, ``job_type``, ``queue``, ``attempt``, ``phase``, ``outcome``, ``duration``) and an
``exc_info`` text for exceptions. The JSON comes from python-json-logger.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Literal

from jobvisor.adapters.redaction import install_log_redaction

__all__ = ["LEVELS", "FORMATS", "configure_logging"]

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,  # ISO 8601 in UTC, under "timestamp"
            json_ensure_ascii=False,
        )
    return logging.Formatter(TEXT)


def configure_logging(level: str, log_format: LogFormat = "text", stream: IO[str] | None = None) -> None:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) in
    ``log_format``; URLs in any record are redacted (credentials, secret query values)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(log_format))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    install_log_redaction(root)  # URLs in any record, httpx's and httpcore's too
    if numeric > logging.DEBUG:  # a line per webhook or check request is debug detail
        logging.getLogger("httpx").setLevel(logging.WARNING)
