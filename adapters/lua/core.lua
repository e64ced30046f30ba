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
-- The library is an interpreter of the machine tables. Every transition of a job, batch or
-- delivery goes through one `move` (below): it applies the table, runs EFFECT[machine][name]
-- for each effect of the row, in the row's order (job.lua, batch.lua, webhook.lua hold the
-- effect functions), writes the record, puts it in the index its new state belongs to (the
-- table's `at`), and appends one event. Every reply carries `effects`: the names of the
-- effects the op performed, in order (its own moves' and those they caused). The files, in
-- load order (adapters/scripts.py concatenates them after the generated tables): core.lua
-- (this: per-call values, records, indexes, events, `move`), job.lua, batch.lua,
-- webhook.lua (each machine's effects and record), flow.lua (dependencies between jobs),
-- claim.lua (the claim's routes and view, pause), ops.lua (the other ops on jobs, and on
-- deliveries), batch_ops.lua (the ops on batches), rate.lua (rate limits and the claim op),
-- schedule.lua, hygiene.lua (filing and retention), redrive.lua, registry.lua (daemons).
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
local event_at -- per call: the server's clock in ms, as a string (`event`); nil until read
local legacy_left -- per call: whether the earlier versions' `queued` index has entries (nil: not looked)

local index_keys = {} -- index name -> key, for the prefix `P`
local keys_of -- the prefix the key names were made for (calls on one queue make them once)

-- Numbers handed to redis.call cost a "%.17g" conversion each (tostring and `..` one of
-- "%.14g"): what a move writes is made a string first, small integers from a table.
local INT = {} -- 0..1023 as strings, made when first used (a library's load cannot use `string`)

local function begin(args)
  P = args[1]
  NOW = tonumber(args[2])
  NOW_S = string.find(args[2], '^%d+$') and args[2] or string.format('%d', NOW)
  OPS = cjson.decode(args[3])
  CAP = args[4]
  if P ~= keys_of then
    keys_of = P
    K_QUEUED, K_DUE, K_ACTIVE = P .. 'queued', P .. 'due', P .. 'active'
    K_VALIDATING, K_FINISHED, K_EVENTS = P .. 'validating', P .. 'finished', P .. 'events'
    K_OUTBOX, K_BATCHES = P .. 'outbox', P .. 'batches'
    K_UNFILED, K_FILING = P .. 'unfiled', P .. 'filing'
    K_QUEUED_TYPES, K_QUEUED_ALL = P .. 'queued_types', P .. 'queued_all'
    QUEUE = string.sub(P, string.find(P, '{', 1, true) + 1, string.find(P, '}', 1, true) - 1)
    index_keys = {}
  end
  woke = false
  legacy_left = nil
  event_at = nil
end

local function jkey(id) return P .. 'job:' .. id end
local function bkey(id) return P .. 'batch:' .. id end
local function dkey(id) return P .. 'delivery:' .. id end
local function num(v) return tonumber(v) or 0 end
local function fmt(n)
  local s = INT[n]
  if s == nil then
    s = string.format('%d', n)
    if type(n) == 'number' and n >= 0 and n < 1024 then INT[n] = s end
  end
  return s
end
local function enc(v) if v == nil or v == false then return 'null' end return cjson.encode(v) end
-- A zset score as redis.call takes it best: a string (whole ms as digits).
local function zscore(n)
  if n == NOW then return NOW_S end
  if type(n) == 'number' and n % 1 == 0 then return fmt(n) end
  return n
end
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
  for i = 1, #options do
    local o = options[i]
    if o.guard == '' or facts[o.guard] then return 'moved', o end
  end
  return 'blocked'
end

-- Every event is stamped with the server's clock (TIME), never the caller's NOW: clients and
-- daemons each have their own clock, and a stream read in order must read in time order too.
-- The stream id (also the server's clock) orders entries even if that clock steps back. The
-- clock is read once per call: the events of one call are one atomic step, stamped alike.
-- `event_args` fills the XADD's first 12 arguments (the stream, its cap, type, id, at) in one
-- list reused by every event (Redis runs one call at a time): the caller adds its fields
-- from the 13th and sends `unpack(args, 1, n)`.
local EVENT_ARGS = {'XADD', '', 'MAXLEN', '~', '', '*', 'type', '', 'id', '', 'at', ''}
local function event_args(kind, id)
  local at = event_at
  if at == nil then
    local t = redis.call('TIME')
    local us = t[2] -- microseconds: their first 3 digits of 6 are the ms
    at = t[1] .. string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
    event_at = at
  end
  local args = EVENT_ARGS
  args[2], args[5], args[8], args[10], args[12] = K_EVENTS, CAP, kind, id, at
  return args
end

-- Add field `name` = `v` to an event's arguments after the n-th; the new count. A value nil
-- or '' is left out; a number is written as its digits.
local function event_field(args, n, name, v)
  if v == nil or v == '' then return n end
  if type(v) ~= 'string' then v = (type(v) == 'number' and v % 1 == 0) and fmt(v) or tostring(v) end
  args[n + 1], args[n + 2] = name, v
  return n + 2
end

-- One event with `fields` (name, value, ...).
local function event(kind, id, fields)
  local args, n = event_args(kind, id), 12
  for i = 1, #fields, 2 do n = event_field(args, n, fields[i], fields[i + 1]) end
  redis.call(unpack(args, 1, n))
end

-- Phases live in one field, "name=state,name=state", in declared order.
local function parse_phases(s)
  local list = {}
  if s == nil or s == '' then return list end
  for name, state in string.gmatch(s, '([^=,]+)=([^,]+)') do list[#list + 1] = {name, state} end
  return list
end

local function join_phases(list)
  if #list == 0 then return '' end
  local parts = {}
  for i, p in ipairs(list) do parts[i] = p[1] .. '=' .. p[2] end
  return table.concat(parts, ',')
end

local EFFECT = {job = {}, batch = {}, webhook = {}, phase = {}} -- machine -> effect -> function(c, ...)

-- Apply one phase trigger to every phase it moves, running the phase row's effects with the
-- job's move `c` and the phase's name; returns the names moved.
local function each_phase(c, list, trigger)
  local moved = {}
  for _, p in ipairs(list) do
    local kind, o = apply(M.phase, p[2], trigger, {})
    if kind == 'moved' then
      p[2] = o.to
      moved[#moved + 1] = p[1]
      for _, e in ipairs(o.fx) do EFFECT.phase[e](c, p[1]) end
    end
  end
  return moved
end

-- A job record is read in parts: JOB_FIELDS (its state first, as load_hash wants) is what a
-- worker's report and most moves read, a claim reads its own list (claim.lua), an op adds what
-- it alone needs (`load_job`'s `extra`). The first time a move or op reads any other field of
-- JOB_ALL (a retry's backoff, a notification's snapshot with the result, the lease's
-- details), every field of JOB_ALL not read yet comes in one more HMGET (the record's
-- metatable): a complete that notifies nobody never reads the result, and no field reads as
-- '' because it was not loaded.
local JOB_FIELDS = {'state', 'lease_token', 'attempts', 'retry_count', 'max_retries',
  'has_validator', 'notify', 'epoch', 'phases', 'batch', 'type', 'service_job_id', 'error', 'reason',
  'dependents'}
local JOB_ALL = {'priority', 'backoff_ms', 'backoff_max_ms', 'timeout_ms', 'lease_deadline', 'finished_at',
  'lease_worker', 'val_checks', 'result', 'created_at', 'validation_status', 'webhook_url', 'traceparent',
  'input', 'started_at', 'validator_url', 'deps'}
for i = 1, #JOB_FIELDS do JOB_ALL[#JOB_ALL + 1] = JOB_FIELDS[i] end -- (no ipairs while loading)
local IS_JOB_FIELD = {}
for i = 1, #JOB_ALL do IS_JOB_FIELD[JOB_ALL[i]] = true end

local LAZY_JOB = {__index = function(j, f)
  if not IS_JOB_FIELD[f] then return nil end
  local want = {}
  for _, g in ipairs(JOB_ALL) do if rawget(j, g) == nil then want[#want + 1] = g end end
  local v = redis.call('HMGET', jkey(rawget(j, 'id')), unpack(want))
  for i, g in ipairs(want) do rawset(j, g, v[i] or '') end
  return rawget(j, f)
end}

-- One record as a table of strings ('' for absent fields); nil when the record does not exist
-- (every record's first field is its state).
local function load_hash(key, fields, id)
  local v = redis.call('HMGET', key, unpack(fields))
  if not v[1] then return nil end
  local record = {id = id}
  for i = 1, #fields do record[fields[i]] = v[i] or '' end
  return record
end

-- A job's `fields` (its state first), the rest of JOB_ALL read when first used; nil when gone.
local function job_record(id, fields)
  local j = load_hash(jkey(id), fields, id)
  if j then setmetatable(j, LAZY_JOB) end
  return j
end

local function load_job(id, extra)
  local fields = JOB_FIELDS
  if extra then
    fields = {}
    for i, f in ipairs(JOB_FIELDS) do fields[i] = f end
    for _, f in ipairs(extra) do fields[#fields + 1] = f end
  end
  return job_record(id, fields)
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

local function queued_score(priority)
  return string.format('%d', (100 - num(priority)) * BAND + (NOW - EPOCH_2024))
end

-- Per op: the effect lists performed, in order (a row's or a start's `fx`, never changed),
-- one entry per move; `run` makes them the reply's `effects`.
local FX = {}

-- The names in the effect lists `lists`, in order (the generated list itself when it is one).
local function effects_of(lists)
  if #lists == 1 then return lists[1] end
  local names = {}
  for _, list in ipairs(lists) do
    for _, e in ipairs(list) do names[#names + 1] = e end
  end
  return names
end

-- The indexes a record sits in by state (the table's `at`): `queued` is per job type
-- (enqueue/dequeue); every other one is the zset P .. name, scored with the move's `score`.
local function index_key(name)
  local key = index_keys[name]
  if key == nil then key = P .. name; index_keys[name] = key end
  return key
end

local function index_add(name, c)
  if name == 'queued' then enqueue(c.r.type, queued_score(c.r.priority), c.r.id)
  else redis.call('ZADD', index_key(name), zscore(c.score or NOW), c.r.id) end
end

local function index_remove(name, c)
  if name == 'queued' then dequeue(c.r.type, c.r.id) else redis.call('ZREM', index_key(name), c.r.id) end
end

-- Out of the index of the state it left (unless the op already took it out: `x.popped`),
-- into the index of its new one; a record that stays in one index is scored again only
-- when the move gave it a score.
local function reindex(c)
  local at = c.m.at
  local fi, ti = at[c.from], at[c.to]
  if fi ~= ti and fi ~= '' and not c.x.popped then index_remove(fi, c) end
  if ti ~= '' and (fi ~= ti or c.score) then index_add(ti, c) end
end

-- Leave `f` to run once the move's record is written (a move of another record).
local function later(c, f)
  local after = c.after
  if not after then after = {}; c.after = after end
  after[#after + 1] = f
end

-- Stage one field of the move's record (written by the machine's `write`, in one HSET).
local function put(c, f, v)
  local s = c.set
  s[#s + 1] = f
  s[#s + 1] = v
  c.r[f] = v
end

-- Stage the removal of fields of the move's record (one HDEL after the HSET): an absent field
-- reads as '' everywhere, and costs no memory.
local function drop(c, ...)
  local d = c.drop
  if not d then d = {}; c.drop = d end
  local r, n = c.r, #d
  for i = 1, select('#', ...) do
    local f = select(i, ...)
    d[n + i] = f
    r[f] = ''
  end
end

-- Each machine's record writing: `prepare` (before the effects) and `write` (after them:
-- the record, its index, one event). Set by job.lua, batch.lua and webhook.lua.
local MACHINE = {}

-- The one move every machine takes. `r` is the record as loaded (its fields as strings),
-- `facts` the guards' truth, `x` the op's data. Not moved: {kind = absorbed | blocked |
-- invalid} and nothing written. Moved: the effects of the row, in order; then (unless the row
-- is internal: effects only) the write; then what the effects left for after it (moves of
-- other records: a batch's members, a member's batch).
local function move(name, r, trigger, facts, x)
  local m = M[name]
  local kind, o = apply(m, r.state, trigger, facts)
  if kind ~= 'moved' then return {kind = kind, id = r.id, state = r.state} end
  -- every field a move may set is in the constructor: the table is sized once
  local c = {m = m, r = r, x = x, trigger = trigger, from = r.state, to = o.to, o = o,
    set = {'state', o.to, 'updated_at', NOW_S}, drop = false, score = false, phases = false, interrupted = '',
    after = false, reply = {kind = 'moved', machine = name, trigger = trigger, id = r.id, from = r.state,
    to = o.to}}
  r.state, r.updated_at = o.to, NOW_S
  local fx = EFFECT[name]
  local names = o.fx
  if #names > 0 then FX[#FX + 1] = names end
  if o.internal then
    for i = 1, #names do fx[names[i]](c) end
    return c.reply
  end
  local hooks = MACHINE[name]
  hooks.prepare(c)
  for i = 1, #names do fx[names[i]](c) end
  hooks.write(c)
  local after = c.after
  if after then for _, f in ipairs(after) do f() end end
  return c.reply
end

-- Whether the table has a row for `trigger` in `state`.
local function has_row(m, state, trigger)
  local rows = m.index[state]
  return rows ~= nil and rows[trigger] ~= nil
end

-- How a new record starts (the table's `initial`): the first start whose fact holds.
local function initial_state(m, facts)
  for _, s in ipairs(m.initial) do
    if s.when == '' or facts[s.when] then return s end
  end
end

-- Outbox: one row per (object, event type, epoch); a second insert is a no-op.
local function outbox_add(object_id, kind, epoch, url, snapshot, traceparent)
  local did = object_id .. '~' .. kind .. '~' .. epoch
  if redis.call('EXISTS', dkey(did)) == 1 then return false end
  redis.call('HSET', dkey(did), 'state', initial_state(M.webhook, {}).state, 'attempts', 0, 'event', kind,
    'object', object_id, 'epoch', epoch, 'url', url or '', 'created_at', NOW_S,
    'snapshot', snapshot)
  if traceparent and traceparent ~= '' then redis.call('HSET', dkey(did), 'traceparent', traceparent) end
  redis.call('ZADD', K_OUTBOX, NOW_S, did)
  return true
end

local batch_member_done, batch_member_reopened, batch_refusal, batch_member_added -- batch section

-- Operations, filled in by the files after this one.
local OP = {}

-- The one entry point: apply every op of ARGV[3] in order; JSON list of replies, each with the
-- effects it performed (`effects`, absent when none).
local function run(keys, args)
  begin(args)
  local results = {}
  for i, x in ipairs(OPS) do
    local handler = OP[x.op]
    for k = #FX, 1, -1 do FX[k] = nil end -- (one list, reused: Redis runs one call at a time)
    if handler == nil then
      results[i] = {kind = 'error', error = 'unknown op ' .. tostring(x.op)}
    else
      local ok, r = pcall(handler, x)
      if ok then
        if #FX > 0 then r.effects = effects_of(FX) end
        results[i] = r
      else
        results[i] = {kind = 'error', error = tostring(r)}
      end
    end
  end
  if woke then redis.call('PUBLISH', P .. 'wake', '1') end
  return cjson.encode(results)
end

