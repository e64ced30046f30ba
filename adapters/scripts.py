"""The Lua library, with the machine tables generated from ``machines/``.

``lua/jobvisor.lua`` never spells out a transition: it reads a table ``M``
that this module writes from each :class:`machines.MachineDef` (states,
rows, guards, effects, notifications, terminal set). So the store, the pure
``apply``, the embeddable machine and the diagrams cannot drift apart: they
are all read from the same rows.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from machines import BATCH, JOB, PHASE, WEBHOOK, MachineDef

__all__ = ["LuaLibrary", "lua_tables"]


def _lua_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def lua_machine(definition: MachineDef[Any, Any]) -> str:
    """One machine as a Lua table: ``{terminal = {...}, index = {state = {trigger = {...}}}}``.

    ``index[state][trigger]`` lists the rows to try in order, each with its
    guard (``''`` for none), destination, effect set and notification.
    Absorbing pairs are absent from ``index``; Lua tells absorbed from
    invalid by the ``terminal`` set, as ``MachineDef.apply`` does.
    """
    terminal = ", ".join(f"[{_lua_str(s.value)}] = true" for s in definition.terminal)
    states = []
    for state in definition.states:
        triggers = []
        for trigger in definition.triggers:
            rows = definition.rows_for(state, trigger)
            if not rows:
                continue
            options = []
            for row in rows:
                dest = state if row.dest is None else row.dest
                notify = "" if row.dest is None else definition.notifications.get(row.dest, "")
                effects = ", ".join(f"{e} = true" for e in row.effects)
                options.append(
                    f"{{guard = {_lua_str(row.guard or '')}, to = {_lua_str(dest.value)}, "
                    f"notify = {_lua_str(notify)}, fx = {{{effects}}}}}"
                )
            triggers.append(f"[{_lua_str(trigger.value)}] = {{{', '.join(options)}}}")
        states.append(f"    [{_lua_str(state.value)}] = {{{', '.join(triggers)}}}")
    return "{terminal = {" + terminal + "}, index = {\n" + ",\n".join(states) + "\n  }}"


def lua_tables() -> str:
    """The generated preamble: ``local M = {job = ..., phase = ..., batch = ..., webhook = ...}``."""
    parts = [
        f"  {name} = {lua_machine(d)}"
        for name, d in (("job", JOB), ("phase", PHASE), ("batch", BATCH), ("webhook", WEBHOOK))
    ]
    return (
        "-- Generated from machines/ by adapters/scripts.py: do not edit.\n"
        "local M = {\n" + ",\n".join(parts) + "\n}\n"
    )


class LuaLibrary:
    """The Redis Function library: its text, and the versioned names it registers.

    The library and function names carry a hash of the text, so daemons of
    different versions can share one Redis without replacing each other's code.
    """

    def __init__(self) -> None:
        body = resources.files("adapters").joinpath("lua/jobvisor.lua").read_text("utf-8")
        text = lua_tables() + body
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()
        self.name = f"jobvisor_{self.sha[:12]}"
        self.function = f"jv_ops_{self.sha[:12]}"
        self.source = (
            f"#!lua name={self.name}\n"
            f"local FUNCTION_NAME = '{self.function}'\n" + text
        )
