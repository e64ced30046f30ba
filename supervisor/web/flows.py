"""Flows and chains in the JSON API: ``POST /api/v1/flows`` and ``POST /api/v1/chains``.

Each job of a flow or chain is a submit body (``POST /api/v1/jobs``'s: ``type``, ``input``
and the submit options), built by :func:`~supervisor.client.build_spec` exactly as a submit
is, then the whole flow is one store step (:mod:`supervisor.flows`): a refusal is 400 naming
the job (``parent``, ``children[1]``, ``steps[0]``) and the field, and nothing is written.
The answer is the ids (201), the parent's and each child's, or each step's, in the order
given. Both need the ``admin`` role.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobvisor.adapters.errors import BadInput
from jobvisor.adapters.limits import MAX_INPUT_DEPTH, input_depth_exceeded

from ..client import build_spec
from ..flows import Step, chain_jobs, chain_steps, flow_jobs, flow_steps, named, step_names
from .api import json_response, read_json
from .settings import Role
from .state import WebState, authorise, state_of

__all__ = ["FlowCreated", "ChainCreated", "RECORDS", "flow_routes", "flow_paths", "flow_components"]

_POLICIES = ("fail", "ignore", "continue")
_NOT_OPTIONS = frozenset({"allowed_hosts", "destinations"})  # build_spec's own keywords, never a body's


class FlowCreated(msgspec.Struct, kw_only=True, frozen=True):
    parent: str
    children: list[str]


class ChainCreated(msgspec.Struct, kw_only=True, frozen=True):
    steps: list[str]


RECORDS: tuple[Any, ...] = (FlowCreated, ChainCreated)
"""The answers of these routes, for the OpenAPI document."""


def _step(body: Any, name: str) -> Step:
    """One job of the body: a submit body (an object with ``type``), as a :class:`Step`."""
    if not isinstance(body, dict):
        raise BadInput(f"{name}: must be a JSON object (a submit body)")
    options = dict(body)
    for option in options:
        if option in _NOT_OPTIONS:
            raise BadInput(f"{name}: {option}: not an option")
    job_type = options.pop("type", None)
    if not isinstance(job_type, str):
        raise BadInput(f"{name}: type: required, the name of a job type")
    value = options.pop("input", None)
    if input_depth_exceeded(value):
        raise BadInput(f"{name}: input: nested more than {MAX_INPUT_DEPTH} levels deep")
    return Step(job_type, value, options)


def _policy(body: dict[str, Any]) -> str:
    policy = body.get("on_dependency_failure", "fail")
    if policy not in _POLICIES:
        raise BadInput(f"on_dependency_failure: must be one of {', '.join(_POLICIES)}")
    return str(policy)


def _list(body: dict[str, Any], field: str) -> list[Any]:
    items = body.get(field)
    if not isinstance(items, list) or not items:
        raise BadInput(f"{field}: required, a non-empty list of submit bodies")
    return items


def _known(body: dict[str, Any], fields: set[str]) -> None:
    unknown = set(body) - fields
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: not a field of this body")


async def _build(state: WebState, steps: list[Step], kind: str) -> list[Any]:
    specs = []
    for name, step in zip(step_names(kind, len(steps)), steps, strict=True):
        with named(name):
            specs.append(build_spec(await state.submit_types(step.type), step.type, step.input,
                                    destinations=state.destinations, **step.options))
    return specs


async def submit_flow(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    state = state_of(request)
    body = await read_json(request)
    _known(body, {"parent", "children", "on_dependency_failure"})
    if "parent" not in body:
        raise BadInput("parent: required, a submit body")
    names = step_names("flow", 1 + len(_list(body, "children")))
    parent = _step(body["parent"], names[0])
    children = [_step(child, name) for child, name in zip(body["children"], names[1:], strict=True)]
    specs = await _build(state, flow_steps(parent, children, _policy(body)), "flow")
    ids = [c.id for c in await state.store.submit_flow(flow_jobs(specs))]
    return json_response(FlowCreated(parent=ids[0], children=ids[1:]), 201)


async def submit_chain(request: Request) -> Response:
    authorise(request, Role.ADMIN)
    state = state_of(request)
    body = await read_json(request)
    _known(body, {"steps", "on_dependency_failure"})
    items = _list(body, "steps")
    steps = [_step(item, name) for item, name in zip(items, step_names("chain", len(items)), strict=True)]
    specs = await _build(state, chain_steps(steps, _policy(body)), "chain")
    ids = [c.id for c in await state.store.submit_flow(chain_jobs(specs))]
    return json_response(ChainCreated(steps=ids), 201)


def flow_routes() -> list[Route]:
    return [
        Route("/api/v1/flows", submit_flow, methods=["POST"]),
        Route("/api/v1/chains", submit_chain, methods=["POST"]),
    ]


def flow_components(ref: Any, max_jobs: int) -> dict[str, Any]:
    """The request bodies of these routes (each job a ``Submit``), for the OpenAPI document."""
    policy = {"type": "string", "enum": list(_POLICIES), "default": "fail"}
    jobs = {"type": "array", "minItems": 1, "maxItems": max_jobs, "items": ref("Submit")}
    return {
        "FlowSubmit": {"type": "object", "required": ["parent", "children"], "additionalProperties": False,
                       "properties": {"parent": ref("Submit"), "children": {**jobs, "maxItems": max_jobs - 1},
                                      "on_dependency_failure": policy}},
        "ChainSubmit": {"type": "object", "required": ["steps"], "additionalProperties": False,
                        "properties": {"steps": jobs, "on_dependency_failure": policy}},
    }


def flow_paths(ref: Any, op: Any, json: Any) -> dict[str, Any]:
    """These routes in the OpenAPI document (given the document's own helpers)."""
    return {
        "/api/v1/flows": {"post": op("submit a parent and its children in one step (the parent waits for them)",
                                     {"201": json(ref("FlowCreated"), "created")}, errors=(400, 403),
                                     body="FlowSubmit")},
        "/api/v1/chains": {"post": op("submit steps that run one after the other in one step (each waits on "
                                      "the one before)", {"201": json(ref("ChainCreated"), "created")},
                                      errors=(400, 403), body="ChainSubmit")},
    }
