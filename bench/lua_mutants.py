"""Hand-written mutants of the Lua library, each run against the store tests that should kill it.

Not part of CI: ``python -m bench.lua_mutants [-k SUBSTRING] [--list]``. Each mutant is
``(description, file, old text, new text, tests)``: ``file`` is one of the library's files in
``adapters/lua/``, where ``old`` must occur exactly once (a mutant whose text is gone is
reported as ``stale``, to be re-targeted, never silently skipped). The file is rewritten for
one mutant at a time and always restored. Each mutant runs only the tests that should kill it,
the quickest first, stopping at the first failure. Prints killed/survived per mutant and the
kill rate.

When the library is rewritten, run with ``--list`` to see which mutants went stale and
re-point their ``old`` text.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "adapters" / "lua"

A = "tests/adapters/"
EFFECTS = A + "test_store_effects.py"
TRANSITIONS = A + "test_store_transitions.py"
VALIDATION = A + "test_store_validation.py"
BATCHES = A + "test_batches.py"
RECOVERY = A + "test_recovery_store.py"
HYGIENE = A + "test_store_hygiene.py"
FENCING = A + "test_store_fencing.py"
RACES = A + "test_store_races.py"
NOTIFY = "tests/e2e/test_notifications.py"
T = TRANSITIONS + "::test_"
WRONG_DELIVERY_TOKEN = T + "a_delivery_outcome_with_a_wrong_token_writes_nothing"
JOB_PAIRS, BATCH_PAIRS, DELIVERY_PAIRS = T + "job_pair", T + "batch_pair", T + "delivery_pair"
PHASES = (T + "phase_results_survive_a_retry_and_retry_from_start_drops_them",
          T + "cancelling_a_queued_phased_job_cancels_every_phase", T + "phase_pair")
OUTBOX = (T + "a_duplicate_outbox_insert_is_a_no_op", T + "each_operator_retry_opens_a_new_outbox_epoch")
SCHEDULES = ("tests/adapters/test_store_schedules.py", "tests/machines/test_schedule_table.py")
REDRIVE = ("tests/adapters/test_store_redrive.py",)
RECLAIM = ("tests/supervisor/test_handler_isolation.py::"
           "test_reclaim_finds_exactly_the_jobs_of_one_claim_still_held_under_its_tokens")
DELAY = T + "a_delayed_submit_waits_in_the_due_set_until_its_time"
RATES = A + "test_rate_limits.py"
CLOCK = A + "test_event_clock.py"
FLOWS = (A + "test_store_flows.py", A + "test_flow_properties.py", T + "dependency_pair")

Mutant = tuple[str, str, str, str, tuple[str, ...]]


def _emptied(file: str, head: str, body: str, tests: tuple[str, ...]) -> Mutant:
    """The one-line effect function ``head body end`` with its body removed."""
    name = head.split("(")[0].removeprefix("function ").split(" =")[0]
    return (f"{name} does nothing", file,
            f"{head} {body} end", f"{head} end", tests)


MUTANTS: list[Mutant] = [
    # -- fencing ---------------------------------------------------------------------------
    ("unfenced trigger: no lease check", "ops.lua",
     "if not M.job.unfenced[x.trigger] then return", "if false then return", (EFFECTS, FENCING)),
    ("fenced report: any token accepted", "job.lua",
     "if token == nil or token == '' or j.lease_token ~= token then", "if token == nil or token == '' then",
     (T + "a_report_after_takeover_is_fenced_out_then_absorbed_once_terminal", FENCING, RACES)),
    ("fenced report: terminal not absorbed", "job.lua",
     "  if M.job.terminal[j.state] then return nil, {kind = 'absorbed', id = id, state = j.state} end\n", "",
     (FENCING, TRANSITIONS)),
    ("validation check: any check token accepted", "ops.lua",
     "if not has_row(M.job, j.state, 'validation_passed') or j.val_token ~= x.token then",
     "if not has_row(M.job, j.state, 'validation_passed') then", (VALIDATION,)),
    ("delivery outcome: any send token accepted", "ops.lua",
     "  if d.token ~= x.token then return {kind = 'stale', id = x.id, state = d.state} end\n", "",
     (WRONG_DELIVERY_TOKEN, VALIDATION)),
    ("expire: a renewed lease is expired anyway", "ops.lua",
     "num(j.lease_deadline) > NOW then\n    return {kind = 'skipped'", "false then\n    return {kind = 'skipped'",
     (RECOVERY, TRANSITIONS)),
    ("expire: another attempt's token counts", "ops.lua",
     "  if x.token == nil or x.token == '' or j.lease_token ~= x.token or num(j.lease_deadline) > NOW then\n"
     "    return",
     "  if x.token == nil or x.token == '' or num(j.lease_deadline) > NOW then\n    return",
     (RECOVERY, RACES, TRANSITIONS)),
    ("expire: another inspector's decision counts", "ops.lua",
     "if j.inspector ~= x.inspector then return", "if false then return", (RECOVERY,)),
    ("expire: an inspection's hold is ignored", "ops.lua",
     "if held ~= nil and held > NOW then return", "if false then return", (RECOVERY,)),
    ("inspect: a held lease is inspected again", "ops.lua",
     "      or held == nil or held > NOW then", "      or held == nil then", (RECOVERY,)),
    ("file: filed twice at one epoch", "hygiene.lua",
     "if j.filed_epoch == j.epoch then return {kind = 'absorbed'", "if false then return {kind = 'absorbed'",
     (HYGIENE,)),
    ("deliveries: a send lease that ran out is not released first", "ops.lua",
     "      if has_row(M.webhook, d.state, 'release') then move('webhook', d, 'release', {}, x) end\n", "",
     (TRANSITIONS, VALIDATION)),
    # -- the interpreter -------------------------------------------------------------------
    ("apply: a guard's fact flipped", "core.lua",
     "if o.guard == '' or facts[o.guard] then return 'moved', o end",
     "if o.guard == '' or not facts[o.guard] then return 'moved', o end", (EFFECTS,)),
    ("apply: a terminal state does not absorb", "core.lua",
     "    if m.terminal[state] then return 'absorbed' end\n", "", (EFFECTS, TRANSITIONS)),
    ("reindex: the old index keeps the record", "core.lua",
     "if fi ~= ti and fi ~= '' and not c.x.popped then index_remove(fi, c) end", "", (EFFECTS, TRANSITIONS)),
    ("outbox: a second insert writes again", "core.lua",
     "  if redis.call('EXISTS', dkey(did)) == 1 then return false end\n", "", (TRANSITIONS,)),
    ("job record: fields not read are '' (no lazy read)", "core.lua",
     "  if j then setmetatable(j, LAZY_JOB) end\n", "", (EFFECTS, TRANSITIONS)),
    ("job record: the lazy read skips the result", "core.lua",
     "'lease_worker', 'val_checks', 'result', 'created_at',", "'lease_worker', 'val_checks', 'created_at',",
     (EFFECTS, TRANSITIONS)),
    ("key names: a second queue keeps the first queue's keys", "core.lua",
     "  if P ~= keys_of then\n", "  if keys_of == nil then\n", (EFFECTS, TRANSITIONS)),
    # -- job effects -----------------------------------------------------------------------
    ("job new_attempt: no new lease token", "job.lua",
     "  local token = x.nonce .. '.' .. attempt\n", "  local token = x.nonce\n", (RECLAIM, FENCING)),
    ("job new_attempt: attempts not counted", "job.lua",
     "  put(c, 'attempts', attempt)\n", "", (EFFECTS,)),
    _emptied("job.lua", "function J.resume_phases(c)", "each_phase(c, c.phases, 'reset')", PHASES),
    _emptied("job.lua", "function J.cancel_phases(c)", "each_phase(c, c.phases, 'cancel')", PHASES),
    _emptied("job.lua", "function J.rewind_phases(c)", "each_phase(c, c.phases, 'rewind')", PHASES),
    ("job interrupt_phase: no phase fails", "job.lua",
     "local moved = each_phase(c, c.phases, 'fail')", "local moved = {}", (*PHASES, JOB_PAIRS)),
    ("job end_attempt: the attempt record is not closed", "job.lua",
     "  put(c, 'atx:' .. fmt(num(j.attempts)),", "  put(c, 'unused:' .. fmt(num(j.attempts)),", (EFFECTS,)),
    ("job end_attempt: the lease token is kept", "job.lua",
     "drop(c, 'lease_token', 'lease_deadline', 'lease_worker')", "drop(c, 'lease_deadline', 'lease_worker')",
     (EFFECTS, FENCING)),
    _emptied("job.lua", "function J.count_retry(c)", "put(c, 'retry_count', num(c.r.retry_count) + 1)",
             (EFFECTS,)),
    _emptied("job.lua", "function J.reset_retries(c)", "put(c, 'retry_count', 0)", (EFFECTS,)),
    _emptied("job.lua", "function J.new_epoch(c)", "put(c, 'epoch', num(c.r.epoch) + 1)", (EFFECTS,)),
    ("job arm_backoff: due at once", "job.lua",
     "  c.score = NOW + backoff_ms(c.r, num(c.r.retry_count), c.x.jitter)\n", "  c.score = NOW\n",
     (EFFECTS, JOB_PAIRS)),
    ("job arm_delay: due at once", "job.lua",
     "  c.score = NOW + num(c.x.delay_ms)\n", "  c.score = NOW\n", (DELAY, JOB_PAIRS)),
    _emptied("job.lua", "function J.cancel_handler(c)", "redis.call('PUBLISH', P .. 'cancel', c.r.id)",
             (NOTIFY,)),
    ("job store_result: no result", "job.lua", "  put(c, 'result', result)\nend", "end", (EFFECTS, JOB_PAIRS)),
    ("job end_attempt: the lease fields stay (no HDEL)", "job.lua",
     "    if c.drop then redis.call('HDEL', jkey(j.id), unpack(c.drop)) end\n", "", (FENCING, EFFECTS, TRANSITIONS)),
    ("job store_result: a later success overwrites an earlier attempt's result", "job.lua",
     "  if n > 1 then keep_earlier_result(c, n) end\n", "", (TRANSITIONS,)),
    ("job store_result: the earlier result kept under the wrong attempt", "job.lua",
     "put(c, 'ar:' .. k, earlier)", "put(c, 'ar:' .. n, earlier)", (TRANSITIONS,)),
    ("job record_error: no error", "job.lua", "  if e and e ~= '' then put(c, 'error', e) end\n", "",
     (EFFECTS, JOB_PAIRS)),
    _emptied("job.lua", "function J.clear_error(c)", "if c.r.error ~= '' then put(c, 'error', '') end",
             (EFFECTS, JOB_PAIRS)),
    _emptied("job.lua", "function J.start_validation(c)", "put(c, 'val_checks', 0)", (VALIDATION, JOB_PAIRS)),
    ("job record_status: no validation status", "job.lua",
     "  if status and status ~= '' then put(c, 'validation_status', status) end\n", "",
     (VALIDATION, JOB_PAIRS)),
    ("job record_reason: no reason", "job.lua",
     "  put(c, 'reason', reason or M.job.reason[c.trigger] or '')\n", "", (EFFECTS,)),
    ("job record_reason: the op's reason ignored", "job.lua",
     "  local reason = M.job.terminal[c.to] and c.x.reason or nil\n", "  local reason = nil\n",
     (EFFECTS, BATCHES)),
    _emptied("job.lua", "function J.clear_reason(c)", "if c.r.reason ~= '' then put(c, 'reason', '') end",
             (EFFECTS, JOB_PAIRS)),
    _emptied("job.lua", "function J.finish(c)", "put(c, 'finished_at', NOW_S)", (EFFECTS,)),
    ("job reopen: finish time kept", "job.lua",
     "  if j.finished_at ~= '' then put(c, 'finished_at', '') end\n", "", (EFFECTS, JOB_PAIRS)),
    ("job reopen: the batch is not told", "job.lua",
     "    later(c, function() batch_member_reopened(j.batch, from) end)\n", "",
     (T + "a_member_retried_by_the_operator_is_counted_once", BATCHES)),
    _emptied("job.lua", "function J.mark_unfiled(c)", "redis.call('ZADD', K_UNFILED, NOW_S, c.r.id)", (HYGIENE,)),
    ("job notify: no outbox row", "job.lua",
     "    outbox_add(j.id, c.o.notify, num(j.epoch), j.webhook_url, job_snapshot(j), j.traceparent)\n", "",
     (*OUTBOX, JOB_PAIRS)),
    ("job count_member: the batch is not told", "job.lua",
     "    later(c, function() batch_member_done(j.batch, to) end)\n", "", (EFFECTS, BATCHES)),
    _emptied("job.lua", "function J.wake_workers(c)", "woke = true", (NOTIFY,)),
    ("wake message not published", "core.lua",
     "  if woke then redis.call('PUBLISH', P .. 'wake', '1') end\n", "", (NOTIFY,)),
    _emptied("job.lua", "EFFECT.phase.drop_result = function(c, name)",
             "redis.call('HDEL', jkey(c.r.id), 'pr:' .. name)", PHASES),
    ("phase store_result: no phase result", "job.lua", "  put(c, 'pr:' .. name, result)\n", "", PHASES),
    # -- batch effects ---------------------------------------------------------------------
    _emptied("batch.lua", "function B.touch(c)", "batch_touch(c.r)", (BATCHES,)),
    _emptied("batch.lua", "function B.mark_closed(c)", "put(c, 'closed', '1')", (EFFECTS, BATCHES)),
    _emptied("batch.lua", "function B.record_reason(c)", "put(c, 'reason', M.batch.reason[c.trigger] or '')",
             (EFFECTS, BATCHES)),
    _emptied("batch.lua", "function B.finish(c)", "put(c, 'finished_at', NOW_S)", (EFFECTS, BATCHES)),
    _emptied("batch.lua", "function B.notify(c)", "batch_notify(c.r, c.o.notify, 0)", (BATCHES,)),
    ("batch cancel_members: no member cancelled", "batch.lua",
     "if j ~= nil and job_move(j, 'cancel', {reason = 'batch_cancelled'}).kind == 'moved' then",
     "if false then", (EFFECTS, BATCHES)),
    ("batch progress: no notification", "batch.lua",
     "    batch_notify(b, 'batch.progress', num(b.completed))\n", "", (BATCHES,)),
    ("batch: an expected total never closes it", "batch.lua",
     "if b.closed ~= '1' and b.expected ~= '' and num(b.members) >= num(b.expected) then", "if false then",
     (EFFECTS, BATCHES)),
    # -- webhook effects -------------------------------------------------------------------
    ("webhook count_attempt: attempts not counted", "webhook.lua", "  put(c, 'attempts', attempts)\n", "",
     (EFFECTS,)),
    _emptied("webhook.lua", "function W.drop_token(c)", "put(c, 'token', '')", (EFFECTS, DELIVERY_PAIRS)),
    ("webhook record_response: no status", "webhook.lua", "  put(c, 'last_status', x.status or '')\n", "",
     (DELIVERY_PAIRS, VALIDATION)),
    _emptied("webhook.lua", "function W.arm_backoff(c)", "c.score = c.x.retry_at", (DELIVERY_PAIRS, VALIDATION)),
    ("webhook reset_attempts: attempts kept", "webhook.lua", "  put(c, 'attempts', 0)\n", "", (EFFECTS,)),
    ("webhook settle_notification: the job is not told", "webhook.lua",
     "    redis.call('HSET', object_key, 'notification', c.to, 'notification_event', d.event)\n", "",
     (HYGIENE, DELIVERY_PAIRS)),
    # -- guards ----------------------------------------------------------------------------
    ("job guard retries_left always true", "job.lua",
     "f.retries_left = num(j.retry_count) < num(j.max_retries)", "f.retries_left = true", (EFFECTS,)),
    ("job guard has_validator always false", "job.lua",
     "f.has_validator = j.has_validator == '1'", "f.has_validator = false", (EFFECTS,)),
    ("batch guard all_done ignores 'known'", "batch.lua",
     "local all_done = known and finished >= total", "local all_done = finished >= total", (EFFECTS, BATCHES)),
    ("batch guard 'known' ignores the expected total", "batch.lua",
     "local known = b.closed == '1' or b.expected ~= ''", "local known = b.closed == '1'", (EFFECTS, BATCHES)),
    ("batch guard ready ignores stuck", "batch.lua",
     "or all_done or stuck, threshold_met", "or all_done, threshold_met", (EFFECTS, BATCHES)),
    ("batch guard threshold off by one", "batch.lua",
     "num(b.completed) * 100 >= num(b.threshold) * total", "num(b.completed) * 100 > num(b.threshold) * total",
     (EFFECTS, BATCHES)),
    ("webhook guard attempts_left off by one", "webhook.lua",
     "return {attempts_left = attempts < max_attempts}", "return {attempts_left = attempts <= max_attempts}",
     (EFFECTS,)),
    # -- schedules: the tick guard and the fire's effects --------------------------------------
    ("schedule guard new_tick accepts the same tick again", "schedule.lua",
     "tick > num(s.last_tick)}", "tick >= num(s.last_tick)}", SCHEDULES),
    ("schedule guard new_tick always true", "schedule.lua",
     "return {new_tick = s.last_tick == '' or tick > num(s.last_tick)}", "return {new_tick = true}", SCHEDULES),
    ("schedule record_tick does nothing", "schedule.lua",
     "function SC.record_tick(c) put(c, 'last_tick', fmt(c.x.tick)) end", "function SC.record_tick(c) end",
     SCHEDULES),
    ("schedule submit_job submits nothing", "schedule.lua",
     "  local got = OP.submit(op)\n", "  local got = {id = op.id, kind = 'created'}\n", SCHEDULES),
    ("schedule submit_job does not count the fire", "schedule.lua",
     "  put(c, 'fired', num(c.r.fired) + 1)\n", "", SCHEDULES),
    ("schedule arm: next_at not stored", "schedule.lua",
     "  put(c, 'next_at', fmt(c.x.next_at))\n", "", SCHEDULES),
    # -- re-drive: its guard and what it writes -----------------------------------------------
    ("redrive guard: one more than max", "redrive.lua", "      or count >= num(x.max) or NOW",
     "      or count > num(x.max) or NOW", REDRIVE),
    ("redrive guard: no delay", "redrive.lua",
     " or NOW < math.max(num(j.filed_at), num(j.redriven_at)) + num(x.delay_ms) then", " then", REDRIVE),
    ("redrive guard: another epoch's filing", "redrive.lua",
     "j.filed_epoch ~= j.epoch or num(j.epoch) ~= num(x.epoch) or j.problem ~= x.kind\n",
     "j.problem ~= x.kind\n", REDRIVE),
    ("redrive: the count is not kept", "redrive.lua",
     "  redis.call('HSET', jkey(x.id), field, count, 'redriven_at', NOW_S)\n", "", REDRIVE),
    ("redrive: a refused redeliver still counts", "redrive.lua",
     "{id = did}).kind ~= 'moved' then return nil end", "{id = did}).kind == nil then return nil end", REDRIVE),
    ("redrive missing_output: a job is re-run more than once", "redrive.lua",
     "    if j.rerun ~= '' or not x.rerun_id", "    if not x.rerun_id", REDRIVE),
    ("redrive missing_output: the re-run does not carry its chain's count", "redrive.lua",
     "    redis.call('HSET', jkey(x.rerun_id), 'rerun_of', j.id, 'redrive:' .. x.kind, count)\n",
     "    redis.call('HSET', jkey(x.rerun_id), 'rerun_of', j.id)\n", REDRIVE),
    ("redrive missing_output: the job is not linked to its re-run", "redrive.lua",
     "    redis.call('HSET', jkey(j.id), 'rerun', x.rerun_id)\n", "", REDRIVE),
    ("redrive missing_output: the re-run's phases are not rewound", "redrive.lua",
     "  for _, p in ipairs(phases) do p[2] = pending end\n", "", REDRIVE),
    ("validation: one check more than max_attempts", "ops.lua",
     "  if n >= num(x.max_attempts) then\n", "  if n > num(x.max_attempts) then\n", (VALIDATION,)),
    # -- rate limits -----------------------------------------------------------------------
    ("rate: a held-back job of a plain limit is taken anyway", "rate.lua",
     "if at > NOW then held(at)\n      else\n        local head",
     "if false then held(at)\n      else\n        local head", (RATES,)),
    ("rate: a start is not charged to its limit", "rate.lua",
     "          rate_take(e.rk, e.interval)\n", "", (RATES,)),
    ("rate: a second job of a key in one claim", "rate.lua",
     "if seen[key] then held(seen[key])", "if false then held(seen[key])", (RATES,)),
    ("rate: unlimited types not claimed alongside", "rate.lua",
     "if #jobs < n and #free > 0 then", "if false then", (RATES,)),
    ("rate: a claim naming a limited type skips the limit", "rate.lua",
     "if not any then return nil end", "if true then return nil end", (RATES,)),
    ("rate: every key shares one limit", "rate.lua",
     "return P .. 'rate:' .. job_type .. ':' .. key", "return P .. 'rate:' .. job_type", (RATES,)),
    ("rate: the limits are never read", "rate.lua",
     "if #flat == 0 then return nil end", "if true then return nil end", (RATES,)),
    ("rate: the next start counts from the epoch", "rate.lua",
     "string.format('%.3f', NOW)", "'0'", (RATES,)),
    # -- dependencies ------------------------------------------------------------------------
    ("deps: fail policy never fails the dependent", "flow.lua",
     "if failed and policy == 'fail' then return 'fail' end", "", FLOWS),
    ("deps: continue policy waits for every dependency", "flow.lua",
     "if failed and policy == 'continue' then return 'release' end", "", FLOWS),
    ("deps: released one dependency early", "flow.lua", "if left <= 0 then return 'release' end",
     "if left <= 1 then return 'release' end", FLOWS),
    ("deps: a failed dependency counts as a success", "flow.lua",
     "local ok = M.job.succeeded[c.to] == true", "local ok = true", FLOWS),
    ("deps: dependents are released again after a retry", "flow.lua",
     "  redis.call('DEL', key)\n  redis.call('HDEL', jkey(id), 'dependents')\n", "", FLOWS),
    ("deps: a dependency's finish never looks for dependents", "flow.lua",
     "  if c.r.dependents ~= '1' then return end", "  if true then return end", FLOWS),
    ("deps: a dependent that left waiting is moved anyway", "flow.lua",
     "if j == nil or not has_row(M.job, j.state, 'deps_done') then return end", "if j == nil then return end",
     FLOWS),
    ("deps: an unknown dependency is accepted", "flow.lua",
     "    if not state then\n      return nil,", "    if false then\n      return nil,", FLOWS),
    ("deps: a finished dependency counts as pending at submit", "flow.lua",
     "if not M.job.terminal[state] then pending[#pending + 1] = id", "if true then pending[#pending + 1] = id",
     FLOWS),
    ("deps: a dependent is never registered", "flow.lua",
     "    redis.call('SADD', P .. 'dependents:' .. id, x.id)\n", "", FLOWS),
    ("deps: a dependency is not marked as waited on", "flow.lua",
     "    redis.call('HSET', jkey(id), 'dependents', '1')",
     "    redis.call('HSET', jkey(id), 'dependents', '0')", FLOWS),
    ("flow: a dependency listed later is accepted", "flow.lua",
     "if not listed[d] and redis.call('EXISTS', jkey(d)) == 0 then", "if false then", FLOWS),
    ("flow: a parent's cancel leaves its children", "flow.lua",
     "        job_move(load_job(id), 'cancel', {reason = 'parent_cancelled', cause = parent})\n", "", FLOWS),
    ("flow: a parent's cancel cancels every dependency", "flow.lua",
     "if redis.call('HGET', jkey(id), 'parent') == parent then", "if true then", FLOWS),
    ("claim: the dependencies are not shown", "claim.lua",
     "dependencies = FLOW.view(j)}", "dependencies = nil}", FLOWS),
    ("event: a stamp's microseconds lose their leading zeros", "core.lua",
     "string.sub(string.rep('0', 6 - #us) .. us, 1, 3)", "string.sub(us, 1, 3)", (CLOCK,)),
    ("job event: the cause is left out", "job.lua",
     "    n = event_field(args, n, 'cause', c.x.cause)\n", "", (CLOCK,)),
    ("job event: the reason is left out", "job.lua",
     "    n = event_field(args, n, 'reason', j.reason)\n", "", (CLOCK,)),
    ("job event: the attempt is the retry count", "job.lua",
     "'attempt', j.attempts ~= '' and j.attempts or '0')", "'attempt', j.retry_count)", (CLOCK,)),
    ("claim: the view's attempt is the retry count", "claim.lua",
     "attempt = digits(j.attempts)", "attempt = digits(j.retry_count)", (TRANSITIONS, EFFECTS, RECLAIM)),
    ("rate: a removed limit stays", "rate.lua",
     "if l[2] == '' then redis.call('HDEL', P .. 'rates', l[1])", "if l[2] == '' then", (RATES,)),
]


def run(mutant: Mutant, original: str, path: Path) -> str:
    description, _file, old, new, tests = mutant
    if original.count(old) != 1:
        return "stale"
    path.write_text(original.replace(old, new))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *tests],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900,
        )
    finally:
        path.write_text(original)
    return "survived" if result.returncode == 0 else "killed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutants whose description contains this")
    parser.add_argument("--start", type=int, default=0, help="begin at this mutant (0-based), to resume a run")
    parser.add_argument("--list", action="store_true", help="list the mutants and whether their text is found")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS[args.start:] if args.k in m[0]]
    counts = {"killed": 0, "survived": 0, "stale": 0}
    for mutant in chosen:
        path = LUA / mutant[1]
        original = path.read_text()
        if args.list:
            outcome = "found" if original.count(mutant[2]) == 1 else "stale"
        else:
            outcome = run(mutant, original, path)
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
