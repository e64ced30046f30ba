"""The embeddable form: any machine's table as a ``transitions`` machine.

Attach it to your own model object and call triggers on it::

    from jobvisor.machines import JobMachine, JobModel

    job = JobMachine().attach(JobModel(max_retries=2))
    job.claim()           # True: queued -> active
    job.fail()            # True: active -> scheduled, retry_count == 1

Rules, the same as the pure form's (``MachineDef.apply``):

* a trigger that moves returns ``True``; its row's effects are performed, in
  order, by calling ``model.do_<effect>()`` for each effect the model defines
  (``model.do_<effect>(trigger)`` when the method takes an argument: the
  attempt outcome and the reason depend on the trigger);
* a trigger in a terminal state that no row leaves is *absorbed*: it returns
  ``False``, fires no callback, changes nothing, and says so in the log
  (logger ``machines.embed``, level INFO);
* a guarded trigger whose guards are all false returns ``False`` (blocked);
* an impossible trigger raises :class:`InvalidTransition` naming the
  machine, state and trigger, and leaves the model untouched.

Guards are read from the model by name (``retries_left``, ``has_validator``,
``ready``...) as attributes or properties. The ``*Model`` classes in
``machines.models`` provide them; your own model can too.
"""

from __future__ import annotations

import inspect
import logging
from functools import partial
from typing import Any

from transitions import Event, Machine

from ._table import InvalidTransition, MachineDef
from .batch import BATCH
from .job import JOB
from .phase import PHASE
from .webhook import WEBHOOK

__all__ = ["EmbeddedMachine", "JobMachine", "PhaseMachine", "BatchMachine", "WebhookMachine"]

log = logging.getLogger("jobvisor.machines.embed")  # by name: the same under any import path


class _GuardedEvent(Event):
    """A ``transitions`` event that raises :class:`InvalidTransition` instead of MachineError."""

    def _is_valid_source(self, state: Any) -> bool:
        if state.name not in self.transitions:
            raise InvalidTransition(self.machine.definition_name, state.name, self.name)
        return True


class _Machine(Machine):
    event_cls = _GuardedEvent
    definition_name = "machine"


class EmbeddedMachine:
    """A ``transitions.Machine`` built from a :class:`MachineDef`.

    One machine serves any number of models (``attach`` adds one). It is
    configured from the table alone: ``auto_transitions=False`` (no
    ``to_<state>`` shortcuts around the guards) and one absorbing row per
    (terminal state, trigger) pair that no row leaves. By default an
    attribute your model already has is never overwritten by a trigger
    method; ``model_override=True`` (transitions' typed-model mode) instead
    binds triggers only to the placeholder methods your model declares.
    """

    def __init__(
        self, definition: MachineDef[Any, Any], *, model_attribute: str = "state", model_override: bool = False
    ) -> None:
        self.definition = definition
        self.model_attribute = model_attribute
        self._machine = _Machine(
            model=None,
            states=[s.value for s in definition.states],
            initial=definition.initial_state().state.value,
            auto_transitions=False,
            send_event=True,
            model_attribute=model_attribute,
            model_override=model_override,
            name=definition.name,
        )
        self._machine.definition_name = definition.name
        for row in definition.rows:
            self._machine.add_transition(
                row.trigger.value,
                [s.value for s in row.sources],
                None if row.dest is None else row.dest.value,
                conditions=[partial(_guard, row.guard)] if row.guard else None,
                after=[partial(_perform, row.effects)] if row.effects else None,
            )
        for state in definition.terminal:
            for trigger in definition.triggers:
                if not definition.rows_for(state, trigger):
                    self._machine.add_transition(
                        trigger.value,
                        state.value,
                        None,
                        conditions=[partial(_absorb, definition.name)],
                    )

    def attach(self, model: Any, initial: str | None = None) -> Any:
        """Bind the machine's triggers to ``model`` and return it.

        The starting state is ``initial``, else the model's current state
        attribute when it has one, else the machine's first initial state.
        """
        start = initial or getattr(model, self.model_attribute, None) or self._machine.initial
        self._machine.add_model(model, initial=str(start))
        return model

    def detach(self, model: Any) -> None:
        self._machine.remove_model(model)

    def fire(self, model: Any, trigger: str) -> bool:
        """Call trigger ``trigger`` on ``model`` by name."""
        return bool(self._machine.events[str(trigger)].trigger(model))

    def state_of(self, model: Any) -> str:
        return str(getattr(model, self.model_attribute))


def _guard(name: str, event_data: Any) -> bool:
    return bool(getattr(event_data.model, name))


def _absorb(machine: str, event_data: Any) -> bool:
    log.info(
        "%s: '%s' absorbed in terminal state '%s' (no change)",
        machine,
        event_data.event.name,
        event_data.state.name,
    )
    return False


def _perform(effects: tuple[str, ...], event_data: Any) -> None:
    model = event_data.model
    for effect in effects:
        method = getattr(model, f"do_{effect}", None)
        if method is None:
            continue
        if _takes_trigger(method):
            method(event_data.event.name)
        else:
            method()


def _takes_trigger(method: Any) -> bool:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a builtin or a C callable: called with no argument
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def JobMachine() -> EmbeddedMachine:  # noqa: N802 - reads as a class at call sites
    """The job machine, embeddable (see module docstring)."""
    return EmbeddedMachine(JOB)


def PhaseMachine() -> EmbeddedMachine:  # noqa: N802
    return EmbeddedMachine(PHASE)


def BatchMachine() -> EmbeddedMachine:  # noqa: N802
    return EmbeddedMachine(BATCH)


def WebhookMachine() -> EmbeddedMachine:  # noqa: N802
    return EmbeddedMachine(WEBHOOK)
