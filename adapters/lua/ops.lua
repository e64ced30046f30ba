-------------------------------------------------------------------------------------- ops --

-- Submit's optional text fields: (record field, op field), written only when not empty.
local SUBMIT_TEXT = {{'phases', 'phases'}, {'webhook_url', 'webhook_url'}, {'batch', 'batch'},
  {'idempotency_key', 'idem'}, {'validator_url', 'validator_url'}, {'traceparent', 'traceparent'},
  {'parent', 'parent'}}

function OP.submit(x)
  if x.idem and x.idem ~= '' then
    local known = redis.call('GET', P .. 'idem:' .. x.idem)
    if known and redis.call('EXISTS', jkey(known)) == 1 then
      return {kind = 'exists', id = known}
    end
  end
  if x.batch and x.batch ~= '' then
    local refusal = batch_refusal(x.batch, 1)
    if refusal then return refusal end
  end
  if redis.call('EXISTS', jkey(x.id)) == 1 then
    return {kind = 'rejected', error = 'job id ' .. x.id .. ' already exists'}
  end
  local plan -- its dependencies (flow.lua), when it has any
  if x.deps then
    local refusal
    plan, refusal = FLOW.plan(x)
    if plan == nil then return refusal end
  end
  if x.idem and x.idem ~= '' then
    redis.call('SET', P .. 'idem:' .. x.idem, x.id, 'PX', x.idem_ttl_ms)
  end
  local start = initial_state(M.job, {delayed = num(x.delay_ms) > 0,
    dependencies_pending = plan ~= nil and plan.decision ~= 'release'})
  local c = {m = M.job, r = {id = x.id, type = x.type, priority = x.priority, state = start.state},
    x = x, set = {'id', x.id, 'queue', QUEUE, 'type', x.type, 'state', start.state,
    'input', x.input, 'priority', fmt(x.priority), 'max_retries', fmt(x.max_retries), 'retry_count', '0',
    'attempts', '0', 'epoch', '0', 'timeout_ms', fmt(x.timeout_ms), 'backoff_ms', fmt(x.backoff_ms),
    'backoff_max_ms', fmt(x.backoff_max_ms), 'created_at', NOW_S, 'updated_at', NOW_S}}
  -- The flags only when set (an absent field reads as '', not '1'): a smaller record.
  if x.has_validator then put(c, 'has_validator', '1') end
  if x.notify then put(c, 'notify', '1') end
  -- The text fields only when not empty (an absent field reads as ''): a smaller record.
  for _, f in ipairs(SUBMIT_TEXT) do
    local v = x[f[2]]
    if v and v ~= '' then put(c, f[1], v) end
  end
  if plan then FLOW.stage(c, x, plan) end
  for _, e in ipairs(start.fx) do EFFECT.job[e](c) end
  if #start.fx > 0 then FX[#FX + 1] = start.fx end
  redis.call('HSET', jkey(x.id), unpack(c.set))
  index_add(M.job.at[start.state], c)
  event('job.submitted', x.id, {'to', start.state, 'job_type', x.type})
  if x.batch and x.batch ~= '' then batch_member_added(x.batch, x.id) end
  if plan then
    FLOW.register(x, plan)
    return {kind = 'created', id = x.id, state = redis.call('HGET', jkey(x.id), 'state')}
  end
  return {kind = 'created', id = x.id, state = start.state}
end

-- complete / fail / timeout / release from the worker holding the lease.
function OP.report(x)
  local j, reply = fenced(x.id, x.token, x.trigger)
  if j == nil then return reply end
  return job_move(j, x.trigger, x)
end

function OP.renew(x)
  local j, reply = fenced(x.id, x.token, 'renew')
  if j == nil then return reply end
  local deadline = NOW + num(x.lease_ms)
  redis.call('HSET', jkey(x.id), 'lease_deadline', fmt(deadline))
  redis.call('HDEL', jkey(x.id), 'rearmed')
  redis.call('ZADD', K_ACTIVE, deadline, x.id)
  return {kind = 'renewed', id = x.id, lease_deadline = deadline}
end

function OP.service_id(x)
  local j, reply = fenced(x.id, x.token, 'service_id')
  if j == nil then return reply end
  redis.call('HSET', jkey(x.id), 'service_job_id', x.service_job_id)
  return {kind = 'recorded', id = x.id}
end

function OP.phase(x)
  local j, reply = fenced(x.id, x.token, 'phase.' .. x.trigger)
  if j == nil then return reply end
  local phases = parse_phases(j.phases)
  for _, p in ipairs(phases) do
    if p[1] == x.name then
      local kind, o = apply(M.phase, p[2], x.trigger, {})
      if kind ~= 'moved' then return {kind = kind, id = x.id, phase = x.name, state = p[2]} end
      local from = p[2]
      p[2] = o.to
      local c = {r = j, x = x, set = {'phases', join_phases(phases), 'updated_at', NOW_S}}
      for _, e in ipairs(o.fx) do EFFECT.phase[e](c, x.name) end
      if #o.fx > 0 then FX[#FX + 1] = o.fx end
      redis.call('HSET', jkey(x.id), unpack(c.set))
      event('phase.' .. x.trigger, x.id, {'phase', x.name, 'from', from, 'to', o.to,
        'attempt', j.attempts})
      return {kind = 'moved', machine = 'phase', trigger = x.trigger, id = x.id, phase = x.name,
        from = from, to = o.to}
    end
  end
  return {kind = 'rejected', error = 'job ' .. x.id .. ' has no phase ' .. x.name}
end

-- Operator and system triggers that need no lease (the table's `unfenced`: cancel, retry,
-- validation results); every other trigger is refused here.
function OP.trigger(x)
  if not M.job.unfenced[x.trigger] then return {kind = 'rejected', error = 'trigger ' .. x.trigger .. ' needs a lease'} end
  local j = load_job(x.id)
  if j == nil then return {kind = 'not_found', error = 'job', id = x.id} end
  return job_move(j, x.trigger, x)
end

-- The watchdog: a lease that ran out. The watchdog presents the token it saw expire, so
-- a renewal or a takeover in between makes this a no-op (lost race, no stale record).
-- A decision after a status query also presents its inspection's nonce (see `inspect`);
-- one without a nonce is skipped while another watchdog's inspection holds the job.
-- `extend` (still running on the external service) never reaches past the attempt's timeout.
function OP.expire(x)
  local j = load_job(x.id, {'inspector', 'started_at'})
  if j == nil then return {kind = 'not_found', error = 'job', id = x.id} end
  if M.job.terminal[j.state] then return {kind = 'absorbed', id = x.id, state = j.state} end
  -- only an attempt holds a lease token (new_attempt takes it, end_attempt drops it)
  if x.token == nil or x.token == '' or j.lease_token ~= x.token or num(j.lease_deadline) > NOW then
    return {kind = 'skipped', id = x.id, state = j.state}
  end
  if x.inspector then
    if j.inspector ~= x.inspector then return {kind = 'skipped', id = x.id, state = j.state} end
  else
    local held = tonumber(redis.call('ZSCORE', K_ACTIVE, x.id))
    if held ~= nil and held > NOW then return {kind = 'skipped', id = x.id, state = j.state} end
  end
  if j.inspector ~= '' then redis.call('HDEL', jkey(x.id), 'inspector') end
  if x.trigger == 'extend' then
    local deadline = NOW + num(x.lease_ms)
    local cap = num(j.started_at) + num(j.timeout_ms)
    if num(j.timeout_ms) > 0 and deadline > cap then deadline = math.max(cap, NOW) end
    redis.call('HSET', jkey(x.id), 'lease_deadline', fmt(deadline))
    redis.call('ZADD', K_ACTIVE, deadline, x.id)
    event('job.lease_extended', x.id, {'reason', x.reason, 'attempt', j.attempts})
    return {kind = 'extended', id = x.id, lease_deadline = deadline}
  end
  x.by = 'watchdog'
  return job_move(j, x.trigger, x)
end

-- The watchdog takes an expired lease in hand to ask the job type's status query. For
-- `hold_ms` no other watchdog sees the job (its place in the active index moves to the end
-- of the hold), and only a decision presenting this inspection's nonce counts; after the
-- hold (the inspecting daemon died too) any watchdog may inspect it again, with a new
-- nonce. The worker keeps its lease: if it was only late, its renewal or report still
-- wins, and the decision is then skipped. Nothing else is written, and no event.
function OP.inspect(x)
  local j = load_job(x.id)
  if j == nil then return {kind = 'not_found', error = 'job', id = x.id} end
  local held = tonumber(redis.call('ZSCORE', K_ACTIVE, x.id))
  if x.token == nil or x.token == '' or j.lease_token ~= x.token or num(j.lease_deadline) > NOW
      or held == nil or held > NOW then
    return {kind = 'skipped', id = x.id, state = j.state}
  end
  local hold = NOW + num(x.hold_ms)
  redis.call('HSET', jkey(x.id), 'inspector', x.inspector)
  redis.call('ZADD', K_ACTIVE, hold, x.id)
  return {kind = 'inspecting', id = x.id, lease_deadline = hold}
end

-- Outage accounting: time during which no watchdog reached this prefix is not counted
-- against lease holders. Every watchdog sweep (`expired`, `workers_lost`) stamps `swept` with
-- its NOW. A sweep that finds the last stamp more than `gap_ms` old knows that for that long
-- nobody could judge (or renew) anything here: Redis was down, loading, out of memory, or out
-- of reach of every daemon. Each deadline in `index` that falls before NOW + `lease_ms` is then
-- re-armed to that moment by `rearm(id, deadline)`, which answers whether it did: one full
-- lease from the store's return for holders to reconnect, renew and report. `rearm` re-arms a
-- lease at most once between two renewals, so a holder that is really gone costs at most one
-- extra lease, even when sweeps come late for other reasons. Returns how many were re-armed.
local function outage_rearm(x, index, rearm)
  local key = P .. 'swept'
  local last = tonumber(redis.call('GET', key))
  if last == nil or NOW > last then redis.call('SET', key, NOW_S) end
  local gap = num(x.gap_ms)
  if last == nil or gap <= 0 or NOW - last <= gap then return 0 end
  local deadline = NOW + num(x.lease_ms)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. fmt(deadline))) do
    if rearm(id, deadline) then n = n + 1 end
  end
  event('store.outage', QUEUE, {'gap_ms', fmt(NOW - last), 'rearmed', n})
  return n
end

local function rearm_job(id, deadline)
  local j = load_job(id, {'rearmed'})
  if j == nil or M.job.at[j.state] ~= 'active' then
    if j == nil then redis.call('ZREM', K_ACTIVE, id) end
    return false
  end
  if j.rearmed ~= '' and j.rearmed == j.lease_token then return false end
  redis.call('HSET', jkey(id), 'lease_deadline', fmt(deadline), 'rearmed', j.lease_token)
  redis.call('ZADD', K_ACTIVE, deadline, id)
  return true
end

-- Active jobs whose lease ran out (and that no inspection holds), oldest first; `offset`
-- pages past the ones the caller is leaving for later. First, outage accounting (above).
function OP.expired(x)
  outage_rearm(x, K_ACTIVE, rearm_job)
  local ids = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', NOW, 'LIMIT', x.offset or 0, x.n)
  local jobs = {}
  for _, id in ipairs(ids) do
    local j = load_job(id, {'started_at'})
    if j ~= nil and M.job.at[j.state] == 'active' then
      jobs[#jobs + 1] = {id = id, token = j.lease_token, type = j.type,
        service_job_id = j.service_job_id, worker = j.lease_worker, attempt = num(j.attempts),
        started_at = num(j.started_at), timeout_ms = num(j.timeout_ms),
        retry_count = num(j.retry_count), max_retries = num(j.max_retries)}
    elseif j == nil then
      redis.call('ZREM', K_ACTIVE, id)
    end
  end
  return {kind = 'expired', jobs = #jobs > 0 and jobs or nil, n = #jobs}
end

-- The scheduler: scheduled jobs whose time has come become queued; and queued jobs of the
-- earlier versions' untyped index move to their types' zsets (LEGACY_MOVE per call).
function OP.wake(x)
  rebuild_queued_all()
  move_legacy(LEGACY_MOVE)
  local ids = redis.call('ZRANGEBYSCORE', K_DUE, '-inf', NOW, 'LIMIT', 0, x.n)
  local moved = 0
  for _, id in ipairs(ids) do
    local j = load_job(id)
    if j == nil then redis.call('ZREM', K_DUE, id)
    elseif job_move(j, 'wake', x).kind == 'moved' then moved = moved + 1 end
  end
  local nxt = redis.call('ZRANGE', K_DUE, 0, 0, 'WITHSCORES')
  local next_due = nxt[2] and tonumber(nxt[2]) or nil
  if legacy_left then next_due = NOW end -- more of the untyped index to move: again at once
  return {kind = 'woken', n = moved, next_due = next_due}
end

----------------------------------------------------------------------------- validation --

-- The validator: `validating` jobs whose next check is due, each taken under a check token
-- (its score moves to the check lease's end, so no other validator takes it meanwhile; a
-- validator that dies mid-check loses nothing but time). Only jobs this daemon can check are
-- taken: its types (x.types), or any job carrying its own validator URL.
function OP.validations(x)
  local types = {}
  for _, t in ipairs(x.types or {}) do types[t] = true end
  -- Due checks of other daemons' types are passed over, page after page (bounded), so they
  -- never starve the ones this daemon can do.
  local out, skipped, page, scanned = {}, 0, 4 * x.n + 32, 0
  while #out < x.n and scanned < VALIDATION_SCAN do
    local ids = redis.call('ZRANGEBYSCORE', K_VALIDATING, '-inf', NOW, 'LIMIT', skipped, page)
    if #ids == 0 then break end
    scanned = scanned + #ids
    for _, id in ipairs(ids) do
      if #out >= x.n then break end
      local j = load_job(id, {'validator_url', 'traceparent'})
      if j == nil or M.job.at[j.state] ~= 'validating' then
        redis.call('ZREM', K_VALIDATING, id)
      elseif types[j.type] or j.validator_url ~= '' then
        local check = num(j.val_checks) + 1
        local token = x.nonce .. '.' .. check
        redis.call('HSET', jkey(id), 'val_token', token)
        redis.call('ZADD', K_VALIDATING, NOW + num(x.lease_ms), id)
        out[#out + 1] = {id = id, type = j.type, token = token, check = check, epoch = num(j.epoch),
          validator_url = j.validator_url, service_job_id = j.service_job_id,
          traceparent = j.traceparent ~= '' and j.traceparent or nil}
      else
        skipped = skipped + 1
      end
    end
  end
  -- When to look again: now if the batch filled up (more may be due), else the next check
  -- that comes due later (what was passed over is another daemon's to do).
  local next_due = nil
  if #out >= x.n then
    next_due = NOW
  else
    local nxt = redis.call('ZRANGEBYSCORE', K_VALIDATING, '(' .. NOW_S, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    next_due = nxt[2] and tonumber(nxt[2]) or nil
  end
  return {kind = 'validations', jobs = #out > 0 and out or nil, n = #out, next_due = next_due}
end

-- One check's verdict, fenced by its check token. Every check is recorded (`vck:<epoch>:<n>`,
-- never overwritten). Passed: `validation_passed`. Failed with checks left: the next check is
-- due at x.retry_at, one `job.validation_check` event. Failed on the last check:
-- `validation_exhausted` with the last status the source of truth reported. `release` (a
-- validator shutting down mid-check) records nothing and makes the check due again at once.
function OP.validated(x)
  local j = load_job(x.id, {'val_token', 'val_seen'})
  if j == nil then return {kind = 'not_found', error = 'job', id = x.id} end
  if M.job.terminal[j.state] then return {kind = 'absorbed', id = x.id, state = j.state} end
  if not has_row(M.job, j.state, 'validation_passed') or j.val_token ~= x.token then
    return {kind = 'stale', id = x.id, state = j.state}
  end
  if x.release then
    redis.call('HSET', jkey(x.id), 'val_token', '')
    redis.call('ZADD', K_VALIDATING, NOW, x.id)
    return {kind = 'released', id = x.id, state = j.state}
  end
  local n = num(j.val_checks) + 1
  local status = x.status or ''
  local seen = status ~= '' and status or j.val_seen
  redis.call('HSET', jkey(x.id), 'val_checks', n, 'val_token', '', 'val_seen', seen,
    'vck:' .. num(j.epoch) .. ':' .. n, cjson.encode({n = n, epoch = num(j.epoch), at = NOW,
      ok = x.ok == true, status = status, reason = x.reason or ''}))
  j.val_checks = n
  if x.ok == true then
    return job_move(j, 'validation_passed', {status = status})
  end
  if n >= num(x.max_attempts) then
    return job_move(j, 'validation_exhausted', {status = seen, error = x.error})
  end
  redis.call('ZADD', K_VALIDATING, x.retry_at, x.id)
  event('job.validation_check', x.id, {'check', n, 'status', status, 'reason', x.reason,
    'next_at', fmt(x.retry_at)})
  return {kind = 'checked', id = x.id, state = j.state, n = n, next_due = x.retry_at}
end


-- Take due deliveries: pending or retry_wait ones are sent; a `sending` one whose send lease
-- ran out (its daemon died) is released first, then sent again with the same id.
function OP.deliveries(x)
  local ids = redis.call('ZRANGEBYSCORE', K_OUTBOX, '-inf', NOW, 'LIMIT', 0, x.n)
  local out = {}
  for _, id in ipairs(ids) do
    local d = load_delivery(id)
    if d == nil then
      redis.call('ZREM', K_OUTBOX, id)
    else
      if has_row(M.webhook, d.state, 'release') then move('webhook', d, 'release', {}, x) end
      local r = move('webhook', d, 'send', webhook_facts(num(d.attempts), num(x.max_attempts)), x)
      if r.kind == 'moved' and not M.webhook.terminal[r.to] then
        out[#out + 1] = {id = id, event = d.event, object = d.object, url = d.url,
          snapshot = d.snapshot, attempt = num(d.attempts), token = d.token, created_at = num(d.created_at),
          traceparent = d.traceparent ~= '' and d.traceparent or nil}
      end
    end
  end
  local nxt = redis.call('ZRANGE', K_OUTBOX, 0, 0, 'WITHSCORES')
  return {kind = 'deliveries', deliveries = #out > 0 and out or nil, n = #out,
    next_due = nxt[2] and tonumber(nxt[2]) or nil}
end

-- The outcome of one send: succeed, fail (retry_at decides when) or reject; or release.
function OP.delivered(x)
  local d = load_delivery(x.id)
  if d == nil then return {kind = 'not_found', error = 'delivery', id = x.id} end
  if M.webhook.terminal[d.state] then return {kind = 'absorbed', id = x.id, state = d.state} end
  if d.token ~= x.token then return {kind = 'stale', id = x.id, state = d.state} end
  return move('webhook', d, x.trigger, webhook_facts(num(d.attempts), num(x.max_attempts)), x)
end

-- An operator's re-send: a dead delivery goes back to pending with a fresh attempt budget, due
-- now, under no token (a late report of its last attempt is stale); the same webhook-id. Any
-- other state: absorbed (delivered) or invalid (on its way), nothing written.
function OP.redeliver(x)
  local d = load_delivery(x.id)
  if d == nil then return {kind = 'not_found', error = 'delivery', id = x.id} end
  return move('webhook', d, 'redeliver', {}, x)
end

-- The guards' facts for given counters, as the moves compute them (a read-only check that
-- machines/ and this library agree: see tests/machines/test_effects_contract.py).
function OP.facts(x)
  local f = x.fields
  if x.machine == 'job' then return {kind = 'facts', facts = job_facts(f)} end
  if x.machine == 'batch' then return {kind = 'facts', facts = batch_facts(f, x.stuck == true)} end
  if x.machine == 'webhook' then
    return {kind = 'facts', facts = webhook_facts(num(f.attempts), num(f.max_attempts))}
  end
  return {kind = 'rejected', error = 'no machine ' .. tostring(x.machine)}
end

