"""The store and the embeddable models are one machine: same states, same effects, same fields.

Each test runs on the session's redis-server and on the embedded store (``target``), calling
the library's one function directly with ops (so every reply's ``effects`` is read as the Lua
wrote it).

* every (state, trigger) pair of the job, batch and webhook machines, reached by the same
  triggers on both forms: the store's reply names exactly the effects the model performed, in
  order, and the record's state, fields and index agree (a job's attempts, retries, epoch,
  lease, finish, reason, attempt outcomes; a batch's closed, reason, finish, members,
  counters; a delivery's attempts). The pairs no op can drive are listed with why
  (``NOT_DRIVEN``), and a test checks every other pair is driven;
* the guards' facts: identical counter vectors give identical facts in Python and in the Lua;
* the unfenced ``trigger`` op refuses every trigger that needs a lease, writing nothing;
* the batch that drifted (an expected total, never closed, every member finished) is
  ``completed`` in both forms.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobvisor.adapters.keys import script_keys
from jobvisor.adapters.scripts import LuaLibrary
from jobvisor.machines import JOB, BatchModel, DeliveryModel, InvalidTransition, JobModel
from jobvisor.machines.batch import BATCH, batch_facts
from jobvisor.machines.embed import BatchMachine, JobMachine, WebhookMachine
from jobvisor.machines.job import JOB_EFFECTS, job_facts
from jobvisor.machines.webhook import WEBHOOK, webhook_facts
from tests.store_fixtures import Target, snapshot

Q = "fx"
LEASE_MS = 30_000


class Lua:
    """The library's function, called with a list of ops at a clock the test moves."""

    def __init__(self, target: Target) -> None:
        self.raw = target.raw()
        self.library = LuaLibrary()
        self.raw.execute_command("FUNCTION", "LOAD", "REPLACE", self.library.source)
        self.now = 1_750_000_000_000

    def __call__(self, op: dict[str, Any], queue: str = Q) -> dict[str, Any]:
        first, prefix = script_keys(queue)
        out = self.raw.execute_command("FCALL", self.library.function, 1, first, prefix, self.now,
                                       json.dumps([op]), 10_000)
        reply: dict[str, Any] = json.loads(out)[0]
        assert reply["kind"] != "error", reply
        return reply

    def job(self, job_id: str) -> dict[str, str]:
        first, prefix = script_keys(Q)
        return {k.decode(): v.decode() for k, v in self.raw.hgetall(f"{prefix}job:{job_id}").items()}


@pytest.fixture
def lua(target: Target) -> Iterator[Lua]:
    return Lua(target)


def recording(base: type) -> type:
    """``base`` with a ``do_<effect>`` for every effect of every machine, each listing the effect in
    ``performed`` (store-only ones included) before doing what ``base`` does."""

    def record(effect: str) -> Any:
        method = getattr(base, f"do_{effect}", None)
        if method is not None and len(inspect.signature(method).parameters) > 1:
            def with_trigger(self: Any, trigger: str) -> None:
                self.performed.append(effect)
                method(self, trigger)
            return with_trigger

        def plain(self: Any) -> None:
            self.performed.append(effect)
            if method is not None:
                method(self)
        return plain

    names = {*JOB_EFFECTS, *BATCH.effects_doc, *WEBHOOK.effects_doc}
    return type(f"Recording{base.__name__}", (base,), {f"do_{e}": record(e) for e in names})


Recording, RecordingBatch, RecordingDelivery = recording(JobModel), recording(BatchModel), recording(DeliveryModel)


class JobBoth:
    """One job in both forms, driven by the same triggers."""

    DEP = f"{Q}.D1"

    def __init__(self, lua: Lua, *, max_retries: int, has_validator: bool, dependent: bool = False) -> None:
        self.lua = lua
        self.machine = JobMachine()
        model = Recording(max_retries=max_retries, has_validator=has_validator)
        self.model = self.machine.attach(model, initial="waiting" if dependent else None)
        self.id = f"{Q}.J1"
        self.model.performed = []
        self.token = ""
        self.written = {"result": "", "error": ""}  # what store_result / record_error / clear_error left
        # D1, of a type the job's claims never name: the dependency whose finish fires deps_done
        # (completed) or dependency_failed (cancelled) on a dependent job (policy fail).
        _submit(lua, self.DEP, max_retries=0, type="dep")
        lua({"op": "submit", "id": self.id, "type": "t", "input": "null", "priority": 0,
             "max_retries": max_retries, "timeout_ms": 60_000, "backoff_ms": 1000, "backoff_max_ms": 1000,
             "has_validator": has_validator, "idem_ttl_ms": 1000,
             **({"deps": [self.DEP], "dep_policy": "fail"} if dependent else {})})

    def finish_dependency(self, trigger: str) -> dict[str, Any]:
        """D1 completes (``deps_done``) or is cancelled (``dependency_failed``); the reply names D1's
        row's effects, then those of the move it caused on the dependent."""
        lua = self.lua
        if trigger == "deps_done":
            dep = lua({"op": "claim", "n": 1, "nonce": f"d{lua.now}", "lease_ms": LEASE_MS, "worker": "w",
                       "types": ["dep"]})["jobs"][0]
            return lua({"op": "report", "id": self.DEP, "token": dep["token"], "trigger": "complete", "jitter": 0.5})
        return lua({"op": "trigger", "id": self.DEP, "trigger": "cancel", "jitter": 0.5})

    def fire(self, trigger: str) -> tuple[dict[str, Any], list[str]]:
        """The store's reply and the model's effects for one trigger."""
        self.model.performed = []
        with contextlib.suppress(InvalidTransition):
            self.machine.fire(self.model, trigger)
        lua, x = self.lua, {"id": self.id, "trigger": trigger, "jitter": 0.5}
        lua.now += 1
        if trigger == "claim":
            reply = lua({"op": "claim", "n": 1, "nonce": f"n{lua.now}", "lease_ms": LEASE_MS, "worker": "w",
                         "types": ["t"]})
            if reply.get("jobs"):
                self.token = reply["jobs"][0]["token"]
        elif trigger == "wake":
            lua.now += 10_000  # every backoff has run out
            reply = lua({"op": "wake", "n": 10})
        elif trigger in ("complete", "fail", "timeout", "release"):
            x |= {"result": json.dumps(f"{trigger} result"), "error": json.dumps(f"{trigger} error")}
            reply = lua({"op": "report", "token": self.token, **x})
        elif trigger == "lease_expired":
            lua.now += LEASE_MS + 1
            x["error"] = json.dumps("lease ran out")
            reply = lua({"op": "expire", "token": self.token, **x})
        elif trigger in ("deps_done", "dependency_failed"):
            reply = self.finish_dependency(trigger)
            own = (JOB.apply("active", "complete", {"has_validator": False, "retries_left": False})
                   if trigger == "deps_done" else JOB.apply("queued", "cancel"))
            return reply, [*own.effects, *self.model.performed]
        else:
            reply = lua({"op": "trigger", **x})
        for effect, field in (("store_result", "result"), ("record_error", "error")):
            if effect in self.model.performed and field in x:
                self.written[field] = x[field]
        if "clear_error" in self.model.performed:
            self.written["error"] = ""
        return reply, list(self.model.performed)

    def fields(self) -> dict[str, Any]:
        j = self.lua.job(self.id)
        attempts = int(j["attempts"])
        outcomes = [json.loads(j[f"atx:{n}"])["outcome"] for n in range(1, attempts + 1) if f"atx:{n}" in j]
        return {"state": j["state"], "attempts": attempts, "retry_count": int(j["retry_count"]),
                "epoch": int(j["epoch"]), "leased": j.get("lease_token", "") != "",
                "finished": j.get("finished_at", "") != "", "reason": j.get("reason", ""), "outcomes": outcomes,
                "backing_off": j["state"] == "scheduled" and int(j["due_at"]) > int(j["updated_at"]),
                "written": {"result": j.get("result", ""), "error": j.get("error", "")}}

    def model_fields(self) -> dict[str, Any]:
        m = self.model
        return {"state": m.state, "attempts": m.attempts, "retry_count": m.retry_count, "epoch": m.epoch,
                "leased": m.leased, "finished": m.finished, "reason": m.reason, "outcomes": m.outcomes,
                "backing_off": m.state == "scheduled",  # arm_backoff: due a backoff after now, not at once
                "written": self.written}




def _job(lua: Lua, retries: int, validator: bool) -> JobBoth:
    return JobBoth(lua, max_retries=retries, has_validator=validator)


def _dependent(lua: Lua, retries: int) -> JobBoth:
    """A job waiting on D1 (policy fail); its other states are reached by cancel and retry, so it
    stays a dependent of D1 (never released) in each."""
    return JobBoth(lua, max_retries=retries, has_validator=False, dependent=True)


def _submit(lua: Lua, job_id: str, *, max_retries: int, queue: str = Q, **extra: Any) -> dict[str, Any]:
    return lua({"op": "submit", "id": job_id, "type": "t", "input": "null", "priority": 0, "max_retries": max_retries,
                "timeout_ms": 60_000, "backoff_ms": 0, "backoff_max_ms": 0, "idem_ttl_ms": 1, **extra}, queue=queue)


class BatchBoth:
    """One batch of two members (no expected total) in both forms. The store runs ``finalize`` and
    ``settle`` in the step that made the batch ready, so the model tries them after the same steps;
    ``member_done`` is a member's own terminal transition (``complete``/``fail``), ``stuck`` the
    monitor's stuck finalize. A member's report names its job row's effects, then the batch's."""

    MEMBERS = 2

    def __init__(self, lua: Lua, threshold: int) -> None:
        self.lua, self.id = lua, f"{Q}.B1"
        self.machine = BatchMachine()
        self.model = self.machine.attach(RecordingBatch(threshold=threshold, closed=False))
        self.model.performed = []
        lua({"op": "batch_create", "id": self.id, "threshold": threshold})
        for n in range(self.MEMBERS):
            _submit(lua, f"{Q}.M{n}", max_retries=0, batch=self.id)
            self.model.add_members()
        self.queued = self.MEMBERS

    def _try(self, trigger: str) -> bool:
        with contextlib.suppress(InvalidTransition):
            return self.machine.fire(self.model, trigger)
        return False

    def _finalize(self) -> None:
        if self._try("finalize"):
            self._try("settle")

    def fire(self, trigger: str) -> tuple[dict[str, Any], list[str]]:
        self.model.performed = []
        lua, job_part = self.lua, ()
        lua.now += 1
        if trigger == "close":
            if self._try("close"):
                self._finalize()
            reply = lua({"op": "batch_close", "id": self.id})
        elif trigger in ("finalize", "stuck"):
            self.model.stuck = trigger == "stuck"
            self._finalize()
            self.model.stuck = False
            reply = lua({"op": "batch_finalize", "id": self.id, "stuck": trigger == "stuck"})
        elif trigger == "cancel":
            if self._try("cancel"):  # then each queued member's own cancel, counted, absorbed by the batch
                job_part = self.queued * JOB.apply("queued", "cancel").effects
                for _ in range(self.queued):
                    self.model.member_finished("cancelled")
                    self._try("member_done")
                self.queued = 0
            reply = lua({"op": "batch_cancel", "id": self.id})
        else:  # member_done: one member completes ("member_done"/"complete") or fails ("fail")
            report = "fail" if trigger == "fail" else "complete"
            self.model.member_finished("failed" if report == "fail" else "completed")
            if self._try("member_done"):
                self._finalize()
            claimed = lua({"op": "claim", "n": 1, "nonce": f"n{lua.now}", "lease_ms": LEASE_MS, "worker": "w"})
            member = claimed["jobs"][0]
            self.queued -= 1
            reply = lua({"op": "report", "id": member["id"], "token": member["token"], "trigger": report,
                         "jitter": 0.5})
            job_part = JOB.apply("active", report, {"retries_left": False, "has_validator": False}).effects
        performed = list(self.model.performed)
        return reply, [*job_part, *performed] if trigger != "cancel" else [*performed, *job_part]

    def fields(self) -> dict[str, Any]:
        raw = self.lua.raw
        b = {k.decode(): v.decode() for k, v in raw.hgetall(f"{script_keys(Q)[1]}batch:{self.id}").items()}
        indexed = raw.zscore(f"{script_keys(Q)[1]}batches", self.id) is not None
        members = [self.lua.job(f"{Q}.M{n}") for n in range(self.MEMBERS)]
        cancelled = sorted(j.get("reason", "") for j in members if j["state"] == "cancelled")
        return {"state": b["state"], "closed": b["closed"] == "1", "reason": b.get("reason", ""),
                "finished": b.get("finished_at", "") != "", "members": int(b["members"]), "indexed": indexed,
                "counters": (int(b["completed"]), int(b["failed"]), int(b["cancelled"])), "cancelled": cancelled}

    def model_fields(self) -> dict[str, Any]:
        m = self.model
        return {"state": m.state, "closed": m.closed, "reason": m.reason, "finished": m.ended,
                "members": m.members, "indexed": BATCH.index[m.state] == "batches",
                "counters": (m.completed, m.failed, m.cancelled), "cancelled": ["batch_cancelled"] * m.cancelled}


def _batch(lua: Lua, threshold: int) -> BatchBoth:
    return BatchBoth(lua, threshold)


class DeliveryBoth:
    """The delivery of one job's ``job.completed`` in both forms. ``send`` is the daemon's take of
    due deliveries (a ``sending`` one is not due until its send lease ends: nothing is sent);
    ``succeed``/``fail``/``reject``/``release`` are its report under the delivery's current token."""

    def __init__(self, lua: Lua, max_attempts: int) -> None:
        self.lua, self.max_attempts = lua, max_attempts
        _submit(lua, f"{Q}.J1", max_retries=0, notify=True, webhook_url="http://127.0.0.1:9/hook")
        job = lua({"op": "claim", "n": 1, "nonce": "n0", "lease_ms": LEASE_MS, "worker": "w"})["jobs"][0]
        lua({"op": "report", "id": job["id"], "token": job["token"], "trigger": "complete", "jitter": 0.5})
        self.key = script_keys(Q)[1]
        self.id = lua.raw.zrange(f"{self.key}outbox", 0, 0)[0].decode()
        self.machine = WebhookMachine()
        self.model = self.machine.attach(RecordingDelivery(max_attempts=max_attempts))
        self.model.performed = []

    def fire(self, trigger: str) -> tuple[dict[str, Any], list[str]]:
        self.model.performed = []
        with contextlib.suppress(InvalidTransition):
            self.machine.fire(self.model, trigger)
        lua = self.lua
        lua.now += 2_000  # a retry wait (1 s) has run out; a send lease (30 s) has not
        if trigger == "send":
            reply = lua({"op": "deliveries", "n": 10, "lease_ms": LEASE_MS, "nonce": f"s{lua.now}",
                         "max_attempts": self.max_attempts})
        elif trigger == "redeliver":
            reply = lua({"op": "redeliver", "id": self.id})
        else:
            token = (lua.raw.hget(f"{self.key}delivery:{self.id}", "token") or b"").decode()
            reply = lua({"op": "delivered", "id": self.id, "token": token, "trigger": trigger,
                         "max_attempts": self.max_attempts, "error": "e", "status": 500, "retry_at": lua.now + 1000})
        return reply, list(self.model.performed)

    def fields(self) -> dict[str, Any]:
        d = {k.decode(): v.decode() for k, v in self.lua.raw.hgetall(f"{self.key}delivery:{self.id}").items()}
        indexed = self.lua.raw.zscore(f"{self.key}outbox", self.id) is not None
        return {"state": d["state"], "attempts": int(d["attempts"]), "indexed": indexed}

    def model_fields(self) -> dict[str, Any]:
        m = self.model
        return {"state": m.state, "attempts": m.attempts, "indexed": WEBHOOK.index[m.state] == "outbox"}


def _delivery(lua: Lua, max_attempts: int) -> DeliveryBoth:
    return DeliveryBoth(lua, max_attempts)


# How each state is reached, per machine: start -> (make both forms, its arguments, steps).
PATHS: dict[str, dict[str, tuple[Callable[..., Any], tuple[Any, ...], tuple[str, ...]]]] = {
    "job": {
        "queued": (_job, (1, False), ()),
        "active": (_job, (1, False), ("claim",)),
        "active/no_retries_left": (_job, (1, False), ("claim", "fail", "wake", "claim")),
        "active/has_validator": (_job, (1, True), ("claim",)),
        "scheduled": (_job, (1, False), ("claim", "fail")),
        "validating": (_job, (1, True), ("claim", "complete")),
        "completed": (_job, (1, False), ("claim", "complete")),
        "failed": (_job, (0, False), ("claim", "fail")),
        "failed/retried": (_job, (1, False), ("claim", "fail", "wake", "claim", "fail")),  # retry_count 1
        "cancelled": (_job, (1, False), ("cancel",)),
        "timed_out": (_job, (0, False), ("claim", "timeout")),
        "validation_failed": (_job, (1, True), ("claim", "complete", "validation_exhausted")),
        "waiting": (_dependent, (1,), ()),
        "queued/dependent": (_dependent, (1,), ("cancel", "retry")),
        "active/dependent": (_dependent, (1,), ("cancel", "retry", "claim")),
        "scheduled/dependent": (_dependent, (1,), ("cancel", "retry", "claim", "fail")),
        "completed/dependent": (_dependent, (1,), ("cancel", "retry", "claim", "complete")),
        "failed/dependent": (_dependent, (0,), ("cancel", "retry", "claim", "fail")),
        "cancelled/dependent": (_dependent, (1,), ("cancel",)),
    },
    "batch": {
        "open": (_batch, (100,), ()),
        "running": (_batch, (100,), ("close",)),
        "completed": (_batch, (100,), ("close", "member_done", "fail")),
        "completed_partial": (_batch, (50,), ("close", "member_done")),
        "failed": (_batch, (100,), ("close", "stuck")),
        "cancelled": (_batch, (100,), ("cancel",)),
    },
    "webhook": {
        "pending": (_delivery, (2,), ()),
        "pending/no_attempts_left": (_delivery, (1,), ("send", "release")),
        "sending": (_delivery, (2,), ("send",)),
        "retry_wait": (_delivery, (2,), ("send", "fail")),
        "delivered": (_delivery, (2,), ("send", "succeed")),
        "dead": (_delivery, (1,), ("send", "fail")),
        "dead/rejected": (_delivery, (2,), ("send", "reject")),
    },
}
# The pairs no op of the store can drive, and why (every other pair of every machine is driven).
NOT_DRIVEN: dict[tuple[str, str, str], str] = {
    **{("batch", "finalizing", t.value): "finalizing lasts inside the one atomic step that finalizes and settles"
       for t in BATCH.triggers},
    **{("batch", s.value, "settle"): "no op settles alone: settle runs in the step whose finalize moved"
       for s in BATCH.states if s != "finalizing"},
    ("batch", "completed", "member_done"): "completed means every member is terminal: none is left to finish",
    ("batch", "cancelled", "member_done"): "cancel cancels every unfinished member: none is left to finish",
}
MACHINES = {"job": JOB, "batch": BATCH, "webhook": WEBHOOK}
PAIRS = [(name, start, t.value) for name, paths in PATHS.items() for start in paths
         for t in MACHINES[name].triggers if (name, start.split("/")[0], t.value) not in NOT_DRIVEN]


@pytest.mark.parametrize(("machine", "start", "trigger"), PAIRS, ids=["-".join(p) for p in PAIRS])
def test_the_model_and_the_store_are_one_machine(lua: Lua, machine: str, start: str, trigger: str) -> None:
    make, args, path = PATHS[machine][start]
    both = make(lua, *args)
    for step in path:
        reply, performed = both.fire(step)
        assert reply.get("effects", []) == performed, (step, reply)
    assert both.fields() == both.model_fields()
    assert both.model.state == start.split("/")[0]
    reply, performed = both.fire(trigger)
    assert reply.get("effects", []) == performed, reply
    assert both.fields() == both.model_fields()


def test_every_pair_of_every_machine_is_driven_or_says_why_not() -> None:
    for name, definition in MACHINES.items():
        reached = {start.split("/")[0] for start in PATHS[name]}
        for state, trigger in itertools.product(definition.states, definition.triggers):
            driven = state in reached and (name, state.value, trigger.value) not in NOT_DRIVEN
            assert driven != ((name, state.value, trigger.value) in NOT_DRIVEN), (name, state, trigger)


# -- the guards' facts, in Python and in the Lua --------------------------------------------------


def test_the_lua_computes_the_facts_functions(lua: Lua) -> None:
    for retry_count, max_retries, has_validator in itertools.product(range(3), range(3), (False, True)):
        fields = {"retry_count": str(retry_count), "max_retries": str(max_retries),
                  "has_validator": "1" if has_validator else "0"}
        got = lua({"op": "facts", "machine": "job", "fields": fields})["facts"]
        assert got == job_facts(retry_count=retry_count, max_retries=max_retries, has_validator=has_validator)
    for attempts, max_attempts in itertools.product(range(4), range(1, 4)):
        got = lua({"op": "facts", "machine": "webhook", "fields": {"attempts": attempts, "max_attempts": max_attempts}})
        assert got["facts"] == webhook_facts(attempts=attempts, max_attempts=max_attempts)
    n = 0
    for members, expected, closed, completed, failed, cancelled, threshold, stuck in itertools.product(
        range(4), (None, 0, 2, 3), (False, True), range(3), range(2), range(2), (1, 50, 100), (False, True)
    ):
        if completed + failed + cancelled > members or (expected is not None and members > expected):
            continue
        fields = {"members": members, "expected": "" if expected is None else expected,
                  "closed": "1" if closed else "", "completed": completed, "failed": failed,
                  "cancelled": cancelled, "threshold": threshold}
        got = lua({"op": "facts", "machine": "batch", "fields": fields, "stuck": stuck})["facts"]
        assert got == batch_facts(members=members, expected=expected, closed=closed, completed=completed,
                                  failed=failed, cancelled=cancelled, threshold=threshold, stuck=stuck), fields
        n += 1
    assert n > 500


# -- fencing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", sorted(t.value for t in JOB.triggers if t not in JOB.unfenced))
def test_the_unfenced_trigger_op_refuses_every_trigger_that_needs_a_lease(
    lua: Lua, target: Target, trigger: str
) -> None:
    both = JobBoth(lua, max_retries=1, has_validator=False)
    both.fire("claim")  # active: every lease-holding trigger would move it
    before = snapshot(target.raw())
    reply = lua({"op": "trigger", "id": both.id, "trigger": trigger, "jitter": 0.5})
    assert (reply["kind"], reply["error"]) == ("rejected", f"trigger {trigger} needs a lease")
    assert "effects" not in reply
    assert snapshot(target.raw()) == before


def test_calls_on_queues_in_turn_write_each_queue_its_own_keys(lua: Lua, target: Target) -> None:
    """The library keeps the key names of the last queue it served: a call on another queue
    makes its own (a job of each queue, taken through claim and complete in turn)."""
    queues = (Q, "other")
    for queue in queues:
        _submit(lua, f"{queue}.J1", max_retries=0, queue=queue)
    for queue in queues:
        job = lua({"op": "claim", "n": 1, "nonce": f"n{queue}", "lease_ms": LEASE_MS, "worker": "w"}, queue=queue)
        assert job["jobs"][0]["id"] == f"{queue}.J1"
    for queue in queues:
        reply = lua({"op": "report", "id": f"{queue}.J1", "token": f"n{queue}.1", "trigger": "complete",
                     "result": "null"}, queue=queue)
        assert (reply["kind"], reply["to"]) == ("moved", "completed")
    keys = snapshot(target.raw())
    for queue in queues:
        prefix = script_keys(queue)[1]
        assert keys[f"{prefix}job:{queue}.J1"][1]["state"] == "completed"
        assert [m for m, _ in keys[f"{prefix}finished"][1]] == [f"{queue}.J1"]
        assert {f["id"] for _, f in keys[f"{prefix}events"][1]} == {f"{queue}.J1"}
        assert f"{prefix}active" not in keys  # emptied: each queue's own index


# -- the batch that drifted -------------------------------------------------------------------------


def test_an_expected_total_never_closed_with_every_member_finished_is_completed_in_both_forms(
    lua: Lua,
) -> None:
    """Regression: the store said ``completed``, the embeddable form ``blocked`` and ``open``.
    SPEC: ``open`` means members are still being added; with its expected total in, it runs."""
    # the embeddable form: the store's rule, close once the expected total is in
    machine = BatchMachine()
    model = machine.attach(BatchModel(expected=2, closed=False))
    assert not model.add_members()
    assert model.state == "open"
    assert model.add_members()
    assert machine.fire(model, "close")
    assert model.state == "running"
    for outcome in ("completed", "failed"):
        model.member_finished(outcome)
        assert machine.fire(model, "member_done")
        if model.ready:
            assert machine.fire(model, "finalize")
            assert machine.fire(model, "settle")
    assert model.state == "completed"
    # the store: never closed by anyone
    lua({"op": "batch_create", "id": f"{Q}.B1", "expected": 2, "threshold": 100})
    ids = []
    for n in (1, 2):
        ids.append(f"{Q}.M{n}")
        lua({"op": "submit", "id": ids[-1], "type": "t", "input": "null", "priority": 0, "max_retries": 0,
             "timeout_ms": 60_000, "backoff_ms": 0, "backoff_max_ms": 0, "batch": f"{Q}.B1", "idem_ttl_ms": 1})
    claimed = lua({"op": "claim", "n": 2, "nonce": "n", "lease_ms": LEASE_MS, "worker": "w"})["jobs"]
    tokens = {c["id"]: c["token"] for c in claimed}
    lua({"op": "report", "id": ids[0], "token": tokens[ids[0]], "trigger": "complete"})
    last = lua({"op": "report", "id": ids[1], "token": tokens[ids[1]], "trigger": "fail", "jitter": 0.5})
    first, prefix = script_keys(Q)
    assert lua.raw.hget(f"{prefix}batch:{Q}.B1", "state") == b"completed"
    # the member's own row, then what it caused: the batch's member_done, finalize, settle
    assert last["effects"] == [*JOB.apply("active", "fail", {"retries_left": False, "has_validator": False}).effects,
                               "touch", "finish", "notify"]
