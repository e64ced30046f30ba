------------------------------------------------------------------------------------ claim --
-- What a daemon claims: the queued indexes read by priority, the claimed view, pause and
-- resume, a lost claim found again, the queued counts.

-- A stored number as the reply carries it: the stored digits (the store decodes them as
-- numbers), never a Lua number (cjson writes each with a "%.14g" conversion).
local function digits(v)
  if type(v) == 'number' then return fmt(v) end
  if v == nil or v == '' then return '0' end
  return v
end

local function text(v) if v ~= '' then return v end end -- '' left out of the reply

-- What a worker needs to run a claimed job: its input, attempt, lease and earlier phases.
local function claimed_view(j, token, deadline)
  local pr = {}
  for _, p in ipairs(parse_phases(j.phases)) do
    if M.phase.kept[p[2]] then
      local v = redis.call('HGET', jkey(j.id), 'pr:' .. p[1])
      if v then pr[#pr + 1] = p[1]; pr[#pr + 1] = v end
    end
  end
  return {id = j.id, type = j.type, input = j.input, attempt = digits(j.attempts),
    token = token, lease_deadline = digits(deadline), timeout_ms = digits(j.timeout_ms),
    retry_count = digits(j.retry_count), max_retries = digits(j.max_retries), phases = text(j.phases),
    phase_results = #pr > 0 and pr or nil, service_job_id = text(j.service_job_id), batch = text(j.batch),
    traceparent = j.traceparent ~= '' and j.traceparent or nil, dependencies = FLOW.view(j)}
end

-- What a claim reads of a job: what `job_move` reads for the claim row (to `active`, a new
-- attempt, no notification) and what `claimed_view` returns; its state first. Half the record:
-- the full one makes the HMGET about twice as slow. Should a claim row ever read more, the job
-- record reads the rest when first used (core.lua, `job_record`).
local CLAIM_FIELDS = {'state', 'attempts', 'retry_count', 'max_retries', 'has_validator', 'phases',
  'finished_at', 'reason', 'batch', 'type', 'timeout_ms', 'service_job_id', 'input', 'traceparent', 'deps'}

-- Move the head of the earlier versions' `queued` index (one zset for every type) into the
-- types' zsets, scores kept; entries of jobs no longer queued are dropped. The scheduler's
-- `wake`, which every daemon runs on each queue at least every idle poll, calls it, so the
-- claim itself never looks at that index.
local function move_legacy(n)
  if legacy_left == false then return end
  local popped = redis.call('ZPOPMIN', K_QUEUED, n)
  legacy_left = #popped == 2 * n and redis.call('EXISTS', K_QUEUED) == 1
  for i = 1, #popped, 2 do
    local id = popped[i]
    local v = redis.call('HMGET', jkey(id), 'state', 'type')
    if M.job.at[v[1]] == 'queued' then enqueue(v[2], popped[i + 1], id); woke = true end
  end
end

-- Take a prefix of a type's zset (the type leaves `queued_types` with its last job).
local function take_head(job_type, count)
  local key = qkey(job_type)
  redis.call('ZREMRANGEBYRANK', key, 0, count - 1)
  if redis.call('EXISTS', key) == 0 then redis.call('SREM', K_QUEUED_TYPES, job_type) end
end

-- The best n queued jobs of `types` (two or more), best score first across the types (ties:
-- the smaller id, as ZPOPMIN orders them), taken out of their types' zsets. For one job (the
-- usual claim: one slot came free), the best of the types' heads, one entry read per type.
-- For more, a k-way merge of the types' zsets, read in pages of a fair share plus one (more
-- of a type is read only when the merge reaches the end of its page): about n + 2 x types
-- entries read, one ZRANGE per type (and one per page more), one ZREM per type taken from.
local function merge_types(types, n)
  local T = #types
  if n == 1 then
    local best, bs, bid
    for k = 1, T do
      local r = redis.call('ZRANGE', qkey(types[k]), 0, 0, 'WITHSCORES')
      if r[1] then
        local s = tonumber(r[2])
        if best == nil or s < bs or (s == bs and r[1] < bid) then best, bs, bid = k, s, r[1] end
      end
    end
    if best == nil then return {} end
    take_head(types[best], 1)
    return {bid}
  end
  local picked = {}
  local page = math.floor((n + T - 1) / T) + 1
  local ids, scores, pos, more = {}, {}, {}, {}
  local function fetch(k)
    local got = ids[k]
    local r = redis.call('ZRANGE', qkey(types[k]), #got, #got + page - 1, 'WITHSCORES')
    local sc = scores[k]
    for i = 1, #r, 2 do got[#got + 1] = r[i]; sc[#sc + 1] = tonumber(r[i + 1]) end
    more[k] = #r == 2 * page
  end
  for k = 1, T do ids[k], scores[k], pos[k] = {}, {}, 1; fetch(k) end
  while #picked < n do
    local best, bs, bid = nil, nil, nil
    for k = 1, T do
      local p = pos[k]
      if p > #ids[k] and more[k] then fetch(k) end
      if p <= #ids[k] then
        local s, id = scores[k][p], ids[k][p]
        if best == nil or s < bs or (s == bs and id < bid) then best, bs, bid = k, s, id end
      end
    end
    if best == nil then break end
    picked[#picked + 1] = bid
    pos[best] = pos[best] + 1
  end
  for k = 1, T do
    local taken = pos[k] - 1
    if taken > 0 and taken == #ids[k] and not more[k] then -- the merge took all the type's jobs
      redis.call('DEL', qkey(types[k]))
      redis.call('SREM', K_QUEUED_TYPES, types[k])
    elseif taken > 0 then
      take_head(types[k], taken)
    end
  end
  return picked
end

------------------------------------------------------------------------------ pause --

-- An operator's pause of a queue: one flag key, `paused`, in the queue's hash tag. While it
-- exists every claim of the queue answers nothing (checked first, before any index is read);
-- submits, the scheduler's wake, the watchdog, validation and deliveries go on. `pause` and
-- `resume` are idempotent: the second of two is `absorbed` and writes nothing; a resume that
-- moves wakes the queue's idle workers.
local function queue_paused() return redis.call('EXISTS', P .. 'paused') == 1 end

function OP.pause(x)
  if queue_paused() then return {kind = 'absorbed', id = QUEUE, state = 'paused'} end
  redis.call('SET', P .. 'paused', NOW_S)
  event('queue.paused', QUEUE, {})
  return {kind = 'moved', machine = 'queue', trigger = 'pause', id = QUEUE, from = 'running', to = 'paused'}
end

function OP.resume(x)
  if not queue_paused() then return {kind = 'absorbed', id = QUEUE, state = 'running'} end
  redis.call('DEL', P .. 'paused')
  event('queue.resumed', QUEUE, {})
  woke = true
  return {kind = 'moved', machine = 'queue', trigger = 'resume', id = QUEUE, from = 'paused', to = 'running'}
end

-- Claim up to x.n queued jobs of the types x.types (every queued type when absent), best
-- score first across the types (ties: the smaller id). A daemon that serves every type with
-- queued jobs (`queued_types`, a handful of names) takes the head of `queued_all`, which
-- holds them all in that order: one ZPOPMIN, and the jobs leave their types' zsets (one ZREM
-- per type). Otherwise only those of its types that have jobs are read: one type's zset
-- alone, or the merge of several (`merge_types`); the jobs then leave `queued_all` (one
-- ZREM). Never a scan of the queue, and never a job of a type the daemon did not name. Each
-- call from the script, and each entry it reads, costs more than the command's own work: so
-- every route makes as few calls, and reads as few entries, as it can. The `claim` op itself
-- (rate.lua) checks the pause and the rate limits first, then routes here.
local function claim_routes(x)
  local n = num(x.n)
  local types = x.types -- then: the served types to read, nil when they are every queued type
  local serves -- x.types as a set, when the claim takes the head of `queued_all`
  if types ~= nil then -- distinct names (the store sends a sorted set)
    local present = redis.call('SMEMBERS', K_QUEUED_TYPES)
    if #present == 0 then return {kind = 'claimed', n = 0} end
    local mine = {}
    serves = {}
    for _, t in ipairs(types) do serves[t] = true end
    for _, t in ipairs(present) do if serves[t] then mine[#mine + 1] = t end end
    if #mine < #present then types, serves = mine, nil else types = nil end
  end
  local picked, popped = {}, nil
  if types == nil then
    popped = redis.call('ZPOPMIN', K_QUEUED_ALL, n)
    if #popped == 0 and rebuild_queued_all() then popped = redis.call('ZPOPMIN', K_QUEUED_ALL, n) end
    for i = 1, #popped, 2 do picked[#picked + 1] = popped[i] end
  elseif #types == 1 then -- one type: its zset alone
    local key = qkey(types[1])
    local r = redis.call('ZPOPMIN', key, n)
    for i = 1, #r, 2 do picked[#picked + 1] = r[i] end
    if #picked > 0 and (#picked < n or redis.call('EXISTS', key) == 0) then
      redis.call('SREM', K_QUEUED_TYPES, types[1])
    end
  elseif #types > 1 then
    picked = merge_types(types, n)
  end
  if #picked == 0 then return {kind = 'claimed', n = 0} end
  local loaded, of_type, type_order = {}, {}, {}
  local stale = false -- an entry of `queued_all` whose job is gone or not queued
  for i, id in ipairs(picked) do
    local j = job_record(id, CLAIM_FIELDS)
    if j == nil and types == nil then -- its record is gone: out of its type's zset too
      stale = true
      for _, t in ipairs(redis.call('SMEMBERS', K_QUEUED_TYPES)) do redis.call('ZREM', qkey(t), id) end
    elseif j ~= nil and types == nil and M.job.at[j.state] ~= 'queued' then
      stale = true
    end
    if j ~= nil and serves and not serves[j.type] then -- never: `queued_types` lacked its type
      redis.call('ZADD', K_QUEUED_ALL, popped[2 * i], id)
      redis.call('SADD', K_QUEUED_TYPES, j.type)
    elseif j ~= nil then
      loaded[#loaded + 1] = j
      if types == nil then
        local same = of_type[j.type]
        if same == nil then same = {}; of_type[j.type] = same; type_order[#type_order + 1] = j.type end
        same[#same + 1] = id
      end
    end
  end
  if types == nil then -- out of their types' zsets (the type leaves `queued_types` with its last)
    for _, t in ipairs(type_order) do
      local key = qkey(t)
      redis.call('ZREM', key, unpack(of_type[t]))
      if redis.call('EXISTS', key) == 0 then redis.call('SREM', K_QUEUED_TYPES, t) end
    end
  else
    redis.call('ZREM', K_QUEUED_ALL, unpack(picked))
  end
  if stale then rebuild_queued_all(true) end
  local jobs = {}
  x.popped = true
  for _, j in ipairs(loaded) do
    local r = job_move(j, 'claim', x)
    if r.kind == 'moved' then jobs[#jobs + 1] = claimed_view(j, r.token, r.lease_deadline) end
  end
  return {kind = 'claimed', jobs = #jobs > 0 and jobs or nil, n = #jobs}
end

-- A claim whose answer the worker never got (the connection dropped, the reply was lost):
-- the jobs it leased, found by the claim's nonce (their tokens read `<nonce>.<attempt>`)
-- among the queue's active leases, still held by this worker under that token, so the
-- worker runs them after all. Writes nothing. O(active leases of the queue); only ever
-- called after a claim failed.
function OP.reclaim(x)
  local prefix = x.nonce .. '.'
  local jobs = {}
  for _, id in ipairs(redis.call('ZRANGE', K_ACTIVE, 0, -1)) do
    local v = redis.call('HMGET', jkey(id), 'state', 'lease_token', 'lease_worker')
    if v[1] and M.job.at[v[1]] == 'active' and v[3] == x.worker and string.sub(v[2] or '', 1, #prefix) == prefix then
      local j = load_job(id, {'input', 'traceparent'})
      jobs[#jobs + 1] = claimed_view(j, j.lease_token, j.lease_deadline)
    end
  end
  return {kind = 'claimed', jobs = #jobs > 0 and jobs or nil, n = #jobs}
end

-- How many jobs wait, per type, and how many still sit in the earlier versions' index
-- (`untyped`: their type is known once a claim moves them). Read only.
function OP.queued(x)
  local types = redis.call('SMEMBERS', K_QUEUED_TYPES)
  local counts = {}
  for _, t in ipairs(types) do counts[#counts + 1] = {t, redis.call('ZCARD', qkey(t))} end
  return {kind = 'queued', jobs = #counts > 0 and counts or nil,
    n = redis.call('ZCARD', K_QUEUED)}
end
