-- jobvisor's guarded transitions: the single implementation, run by redis-server and by the
-- embedded store (fakeredis) alike.
--
-- Theory of operation. One call applies a list of ops to ONE queue (every key shares the
-- queue's hash tag). Each op reads what it needs, decides with the machine tables generated
-- from machines/ (the M table above this text, written by adapters/scripts.py), and only then
-- writes: the new state and fields, the index the job sits in, exactly one event on the
-- queue's stream, the outbox row when the transition notifies, and the batch counters. An op
-- whose trigger is absorbed, blocked, invalid or stale writes nothing (a stale worker report
-- leaves one `stale_report` event and nothing else). Ops are independent: each is atomic
-- because the whole script is, and one op's error is reported for that op alone.
--
-- It is a Redis Function library (FUNCTION LOAD): the machine tables and helpers are built
-- once when the library loads, not on every call.
-- KEYS: none are passed in besides the queue's `queued` zset (KEYS[1]); every other key is
-- built from the prefix ARGV[1] = "jv:{<queue>}:" and so lies in the same slot.
--
-- Queued jobs wait in one zset per job type, `queued:<type>` (score: priority band + time),
-- and all of them in `queued_all` (same scores); `queued_types` lists the types whose zset is
-- not empty. A daemon's claim names the types it has handlers for: the head of `queued_all`
-- when they cover every queued type, else the best heads of its own types' zsets (about
-- n + 2 x types entries read), never a scan of the queue, never a job it cannot run.
-- `queued` itself is the index of earlier versions (every type in one zset): never written,
-- and emptied by the scheduler's `wake`, which moves its entries into their types' zsets (at
-- most LEGACY_MOVE per call).
-- ARGV: 1 prefix, 2 now (ms since the epoch), 3 JSON list of ops, 4 stream cap.

-- Per-call values: set by `run` at the start of every call (Redis runs one call at a time).
local P, NOW, NOW_S, OPS, CAP, QUEUE
local K_QUEUED, K_DUE, K_ACTIVE, K_VALIDATING, K_FINISHED, K_EVENTS, K_OUTBOX, K_BATCHES
local K_UNFILED, K_FILING, K_QUEUED_TYPES, K_QUEUED_ALL
local EPOCH_2024 = 1704067200000
local VALIDATION_SCAN = 2000 -- due checks one `validations` op looks at, at most
local BAND = 2199023255552 -- 2^41 ms (about 69 years) per priority band
local LEGACY_MOVE = 256 -- entries of the earlier versions' `queued` index one claim moves
local woke = false
local legacy_left -- per call: whether the earlier versions' `queued` index has entries (nil: not looked)

local function begin(args)
  P = args[1]
  NOW = tonumber(args[2])
  NOW_S = string.format('%d', NOW)
  OPS = cjson.decode(args[3])
  CAP = args[4]
  K_QUEUED, K_DUE, K_ACTIVE = P .. 'queued', P .. 'due', P .. 'active'
  K_VALIDATING, K_FINISHED, K_EVENTS = P .. 'validating', P .. 'finished', P .. 'events'
  K_OUTBOX, K_BATCHES = P .. 'outbox', P .. 'batches'
  K_UNFILED, K_FILING = P .. 'unfiled', P .. 'filing'
  K_QUEUED_TYPES, K_QUEUED_ALL = P .. 'queued_types', P .. 'queued_all'
  QUEUE = string.sub(P, string.find(P, '{', 1, true) + 1, string.find(P, '}', 1, true) - 1)
  woke = false
  legacy_left = nil
end

local function jkey(id) return P .. 'job:' .. id end
local function bkey(id) return P .. 'batch:' .. id end
local function dkey(id) return P .. 'delivery:' .. id end
local function num(v) return tonumber(v) or 0 end
local function fmt(n) return string.format('%d', n) end
local function enc(v) if v == nil or v == false then return 'null' end return cjson.encode(v) end
local function raw(v) if v == nil or v == false or v == '' then return 'null' end return v end

-- The machine tables decide; nothing below spells out a transition.
local function apply(m, state, trigger, facts)
  local by_state = m.index[state]
  if by_state == nil then return 'invalid' end
  local options = by_state[trigger]
  if options == nil then
    if m.terminal[state] then return 'absorbed' end
    return 'invalid'
  end
  for _, o in ipairs(options) do
    if o.guard == '' or facts[o.guard] then return 'moved', o end
  end
  return 'blocked'
end

-- Every event is stamped with the server's clock (TIME), never the caller's NOW: clients and
-- daemons each have their own clock, and a stream read in order must read in time order too.
-- The stream id (also the server's clock) orders entries even if that clock steps back.
local function event(kind, id, fields)
  local t = redis.call('TIME')
  local at = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  local args = {'XADD', K_EVENTS, 'MAXLEN', '~', CAP, '*', 'type', kind, 'id', id, 'at', at}
  local n = 12
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if v ~= nil and v ~= '' then
      args[n + 1] = fields[i]
      args[n + 2] = type(v) == 'string' and v or tostring(v)
      n = n + 2
    end
  end
  redis.call(unpack(args))
end

-- Phases live in one field, "name=state,name=state", in declared order.
local function parse_phases(s)
  local list = {}
  if s == nil or s == '' then return list end
  for name, state in string.gmatch(s, '([^=,]+)=([^,]+)') do list[#list + 1] = {name, state} end
  return list
end

local function join_phases(list)
  local parts = {}
  for i, p in ipairs(list) do parts[i] = p[1] .. '=' .. p[2] end
  return table.concat(parts, ',')
end

-- Apply one phase trigger to every phase it moves; returns names moved.
local function each_phase(list, trigger)
  local moved = {}
  for _, p in ipairs(list) do
    local kind, o = apply(M.phase, p[2], trigger, {})
    if kind == 'moved' then
      p[2] = o.to
      moved[#moved + 1] = p[1]
    end
  end
  return moved
end

local JOB_FIELDS = {'state', 'lease_token', 'attempts', 'retry_count', 'max_retries',
  'has_validator', 'notify', 'epoch', 'phases', 'batch', 'priority', 'backoff_ms',
  'backoff_max_ms', 'timeout_ms', 'type', 'lease_deadline', 'webhook_url', 'created_at',
  'service_job_id', 'result', 'error', 'reason', 'finished_at', 'lease_worker', 'val_checks',
  'validation_status', 'traceparent'}

-- One record as a table of strings ('' for absent fields); nil when the record does not exist
-- (every record's first field is its state).
local function load_hash(key, fields, id)
  local v = redis.call('HMGET', key, unpack(fields))
  if not v[1] then return nil end
  local record = {id = id}
  for i, f in ipairs(fields) do record[f] = v[i] or '' end
  return record
end

local function load_job(id, extra)
  local fields = JOB_FIELDS
  if extra then
    fields = {}
    for i, f in ipairs(JOB_FIELDS) do fields[i] = f end
    for _, f in ipairs(extra) do fields[#fields + 1] = f end
  end
  return load_hash(jkey(id), fields, id)
end

-- The zset of queued jobs of one type.
local function qkey(job_type) return P .. 'queued:' .. job_type end

-- Put a job in its type's queued zset (and the type in `queued_types`), and in `queued_all`.
local function enqueue(job_type, score, id)
  redis.call('ZADD', qkey(job_type), score, id)
  redis.call('SADD', K_QUEUED_TYPES, job_type)
  redis.call('ZADD', K_QUEUED_ALL, score, id)
end

-- `queued_all` is the union of the types' zsets. A version before it (or a process of such a
-- version, during a rolling deploy) leaves jobs in their types' zsets alone, and takes jobs
-- out of them without touching `queued_all`. When the counts disagree (or `force`: a claim
-- popped an entry whose job was not queued), `queued_all` is made again from the types' zsets
-- with their scores, so a daemon that serves every type sees every job, in order. The
-- scheduler's `wake` looks (a count per queued type: a handful of calls, writing nothing when
-- the counts agree), and so does a claim that finds `queued_all` empty or stale.
local function rebuild_queued_all(force)
  local present = redis.call('SMEMBERS', K_QUEUED_TYPES)
  local keys, typed = {}, 0
  for _, t in ipairs(present) do
    keys[#keys + 1] = qkey(t)
    typed = typed + redis.call('ZCARD', qkey(t))
  end
  if not force and typed == redis.call('ZCARD', K_QUEUED_ALL) then return false end
  if #keys == 0 then
    redis.call('DEL', K_QUEUED_ALL)
    return false
  end
  local n = #keys
  keys[n + 1], keys[n + 2] = 'AGGREGATE', 'MIN' -- unpack() expands only as the last argument
  redis.call('ZUNIONSTORE', K_QUEUED_ALL, n, unpack(keys))
  return true
end

-- Take a job out of the queued index: its type's zset (the type leaves `queued_types` when
-- that was its last job), `queued_all`, and the earlier versions' index, where it may still sit.
local function dequeue(job_type, id)
  local key = qkey(job_type)
  if redis.call('ZREM', key, id) == 1 and redis.call('EXISTS', key) == 0 then
    redis.call('SREM', K_QUEUED_TYPES, job_type)
  end
  redis.call('ZREM', K_QUEUED_ALL, id)
  if legacy_left == nil then legacy_left = redis.call('EXISTS', K_QUEUED) == 1 end
  if legacy_left then redis.call('ZREM', K_QUEUED, id) end
end

local function index_of(state)
  if state == 'queued' then return nil -- per type: enqueue / dequeue
  elseif state == 'scheduled' then return K_DUE
  elseif state == 'active' then return K_ACTIVE
  elseif state == 'validating' then return K_VALIDATING
  end
  return K_FINISHED
end

local function queued_score(priority)
  return (100 - num(priority)) * BAND + (NOW - EPOCH_2024)
end

local function backoff_ms(j, retry_count, jitter)
  local base = num(j.backoff_ms)
  local cap = num(j.backoff_max_ms)
  local delay = base * (2 ^ (retry_count - 1))
  if cap > 0 and delay > cap then delay = cap end
  return math.floor(delay * (0.5 + 0.5 * (jitter or 1)))
end

local OUTCOME = {complete = 'succeeded', fail = 'failed', timeout = 'timed_out',
  lease_expired = 'worker_lost', cancel = 'cancelled', release = 'interrupted'}
local REASON = {fail = 'handler_error', timeout = 'timed_out', lease_expired = 'worker_lost',
  cancel = 'cancelled', validation_exhausted = 'validation_failed'}

-- The job as it was at the transition: the body of its notification, built by concatenation
-- so that the stored result (already JSON) is embedded byte for byte.
local function job_snapshot(j)
  return '{"id":' .. enc(j.id) .. ',"queue":' .. enc(QUEUE) .. ',"type":' .. enc(j.type) ..
    ',"state":' .. enc(j.state) .. ',"attempts":' .. num(j.attempts) ..
    ',"retry_count":' .. num(j.retry_count) .. ',"max_retries":' .. num(j.max_retries) ..
    ',"created_at_ms":' .. raw(j.created_at) .. ',"finished_at_ms":' .. raw(j.finished_at) ..
    ',"result":' .. raw(j.result) .. ',"error":' .. raw(j.error) ..
    ',"reason":' .. enc(j.reason ~= '' and j.reason or nil) ..
    ',"batch":' .. enc(j.batch ~= '' and j.batch or nil) ..
    ',"service_job_id":' .. enc(j.service_job_id ~= '' and j.service_job_id or nil) ..
    ',"validation_status":' .. enc(j.validation_status ~= '' and j.validation_status or nil) .. '}'
end

-- Outbox: one row per (object, event type, epoch); a second insert is a no-op.
local function outbox_add(object_id, kind, epoch, url, snapshot, traceparent)
  local did = object_id .. '~' .. kind .. '~' .. epoch
  if redis.call('EXISTS', dkey(did)) == 1 then return false end
  redis.call('HSET', dkey(did), 'state', 'pending', 'attempts', 0, 'event', kind,
    'object', object_id, 'epoch', epoch, 'url', url or '', 'created_at', NOW_S,
    'snapshot', snapshot)
  if traceparent and traceparent ~= '' then redis.call('HSET', dkey(did), 'traceparent', traceparent) end
  redis.call('ZADD', K_OUTBOX, NOW, did)
  return true
end

local batch_member_done, batch_member_reopened, batch_refusal, batch_member_added -- batch section

-- The one path every job transition takes. `x` carries the op's data.
local function job_move(j, trigger, x)
  local facts = {has_validator = j.has_validator == '1',
    retries_left = num(j.retry_count) < num(j.max_retries)}
  local kind, o = apply(M.job, j.state, trigger, facts)
  if kind ~= 'moved' then return {kind = kind, id = j.id, state = j.state} end
  local from, to, fx = j.state, o.to, o.fx
  local set = {}
  local function put(f, v) set[#set + 1] = f; set[#set + 1] = v; j[f] = v end
  put('state', to)
  put('updated_at', NOW_S)
  local attempt = num(j.attempts)
  local phases = parse_phases(j.phases)
  local phases_before = j.phases
  local score = NOW
  local interrupted = ''
  local reply = {kind = 'moved', id = j.id, from = from, to = to, trigger = trigger}
  if fx.new_attempt then
    attempt = attempt + 1
    local token = x.nonce .. '.' .. attempt
    local deadline = NOW + num(x.lease_ms)
    put('attempts', attempt)
    put('lease_token', token)
    put('lease_worker', x.worker or '')
    put('lease_deadline', fmt(deadline))
    put('started_at', NOW_S)
    score = deadline
    reply.token = token
    reply.lease_deadline = deadline
  end
  if fx.resume_phases then each_phase(phases, 'reset') end
  if fx.interrupt_phase then
    for _, p in ipairs(phases) do if p[2] == 'running' then interrupted = p[1] end end
    each_phase(phases, 'fail')
  end
  if fx.cancel_phases then each_phase(phases, 'cancel') end
  if fx.rewind_phases then
    for _, name in ipairs(each_phase(phases, 'rewind')) do
      redis.call('HDEL', jkey(j.id), 'pr:' .. name)
    end
  end
  if fx.count_retry then put('retry_count', num(j.retry_count) + 1) end
  if fx.reset_retries then put('retry_count', 0) end
  if fx.new_epoch then put('epoch', num(j.epoch) + 1) end
  if fx.arm_backoff then
    score = NOW + backoff_ms(j, num(j.retry_count), x.jitter)
    put('due_at', fmt(score))
  end
  if fx.new_attempt then
    local resume = ''
    for _, p in ipairs(phases) do if resume == '' and p[2] ~= 'completed' then resume = p[1] end end
    put('att:' .. attempt, cjson.encode({n = attempt, worker = x.worker or '',
      started_at = NOW, resumed_at_phase = resume}))
  end
  if fx.end_attempt then
    put('atx:' .. attempt, '{"outcome":"' .. OUTCOME[trigger] .. '","finished_at":' .. NOW_S ..
      ',"error":' .. raw(x.error) .. ',"interrupted_phase":' .. enc(interrupted ~= '' and interrupted or nil) ..
      ',"service_job_id":' .. enc(j.service_job_id ~= '' and j.service_job_id or nil) ..
      ',"result":' .. raw(x.result) .. ',"by":"' .. (x.by or 'worker') .. '"}')
    put('lease_token', '')
    put('lease_deadline', '')
    reply.interrupted_phase = interrupted ~= '' and interrupted or nil
  end
  if fx.cancel_handler then redis.call('PUBLISH', P .. 'cancel', j.id) end
  if x.result and x.result ~= '' and (to == 'completed' or to == 'validating') then
    put('result', x.result)
  end
  if x.error and x.error ~= '' and to ~= 'completed' then put('error', x.error) end
  -- a completed job has no error; earlier attempts' errors stay in their attempt records
  if to == 'completed' and j.error ~= '' then put('error', '') end
  if to == 'validating' then put('val_checks', 0) end
  if (trigger == 'validation_passed' or trigger == 'validation_exhausted') and x.status and x.status ~= '' then
    put('validation_status', x.status)
  end
  if to == 'queued' then score = queued_score(j.priority); woke = true end
  if M.job.terminal[to] then
    put('finished_at', NOW_S)
    local reason = x.reason or REASON[trigger]
    if to == 'completed' then reason = '' end
    put('reason', reason or '')
  else
    if j.finished_at ~= '' then put('finished_at', '') end
    if j.reason ~= '' and to ~= 'scheduled' then put('reason', '') end
  end
  if to == 'scheduled' then put('reason', REASON[trigger] or '') end
  local joined = join_phases(phases)
  if joined ~= phases_before then put('phases', joined) end
  redis.call('HSET', jkey(j.id), unpack(set))
  local from_index, to_index = index_of(from), index_of(to)
  if from_index ~= to_index and not x.popped then
    if from_index == nil then dequeue(j.type, j.id) else redis.call('ZREM', from_index, j.id) end
  end
  if to_index == nil then enqueue(j.type, score, j.id) else redis.call('ZADD', to_index, score, j.id) end
  if M.job.terminal[to] then redis.call('ZADD', K_UNFILED, NOW, j.id) end -- for the evaluator
  local notify = o.notify
  if notify ~= '' and j.notify == '1' then
    outbox_add(j.id, notify, num(j.epoch), j.webhook_url, job_snapshot(j), j.traceparent)
  end
  event(notify ~= '' and notify or ('job.' .. trigger), j.id,
    {'from', from, 'to', to, 'attempt', attempt, 'reason', j.reason,
     'phase', interrupted, 'cause', x.cause or ''})
  if j.batch ~= '' then
    if M.job.terminal[to] then batch_member_done(j.batch, to)
    elseif M.job.terminal[from] then batch_member_reopened(j.batch, from) end
  end
  return reply
end

-- A worker's report must present the lease token of the attempt it belongs to.
-- Terminal: absorbed, nothing written. Token mismatch: one stale_report event, nothing else.
local function fenced(id, token, op)
  local j = load_job(id)
  if j == nil then return nil, {kind = 'not_found', error = 'job', id = id} end
  if M.job.terminal[j.state] then return nil, {kind = 'absorbed', id = id, state = j.state} end
  if token == nil or token == '' or j.lease_token ~= token then
    event('job.stale_report', id, {'op', op, 'token', token or '', 'state', j.state,
      'current', j.lease_token})
    return nil, {kind = 'stale', id = id, state = j.state}
  end
  return j
end

------------------------------------------------------------------------------------- ops --

local OP = {}

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
  if x.idem and x.idem ~= '' then
    redis.call('SET', P .. 'idem:' .. x.idem, x.id, 'PX', x.idem_ttl_ms)
  end
  local delay = num(x.delay_ms)
  local state = delay > 0 and 'scheduled' or 'queued'
  redis.call('HSET', jkey(x.id), 'id', x.id, 'queue', QUEUE, 'type', x.type, 'state', state,
    'input', x.input, 'priority', x.priority, 'max_retries', x.max_retries, 'retry_count', 0,
    'attempts', 0, 'epoch', 0, 'timeout_ms', x.timeout_ms, 'backoff_ms', x.backoff_ms,
    'backoff_max_ms', x.backoff_max_ms, 'has_validator', x.has_validator and '1' or '0',
    'phases', x.phases or '', 'notify', x.notify and '1' or '0', 'webhook_url', x.webhook_url or '',
    'batch', x.batch or '', 'idempotency_key', x.idem or '', 'created_at', NOW_S,
    'updated_at', NOW_S, 'due_at', delay > 0 and fmt(NOW + delay) or '',
    'validator_url', x.validator_url or '')
  if x.traceparent and x.traceparent ~= '' then redis.call('HSET', jkey(x.id), 'traceparent', x.traceparent) end
  if state == 'queued' then
    enqueue(x.type, queued_score(x.priority), x.id)
    woke = true
  else
    redis.call('ZADD', K_DUE, NOW + delay, x.id)
  end
  event('job.submitted', x.id, {'to', state, 'job_type', x.type})
  if x.batch and x.batch ~= '' then batch_member_added(x.batch, x.id) end
  return {kind = 'created', id = x.id, state = state}
end

-- What a worker needs to run a claimed job: its input, attempt, lease and earlier phases.
local function claimed_view(j, token, deadline)
  local pr = {}
  for _, p in ipairs(parse_phases(j.phases)) do
    if p[2] == 'completed' then
      local v = redis.call('HGET', jkey(j.id), 'pr:' .. p[1])
      if v then pr[#pr + 1] = p[1]; pr[#pr + 1] = v end
    end
  end
  return {id = j.id, type = j.type, input = j.input, attempt = num(j.attempts),
    token = token, lease_deadline = deadline, timeout_ms = num(j.timeout_ms),
    retry_count = num(j.retry_count), max_retries = num(j.max_retries), phases = j.phases,
    phase_results = #pr > 0 and pr or nil, service_job_id = j.service_job_id, batch = j.batch,
    traceparent = j.traceparent ~= '' and j.traceparent or nil}
end

-- What a claim reads of a job: what `job_move` reads for a claim row that goes to `active`,
-- starts an attempt and notifies nobody (the job table's claim row), and what `claimed_view`
-- returns; its state first, as load_hash wants. Half the record: the full one makes the
-- HMGET about twice as slow. Should a claim row ever do more (another destination or effect,
-- a notification), every field is read: checked on the first claim after the library loads.
local CLAIM_LEAN = {'state', 'attempts', 'retry_count', 'max_retries', 'has_validator', 'phases',
  'finished_at', 'reason', 'batch', 'type', 'timeout_ms', 'service_job_id', 'input', 'traceparent'}
local claim_fields -- CLAIM_LEAN or every field; nil until the first claim

local function fields_of_claim()
  if claim_fields then return claim_fields end
  local lean = {new_attempt = true, resume_phases = true}
  claim_fields = CLAIM_LEAN
  for _, o in ipairs(M.job.index.queued.claim) do
    local plain = o.to == 'active' and o.notify == ''
    for f in pairs(o.fx) do plain = plain and lean[f] == true end
    if not plain then
      claim_fields = {}
      for i, f in ipairs(JOB_FIELDS) do claim_fields[i] = f end
      claim_fields[#claim_fields + 1] = 'input'
      break
    end
  end
  return claim_fields
end

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
    if v[1] == 'queued' then enqueue(v[2], popped[i + 1], id); woke = true end
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
-- every route makes as few calls, and reads as few entries, as it can.
function OP.claim(x)
  if queue_paused() then return {kind = 'claimed', n = 0, state = 'paused'} end
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
  local fields = fields_of_claim()
  local loaded, of_type, type_order = {}, {}, {}
  local stale = false -- an entry of `queued_all` whose job is gone or not queued
  for i, id in ipairs(picked) do
    local j = load_hash(jkey(id), fields, id)
    if j == nil and types == nil then -- its record is gone: out of its type's zset too
      stale = true
      for _, t in ipairs(redis.call('SMEMBERS', K_QUEUED_TYPES)) do redis.call('ZREM', qkey(t), id) end
    elseif j ~= nil and types == nil and j.state ~= 'queued' then
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
    if v[1] == 'active' and v[3] == x.worker and string.sub(v[2] or '', 1, #prefix) == prefix then
      local j = load_job(id, {'input'})
      jobs[#jobs + 1] = claimed_view(j, j.lease_token, num(j.lease_deadline))
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
      local set = {'phases', join_phases(phases), 'updated_at', NOW_S}
      if o.fx.store_result then
        local result = (x.result ~= nil and x.result ~= '') and x.result or 'null'
        set[#set + 1] = 'pr:' .. x.name
        set[#set + 1] = result
        -- the attempt's own copy: a later attempt that runs the phase again overwrites pr:, not this
        set[#set + 1] = 'ap:' .. j.attempts .. ':' .. x.name
        set[#set + 1] = result
      end
      redis.call('HSET', jkey(x.id), unpack(set))
      event('phase.' .. x.trigger, x.id, {'phase', x.name, 'from', from, 'to', o.to,
        'attempt', j.attempts})
      return {kind = 'moved', machine = 'phase', trigger = x.trigger, id = x.id, phase = x.name,
        from = from, to = o.to}
    end
  end
  return {kind = 'rejected', error = 'job ' .. x.id .. ' has no phase ' .. x.name}
end

-- Operator and system triggers that need no lease: cancel, retry, validation results.
local UNFENCED = {cancel = true, retry = true, retry_from_start = true,
  validation_passed = true, validation_exhausted = true}

function OP.trigger(x)
  if not UNFENCED[x.trigger] then return {kind = 'rejected', error = 'trigger ' .. x.trigger .. ' needs a lease'} end
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
  if j.state ~= 'active' or j.lease_token ~= x.token or num(j.lease_deadline) > NOW then
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
  if j.state ~= 'active' or j.lease_token ~= x.token or num(j.lease_deadline) > NOW
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
  if j == nil or j.state ~= 'active' then
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
    if j ~= nil and j.state == 'active' then
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
      local j = load_job(id, {'validator_url'})
      if j == nil or j.state ~= 'validating' then
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
  if j.state ~= 'validating' or j.val_token ~= x.token then
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

-------------------------------------------------------------------------------- batches --

local BATCH_FIELDS = {'state', 'expected', 'members', 'completed', 'failed', 'cancelled',
  'threshold', 'progress_every', 'stuck_after_ms', 'closed', 'notify', 'webhook_url', 'epoch',
  'created_at', 'finished_at', 'reason'}
local MEMBER_COUNTER = {completed = 'completed', cancelled = 'cancelled'}

local function load_batch(id) return load_hash(bkey(id), BATCH_FIELDS, id) end

-- The batch's size: once membership is closed, its members; before, the expected total when
-- one was given, else the members so far.
local function batch_total(b)
  if b.closed == '1' or b.expected == '' then return num(b.members) end
  return num(b.expected)
end

-- The guards of the batch machine. The size is known once membership is closed or an expected
-- total was given; until then neither the threshold nor "every member terminal" can make the
-- batch ready, only the stuck sweep can.
local function batch_facts(b, stuck)
  local total = batch_total(b)
  local known = b.closed == '1' or b.expected ~= ''
  local finished = num(b.completed) + num(b.failed) + num(b.cancelled)
  local all_done = known and finished >= total
  local threshold_met = total > 0 and num(b.completed) * 100 >= num(b.threshold) * total
  return {ready = (known and threshold_met) or all_done or stuck, threshold_met = threshold_met,
    all_done = all_done}
end

local function batch_snapshot(b)
  return '{"id":' .. enc(b.id) .. ',"queue":' .. enc(QUEUE) .. ',"state":' .. enc(b.state) ..
    ',"total":' .. batch_total(b) .. ',"members":' .. num(b.members) ..
    ',"completed":' .. num(b.completed) .. ',"failed":' .. num(b.failed) ..
    ',"cancelled":' .. num(b.cancelled) .. ',"threshold":' .. num(b.threshold) ..
    ',"created_at_ms":' .. raw(b.created_at) .. ',"finished_at_ms":' .. raw(b.finished_at) ..
    ',"reason":' .. enc(b.reason ~= '' and b.reason or nil) .. '}'
end

local function batch_notify(b, kind, epoch)
  if b.notify == '1' then outbox_add(b.id, kind, epoch, b.webhook_url, batch_snapshot(b)) end
end

-- Member activity: the stuck timer starts again (a live batch without stuck-after stays at +inf).
local function batch_touch(b)
  local stuck_after = num(b.stuck_after_ms)
  redis.call('ZADD', K_BATCHES, stuck_after > 0 and (NOW + stuck_after) or '+inf', b.id)
end

-- Move a batch with one trigger; writes state, one event and the notification.
local function batch_move(b, trigger, facts, fields)
  local kind, o = apply(M.batch, b.state, trigger, facts)
  if kind ~= 'moved' then return {kind = kind, id = b.id, state = b.state} end
  local from = b.state
  b.state = o.to
  local set = {'state', o.to, 'updated_at', NOW_S}
  for k, v in pairs(fields or {}) do set[#set + 1] = k; set[#set + 1] = v; b[k] = v end
  if M.batch.terminal[o.to] then
    b.finished_at = NOW_S
    set[#set + 1] = 'finished_at'; set[#set + 1] = b.finished_at
    redis.call('ZREM', K_BATCHES, b.id)
  end
  redis.call('HSET', bkey(b.id), unpack(set))
  local notify = o.notify
  if notify ~= '' then batch_notify(b, notify, 0) end
  event(notify ~= '' and notify or ('batch.' .. trigger), b.id, {'from', from, 'to', o.to,
    'reason', b.reason, 'completed', b.completed, 'failed', b.failed, 'cancelled', b.cancelled})
  return {kind = 'moved', machine = 'batch', trigger = trigger, id = b.id, from = from, to = o.to,
    state = o.to}
end

-- The one guarded finalize every trigger funnels into (the threshold, every member terminal,
-- close, the monitor's stuck and ready sweeps): finalize, then settle, in this one atomic step.
-- Only the stuck sweep can make a batch ready with neither its threshold met nor every member
-- terminal: that one settles `failed` with the reason `stuck`.
local function batch_finalize(b, stuck)
  local facts = batch_facts(b, stuck)
  local r = batch_move(b, 'finalize', facts)
  if r.kind ~= 'moved' then return r end
  local failed = not facts.all_done and not facts.threshold_met
  local settled = batch_move(b, 'settle', facts, {reason = failed and 'stuck' or ''})
  settled.from = r.from
  return settled
end

-- Why `adding` more members would be refused (a `rejected` reply), or nil.
batch_refusal = function(batch_id, adding)
  local b = load_batch(batch_id)
  if b == nil then return {kind = 'not_found', error = 'batch', id = batch_id} end
  local why
  if b.state ~= 'open' and b.state ~= 'running' then why = 'is ' .. b.state
  elseif b.closed == '1' then why = 'is closed'
  elseif b.expected ~= '' and num(b.members) + adding > num(b.expected) then
    why = 'expects ' .. b.expected .. ' members and has ' .. num(b.members)
  end
  if why == nil then return nil end
  return {kind = 'rejected', id = batch_id, error = 'batch ' .. batch_id .. ' ' .. why .. '; no more members can be added'}
end

-- A new job joins a live batch at submit (batch_refusal said yes in the same step).
batch_member_added = function(batch_id, job_id)
  redis.call('HINCRBY', bkey(batch_id), 'members', 1)
  redis.call('SADD', bkey(batch_id) .. ':members', job_id)
  local b = load_batch(batch_id)
  batch_touch(b)
end

-- A member reached a terminal state, in the member's own transition. The counters and
-- `batch.progress` (every K member completions) happen whatever the batch's state: late
-- completions after finalize move counters only. The batch machine's `member_done` (absorbed
-- once the batch is terminal) records the activity and tries the guarded finalize, unless the
-- caller finalizes once itself after several members (`deferred`).
batch_member_done = function(batch_id, outcome, deferred)
  local b = load_batch(batch_id)
  if b == nil then return end -- the batch was deleted: nothing to count
  local counter = MEMBER_COUNTER[outcome] or 'failed'
  b[counter] = redis.call('HINCRBY', bkey(batch_id), counter, 1)
  local every = num(b.progress_every)
  if counter == 'completed' and every > 0 and num(b.completed) % every == 0 then
    -- `completed` never decreases (a completed job is absorbing), so each multiple of K is
    -- reached once: one event and one outbox row (epoch = the completions so far).
    batch_notify(b, 'batch.progress', num(b.completed))
    event('batch.progress', batch_id, {'completed', b.completed, 'failed', b.failed,
      'cancelled', b.cancelled, 'total', batch_total(b), 'state', b.state})
  end
  local kind, o = apply(M.batch, b.state, 'member_done', {})
  if kind ~= 'moved' then return end -- terminal: the counters moved, the state never does
  if o.fx.touch then batch_touch(b) end
  if not deferred then batch_finalize(b, false) end
end

-- An operator retry took a member out of a terminal state: it is unfinished again (counters
-- only; a finalized batch stays as it is, a live one sees activity).
batch_member_reopened = function(batch_id, from)
  local b = load_batch(batch_id)
  if b == nil then return end
  redis.call('HINCRBY', bkey(batch_id), MEMBER_COUNTER[from] or 'failed', -1)
  if not M.batch.terminal[b.state] then batch_touch(b) end
end

function OP.batch_create(x)
  if redis.call('EXISTS', bkey(x.id)) == 1 then return {kind = 'exists', id = x.id} end
  redis.call('HSET', bkey(x.id), 'id', x.id, 'queue', QUEUE, 'state', 'open',
    'expected', x.expected or '', 'members', 0, 'completed', 0, 'failed', 0, 'cancelled', 0,
    'threshold', x.threshold, 'progress_every', x.progress_every or 0,
    'stuck_after_ms', x.stuck_after_ms or 0, 'closed', '', 'notify', x.notify and '1' or '0',
    'webhook_url', x.webhook_url or '', 'epoch', 0, 'created_at', NOW_S,
    'updated_at', NOW_S)
  local b = load_batch(x.id)
  batch_touch(b)
  event('batch.created', x.id, {'to', 'open', 'expected', x.expected})
  batch_finalize(b, false) -- ready at once only when it expects no members
  return {kind = 'created', id = x.id, state = b.state}
end

-- Add existing jobs. Everything is checked before anything is written; members already
-- terminal are counted, and the guarded finalize is tried once, after all of them.
function OP.batch_add(x)
  local b = load_batch(x.id)
  if b == nil then return {kind = 'not_found', error = 'batch', id = x.id} end
  local fresh, seen = {}, {}
  for _, id in ipairs(x.jobs) do
    local j = load_job(id)
    if j == nil then return {kind = 'not_found', error = 'job', id = id} end
    if j.batch ~= '' and j.batch ~= x.id then
      return {kind = 'rejected', error = 'job ' .. id .. ' already belongs to batch ' .. j.batch}
    end
    if not seen[id] and redis.call('SISMEMBER', bkey(x.id) .. ':members', id) == 0 then
      fresh[#fresh + 1] = j
    end
    seen[id] = true
  end
  local refusal = batch_refusal(x.id, #fresh)
  if refusal then return refusal end
  if #fresh == 0 then return {kind = 'added', id = x.id, added = 0, state = b.state} end
  local finished = {}
  for _, j in ipairs(fresh) do
    redis.call('SADD', bkey(x.id) .. ':members', j.id)
    redis.call('HSET', jkey(j.id), 'batch', x.id)
    if M.job.terminal[j.state] then finished[#finished + 1] = j.state end
  end
  redis.call('HINCRBY', bkey(x.id), 'members', #fresh)
  event('batch.members_added', x.id, {'added', #fresh})
  for _, state in ipairs(finished) do batch_member_done(x.id, state, true) end
  b = load_batch(x.id)
  batch_touch(b)
  batch_finalize(b, false)
  return {kind = 'added', id = x.id, added = #fresh, state = b.state}
end

function OP.batch_close(x)
  local b = load_batch(x.id)
  if b == nil then return {kind = 'not_found', error = 'batch', id = x.id} end
  local r = batch_move(b, 'close', {}, {closed = '1'})
  if r.kind ~= 'moved' then return r end
  local f = batch_finalize(b, false) -- an empty batch, or one whose members all finished
  if f.kind == 'moved' then f.from = r.from; return f end
  return r
end

function OP.batch_finalize(x)
  local b = load_batch(x.id)
  if b == nil then return {kind = 'not_found', error = 'batch', id = x.id} end
  return batch_finalize(b, x.stuck == true)
end

function OP.batch_cancel(x)
  local b = load_batch(x.id)
  if b == nil then return {kind = 'not_found', error = 'batch', id = x.id} end
  local kind, o = apply(M.batch, b.state, 'cancel', {})
  if kind ~= 'moved' then return {kind = kind, id = b.id, state = b.state} end
  local r = batch_move(b, 'cancel', {}, {reason = 'cancelled'})
  local cancelled = 0
  if o.fx.cancel_members then
    for _, id in ipairs(redis.call('SMEMBERS', bkey(x.id) .. ':members')) do
      local j = load_job(id)
      if j ~= nil and job_move(j, 'cancel', {reason = 'batch_cancelled'}).kind == 'moved' then
        cancelled = cancelled + 1
      end
    end
  end
  r.members_cancelled = cancelled
  return r
end

-- The batch monitor's sweep. Stuck: batches whose stuck deadline (last member activity plus
-- stuck-after) has passed are finalized with the stuck fact. Ready (when `ready_from` is
-- given): a page of live batches, from that rank on, gets the ordinary guarded finalize, a
-- safety net that writes nothing for a batch that is not ready. Only moved batches are listed;
-- `cursor` is where the next ready page starts (0: start over), `next_due` the earliest
-- stuck deadline left.
function OP.batch_sweep(x)
  local n = num(x.n)
  local results = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_BATCHES, '-inf', NOW, 'LIMIT', 0, n)) do
    local b = load_batch(id)
    if b == nil or M.batch.terminal[b.state] then
      redis.call('ZREM', K_BATCHES, id)
    else
      results[#results + 1] = batch_finalize(b, true)
    end
  end
  local cursor
  if x.ready_from ~= nil then
    local from = num(x.ready_from)
    local page = redis.call('ZRANGE', K_BATCHES, from, from + n - 1)
    for _, id in ipairs(page) do
      local b = load_batch(id)
      if b == nil or M.batch.terminal[b.state] then
        redis.call('ZREM', K_BATCHES, id)
      else
        local r = batch_finalize(b, false)
        if r.kind == 'moved' then results[#results + 1] = r end
      end
    end
    cursor = #page < n and 0 or from + #page
  end
  local first = redis.call('ZRANGE', K_BATCHES, 0, 0, 'WITHSCORES')
  local next_due = first[2] and tonumber(first[2])
  if next_due ~= nil and next_due == math.huge then next_due = nil end
  return {kind = 'swept', n = #results, batches = #results > 0 and results or nil,
    next_due = next_due, cursor = cursor}
end

------------------------------------------------------------------------------ deliveries --

local DELIVERY_FIELDS = {'state', 'attempts', 'event', 'object', 'url', 'snapshot', 'epoch',
  'created_at', 'token', 'traceparent'}

local function load_delivery(id) return load_hash(dkey(id), DELIVERY_FIELDS, id) end

local function delivery_move(d, trigger, facts, set, score)
  local kind, o = apply(M.webhook, d.state, trigger, facts)
  if kind ~= 'moved' then return {kind = kind, id = d.id, state = d.state} end
  local from = d.state
  d.state = o.to
  for i = 1, #set, 2 do d[set[i]] = set[i + 1] end
  set[#set + 1] = 'state'; set[#set + 1] = o.to
  set[#set + 1] = 'updated_at'; set[#set + 1] = NOW_S
  redis.call('HSET', dkey(d.id), unpack(set))
  if M.webhook.terminal[o.to] or M.webhook.terminal[from] then -- settled, or re-sent by an operator
    local object_key = (string.sub(d.event, 1, 4) == 'job.') and jkey(d.object) or bkey(d.object)
    if redis.call('EXISTS', object_key) == 1 then
      redis.call('HSET', object_key, 'notification', o.to, 'notification_event', d.event)
    end
  end
  if M.webhook.terminal[o.to] then
    redis.call('ZREM', K_OUTBOX, d.id)
  else
    redis.call('ZADD', K_OUTBOX, score or NOW, d.id)
  end
  event('webhook.' .. trigger, d.object, {'delivery', d.id, 'from', from, 'to', o.to,
    'attempt', d.attempts, 'event', d.event, 'status', d.last_status, 'error', d.last_error})
  return {kind = 'moved', machine = 'webhook', trigger = trigger, id = d.id, from = from, to = o.to}
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
      if d.state == 'sending' then delivery_move(d, 'release', {}, {}) end
      local attempts = num(d.attempts) + 1
      local token = x.nonce .. '.' .. attempts
      local left = num(d.attempts) < num(x.max_attempts)
      local set = left and {'attempts', attempts, 'token', token} or {'token', ''}
      local r = delivery_move(d, 'send', {attempts_left = left}, set, NOW + num(x.lease_ms))
      if r.kind == 'moved' and r.to == 'sending' then
        out[#out + 1] = {id = id, event = d.event, object = d.object, url = d.url,
          snapshot = d.snapshot, attempt = attempts, token = token, created_at = num(d.created_at),
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
  local facts = {attempts_left = num(d.attempts) < num(x.max_attempts)}
  local set = {'last_status', x.status or '', 'last_error', x.error or ''}
  return delivery_move(d, x.trigger, facts, set, x.retry_at)
end

-- An operator's re-send: a dead delivery goes back to pending with a fresh attempt budget, due
-- now, under no token (a late report of its last attempt is stale); the same webhook-id. Any
-- other state: absorbed (delivered) or invalid (on its way), nothing written.
function OP.redeliver(x)
  local d = load_delivery(x.id)
  if d == nil then return {kind = 'not_found', error = 'delivery', id = x.id} end
  return delivery_move(d, 'redeliver', {}, {'attempts', 0, 'token', ''}, NOW)
end

------------------------------------------------------------------------ filing, retention --

-- A finished job is filed once per outcome (per epoch: an operator retry starts a new one).
-- job_move puts every job that becomes terminal in `unfiled`; the evaluator reads candidates
-- with `unfiled`, classifies them (adapters/filing.py) and files each with `file`, which is
-- guarded: only a terminal job, in the state and epoch the evaluator read, not yet filed at
-- that epoch. Two evaluators racing: one files, the other is `absorbed`. Filing puts the job
-- in `retain:<state>` (score: finish time), where retention finds it.

local EMPTY_RESULT = {[''] = true, ['null'] = true, ['""'] = true, ['{}'] = true, ['[]'] = true}
local TERMINAL_STATES = {'completed', 'failed', 'cancelled', 'timed_out', 'validation_failed'}

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
  local d = redis.call('HGET', dkey(j.id .. '~job.' .. j.state .. '~' .. j.epoch), 'state')
  return d or 'missing'
end

-- Candidates for filing: unfiled terminal jobs due to be looked at, with what classifying
-- them needs. Entries that are no longer candidates (retried, deleted, filed) are dropped.
function OP.unfiled(x)
  local ids = redis.call('ZRANGEBYSCORE', K_UNFILED, '-inf', NOW, 'LIMIT', 0, x.n)
  local jobs = {}
  for _, id in ipairs(ids) do
    local j = load_job(id, {'filed_epoch'})
    if j == nil or not M.job.terminal[j.state] or j.filed_epoch == j.epoch then
      redis.call('ZREM', K_UNFILED, id)
    else
      local batch_reason = ''
      if j.batch ~= '' then batch_reason = redis.call('HGET', bkey(j.batch), 'reason') or '' end
      local required = x.required and x.required[j.type]
      local missing = j.state == 'completed' and missing_outputs(j.result, required) or {}
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
    for _, s in ipairs(TERMINAL_STATES) do redis.call('ZREM', P .. 'retain:' .. s, x.id) end
  end
  redis.call('HSET', jkey(x.id), 'category', x.category, 'problem', x.problem,
    'filed_at', fmt(NOW), 'filed_epoch', j.epoch)
  redis.call('HINCRBY', K_FILING, x.category .. ':' .. x.problem, 1)
  redis.call('ZREM', K_UNFILED, x.id)
  redis.call('ZADD', P .. 'retain:' .. j.state, num(j.finished_at), x.id)
  event('job.filed', x.id, {'state', j.state, 'category', x.category, 'problem', x.problem,
    'epoch', j.epoch})
  return {kind = 'filed', id = x.id, state = j.state}
end

-- Delete one job and everything that is only about it.
local function delete_job(j, key)
  local id = j.id
  redis.call('DEL', jkey(id))
  redis.call('ZREM', key, id)
  redis.call('ZREM', K_FINISHED, id)
  redis.call('ZREM', K_UNFILED, id)
  if j.idempotency_key ~= '' and redis.call('GET', P .. 'idem:' .. j.idempotency_key) == id then
    redis.call('DEL', P .. 'idem:' .. j.idempotency_key)
  end
  -- settled deliveries go with the job; one still on its way keeps its own snapshot
  if j.notify == '1' then
    for e = 0, num(j.epoch) do
      for _, s in ipairs(TERMINAL_STATES) do
        local did = id .. '~job.' .. s .. '~' .. e
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
        local did = dkey(id .. '~job.' .. j.state .. '~' .. j.epoch)
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

------------------------------------------------------------------------------- registry --
-- Daemons and their worker slots, under their own hash tag: P is 'jv:{@workers}:' here.
-- `live` (zset: daemon id -> heartbeat deadline), `gone` (zset: id -> when it stopped or
-- was declared lost), `daemon:<id>` (hash), `events` (stream). Not a machine: a daemon is
-- live while it heartbeats; the one guarded step is declaring it lost, exactly once.

local REGISTRY_KEEP_MS = 86400000 -- a daemon's record outlives its last heartbeat by a day
local REGISTRY_GONE_KEEP = 1000   -- stopped or lost daemons remembered

local function rkey(id) return P .. 'daemon:' .. id end

local function registry_gone(id, state)
  redis.call('ZREM', P .. 'live', id)
  redis.call('ZADD', P .. 'gone', NOW, id)
  redis.call('ZREMRANGEBYRANK', P .. 'gone', 0, -(REGISTRY_GONE_KEEP + 1))
  redis.call('HSET', rkey(id), 'state', state, 'gone_at', fmt(NOW))
end

-- Register (x.start) or refresh a daemon: its fields, and a heartbeat deadline `ttl_ms` ahead.
-- A daemon declared lost (or stopped) that heartbeats again is live again: `worker.returned`.
function OP.heartbeat(x)
  local key = rkey(x.id)
  local was = redis.call('HGET', key, 'state')
  local deadline = NOW + num(x.ttl_ms)
  local set = {'id', x.id, 'state', 'live', 'heartbeat_at', fmt(NOW), 'deadline', fmt(deadline)}
  for i = 1, #x.fields, 2 do set[#set + 1] = x.fields[i]; set[#set + 1] = x.fields[i + 1] end
  if x.start then set[#set + 1] = 'started_at'; set[#set + 1] = fmt(NOW) end
  redis.call('HSET', key, unpack(set))
  redis.call('HDEL', key, 'gone_at')
  redis.call('PEXPIRE', key, REGISTRY_KEEP_MS)
  redis.call('ZADD', P .. 'live', deadline, x.id)
  redis.call('ZREM', P .. 'gone', x.id)
  if x.start then
    event('worker.started', x.id, {'was', was or ''})
    return {kind = 'registered', id = x.id, lease_deadline = deadline}
  end
  if was ~= 'live' then
    event('worker.returned', x.id, {'was', was or 'unknown'})
    return {kind = 'returned', id = x.id, state = was or '', lease_deadline = deadline}
  end
  return {kind = 'alive', id = x.id, lease_deadline = deadline}
end

-- A daemon shutting down: no longer live, never declared lost.
function OP.worker_stop(x)
  if redis.call('ZSCORE', P .. 'live', x.id) == false then return {kind = 'skipped', id = x.id} end
  registry_gone(x.id, 'stopped')
  event('worker.stopped', x.id, {})
  return {kind = 'stopped', id = x.id}
end

-- Every watchdog sweeps; a daemon whose heartbeat deadline passed leaves `live` in the same
-- step that declares it lost, so however many watchdogs race, it is declared lost once.
local function rearm_daemon(id, deadline)
  local d = redis.call('HMGET', rkey(id), 'heartbeat_at', 'rearmed_at')
  if d[2] and num(d[2]) >= num(d[1]) then return false end -- re-armed since its last heartbeat
  redis.call('HSET', rkey(id), 'deadline', fmt(deadline), 'rearmed_at', fmt(NOW))
  redis.call('ZADD', P .. 'live', deadline, id)
  return true
end

function OP.workers_lost(x)
  outage_rearm(x, P .. 'live', rearm_daemon)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'live', '-inf', NOW, 'LIMIT', 0, x.n)
  local lost = {}
  for _, id in ipairs(ids) do
    local d = redis.call('HMGET', rkey(id), 'heartbeat_at', 'slots')
    registry_gone(id, 'lost')
    event('worker.lost', id, {'heartbeat_at', d[1] or '', 'slots', d[2] or ''})
    lost[#lost + 1] = {id = id, heartbeat_at = num(d[1]), slots = d[2] or ''}
  end
  return {kind = 'lost', jobs = #lost > 0 and lost or nil, n = #lost}
end

--------------------------------------------------------------------------------- dispatch --

-- The one entry point: apply every op of ARGV[3] in order; JSON list of replies.
local function run(keys, args)
  begin(args)
  local results = {}
  for i, x in ipairs(OPS) do
    local handler = OP[x.op]
    if handler == nil then
      results[i] = {kind = 'error', error = 'unknown op ' .. tostring(x.op)}
    else
      local ok, r = pcall(handler, x)
      if ok then results[i] = r else results[i] = {kind = 'error', error = tostring(r)} end
    end
  end
  if woke then redis.call('PUBLISH', P .. 'wake', '1') end
  return cjson.encode(results)
end

redis.register_function(FUNCTION_NAME, run)
