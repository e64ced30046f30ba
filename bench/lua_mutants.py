"""Hand-written mutants of the Lua library, each run against the store tests that should kill it.

Not part of CI: ``python -m bench.lua_mutants [-k SUBSTRING] [--list]``. Each mutant is
``(description, old text, new text, tests)``: ``old`` must occur exactly once in the library
(a mutant whose text is gone is reported as ``stale``, to be re-targeted, never silently
skipped). The library file is rewritten for one mutant at a time and always restored. Prints
killed/survived per mutant and the kill rate.

The texts match ``adapters/lua/jobvisor.lua`` as of this commit; when the library is rewritten,
run with ``--list`` to see which mutants went stale and re-point their ``old`` text.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "adapters" / "lua" / "jobvisor.lua"

TRANSITIONS = "tests/adapters/test_store_transitions.py"
VALIDATION = "tests/adapters/test_store_validation.py"
BATCHES = "tests/adapters/test_batches.py"
RECOVERY = "tests/adapters/test_recovery_store.py"
HYGIENE = "tests/adapters/test_store_hygiene.py"
FENCING = "tests/adapters/test_store_fencing.py"
NOTIFY = "tests/e2e/test_notifications.py"
RACES = "tests/adapters/test_store_races.py"

MUTANTS: list[tuple[str, str, str, tuple[str, ...]]] = [
    # -- fencing ---------------------------------------------------------------------------
    ("unfenced trigger: no lease check",
     "if not UNFENCED[x.trigger] then return", "if false then return", (FENCING,)),
    ("fenced report: any token accepted",
     "if token == nil or token == '' or j.lease_token ~= token then",
     "if token == nil or token == '' then", (TRANSITIONS,)),
    ("fenced report: terminal not absorbed",
     "  if M.job.terminal[j.state] then return nil, {kind = 'absorbed', id = id, state = j.state} end\n",
     "", (TRANSITIONS,)),
    ("validation check: any check token accepted",
     "if j.state ~= 'validating' or j.val_token ~= x.token then",
     "if j.state ~= 'validating' then", (VALIDATION,)),
    ("delivery outcome: any send token accepted",
     "  if d.token ~= x.token then return {kind = 'stale', id = x.id, state = d.state} end\n",
     "", (VALIDATION, TRANSITIONS)),
    ("expire: a renewed lease is expired anyway",
     "if j.state ~= 'active' or j.lease_token ~= x.token or num(j.lease_deadline) > NOW then",
     "if j.state ~= 'active' or j.lease_token ~= x.token then", (RECOVERY, TRANSITIONS)),
    ("expire: another inspector's decision counts",
     "if j.inspector ~= x.inspector then return", "if false then return", (RECOVERY,)),
    ("expire: an inspection's hold is ignored",
     "if held ~= nil and held > NOW then return", "if false then return", (RECOVERY,)),
    ("inspect: a held lease is inspected again",
     "      or held == nil or held > NOW then", "      or held == nil then", (RECOVERY,)),
    ("file: filed twice at one epoch",
     "if j.filed_epoch == j.epoch then return {kind = 'absorbed'", "if false then return {kind = 'absorbed'",
     (HYGIENE,)),
    # -- effects ---------------------------------------------------------------------------
    ("effect new_attempt: no new lease token",
     "    local token = x.nonce .. '.' .. attempt\n", "    local token = x.nonce\n", (TRANSITIONS,)),
    ("effect resume_phases dropped", "if fx.resume_phases then", "if false then", (TRANSITIONS,)),
    ("effect interrupt_phase dropped", "  if fx.interrupt_phase then", "  if false then", (TRANSITIONS,)),
    ("effect cancel_phases dropped", "if fx.cancel_phases then", "if false then", (TRANSITIONS,)),
    ("effect rewind_phases dropped", "if fx.rewind_phases then", "if false then", (TRANSITIONS,)),
    ("effect count_retry dropped", "if fx.count_retry then", "if false then", (TRANSITIONS,)),
    ("effect reset_retries dropped", "if fx.reset_retries then", "if false then", (TRANSITIONS,)),
    ("effect new_epoch dropped", "if fx.new_epoch then", "if false then", (TRANSITIONS,)),
    ("effect arm_backoff dropped", "  if fx.arm_backoff then", "  if false then", (TRANSITIONS,)),
    ("effect end_attempt dropped", "  if fx.end_attempt then", "  if false then", (TRANSITIONS,)),
    ("effect store_result (phase) dropped", "if o.fx.store_result then", "if false then", (TRANSITIONS,)),
    ("effect clear_error dropped",
     "if to == 'completed' and j.error ~= '' then put('error', '') end", "", (TRANSITIONS,)),
    ("effect store_result (job) dropped",
     "    put('result', x.result)\n", "", (TRANSITIONS,)),
    ("effect record_reason dropped", "    put('reason', reason or '')\n", "", (TRANSITIONS,)),
    ("effect mark_unfiled dropped",
     "if M.job.terminal[to] then redis.call('ZADD', K_UNFILED, NOW, j.id) end", "", (HYGIENE,)),
    ("effect start_validation dropped", "if to == 'validating' then put('val_checks', 0) end", "",
     (VALIDATION,)),
    ("batch effect cancel_members dropped", "if o.fx.cancel_members then", "if false then", (BATCHES,)),
    ("batch effect touch dropped", "if o.fx.touch then batch_touch(b) end", "", (BATCHES,)),
    # -- guards ----------------------------------------------------------------------------
    ("job guard retries_left always true",
     "retries_left = num(j.retry_count) < num(j.max_retries)}", "retries_left = true}", (TRANSITIONS,)),
    ("job guard has_validator always false",
     "local facts = {has_validator = j.has_validator == '1',", "local facts = {has_validator = false,",
     (TRANSITIONS, VALIDATION)),
    ("batch guard all_done ignores 'known'",
     "local all_done = known and finished >= total", "local all_done = finished >= total", (BATCHES,)),
    ("batch guard threshold off by one",
     "num(b.completed) * 100 >= num(b.threshold) * total", "num(b.completed) * 100 > num(b.threshold) * total",
     (BATCHES,)),
    ("webhook guard attempts_left off by one",
     "local facts = {attempts_left = num(d.attempts) < num(x.max_attempts)}",
     "local facts = {attempts_left = num(d.attempts) <= num(x.max_attempts)}", (VALIDATION, TRANSITIONS)),
    # -- notifications ---------------------------------------------------------------------
    ("cancel message not published",
     "if fx.cancel_handler then redis.call('PUBLISH', P .. 'cancel', j.id) end", "", (NOTIFY,)),
    ("wake message not published",
     "if woke then redis.call('PUBLISH', P .. 'wake', '1') end", "", (NOTIFY,)),
    ("job outbox row not written",
     "    outbox_add(j.id, notify, num(j.epoch), j.webhook_url, job_snapshot(j), j.traceparent)\n", "",
     (TRANSITIONS,)),
    ("batch notification not written",
     "if b.notify == '1' then outbox_add(b.id, kind, epoch, b.webhook_url, batch_snapshot(b)) end", "",
     (BATCHES,)),
]


def run(mutant: tuple[str, str, str, tuple[str, ...]], original: str) -> str:
    description, old, new, tests = mutant
    if original.count(old) != 1:
        return "stale"
    LIBRARY.write_text(original.replace(old, new))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900,
        )
    finally:
        LIBRARY.write_text(original)
    return "survived" if result.returncode == 0 else "killed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutants whose description contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and whether their text is found")
    args = parser.parse_args()
    original = LIBRARY.read_text()
    chosen = [m for m in MUTANTS if args.k in m[0]]
    counts = {"killed": 0, "survived": 0, "stale": 0}
    for mutant in chosen:
        if args.list:
            outcome = "found" if original.count(mutant[1]) == 1 else "stale"
        else:
            outcome = run(mutant, original)
            counts[outcome] += 1
        print(f"{outcome:9} {mutant[0]}", flush=True)
    if not args.list:
        live = counts["killed"] + counts["survived"]
        rate = 100 * counts["killed"] / live if live else 0.0
        print(f"\n{counts['killed']} killed, {counts['survived']} survived, {counts['stale']} stale: "
              f"kill rate {rate:.0f}% of {live}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
