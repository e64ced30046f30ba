"""The demo's live terminal view (rich): jobs per state, webhooks, recent events and log lines."""

from __future__ import annotations

import logging
from typing import Any

STATES = ("queued", "scheduled", "active", "validating", "finished", "outbox")


class LiveView:
    """Redrawn by the demo's watcher; off (every method a no-op but the bookkeeping) when
    ``enabled`` is false, as without a terminal or with ``--json``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.events: list[str] = []
        self.counts: dict[str, int] = {}
        self.webhooks = (0, 0)  # received, verified
        self.phase = "starting"
        self._live: Any = None

    def __enter__(self) -> LiveView:
        if self.enabled:
            from rich.live import Live

            self._live = Live(self._render(), refresh_per_second=8, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        states = Table(title=f"jobvisor demo: {self.phase}", expand=False)
        for name in STATES:
            states.add_column(name, justify="right")
        states.add_row(*(str(self.counts.get(n, 0)) for n in STATES))
        received, verified = self.webhooks
        recent = Table(title=f"webhooks received {received}, verified {verified}; recent events",
                       show_header=False, expand=False)
        recent.add_column("event")
        for line in self.events[-10:]:
            recent.add_row(line)
        return Group(states, recent)


class LogsToView(logging.Handler):
    """The daemons' log lines, shown among the live view's recent events."""

    def __init__(self, view: LiveView) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        self.view.events.append(f"[log] {record.getMessage()}"[:110])
