"""``jobvisor flow`` and ``jobvisor chain``: several jobs submitted in one step, each waiting on others.

A step on the command line is ``TYPE`` or ``TYPE=JSON`` (the job's input; a type name never
holds ``=``, so the first one splits). ``flow --parent STEP --child STEP...`` submits a
parent that waits for its children; ``chain STEP STEP...`` submits steps that each wait on
the one before. Every step is read and built first, as ``submit`` builds one job (its type's
defaults, published by daemons or read from ``--app``), then the whole flow is one store step
(:mod:`supervisor.flows`): a bad step, a bad policy or steps of different queues is one line
naming it (``children[1]: type: unknown job type ...``), exit 2, and nothing is written.

Output: the ids, one a line (the parent first, then the children in the order given; a
chain's steps in order), so ``read -r P C1 C2 < <(jobvisor flow ...)`` works; ``--json``:
``{"parent": id, "children": [...]}`` for a flow, ``{"steps": [...]}`` for a chain.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.keys import check_queue_name
from jobvisor.adapters.records import JobSpec
from jobvisor.adapters.store import SyncStore

from .cli_commands import load_app, open_store, submit_types
from .cli_input import decode_input
from .cli_parser import EXIT_OK
from .cli_render import emit
from .flows import Step, chain_jobs, chain_steps, flow_jobs, flow_steps, named, step_names

__all__ = ["cmd_flow", "cmd_chain", "parse_step"]


def parse_step(text: str, name: str) -> Step:
    """``TYPE`` or ``TYPE=JSON`` as a :class:`Step`; bad JSON is :class:`BadInput` naming ``name``."""
    job_type, sep, data = text.partition("=")
    value = decode_input(data.encode(), f"{name}: input") if sep else None
    return Step(job_type, value)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Every step's options: ``--queue``, checked before anything connects."""
    if args.queue is None:
        return {}
    try:
        return {"queue": check_queue_name(args.queue)}
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _build(args: argparse.Namespace, store: SyncStore, steps: Sequence[Step], kind: str) -> list[JobSpec]:
    """Each step built as ``submit`` builds a job; a refusal names the step."""
    from .client import build_spec, submitter_policy

    app = load_app(args.app) if args.app is not None else None
    types = submit_types(store, app)
    policy = submitter_policy()
    specs = []
    for name, step in zip(step_names(kind, len(steps)), steps, strict=True):
        with named(name):
            specs.append(build_spec(types, step.type, step.input, destinations=policy, **step.options))
    return specs


def cmd_flow(args: argparse.Namespace) -> int:
    """Submit a parent and its children; print the parent's id, then each child's."""
    names = step_names("flow", 1 + len(args.child))
    parent = parse_step(args.parent, names[0])
    children = [Step(s.type, s.input, _options(args))
                for s in (parse_step(text, name) for text, name in zip(args.child, names[1:], strict=True))]
    steps = flow_steps(Step(parent.type, parent.input, _options(args)), children, args.on_dependency_failure)
    with open_store(args) as store:
        ids = [c.id for c in store.submit_flow(flow_jobs(_build(args, store, steps, "flow")))]
    emit(args, {"parent": ids[0], "children": ids[1:]}, "\n".join(ids))
    return EXIT_OK


def cmd_chain(args: argparse.Namespace) -> int:
    """Submit steps that run one after the other; print their ids in order."""
    names = step_names("chain", len(args.steps))
    parsed = [parse_step(text, name) for text, name in zip(args.steps, names, strict=True)]
    steps = chain_steps([Step(s.type, s.input, _options(args)) for s in parsed], args.on_dependency_failure)
    with open_store(args) as store:
        ids = [c.id for c in store.submit_flow(chain_jobs(_build(args, store, steps, "chain")))]
    emit(args, {"steps": ids}, "\n".join(ids))
    return EXIT_OK
