"""jobvisor's state machines, pure and embeddable.

Each machine is one table (``JOB``, ``PHASE``, ``BATCH``, ``WEBHOOK``, ``SCHEDULE``) from
which everything else is derived:

* ``JOB.apply(state, trigger, facts)``: the fast pure form, returning an
  :class:`Outcome` (moved, absorbed, blocked) or raising
  :class:`InvalidTransition`;
* ``JobMachine().attach(model)``: the embeddable ``transitions`` form;
* ``to_mermaid(JOB)``: the diagram.

This package imports nothing of the runtime (no trio, redis, httpx), so it
can be embedded in any service. The embeddable classes are loaded on first use
(a module ``__getattr__``), so reading the tables does not import ``transitions``.
"""

from typing import TYPE_CHECKING, Any

from ._table import InvalidTransition, Kind, MachineDef, Outcome, Row
from .batch import BATCH, BatchState, BatchTrigger
from .job import JOB, JobState, JobTrigger
from .mermaid import to_mermaid
from .models import BatchModel, DeliveryModel, JobModel
from .phase import PHASE, PhaseState, PhaseTrigger
from .schedule import SCHEDULE
from .webhook import WEBHOOK, DeliveryState, DeliveryTrigger

if TYPE_CHECKING:
    from .embed import BatchMachine, EmbeddedMachine, JobMachine, PhaseMachine, WebhookMachine

_EMBEDDED = frozenset({"BatchMachine", "EmbeddedMachine", "JobMachine", "PhaseMachine", "WebhookMachine"})


def __getattr__(name: str) -> Any:
    """The embeddable ``transitions`` forms, imported when first asked for."""
    if name in _EMBEDDED:
        from . import embed

        return getattr(embed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _EMBEDDED)


MACHINES: dict[str, MachineDef] = {  # type: ignore[type-arg]
    "job": JOB,
    "phase": PHASE,
    "batch": BATCH,
    "webhook": WEBHOOK,
    "schedule": SCHEDULE,
}
"""Every machine by the name the CLI and the diagrams use."""

__all__ = [
    "BATCH",
    "JOB",
    "MACHINES",
    "PHASE",
    "WEBHOOK",
    "BatchMachine",
    "BatchModel",
    "BatchState",
    "BatchTrigger",
    "DeliveryModel",
    "DeliveryState",
    "DeliveryTrigger",
    "EmbeddedMachine",
    "InvalidTransition",
    "JobMachine",
    "JobModel",
    "JobState",
    "JobTrigger",
    "Kind",
    "MachineDef",
    "Outcome",
    "PhaseMachine",
    "PhaseState",
    "PhaseTrigger",
    "Row",
    "WebhookMachine",
    "to_mermaid",
]
