"""Flows and chains: several jobs submitted together in one step, each waiting on others.

A **flow** is a parent and its children (BullMQ's FlowProducer): the children are queued
at once, the parent waits (``waiting``) until they are done as its policy says, then runs
and sees their outcomes in ``ctx.dependencies``; cancelling the parent cancels its unfinished
children in the same step. A **chain** is steps ``a -> b -> c`` (Celery's chain): each waits
on the one before and sees its result. Both are one script call: either every job is
written or, on bad input (an unknown dependency, a cycle, a mixed queue), none is
(:class:`~jobvisor.adapters.errors.BadInput`). Each step is built and checked like a plain
submit (:func:`~supervisor.client_specs.build_spec`: its type's defaults, the same refusals),
a refusal naming the step (``parent``, ``children[1]``, ``steps[0]``). The CLI's ``flow`` and
``chain`` (:mod:`supervisor.cli_flows`) and the HTTP API's ``/flows`` and ``/chains``
(:mod:`supervisor.web.flows`) build through the same functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.flows import FlowJob
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import Store, SyncStore

__all__ = ["Step", "FlowIds", "FlowSubmits", "AsyncFlowSubmits", "flow_jobs", "chain_jobs", "flow_steps",
           "chain_steps", "step_names", "named", "step_of"]


@dataclass(frozen=True)
class Step:
    """One job of a flow or chain: its type, input and submit options (as ``submit`` takes)."""

    type: str
    input: Any = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowIds:
    """The ids a flow made: its parent's and its children's, in the order given."""

    parent: str
    children: list[str]


def step_of(value: Step | tuple[str, Any] | str) -> Step:
    """A :class:`Step` from a step, a ``(type, input)`` pair or a bare type name."""
    if isinstance(value, Step):
        return value
    if isinstance(value, str):
        return Step(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return Step(value[0], value[1])
    raise BadInput(f"step: {value!r} is not a Step, a (type, input) pair or a type name")


def _with_policy(step: Step, policy: str) -> Step:
    if "on_dependency_failure" in step.options:  # one policy for the whole flow or chain
        raise BadInput("on_dependency_failure: the flow's or chain's own, not a step's")
    return Step(step.type, step.input, {**step.options, "on_dependency_failure": policy})


def flow_steps(parent: Step, children: Sequence[Step], policy: str) -> list[Step]:
    """The parent (with the flow's policy), then its children."""
    if not children:
        raise BadInput("children: a flow needs at least one child")
    return [_with_policy(parent, policy), *children]


def chain_steps(steps: Sequence[Step], policy: str) -> list[Step]:
    """The steps, each after the first with the chain's policy."""
    if not steps:
        raise BadInput("steps: a chain needs at least one step")
    return [steps[0], *(_with_policy(s, policy) for s in steps[1:])]


def step_names(kind: str, count: int) -> list[str]:
    """How a refusal names each step: ``parent``, ``children[0]``... for a flow (``kind``
    ``"flow"``), ``steps[0]``... for a chain."""
    if kind == "flow":
        return ["parent", *(f"children[{i}]" for i in range(count - 1))]
    return [f"steps[{i}]" for i in range(count)]


@contextmanager
def named(name: str) -> Iterator[None]:
    """A :class:`BadInput` raised inside names the step it is about: ``children[1]: type: ...``."""
    try:
        yield
    except BadInput as exc:
        raise BadInput(f"{name}: {exc}") from None


def flow_jobs(specs: Sequence[JobSpec]) -> list[FlowJob]:
    """A flow of ``specs`` (the parent first): the parent waits on every child, each names it."""
    return [FlowJob(spec=specs[0], after=tuple(range(1, len(specs)))),
            *(FlowJob(spec=spec, parent=0) for spec in specs[1:])]


def chain_jobs(specs: Sequence[JobSpec]) -> list[FlowJob]:
    """A chain of ``specs``: each waits on the one before."""
    return [FlowJob(spec=spec, after=() if i == 0 else (i - 1,)) for i, spec in enumerate(specs)]


Steps = Sequence[Step | tuple[str, Any] | str]


class FlowSubmits:
    """``flow`` and ``chain`` for :class:`~supervisor.client.Client` (its ``build_step`` and store)."""

    store: SyncStore
    build_step: Callable[[Step], JobSpec]

    def flow(self, parent: Step | tuple[str, Any] | str, children: Steps, *,
             on_dependency_failure: str = "fail") -> FlowIds:
        """Submit a parent and its children in one step; the parent runs once they are done
        (as ``on_dependency_failure`` says) and sees their outcomes in ``ctx.dependencies``."""
        steps = flow_steps(step_of(parent), [step_of(c) for c in children], on_dependency_failure)
        ids = [c.id for c in self.store.submit_flow(flow_jobs(self._build(steps, "flow")))]
        return FlowIds(ids[0], ids[1:])

    def chain(self, steps: Steps, *, on_dependency_failure: str = "fail") -> list[str]:
        """Submit steps that run one after the other, each seeing the one before in ``ctx.dependencies``."""
        plain = chain_steps([step_of(s) for s in steps], on_dependency_failure)
        return [c.id for c in self.store.submit_flow(chain_jobs(self._build(plain, "chain")))]

    def _build(self, steps: Sequence[Step], kind: str) -> list[JobSpec]:
        specs = []
        for name, step in zip(step_names(kind, len(steps)), steps, strict=True):
            with named(name):
                specs.append(self.build_step(step))
        return specs


class AsyncFlowSubmits:
    """``flow`` and ``chain`` for :class:`~supervisor.client.AsyncClient`."""

    store: Store
    build_step: Callable[[Step], Awaitable[JobSpec]]

    async def flow(self, parent: Step | tuple[str, Any] | str, children: Steps, *,
                   on_dependency_failure: str = "fail") -> FlowIds:
        """As :meth:`FlowSubmits.flow`."""
        steps = flow_steps(step_of(parent), [step_of(c) for c in children], on_dependency_failure)
        specs = await self._build(steps, "flow")
        ids = [c.id for c in await self.store.submit_flow(flow_jobs(specs))]
        return FlowIds(ids[0], ids[1:])

    async def chain(self, steps: Steps, *, on_dependency_failure: str = "fail") -> list[str]:
        """As :meth:`FlowSubmits.chain`."""
        plain = chain_steps([step_of(s) for s in steps], on_dependency_failure)
        specs = await self._build(plain, "chain")
        return [c.id for c in await self.store.submit_flow(chain_jobs(specs))]

    async def _build(self, steps: Sequence[Step], kind: str) -> list[JobSpec]:
        specs = []
        for name, step in zip(step_names(kind, len(steps)), steps, strict=True):
            with named(name):
                specs.append(await self.build_step(step))
        return specs
