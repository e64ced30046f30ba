"""Mermaid ``stateDiagram-v2`` drawn from a machine's table.

Edges are labelled ``trigger [guard]`` (with ``effects=True``, followed by
`` / effect, effect`` for each row's effects, in order); internal rows are
self-loops; each initial state hangs off ``[*]`` with how it is entered, and
each terminal state leads to ``[*]``. Nothing here knows a transition the
table doesn't.
"""

from __future__ import annotations

from typing import Any

from ._table import MachineDef

__all__ = ["to_mermaid"]


def to_mermaid(definition: MachineDef[Any, Any], *, direction: str = "LR", effects: bool = False) -> str:
    """Return the Mermaid source for ``definition`` (no trailing newline)."""
    lines = ["stateDiagram-v2", f"    direction {direction}"]
    for start in sorted(definition.initial, key=lambda s: s.when is not None):  # the plain start first
        how = start.how + (f" / {', '.join(start.effects)}" if effects and start.effects else "")
        lines.append(f"    [*] --> {start.state.value}: {how}")
    labels: dict[tuple[str, str], list[str]] = {}
    for row in definition.rows:
        label = row.trigger.value + (f" [{row.guard}]" if row.guard else "")
        if effects and row.effects:
            label += " / " + ", ".join(row.effects)
        for src in row.sources:
            dest = src if row.dest is None else row.dest
            labels.setdefault((src.value, dest.value), []).append(label)
    for (src, dest), names in labels.items():
        lines.append(f"    {src} --> {dest}: {(' | ' if effects else ' / ').join(names)}")
    for state in definition.states:
        if state in definition.terminal:
            lines.append(f"    {state.value} --> [*]")
    absorbing = ", ".join(s.value for s in definition.states if s in definition.terminal)
    lines.append(f"    note right of {_first_terminal(definition)}")
    lines.append(f"        terminal, absorbing every other trigger: {absorbing}")
    lines.append("    end note")
    return "\n".join(lines)


def _first_terminal(definition: MachineDef[Any, Any]) -> str:
    return str(next(s.value for s in definition.states if s in definition.terminal))
