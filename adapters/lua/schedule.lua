------------------------------------------------------------------------------ schedules --
-- The schedule machine's record, effects and ops (machines/schedule.py). A schedule lives in
-- its queue's hash tag: `schedule:<name>` (hash), `schedules` (zset: the active ones by the
-- epoch ms of their next tick) and `schedule_names` (set: every name the queue has known).
-- The tick is the guarded step: `fire` and `skip` move only a tick later than the last one
-- recorded, so however many daemons offer one tick, one of them moves it and the others are
-- `blocked`, writing nothing. A fire submits the job through OP.submit itself, from the
-- template the client built with the store's own submit op: a tick's job and a client's
-- submit are made by the same code.

local SCHEDULE_FIELDS = {'state', 'last_tick', 'next_at', 'template', 'fired', 'last_job'}
local SCHEDULE_DEFINITION = {'cron', 'every_ms', 'tz', 'missed', 'catch_up_max', 'grace_ms', 'job_type',
  'template'}

local function skey(name) return P .. 'schedule:' .. name end

local function load_schedule(name) return load_hash(skey(name), SCHEDULE_FIELDS, name) end

-- The guards' facts (machines/schedule.py schedule_facts).
local function schedule_facts(s, tick)
  return {new_tick = s.last_tick == '' or tick > num(s.last_tick)}
end

EFFECT.schedule = {}
local SC = EFFECT.schedule

function SC.define(c)
  for _, f in ipairs(SCHEDULE_DEFINITION) do put(c, f, c.x[f] or '') end
end

function SC.arm(c)
  c.score = c.x.next_at
  put(c, 'next_at', fmt(c.x.next_at))
end

function SC.record_tick(c) put(c, 'last_tick', fmt(c.x.tick)) end

-- The tick's job: the template (a submit op as the client's store builds it) under the id
-- the firing daemon made, submitted by the submit op itself.
function SC.submit_job(c)
  local op = cjson.decode(c.r.template)
  op.id = c.x.id
  local got = OP.submit(op)
  put(c, 'fired', num(c.r.fired) + 1)
  put(c, 'last_job', got.id or '')
  c.reply.job = got.id
  c.reply.job_kind = got.kind
end

MACHINE.schedule = {
  prepare = function(c) end,
  write = function(c)
    local s = c.r
    redis.call('HSET', skey(s.id), unpack(c.set))
    reindex(c)
    event('schedule.' .. c.trigger, s.id, {'from', c.from, 'to', c.to,
      'tick', c.x.tick and fmt(c.x.tick) or '', 'next_at', s.next_at or '', 'job', c.reply.job or ''})
  end,
}

-- Add a schedule (`created`, at its initial state), or redefine the one of that name (`add`).
function OP.schedule_add(x)
  local s = load_schedule(x.name)
  redis.call('SADD', P .. 'schedule_names', x.name)
  if s ~= nil then return move('schedule', s, 'add', {}, x) end
  local start = initial_state(M.schedule, {})
  local c = {m = M.schedule, r = {id = x.name, state = start.state}, x = x, score = false,
    set = {'name', x.name, 'queue', QUEUE, 'state', start.state, 'fired', 0, 'created_at', NOW_S,
    'updated_at', NOW_S}, reply = {}}
  for _, e in ipairs(start.fx) do SC[e](c) end
  if #start.fx > 0 then FX[#FX + 1] = start.fx end
  redis.call('HSET', skey(x.name), unpack(c.set))
  local at = M.schedule.at[start.state]
  if at ~= '' then redis.call('ZADD', index_key(at), c.score, x.name) end
  event('schedule.added', x.name, {'to', start.state, 'next_at', fmt(x.next_at)})
  return {kind = 'created', id = x.name, state = start.state}
end

-- An operator's trigger (pause, resume, remove): the table decides.
function OP.schedule_trigger(x)
  local s = load_schedule(x.name)
  if s == nil then return {kind = 'not_found', error = 'schedule', id = x.name} end
  return move('schedule', s, x.trigger, {}, x)
end

-- A daemon's tick: `fire` (submit the job) or `skip` (a missed tick the policy drops),
-- guarded by the tick being later than the last one recorded.
function OP.schedule_tick(x)
  local s = load_schedule(x.name)
  if s == nil then return {kind = 'not_found', error = 'schedule', id = x.name} end
  return move('schedule', s, x.trigger, schedule_facts(s, x.tick), x)
end
