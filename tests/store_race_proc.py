"""One racer process for tests/test_store_races.py (run with the venv's interpreter).

Usage: ``python -m tests.store_race_proc <plan.json>``. The plan names the Redis URL,
the ready list this process pushes to once connected, the start list it BLPOPs on
(so both racers begin at the same moment, no sleeps), and the ops to fire in order:
``["complete", job, token]``, ``["cancel", job]``, ``["finalize", batch]``.
Prints one JSON list: per op, ``[object id, reply kind, destination]``.
"""

from __future__ import annotations

import json
import sys

import redis

from jobvisor.adapters.backend import open_backend
from jobvisor.adapters.store import SyncStore


def main(path: str) -> None:
    with open(path) as f:
        plan = json.load(f)
    store = SyncStore(open_backend(plan["url"]))
    client = redis.Redis.from_url(plan["url"])
    store.queues()  # connected
    client.rpush(plan["ready"], plan["name"])
    if client.blpop([plan["start"]], timeout=30) is None:
        raise SystemExit("start signal never came")
    out = []
    for op in plan["ops"]:
        if op[0] == "complete":
            r = store.complete(op[1], op[2], {"by": plan["name"]})
        elif op[0] == "cancel":
            r = store.cancel(op[1])
        elif op[0] == "finalize":
            r = store.finalize_batch(op[1], stuck=True)
        else:
            raise SystemExit(f"unknown op {op[0]}")
        out.append([op[1], r.kind, getattr(r, "to", "")])  # "to" only when it moved
    store.close()
    client.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
