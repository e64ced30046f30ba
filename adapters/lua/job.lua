------------------------------------------------------------------------------------ jobs --
-- The job machine's record and effects: EFFECT.job[name](c) for every effect a row of
-- machines/job.py names. `c` is the move: c.r the job (fields as strings, updated by `put`),
-- c.x the op's data, c.trigger, c.from, c.to, c.o the row, c.phases the parsed phases,
-- c.score the job's score in its new index, c.reply the op's reply; `later(c, f)` runs f after
-- the job is written.

local function backoff_ms(j, retry_count, jitter)
  local base = num(j.backoff_ms)
  local cap = num(j.backoff_max_ms)
  local delay = base * (2 ^ (retry_count - 1))
  if cap > 0 and delay > cap then delay = cap end
  return math.floor(delay * (0.5 + 0.5 * (jitter or 1)))
end

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

-- The guards' facts (machines/job.py job_facts), in `into` when given.
local function job_facts(j, into)
  local f = into or {}
  f.has_validator = j.has_validator == '1'
  f.retries_left = num(j.retry_count) < num(j.max_retries)
  return f
end

local J = EFFECT.job

function J.new_attempt(c)
  local j, x = c.r, c.x
  local attempt = fmt(num(j.attempts) + 1)
  local token = x.nonce .. '.' .. attempt
  local deadline = NOW + num(x.lease_ms)
  put(c, 'attempts', attempt)
  put(c, 'lease_token', token)
  put(c, 'lease_worker', x.worker or '')
  local deadline_s = fmt(deadline)
  put(c, 'lease_deadline', deadline_s)
  put(c, 'started_at', NOW_S)
  c.score = deadline
  c.reply.token = token
  c.reply.lease_deadline = deadline_s
  local resume = '' -- the first phase without a result (resume_phases leaves that set as it is)
  for _, p in ipairs(c.phases) do if resume == '' and not M.phase.kept[p[2]] then resume = p[1] end end
  -- The attempt's start: its worker and time, and the phase it resumed at when there is one.
  -- Every record of an attempt is kept under 64 bytes when it can be (a small hash stays in
  -- Redis's compact encoding): the attempt's number is in the field's name.
  put(c, 'att:' .. attempt, '{"worker":' .. enc(x.worker or '') .. ',"started_at":' .. NOW_S ..
    (resume ~= '' and (',"resumed_at_phase":' .. enc(resume)) or '') .. '}')
end

-- `,"name":value` for a value that is not null/absent ('' or 'null' for a stored JSON value).
local function json_part(name, v, encoded)
  if v == nil or v == false or v == '' or (encoded and v == 'null') then return '' end
  return ',"' .. name .. '":' .. (encoded and v or enc(v))
end

function J.resume_phases(c) each_phase(c, c.phases, 'reset') end
function J.cancel_phases(c) each_phase(c, c.phases, 'cancel') end
function J.rewind_phases(c) each_phase(c, c.phases, 'rewind') end

function J.interrupt_phase(c)
  local moved = each_phase(c, c.phases, 'fail')
  c.interrupted = moved[#moved] or ''
end

function J.end_attempt(c)
  local j, x = c.r, c.x
  local interrupted = c.interrupted
  -- The attempt's end: its outcome and time, then only what it has (an error, the phase it
  -- was interrupted in, the service's job id, who ended it when not its worker). Its result is
  -- the job's `result` (store_result): an earlier attempt's gets a field of its own (`ar:<n>`)
  -- only when a later attempt's result takes its place.
  put(c, 'atx:' .. fmt(num(j.attempts)), '{"outcome":"' .. M.job.outcome[c.trigger] .. '","finished_at":' .. NOW_S ..
    json_part('error', x.error, true) .. json_part('interrupted_phase', interrupted) ..
    json_part('service_job_id', j.service_job_id) ..
    ((x.by and x.by ~= 'worker') and (',"by":' .. enc(x.by)) or '') .. '}')
  drop(c, 'lease_token', 'lease_deadline', 'lease_worker') -- the lease is over (its worker is in att:<n>)
  c.reply.interrupted_phase = interrupted ~= '' and interrupted or nil
end

function J.count_retry(c) put(c, 'retry_count', num(c.r.retry_count) + 1) end
function J.reset_retries(c) put(c, 'retry_count', 0) end
function J.new_epoch(c) put(c, 'epoch', num(c.r.epoch) + 1) end

function J.arm_backoff(c)
  c.score = NOW + backoff_ms(c.r, num(c.r.retry_count), c.x.jitter)
  put(c, 'due_at', fmt(c.score))
end

function J.arm_delay(c)
  c.score = NOW + num(c.x.delay_ms)
  put(c, 'due_at', fmt(c.score))
end

function J.cancel_handler(c) redis.call('PUBLISH', P .. 'cancel', c.r.id) end

-- The job's result is the one of the last attempt that succeeded; when a later attempt
-- stores its own (a retry from the start after validation failed), the earlier one moves to
-- that attempt's own field, `ar:<n>` (only then: a job's one success stores its result once).
local function keep_earlier_result(c, n)
  local earlier = c.r.result
  if earlier == '' or earlier == 'null' then return end
  for k = n - 1, 1, -1 do
    local record = redis.call('HGET', jkey(c.r.id), 'atx:' .. k) or ''
    if string.find(record, '"outcome":"succeeded"', 1, true) then
      if redis.call('HEXISTS', jkey(c.r.id), 'ar:' .. k) == 0 then put(c, 'ar:' .. k, earlier) end
      return
    end
  end
end

function J.store_result(c)
  local result = c.x.result
  if not result or result == '' then return end
  local n = num(c.r.attempts)
  if n > 1 then keep_earlier_result(c, n) end
  put(c, 'result', result)
end

function J.record_error(c)
  local e = c.x.error
  if e and e ~= '' then put(c, 'error', e) end
end

function J.clear_error(c) if c.r.error ~= '' then put(c, 'error', '') end end
function J.start_validation(c) put(c, 'val_checks', 0) end

function J.record_status(c)
  local status = c.x.status
  if status and status ~= '' then put(c, 'validation_status', status) end
end

-- The op's reason ends a job (a batch's cancel: `batch_cancelled`); a retry wait always
-- names the trigger's own.
function J.record_reason(c)
  local reason = M.job.terminal[c.to] and c.x.reason or nil
  put(c, 'reason', reason or M.job.reason[c.trigger] or '')
end

function J.clear_reason(c) if c.r.reason ~= '' then put(c, 'reason', '') end end
function J.finish(c) put(c, 'finished_at', NOW_S) end

function J.reopen(c)
  local j = c.r
  if j.finished_at ~= '' then put(c, 'finished_at', '') end
  if j.reason ~= '' then put(c, 'reason', '') end
  if j.batch ~= '' then
    local from = c.from
    later(c, function() batch_member_reopened(j.batch, from) end)
  end
end

function J.mark_unfiled(c) redis.call('ZADD', K_UNFILED, NOW_S, c.r.id) end -- for the evaluator

function J.notify(c)
  local j = c.r
  if j.notify == '1' then
    outbox_add(j.id, c.o.notify, num(j.epoch), j.webhook_url, job_snapshot(j), j.traceparent)
  end
end

function J.count_member(c)
  local j = c.r
  if j.batch ~= '' then
    local to = c.to
    later(c, function() batch_member_done(j.batch, to) end)
  end
end

function J.wake_workers(c) woke = true end

EFFECT.phase.drop_result = function(c, name) redis.call('HDEL', jkey(c.r.id), 'pr:' .. name) end
-- A phase's result, stored with the job and in the attempt's own copy (a later attempt that
-- runs the phase again overwrites pr:, not this). `c` is the phase op's step.
EFFECT.phase.store_result = function(c, name)
  local result = (c.x.result ~= nil and c.x.result ~= '') and c.x.result or 'null'
  put(c, 'pr:' .. name, result)
  put(c, 'ap:' .. c.r.attempts .. ':' .. name, result)
end

MACHINE.job = {
  prepare = function(c)
    c.phases = parse_phases(c.r.phases)
    c.score = NOW
  end,
  write = function(c)
    local j = c.r
    local joined = join_phases(c.phases)
    if joined ~= j.phases then put(c, 'phases', joined) end
    redis.call('HSET', jkey(j.id), unpack(c.set))
    if c.drop then redis.call('HDEL', jkey(j.id), unpack(c.drop)) end
    reindex(c)
    -- its event, fields added one by one (every move of every job makes one: no fields list)
    local notify = c.o.notify
    local args = event_args(notify ~= '' and notify or ('job.' .. c.trigger), j.id)
    args[13], args[14], args[15], args[16] = 'from', c.from, 'to', c.to
    local n = event_field(args, 16, 'attempt', j.attempts ~= '' and j.attempts or '0')
    n = event_field(args, n, 'reason', j.reason)
    n = event_field(args, n, 'phase', c.interrupted)
    n = event_field(args, n, 'cause', c.x.cause)
    redis.call(unpack(args, 1, n))
  end,
}

-- A move's facts are read only by `apply`, before anything else the move does: one table serves
-- every move (a move its effects cause fills it anew for itself).
local MOVE_FACTS = {}
local function job_move(j, trigger, x) return move('job', j, trigger, job_facts(j, MOVE_FACTS), x) end

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

