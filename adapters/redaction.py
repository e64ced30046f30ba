"""Credentials never leave in clear: URLs in free text, and log records.

:func:`adapters.errors.redact` hides the secrets of one URL (its user part, and
query values whose names look like secrets). :func:`redact_text` applies it to
every URL inside a line of text (an exception message, a log line), and
:class:`RedactingFilter` to every log record, whatever logger made it: the
daemon's own, and httpx's and httpcore's, which print request URLs at info and
debug level. Webhook and validator URLs are stored as given (delivery needs
them); only what is shown is redacted.
"""

from __future__ import annotations

import logging
import re

from .errors import redact

__all__ = ["redact_text", "RedactingFilter", "install_log_redaction", "REDACTED_LOGGERS"]

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")

REDACTED_LOGGERS = (
    "jobvisor.webhooks", "jobvisor.validator", "jobvisor.daemon", "httpx",
    "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks",
)
"""Loggers given a :class:`RedactingFilter` by :func:`install_log_redaction` (a filter on a
logger sees only records made by that very logger, hence each httpcore logger by name)."""


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with its URLs redacted (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report
            return True
        cleaned = redact_text(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(root: logging.Logger | None = None) -> None:
    """Give every logger of :data:`REDACTED_LOGGERS` (and the handlers of ``root``, when
    given) one :class:`RedactingFilter`; calling it again adds nothing."""
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    if root is not None:
        targets.extend(root.handlers)
    for target in targets:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())
