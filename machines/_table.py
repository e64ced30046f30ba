"""Machines as data: rows of (trigger, sources, destination, guard, effects).

Theory of operation
-------------------
A machine is a table. Each :class:`Row` says: when ``trigger`` fires in one of
``sources`` and ``guard`` holds (or the row has no guard), move to ``dest``
(``None`` means stay: an internal transition) and perform ``effects``. Rows for
the same (state, trigger) pair are tried in table order and the first whose
guard holds wins, exactly as the ``transitions`` library does it; so a guarded
row followed by an unguarded one reads as "if guard then A else B".

Every (state, trigger) pair has one of four outcomes, and only these:

* ``MOVED``: a row matched; the state becomes ``dest`` (or stays, for an
  internal row) and the row's effects are due.
* ``ABSORBED``: the state is terminal and no row leaves it for this trigger.
  Nothing changes, nothing is written, no event is emitted. This is how a
  terminal state swallows late and duplicate triggers (a second ``complete``,
  a ``finalize`` that lost the race, a lease expiry after completion).
* ``BLOCKED``: rows exist, but every guard was false (a batch ``finalize``
  that is not ready yet). Nothing changes.
* invalid: the state is not terminal and no row exists for the trigger.
  :class:`InvalidTransition` is raised, naming machine, state and trigger,
  and the caller's state is untouched.

A move always writes the new state, moves the record to the index its new
state belongs to (:attr:`MachineDef.index`) and appends one event; everything
else it writes, and every reaction an actor has to it (waking workers,
cancelling a running handler, delivering a notification), is one of the row's
named effects, performed in the row's order. The store's Lua library runs
``EFFECT[name]`` for each; the embeddable form calls ``model.do_<name>()``,
except for the effects a machine marks ``store_only`` (they concern the
store's indexes, its outbox or the daemons, or write data the op carries).

From this one table are derived: the fast :meth:`MachineDef.apply` used by
the runtime, the embeddable ``transitions`` machine (``machines.embed``), the
tables compiled into the store's Lua library (rows and effects, indexes,
fencing, attempt outcomes and reasons, initial states), and the Mermaid
diagrams (``machines.mermaid``). Nothing else spells out a transition.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "Kind",
    "Row",
    "Start",
    "Outcome",
    "MachineDef",
    "InvalidTransition",
]

S = TypeVar("S", bound=enum.StrEnum)
T = TypeVar("T", bound=enum.StrEnum)


class Kind(enum.StrEnum):
    """What applying a trigger did."""

    MOVED = "moved"
    ABSORBED = "absorbed"
    BLOCKED = "blocked"


class InvalidTransition(Exception):
    """A trigger that no row allows from a non-terminal state.

    Raised before anything changes: the caller's state is exactly as it was.
    """

    def __init__(self, machine: str, state: str, trigger: str) -> None:
        self.machine = machine
        self.state = str(state)
        self.trigger = str(trigger)
        super().__init__(
            f"{machine}: trigger '{self.trigger}' is not allowed in state '{self.state}'"
        )


@dataclass(frozen=True, slots=True)
class Row(Generic[S, T]):
    """One line of a machine's table."""

    trigger: T
    sources: tuple[S, ...]
    dest: S | None
    guard: str | None = None
    effects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Start(Generic[S]):
    """One way a new instance starts: in ``state`` (labelled ``how`` on diagrams) when the
    fact ``when`` holds (``None``: otherwise), performing ``effects``. A machine's starts are
    tried in order; the last one has no condition."""

    state: S
    how: str
    when: str | None = None
    effects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S, T]):
    """The result of applying ``trigger`` in ``source``.

    ``dest`` is the state afterwards (equal to ``source`` unless ``MOVED`` to
    another state). ``notify`` is the outbound event type (``job.completed``)
    when the transition produces a notification, else ``None``.
    """

    kind: Kind
    source: S
    trigger: T
    dest: S
    effects: tuple[str, ...] = ()
    notify: str | None = None
    internal: bool = False

    @property
    def changed(self) -> bool:
        """True when a row matched (state written, one event due)."""
        return self.kind is Kind.MOVED


@dataclass(frozen=True)
class MachineDef(Generic[S, T]):
    """A machine: its states, triggers, rows, terminal set and guards.

    ``guards`` documents each guard name (the same names are model attributes
    in the embeddable form and facts computed by the Lua scripts, both from
    the machine's one facts function). ``notifications`` maps a destination
    state to the event type published when a transition enters it; a row
    into such a state performs ``notify``. ``initial`` lists how a new
    instance starts (:class:`Start`). ``effects_doc`` documents every effect;
    ``store_only`` names those the embeddable models do not perform.

    Machine-level data the store reads: ``index`` names the index (a sorted
    set of the store) each state's records sit in (``""``: none);
    ``unfenced`` the triggers anyone may fire through the store's plain
    ``trigger`` op (every other trigger is fenced: only the op that holds the
    lease, or owns the step, fires it); ``outcomes`` the attempt outcome a
    trigger records with ``end_attempt``; ``reasons`` the reason a trigger
    records with ``record_reason``; ``succeeded`` the terminal states that count as success
    for whatever waits on an instance (a job depending on another).
    """

    name: str
    states: type[S]
    triggers: type[T]
    rows: tuple[Row[S, T], ...]
    terminal: frozenset[S]
    initial: tuple[Start[S], ...]
    guards: Mapping[str, str] = field(default_factory=dict)
    notifications: Mapping[S, str] = field(default_factory=dict)
    effects_doc: Mapping[str, str] = field(default_factory=dict)
    store_only: frozenset[str] = frozenset()
    index: Mapping[S, str] = field(default_factory=dict)
    unfenced: frozenset[T] = frozenset()
    outcomes: Mapping[T, str] = field(default_factory=dict)
    reasons: Mapping[T, str] = field(default_factory=dict)
    succeeded: frozenset[S] = frozenset()
    # state -> trigger -> Outcome (unguarded) | tuple[(guard, Outcome), ...]
    _index: dict[str, dict[str, object]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()
        index: dict[str, dict[str, object]] = {s: {} for s in self.states}
        grouped: dict[tuple[S, T], list[Row[S, T]]] = {}
        for row in self.rows:
            for src in row.sources:
                grouped.setdefault((src, row.trigger), []).append(row)
        for (src, trig), rows in grouped.items():
            options = tuple((r.guard, self._outcome(src, r)) for r in rows)
            if len(options) == 1 and options[0][0] is None:
                index[src][trig] = options[0][1]
            else:
                index[src][trig] = options
        for src in self.terminal:
            for trig in self.triggers:
                index[src].setdefault(trig, Outcome(Kind.ABSORBED, src, trig, src))
        object.__setattr__(self, "_index", index)

    def _outcome(self, src: S, row: Row[S, T]) -> Outcome[S, T]:
        dest = src if row.dest is None else row.dest
        notify = None if row.dest is None else self.notifications.get(row.dest)
        return Outcome(
            Kind.MOVED, src, row.trigger, dest, row.effects, notify, internal=row.dest is None
        )

    def _check(self) -> None:
        """Reject tables that contradict themselves (a guard after an unguarded row, an
        effect nobody documented, a notifying row without ``notify``...): one
        ``ValueError`` naming the machine and what is wrong."""
        self._check_machine()
        seen_unguarded: set[tuple[S, T]] = set()
        for row in self.rows:
            self._check_row(row)
            for src in row.sources:
                if (src, row.trigger) in seen_unguarded:
                    raise ValueError(
                        f"{self.name}: row {row.trigger} from {src} is unreachable"
                    )
                if row.guard is None:
                    seen_unguarded.add((src, row.trigger))
        for state in self.terminal:
            for row in self.rows:
                if state in row.sources and row.guard is not None:
                    raise ValueError(f"{self.name}: terminal rows may not be guarded")

    def _check_machine(self) -> None:
        states, triggers = set(self.states), set(self.triggers)
        if not self.terminal <= states:
            raise ValueError(f"{self.name}: terminal states must be states of the machine")
        if not self.initial or self.initial[-1].when is not None:
            raise ValueError(f"{self.name}: the last initial state must have no condition")
        for start in self.initial:
            if start.state not in states or start.state in self.terminal:
                raise ValueError(f"{self.name}: initial state '{start.state}' is not a live state")
            self._check_effects(start.effects)
        if self.index and set(self.index) != states:
            raise ValueError(f"{self.name}: the index map must name every state")
        for keys, what in ((self.unfenced, "unfenced"), (self.outcomes, "outcomes"), (self.reasons, "reasons")):
            if not set(keys) <= triggers:
                raise ValueError(f"{self.name}: {what} names a trigger the machine lacks")
        if not self.succeeded <= self.terminal:
            raise ValueError(f"{self.name}: a succeeded state is not terminal")
        if not self.store_only <= set(self.effects_doc):
            raise ValueError(f"{self.name}: a store-only effect is not documented")
        if not set(self.notifications) <= states:
            raise ValueError(f"{self.name}: notifications name a state the machine lacks")

    def _check_row(self, row: Row[S, T]) -> None:
        states = set(self.states)
        if row.trigger not in set(self.triggers):
            raise ValueError(f"{self.name}: trigger '{row.trigger}' is not a trigger of the machine")
        if not row.sources or not set(row.sources) <= states or (row.dest is not None and row.dest not in states):
            raise ValueError(f"{self.name}: row {row.trigger} names a state the machine lacks")
        if row.guard is not None and row.guard not in self.guards:
            raise ValueError(f"{self.name}: guard '{row.guard}' is not documented")
        self._check_effects(row.effects)
        notifies = row.dest is not None and row.dest in self.notifications
        if notifies != ("notify" in row.effects):
            raise ValueError(
                f"{self.name}: row {row.trigger} -> {row.dest} must perform 'notify' exactly when it enters a "
                "notifying state"
            )
        if "end_attempt" in row.effects and row.trigger not in self.outcomes:
            raise ValueError(f"{self.name}: row {row.trigger} ends an attempt with no outcome for its trigger")
        if "record_reason" in row.effects and row.trigger not in self.reasons:
            raise ValueError(f"{self.name}: row {row.trigger} records a reason its trigger lacks")

    def _check_effects(self, effects: tuple[str, ...]) -> None:
        for effect in effects:
            if effect not in self.effects_doc:
                raise ValueError(f"{self.name}: effect '{effect}' is not documented")
        if len(set(effects)) != len(effects):
            raise ValueError(f"{self.name}: an effect is listed twice in one row")

    # -- the fast pure form -------------------------------------------------

    def apply(
        self, state: str, trigger: str, facts: Mapping[str, bool] | None = None
    ) -> Outcome[S, T]:
        """Apply ``trigger`` in ``state``; pure, no allocation on unguarded rows.

        ``facts`` gives the truth of each guard the candidate rows name; a
        missing guard fact is an error (``KeyError``), never silently false.
        Raises :class:`InvalidTransition` for a pair with no row from a
        non-terminal state.
        """
        try:
            entry = self._index[state][trigger]
        except KeyError:
            raise self._invalid(state, trigger) from None
        if entry.__class__ is Outcome:
            return entry
        given = _NoFacts(self.name) if facts is None else facts
        for guard, outcome in entry:  # type: ignore[attr-defined]
            if guard is None or given[guard]:
                return outcome  # type: ignore[no-any-return]
        first: Outcome[S, T] = entry[0][1]  # type: ignore[index]
        return Outcome(Kind.BLOCKED, first.source, first.trigger, first.source)

    def _invalid(self, state: str, trigger: str) -> Exception:
        if state not in self._index:
            return ValueError(f"{self.name}: unknown state '{state}'")
        if trigger not in self.triggers.__members__.values():
            return ValueError(f"{self.name}: unknown trigger '{trigger}'")
        return InvalidTransition(self.name, state, trigger)

    # -- introspection used by the embeddable form, Lua and diagrams -------

    def is_terminal(self, state: str) -> bool:
        return state in self.terminal

    def initial_state(self, facts: Mapping[str, bool] | None = None) -> Start[S]:
        """How a new instance starts: the first :class:`Start` whose condition holds."""
        for start in self.initial:
            if start.when is None or (facts is not None and facts.get(start.when, False)):
                return start
        raise AssertionError("unreachable: the last start has no condition")  # pragma: no cover

    def effect_names(self) -> frozenset[str]:
        """Every effect a row or a start of this machine performs."""
        return frozenset(e for r in self.rows for e in r.effects) | frozenset(
            e for s in self.initial for e in s.effects
        )

    def sources_of(self, trigger: str) -> frozenset[S]:
        """Every state from which ``trigger`` has a row (absorbing states excluded)."""
        return frozenset(s for row in self.rows if row.trigger == trigger for s in row.sources)

    def rows_for(self, state: str, trigger: str) -> tuple[Row[S, T], ...]:
        return tuple(r for r in self.rows if r.trigger == trigger and state in r.sources)

    def guards_needed(self, trigger: str) -> frozenset[str]:
        return frozenset(r.guard for r in self.rows if r.trigger == trigger and r.guard)

    def pairs(self) -> Iterable[tuple[S, T]]:
        """Every (state, trigger) pair, states then triggers in declaration order."""
        for state in self.states:
            for trigger in self.triggers:
                yield state, trigger


class _NoFacts:
    """Stands for "no facts given": naming any guard is an error, not False."""

    def __init__(self, machine: str) -> None:
        self.machine = machine

    def __getitem__(self, guard: str) -> bool:
        raise KeyError(f"{self.machine}: guard '{guard}' needs a fact, none given")
