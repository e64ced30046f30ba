"""The API's vocabulary and its OpenAPI document, derived from the records themselves.

Response bodies are the store's records (:class:`~adapters.records.JobView` without its raw
hash, ``DeliveryView``, ``BatchView``, ``WorkerView``, ``Event``) and the few structs below;
their JSON Schemas come from msgspec, so the document cannot drift from what is encoded. The
submit body's schema is :class:`~adapters.records.JobSpec`'s (the limits the store enforces),
less the fields a type's registration decides (``phases``, ``has_validator``); a flow's and a
chain's bodies (:mod:`supervisor.web.flows`) are lists of such submit bodies.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobvisor.adapters.listing import JobPage, JobSummary
from jobvisor.adapters.records import BatchSpec, BatchView, DeliveryView, Event, JobSpec, JobView, WorkerView

__all__ = ["SubmitResult", "TriggerResult", "AddResult", "QueueInfo", "TypeWaiting", "Report", "Diagram",
           "Health", "openapi_document", "BatchCreated", "JobHistory"]


class SubmitResult(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    created: bool  # false: an existing job had this idempotency key
    state: str


class BatchCreated(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    state: str


class TriggerResult(msgspec.Struct, kw_only=True, frozen=True, rename={"from_": "from"}):
    id: str
    outcome: str
    from_: str
    to: str
    state: str


class AddResult(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    added: int


class TypeWaiting(msgspec.Struct, kw_only=True, frozen=True):
    queued: int
    daemons: int  # live daemons serving the type


class QueueInfo(msgspec.Struct, kw_only=True, frozen=True):
    queue: str
    queued: int
    scheduled: int
    active: int
    validating: int
    finished: int
    outbox: int
    unserved: int
    untyped: int
    types: dict[str, TypeWaiting]
    waiting: int = 0  # jobs waiting on their dependencies
    finished_per_minute: list[int]  # the last minutes, oldest first, the current one last
    paused: bool = False  # claims stop while an operator has paused the queue
    paused_since: float | None = None


class Report(msgspec.Struct, kw_only=True, frozen=True):
    filed: int
    unfiled: int
    categories: dict[str, int]
    problems: dict[str, int]
    counts: dict[str, dict[str, int]]


class Diagram(msgspec.Struct, kw_only=True, frozen=True):
    machine: str
    mermaid: str


class Health(msgspec.Struct, kw_only=True, frozen=True):
    status: str


class JobHistory(msgspec.Struct, kw_only=True, frozen=True):
    events: list[Event]
    complete: bool  # false: the scan stopped at its bound before the stream's end


_REF = "#/components/schemas/{name}"
_RECORDS: tuple[Any, ...] = (JobSpec, BatchSpec, JobView, DeliveryView, BatchView, WorkerView, Event, JobPage,
                             JobSummary, SubmitResult, BatchCreated, TriggerResult, AddResult, QueueInfo, Report,
                             Diagram, Health, JobHistory)


def _ecma(node: Any) -> Any:
    """Python's end-of-text ``\\Z`` in msgspec's patterns, as ECMA-262's ``$``."""
    if isinstance(node, dict):
        return {k: (v.replace("\\Z", "$") if k == "pattern" and isinstance(v, str) else _ecma(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_ecma(v) for v in node]
    return node


def _components() -> dict[str, Any]:
    from jobvisor.adapters.flows import MAX_FLOW_JOBS

    # the operator's and the flows' routes import the API, which imports this module
    from .flows import RECORDS as FLOW_RECORDS
    from .flows import flow_components
    from .ops import RECORDS

    _, found = msgspec.json.schema_components((*_RECORDS, *RECORDS, *FLOW_RECORDS), ref_template=_REF)
    components: dict[str, Any] = _ecma(found)
    job = components["JobView"]
    job["properties"].pop("raw", None)
    job["properties"]["deliveries"] = {"type": "array", "items": {"$ref": _REF.format(name="DeliveryView")}}
    job["required"] = [*job.get("required", []), "deliveries"]
    job["title"] = "Job"
    submit = components.pop("JobSpec")
    for name in ("phases", "has_validator"):
        submit["properties"].pop(name)
    submit["title"] = "Submit"
    components["Submit"] = submit
    batch = components.pop("BatchSpec")
    batch["title"] = "BatchCreate"
    components["BatchCreate"] = batch
    components["Retry"] = {"type": "object", "properties": {"from_start": {"type": "boolean", "default": False}},
                           "additionalProperties": False}
    components["BatchAdd"] = {"type": "object", "required": ["jobs"], "additionalProperties": False,
                              "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": 1000,
                                                      "items": {"type": "string"}}}}
    components.update(flow_components(_ref, MAX_FLOW_JOBS))
    components["Problem"] = {
        "type": "object", "required": ["type", "title", "status", "detail"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "field": {"type": "string"}, "state": {"type": "string"}},
    }
    return components


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PROBLEMS = {400: "bad input (the field is named; nothing was written)", 401: "no or unknown token",
             403: "the token's role may not do this", 404: "not found", 409: "absorbed or refused",
             503: "Redis is unreachable"}


def _op(summary: str, ok: dict[str, dict[str, Any]], *, errors: tuple[int, ...], params: list[Any] | None = None,
        body: str | None = None, optional_body: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = dict(ok)
    for status in (401, *errors, 503):
        responses[str(status)] = {"description": _PROBLEMS[status],
                                  "content": {"application/problem+json": {"schema": _ref("Problem")}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses, "security": [{"bearer": []}]}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": not optional_body,
                             "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document served at ``/api/v1/openapi.json``."""
    job_id, batch_id = _path("job_id", "a job id (<queue>.<id>)"), _path("batch_id", "a batch id (<queue>.<id>)")
    queue = _query("queue", {"type": "string"}, "a queue name (default: default)")
    listing = [queue,
               _query("state", {"type": "string"}, "a job state"),
               _query("type", {"type": "string"}, "a job type"),
               _query("created_after", {"type": "number"}, "epoch seconds (inclusive)"),
               _query("created_before", {"type": "number"}, "epoch seconds (exclusive)"),
               _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
               _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "jobs per page (default 50)")]
    trigger_ok = {"200": _json(_ref("TriggerResult"), "the transition happened")}
    paths = {
        "/api/v1/jobs": {
            "post": _op("submit a job", {"201": _json(_ref("SubmitResult"), "created"),
                                         "200": _json(_ref("SubmitResult"), "an existing job (idempotency key)")},
                        errors=(400, 403, 404, 409), body="Submit"),
            "get": _op("list and search jobs", {"200": _json(_ref("JobPage"))}, errors=(400,), params=listing),
        },
        "/api/v1/jobs/{job_id}": {"get": _op("a job with its attempts, phases and deliveries",
                                             {"200": _json(_ref("JobView"))}, errors=(404,), params=[job_id])},
        "/api/v1/jobs/{job_id}/events": {"get": _op("a job's event history", {"200": _json(_ref("JobHistory"))},
                                                    errors=(404,), params=[job_id])},
        "/api/v1/jobs/{job_id}/cancel": {"post": _op("cancel a job", trigger_ok, errors=(403, 404, 409),
                                                     params=[job_id])},
        "/api/v1/jobs/{job_id}/retry": {"post": _op("retry a finished job", trigger_ok, errors=(400, 403, 404, 409),
                                                    params=[job_id], body="Retry", optional_body=True)},
        "/api/v1/batches": {
            "post": _op("create a batch", {"201": _json(_ref("BatchCreated"), "created")}, errors=(400, 403),
                        body="BatchCreate"),
            "get": _op("a queue's live batches", {"200": _json({"type": "array", "items": _ref("BatchView")})},
                       errors=(400,), params=[queue]),
        },
        "/api/v1/batches/{batch_id}": {"get": _op("a batch", {"200": _json(_ref("BatchView"))}, errors=(404,),
                                                  params=[batch_id])},
        "/api/v1/batches/{batch_id}/jobs": {"post": _op("add jobs to a batch", {"200": _json(_ref("AddResult"))},
                                                        errors=(400, 403, 404, 409), params=[batch_id],
                                                        body="BatchAdd")},
        "/api/v1/batches/{batch_id}/close": {"post": _op("close a batch", trigger_ok, errors=(403, 404, 409),
                                                         params=[batch_id])},
        "/api/v1/batches/{batch_id}/cancel": {"post": _op("cancel a batch", trigger_ok, errors=(403, 404, 409),
                                                          params=[batch_id])},
        "/api/v1/deliveries/{delivery_id}/redeliver": {
            "post": _op("re-send a dead webhook delivery (same webhook-id, a fresh attempt budget)", trigger_ok,
                        errors=(403, 404, 409),
                        params=[_path("delivery_id", "a delivery id (<job or batch id>~<event>~<epoch>)")])},
        "/api/v1/queues": {"get": _op("queues with their jobs per state",
                                      {"200": _json({"type": "array", "items": _ref("QueueInfo")})}, errors=())},
        "/api/v1/daemons": {"get": _op("daemons and their worker slots",
                                       {"200": _json({"type": "array", "items": _ref("WorkerView")})}, errors=(),
                                       params=[_query("all", {"type": "boolean"}, "also stopped and lost ones")])},
        "/api/v1/report": {"get": _op("the evaluator's filing", {"200": _json(_ref("Report"))}, errors=(400,),
                                      params=[queue])},
        "/api/v1/machines/{machine}": {"get": _op("a machine's Mermaid diagram", {"200": _json(_ref("Diagram"))},
                                                  errors=(404,),
                                                  params=[_path("machine", "job, phase, batch, webhook")])},
        "/api/v1/events": {"get": {
            "summary": "live events as Server-Sent Events (id: resume position; data: an Event)",
            "security": [{"bearer": []}],
            "x-streaming": True,
            "parameters": [queue, _query("job", {"type": "string"}, "only this job's events"),
                           _query("batch", {"type": "string"}, "only this batch's and its members' events"),
                           {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                            "description": "resume after this position (the id of the last event received)"}],
            "responses": {"200": {"description": "text/event-stream of Event",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
        }},
        "/api/v1/health": {"get": {"summary": "whether Redis answers", "security": [],
                                   "responses": {"200": _json(_ref("Health")),
                                                 "503": {"description": "Redis is unreachable",
                                                         "content": {"application/problem+json": {
                                                             "schema": _ref("Problem")}}}}}},
    }
    from .flows import flow_paths
    from .ops import ops_paths

    paths.update(ops_paths(_ref, _op, _json, _path))
    paths.update(flow_paths(_ref, _op, _json))
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobvisor", "version": "1", "description": "Jobs, batches and their events."},
        "paths": paths,
        "components": {"schemas": _components(),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
