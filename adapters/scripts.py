"""The Lua library, with the machine tables generated from ``machines/``.

The library is the files of ``lua/`` (:data:`LUA_FILES`, in load order)
concatenated after a preamble this module writes from each
:class:`machines.MachineDef`: its rows (guard, destination, notification, the
effects in order), terminal set, the index each state belongs to, the
unfenced triggers, the attempt outcome and reason per trigger and the initial
states. The Lua never spells out a transition: a generic ``move`` applies the
table and runs ``EFFECT[machine][name]`` for each effect of the row. So the
store, the pure ``apply``, the embeddable machine and the diagrams cannot
drift apart: they are all read from the same rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from importlib import metadata, resources
from typing import Any

from jobvisor.machines import BATCH, JOB, PHASE, WEBHOOK, MachineDef
from jobvisor.machines.schedule import SCHEDULE

__all__ = ["LEGACY_NAME", "LUA_FILES", "LuaLibrary", "lua_tables", "lua_source"]

LUA_FILES = (
    "core.lua", "job.lua", "batch.lua", "webhook.lua", "flow.lua", "claim.lua", "ops.lua", "batch_ops.lua", "rate.lua",
    "schedule.lua", "hygiene.lua", "redrive.lua", "registry.lua",
)
"""The library's files, in load order (see ARCHITECTURE.md, "The Lua library")."""


def _lua_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _set(values: Iterable[str]) -> str:
    return "{" + ", ".join(f"[{_lua_str(v)}] = true" for v in values) + "}"


def _map(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in pairs) + "}"


def _list(values: Iterable[str]) -> str:
    return "{" + ", ".join(_lua_str(v) for v in values) + "}"


def lua_machine(definition: MachineDef[Any, Any]) -> str:
    """One machine as a Lua table.

    ``index[state][trigger]`` lists the rows to try in order, each with its guard (``''``
    for none), destination, notification, effects (in order) and whether it is internal.
    Absorbing pairs are absent from ``index``; Lua tells absorbed from invalid by the
    ``terminal`` set, as ``MachineDef.apply`` does. ``at`` maps each state to its index
    (``''``: none), ``initial`` lists the starts in order (``when``: the fact that picks it,
    ``''`` for none), ``kept`` the states a row storing a result enters.
    """
    # States in declaration order, never the frozenset's own order: that changes with the
    # per-process hash seed, and the library's text must be the same in every process.
    terminal = [s.value for s in definition.states if s in definition.terminal]
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
                options.append(
                    f"{{guard = {_lua_str(row.guard or '')}, to = {_lua_str(dest.value)}, "
                    f"notify = {_lua_str(notify)}, fx = {_list(row.effects)}, "
                    f"internal = {'true' if row.dest is None else 'false'}}}"
                )
            triggers.append(f"[{_lua_str(trigger.value)}] = {{{', '.join(options)}}}")
        states.append(f"    [{_lua_str(state.value)}] = {{{', '.join(triggers)}}}")
    starts = ", ".join(
        f"{{state = {_lua_str(s.state.value)}, when = {_lua_str(s.when or '')}, fx = {_list(s.effects)}}}"
        for s in definition.initial
    )
    kept = [r.dest.value for r in definition.rows if r.dest is not None and "store_result" in r.effects]
    fields = [
        f"terminal = {_set(terminal)}",
        f"terminal_list = {_list(terminal)}",
        f"succeeded = {_set(s.value for s in definition.states if s in definition.succeeded)}",
        f"at = {_map((s.value, definition.index.get(s, '')) for s in definition.states)}",
        f"unfenced = {_set(t.value for t in definition.triggers if t in definition.unfenced)}",
        f"outcome = {_map((t.value, v) for t, v in definition.outcomes.items())}",
        f"reason = {_map((t.value, v) for t, v in definition.reasons.items())}",
        f"notifications = {_map((s.value, n) for s in definition.states if (n := definition.notifications.get(s)))}",
        f"kept = {_set(dict.fromkeys(kept))}",
        f"initial = {{{starts}}}",
    ]
    return "{" + ",\n    ".join(fields) + ", index = {\n" + ",\n".join(states) + "\n  }}"


def lua_tables() -> str:
    """The generated preamble: ``local M = {job = ..., phase = ..., batch = ..., webhook = ..., schedule = ...}``."""
    parts = [
        f"  {name} = {lua_machine(d)}"
        for name, d in (("job", JOB), ("phase", PHASE), ("batch", BATCH), ("webhook", WEBHOOK), ("schedule", SCHEDULE))
    ]
    return (
        "-- Generated from machines/ by adapters/scripts.py: do not edit.\n"
        "local M = {\n" + ",\n".join(parts) + "\n}\n"
    )


def lua_source() -> str:
    """The library's text: the generated tables, then :data:`LUA_FILES` in order, then the
    registration of the one entry point (``run``, in ``core.lua``)."""
    folder = resources.files("jobvisor.adapters").joinpath("lua")
    body = "".join(f"-- {name}\n" + folder.joinpath(name).read_text("utf-8") for name in LUA_FILES)
    return lua_tables() + body + "redis.register_function(FUNCTION_NAME, run)\n"


class LuaLibrary:
    """The Redis Function library: its text, and the names it registers.

    The text is the same in every process (nothing in it depends on hash order), and so
    are the names:

    * the library is named after the package version (``jobvisor_v0_2_0``), and loaded
      with ``FUNCTION LOAD REPLACE``: however many processes of one version load it, and
      in whatever interleaving, Redis holds exactly one library for that version, because
      a load is one atomic command that swaps a library for itself. Processes of another
      version load their own library and never touch this one, so a rolling upgrade runs
      both side by side (see :data:`LEGACY_NAME` for what is removed).
    * the function carries a hash of the text (``jv_ops_v0_1_0_<sha12>``): a process
      whose text differs from the one loaded under its version's name (a development
      tree) finds "Function not found" and loads its own, rather than running other code.
    """

    def __init__(self, version: str | None = None) -> None:
        text = lua_source()
        self.version = _package_version() if version is None else version
        slug = "v" + re.sub(r"[^A-Za-z0-9]", "_", self.version)
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()
        self.name = f"jobvisor_{slug}"
        self.function = f"jv_ops_{slug}_{self.sha[:12]}"
        self.source = (
            f"#!lua name={self.name}\n"
            f"local FUNCTION_NAME = '{self.function}'\n" + text
        )

    def stale(self, names: Iterable[str]) -> list[str]:
        """The libraries among ``names`` that loading this one removes: those of releases
        that named a library per process (:data:`LEGACY_NAME`), never another version's."""
        return sorted(n for n in names if n != self.name and LEGACY_NAME.fullmatch(n))


LEGACY_NAME = re.compile(r"jobvisor_[0-9a-f]{12}")
"""Libraries of earlier releases, named by a hash of a text that changed with each process's
hash seed: one per process start, each used only by the process that loaded it. Removing
them is safe when many processes load at once: those releases never delete a library, so
no two processes undo each other's load (a still-running one reloads its own once, on
"Function not found"), and a library already deleted by a concurrent loader is skipped.
Libraries of other versions (``jobvisor_v*``) are left alone: a daemon of that version
may still be running; delete one with ``FUNCTION DELETE`` once none is."""


def _package_version() -> str:
    try:
        return metadata.version("jobvisor")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0"
