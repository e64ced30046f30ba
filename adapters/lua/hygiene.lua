------------------------------------------------------------------------ filing, retention --

-- A finished job is filed once per outcome (per epoch: an operator retry starts a new one).
-- job_move puts every job that becomes terminal in `unfiled`; the evaluator reads candidates
-- with `unfiled`, classifies them (adapters/filing.py) and files each with `file`, which is
-- guarded: only a terminal job, in the state and epoch the evaluator read, not yet filed at
-- that epoch. Two evaluators racing: one files, the other is `absorbed`. Filing puts the job
-- in `retain:<state>` (score: finish time), where retention finds it.

local EMPTY_RESULT = {[''] = true, ['null'] = true, ['""'] = true, ['{}'] = true, ['[]'] = true}

local function uncount(field)
  if redis.call('HINCRBY', K_FILING, field, -1) <= 0 then redis.call('HDEL', K_FILING, field) end
end

local function missing_outputs(result, keys)
  local missing = {}
  if type(keys) ~= 'table' or #keys == 0 then return missing end
  local ok, value = pcall(cjson.decode, result)
  for _, k in ipairs(keys) do
    local v = nil
    if ok and type(value) == 'table' then v = value[k] end
    if v == nil or v == cjson.null then missing[#missing + 1] = k end
  end
  return missing
end

-- The delivery of the job's terminal notification at its current epoch: its state, or ''.
local function notification_of(j)
  if j.notify ~= '1' then return '' end
  local d = redis.call('HGET', dkey(j.id .. '~' .. M.job.notifications[j.state] .. '~' .. j.epoch), 'state')
  return d or 'missing'
end

-- Candidates for filing: unfiled terminal jobs due to be looked at, with what classifying
-- them needs. Entries that are no longer candidates (retried, deleted, filed) are dropped.
function OP.unfiled(x)
  local ids = redis.call('ZRANGEBYSCORE', K_UNFILED, '-inf', NOW, 'LIMIT', 0, x.n)
  local jobs = {}
  for _, id in ipairs(ids) do
    local j = load_job(id, {'filed_epoch', 'result'})
    if j == nil or not M.job.terminal[j.state] or j.filed_epoch == j.epoch then
      redis.call('ZREM', K_UNFILED, id)
    else
      local batch_reason = ''
      if j.batch ~= '' then batch_reason = redis.call('HGET', bkey(j.batch), 'reason') or '' end
      local required = x.required and x.required[j.type]
      -- required outputs: checked on the job that succeeded (kept: the states a row storing a result enters)
      local missing = M.job.kept[j.state] and missing_outputs(j.result, required) or {}
      jobs[#jobs + 1] = {id = id, type = j.type, state = j.state, reason = j.reason,
        epoch = num(j.epoch), finished_at = num(j.finished_at), notification = notification_of(j),
        batch_reason = batch_reason, result_empty = EMPTY_RESULT[j.result] == true,
        missing = #missing > 0 and missing or nil}
    end
  end
  return {kind = 'unfiled', jobs = #jobs > 0 and jobs or nil, n = #jobs}
end

-- File one job (category, problem) or, with wait_ms, look at it again later.
function OP.file(x)
  local j = load_job(x.id, {'filed_epoch', 'category', 'problem'})
  if j == nil then
    redis.call('ZREM', K_UNFILED, x.id)
    return {kind = 'not_found', error = 'job', id = x.id}
  end
  if not M.job.terminal[j.state] or j.state ~= x.state or num(j.epoch) ~= num(x.epoch) then
    return {kind = 'skipped', id = x.id, state = j.state} -- it moved on since it was read
  end
  if j.filed_epoch == j.epoch then return {kind = 'absorbed', id = x.id, state = j.state} end
  if x.wait_ms then
    redis.call('ZADD', K_UNFILED, 'XX', NOW + num(x.wait_ms), x.id)
    return {kind = 'deferred', id = x.id, state = j.state}
  end
  if j.category ~= '' then -- filed before an operator retry: that outcome is no longer the job's
    uncount(j.category .. ':' .. j.problem)
    for _, s in ipairs(M.job.terminal_list) do redis.call('ZREM', P .. 'retain:' .. s, x.id) end
  end
  redis.call('HSET', jkey(x.id), 'category', x.category, 'problem', x.problem,
    'filed_at', fmt(NOW), 'filed_epoch', j.epoch)
  redis.call('HINCRBY', K_FILING, x.category .. ':' .. x.problem, 1)
  redis.call('ZREM', K_UNFILED, x.id)
  redis.call('ZADD', P .. 'retain:' .. j.state, fmt(num(j.finished_at)), x.id)
  event('job.filed', x.id, {'state', j.state, 'category', x.category, 'problem', x.problem,
    'epoch', j.epoch})
  -- the type's re-drive policy covers this problem (redrive.lua): due `redrive_ms` from now
  if x.redrive_max and num(redis.call('HGET', jkey(x.id), 'redrive:' .. x.problem)) < num(x.redrive_max) then
    redis.call('ZADD', P .. 'redrive', NOW + num(x.redrive_ms), x.id)
  end
  return {kind = 'filed', id = x.id, state = j.state}
end

-- Delete one job and everything that is only about it.
local function delete_job(j, key)
  local id = j.id
  redis.call('DEL', jkey(id))
  redis.call('ZREM', key, id)
  redis.call('ZREM', K_FINISHED, id)
  redis.call('ZREM', K_UNFILED, id)
  redis.call('ZREM', P .. 'redrive', id)
  if j.idempotency_key ~= '' and redis.call('GET', P .. 'idem:' .. j.idempotency_key) == id then
    redis.call('DEL', P .. 'idem:' .. j.idempotency_key)
  end
  -- settled deliveries go with the job; one still on its way keeps its own snapshot
  if j.notify == '1' then
    for e = 0, num(j.epoch) do
      for _, s in ipairs(M.job.terminal_list) do
        local did = id .. '~' .. M.job.notifications[s] .. '~' .. e
        local d = redis.call('HGET', dkey(did), 'state')
        if d and M.webhook.terminal[d] then redis.call('DEL', dkey(did)) end
      end
    end
  end
  if j.category ~= '' then uncount(j.category .. ':' .. j.problem) end
  if j.batch ~= '' then redis.call('SREM', bkey(j.batch) .. ':members', id) end
  event('job.deleted', id, {'state', j.state, 'category', j.category, 'problem', j.problem,
    'reason', 'retention'})
end

-- Retention: delete filed jobs whose finish time is before their state's cutoff, at most n.
-- x.cutoffs lists {state, cutoff ms}. A job whose current notification is still on its way
-- without a snapshot of its own is kept (every delivery carries one; this guards the rule).
function OP.purge(x)
  local deleted = {}
  local budget = num(x.n)
  for _, pair in ipairs(x.cutoffs) do
    local state, cutoff = pair[1], pair[2]
    local key = P .. 'retain:' .. state
    if budget <= 0 then break end
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', cutoff, 'LIMIT', 0, budget)) do
      local j = load_job(id, {'filed_epoch', 'category', 'problem', 'idempotency_key'})
      if j == nil or j.state ~= state or j.filed_epoch ~= j.epoch then
        redis.call('ZREM', key, id) -- retried since it was filed, or already gone
      else
        local note = notification_of(j)
        local did = dkey(id .. '~' .. M.job.notifications[j.state] .. '~' .. j.epoch)
        if note ~= '' and note ~= 'missing' and not M.webhook.terminal[note]
            and (redis.call('HGET', did, 'snapshot') or '') == '' then
          redis.call('ZADD', key, NOW, id) -- look again one retention period from now
        else
          delete_job(j, key)
          deleted[#deleted + 1] = {id = id, state = state}
          budget = budget - 1
        end
      end
    end
  end
  return {kind = 'purged', n = #deleted, jobs = #deleted > 0 and deleted or nil}
end
