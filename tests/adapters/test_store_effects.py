"""The store and the embeddable models are one machine: same states, same effects, same fields.

Each test runs on the session's redis-server and on the embedded store (``target``), calling
the library's one function directly with ops (so every reply's ``effects`` is read as the Lua
wrote it).

* every (state, trigger) pair of the job machine, reached by the same triggers on both forms:
  the store's reply names exactly the effects the model performed, in order, and the job's
  state and fields (attempts, retries, epoch, lease, finish, reason, attempt outcomes) agree;
* the guards' facts: identical counter vectors give identical facts in Python and in the Lua;
* the unfenced ``trigger`` op refuses every trigger that needs a lease, writing nothing;
* the batch that drifted (an expected total, never closed, every member finished) is
  ``completed`` in both forms.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from jobvisor.adapters.keys import script_keys
from jobvisor.adapters.scripts import LuaLibrary
from jobvisor.machines import JOB, BatchModel, InvalidTransition, JobModel
from jobvisor.machines.batch import batch_facts
from jobvisor.machines.embed import BatchMachine, JobMachine
from jobvisor.machines.job import JOB_EFFECTS, job_facts
from jobvisor.machines.webhook import webhook_facts
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


class Recording(JobModel):
    """JobModel that lists every effect the machine asks of it, store-only ones included."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.performed: list[str] = []


def _record(effect: str) -> Any:
    def do(self: Recording, trigger: str) -> None:
        self.performed.append(effect)
        base = getattr(JobModel, f"do_{effect}", None)
        if base is not None:
            base(self, trigger) if effect in ("end_attempt", "record_reason") else base(self)

    return do


for _effect in JOB_EFFECTS:
    setattr(Recording, f"do_{_effect}", _record(_effect))


class Both:
    """One job in both forms, driven by the same triggers."""

    def __init__(self, lua: Lua, *, max_retries: int, has_validator: bool) -> None:
        self.lua = lua
        self.machine = JobMachine()
        self.model = self.machine.attach(Recording(max_retries=max_retries, has_validator=has_validator))
        self.id = f"{Q}.J1"
        self.token = ""
        lua({"op": "submit", "id": self.id, "type": "t", "input": "null", "priority": 0,
             "max_retries": max_retries, "timeout_ms": 60_000, "backoff_ms": 1000, "backoff_max_ms": 1000,
             "has_validator": has_validator, "idem_ttl_ms": 1000})

    def fire(self, trigger: str) -> tuple[dict[str, Any], list[str]]:
        """The store's reply and the model's effects for one trigger."""
        self.model.performed = []
        with contextlib.suppress(InvalidTransition):
            self.machine.fire(self.model, trigger)
        lua, x = self.lua, {"id": self.id, "trigger": trigger, "jitter": 0.5}
        lua.now += 1
        if trigger == "claim":
            reply = lua({"op": "claim", "n": 1, "nonce": f"n{lua.now}", "lease_ms": LEASE_MS, "worker": "w"})
            if reply.get("jobs"):
                self.token = reply["jobs"][0]["token"]
        elif trigger == "wake":
            lua.now += 10_000  # every backoff has run out
            reply = lua({"op": "wake", "n": 10})
        elif trigger in ("complete", "fail", "timeout", "release"):
            reply = lua({"op": "report", "token": self.token, **x})
        elif trigger == "lease_expired":
            lua.now += LEASE_MS + 1
            reply = lua({"op": "expire", "token": self.token, **x})
        else:
            reply = lua({"op": "trigger", **x})
        return reply, list(self.model.performed)

    def fields(self) -> dict[str, Any]:
        j = self.lua.job(self.id)
        attempts = int(j["attempts"])
        outcomes = [json.loads(j[f"atx:{n}"])["outcome"] for n in range(1, attempts + 1) if f"atx:{n}" in j]
        return {"state": j["state"], "attempts": attempts, "retry_count": int(j["retry_count"]),
                "epoch": int(j["epoch"]), "leased": j.get("lease_token", "") != "",
                "finished": j.get("finished_at", "") != "", "reason": j.get("reason", ""), "outcomes": outcomes}

    def model_fields(self) -> dict[str, Any]:
        m = self.model
        return {"state": m.state, "attempts": m.attempts, "retry_count": m.retry_count, "epoch": m.epoch,
                "leased": m.leased, "finished": m.finished, "reason": m.reason, "outcomes": m.outcomes}


# How each state is reached from a fresh submit: (max_retries, has_validator, triggers).
PATHS: dict[str, tuple[int, bool, tuple[str, ...]]] = {
    "queued": (1, False, ()),
    "active": (1, False, ("claim",)),
    "active/no_retries_left": (1, False, ("claim", "fail", "wake", "claim")),
    "active/has_validator": (1, True, ("claim",)),
    "scheduled": (1, False, ("claim", "fail")),
    "validating": (1, True, ("claim", "complete")),
    "completed": (1, False, ("claim", "complete")),
    "failed": (0, False, ("claim", "fail")),
    "cancelled": (1, False, ("cancel",)),
    "timed_out": (0, False, ("claim", "timeout")),
    "validation_failed": (1, True, ("claim", "complete", "validation_exhausted")),
}
PAIRS = [(start, t.value) for start in PATHS for t in JOB.triggers]


@pytest.mark.parametrize(("start", "trigger"), PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
def test_the_model_and_the_store_are_one_job_machine(lua: Lua, start: str, trigger: str) -> None:
    max_retries, has_validator, path = PATHS[start]
    both = Both(lua, max_retries=max_retries, has_validator=has_validator)
    for step in path:
        reply, performed = both.fire(step)
        assert reply.get("effects", []) == performed, (step, reply)
    assert both.fields() == both.model_fields()
    assert both.model.state == start.split("/")[0]
    reply, performed = both.fire(trigger)
    assert reply.get("effects", []) == performed, reply
    assert both.fields() == both.model_fields()


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
    both = Both(lua, max_retries=1, has_validator=False)
    both.fire("claim")  # active: every lease-holding trigger would move it
    before = snapshot(target.raw())
    reply = lua({"op": "trigger", "id": both.id, "trigger": trigger, "jitter": 0.5})
    assert (reply["kind"], reply["error"]) == ("rejected", f"trigger {trigger} needs a lease")
    assert "effects" not in reply
    assert snapshot(target.raw()) == before


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
