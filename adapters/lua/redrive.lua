------------------------------------------------------------------------------- re-drive --

-- A job type's re-drive policy (adapters/redrive.py), per kind (the problem the job was filed
-- under), each at most its policy's count, each `delay_ms` after the filing or the last re-drive:
-- * `notification_failed`: the job's dead notification is redelivered (the webhook machine's
--   `redeliver`, dead -> pending: a new delivery of the same event id);
-- * `missing_output`: the job (completed, which absorbs every trigger) is run again as a new job,
--   the re-run: same type, input and settings, every phase pending, submitted through `submit`
--   with the id the caller chose; linked both ways (`rerun` on the job, `rerun_of` on the
--   re-run), which carries its chain's count, so a chain of re-runs stops at the cap.
-- `file` puts such a job in `redrive` (score: when it is due) while its count is below the
-- cap; `redrives` lists the due ones; `redrive` performs one, guarded: the job is of the
-- policy's type, filed under that problem at the epoch the caller read, its count is below the
-- cap, the delay has passed, and the kind's step moves (the delivery is redelivered; the job was
-- not re-run yet). Then, in the same step, the count `redrive:<kind>` and `redriven_at` on the
-- job, one `job.redriven` event, and the job's next look (`delay_ms` on) while the cap allows.
-- Any guard that fails answers `skipped`, nothing written: of two daemons offering the same
-- re-drive exactly one performs it.

local REDRIVE_KINDS = {notification_failed = true, missing_output = true}

local function redrive_key() return P .. 'redrive' end

local REDRIVE_FIELDS = {'filed_epoch', 'filed_at', 'problem', 'redriven_at', 'rerun',
  'redrive:notification_failed', 'redrive:missing_output'}

-- Due re-drives, at most x.n, with what `redrive` needs. x.policies: job type -> {delay_ms,
-- {kind -> max}}. Entries no longer candidates (gone, retried, filed otherwise, no policy, cap
-- reached, notification delivered, already re-run) are dropped; one whose notification is still
-- on its way, or whose delay (a policy changed) has not passed, is looked at again when it may be due.
function OP.redrives(x)
  local key = redrive_key()
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', NOW, 'LIMIT', 0, x.n)) do
    local j = load_job(id, REDRIVE_FIELDS)
    local policy = j and x.policies[j.type]
    local renotify = j and j.problem == 'notification_failed'
    local note = renotify and notification_of(j) or 'dead'
    if j == nil or policy == nil or j.filed_epoch ~= j.epoch or not REDRIVE_KINDS[j.problem]
        or num(j['redrive:' .. j.problem]) >= num(policy[2][j.problem]) or note == 'delivered' or note == ''
        or note == 'missing' or j.rerun ~= '' then
      redis.call('ZREM', key, id)
    else
      local due = math.max(num(j.filed_at), num(j.redriven_at)) + num(policy[1])
      if note ~= 'dead' then
        redis.call('ZADD', key, NOW + num(x.wait_ms), id) -- still on its way
      elseif due > NOW then
        redis.call('ZADD', key, due, id)
      else
        out[#out + 1] = {id = id, type = j.type, kind = j.problem, epoch = num(j.epoch)}
      end
    end
  end
  local nxt = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {kind = 'redrives', jobs = #out > 0 and out or nil, n = #out,
    next_due = nxt[2] and tonumber(nxt[2]) or nil}
end

-- The submit op of job j's re-run `id`: its type, input and settings, every phase pending.
local function rerun_op(j, id)
  local phases = parse_phases(j.phases)
  local pending = initial_state(M.phase, {}).state
  for _, p in ipairs(phases) do p[2] = pending end
  return {op = 'submit', id = id, type = j.type, input = j.input, priority = num(j.priority),
    max_retries = num(j.max_retries), timeout_ms = num(j.timeout_ms), backoff_ms = num(j.backoff_ms),
    backoff_max_ms = num(j.backoff_max_ms), has_validator = j.has_validator == '1', notify = j.notify == '1',
    webhook_url = j.webhook_url, validator_url = j.validator_url, phases = join_phases(phases)}
end

-- Each kind's step, given the job's count once it is done: nil when it did not move (skipped,
-- nothing written); else the reply's field naming what it did, its value, and whether the job
-- may be re-driven again (the redelivered notification may die again; a re-run job is done:
-- its re-run carries the chain's count on).
local REDRIVE_STEP = {
  notification_failed = function(j, x, count)
    local did = j.id .. '~' .. M.job.notifications[j.state] .. '~' .. j.epoch
    local d = load_delivery(did)
    if d == nil then return nil end -- (a job that asked for no notification has none)
    if move('webhook', d, 'redeliver', {}, {id = did}).kind ~= 'moved' then return nil end -- delivered, or on its way
    return 'delivery', did, true
  end,
  missing_output = function(j, x, count)
    if j.rerun ~= '' or not x.rerun_id or x.rerun_id == '' then return nil end -- re-run once
    if OP.submit(rerun_op(j, x.rerun_id)).kind ~= 'created' then return nil end -- (writes nothing then)
    redis.call('HSET', jkey(j.id), 'rerun', x.rerun_id)
    redis.call('HSET', jkey(x.rerun_id), 'rerun_of', j.id, 'redrive:' .. x.kind, count)
    return 'rerun', x.rerun_id, false
  end,
}

-- One re-drive of job x.id (of x.type, x.kind, read at x.epoch; the type's policy: x.max, x.delay_ms).
-- Performed: `redriven`, with the job's count of that kind and the delivery re-sent or the re-run.
function OP.redrive(x)
  if not REDRIVE_KINDS[x.kind] then return {kind = 'rejected', error = 'redrive: no kind ' .. tostring(x.kind)} end
  local field = 'redrive:' .. x.kind
  local j = load_job(x.id, REDRIVE_FIELDS)
  if j == nil then return {kind = 'not_found', error = 'job', id = x.id} end
  local count = num(j[field])
  if j.type ~= x.type or j.filed_epoch ~= j.epoch or num(j.epoch) ~= num(x.epoch) or j.problem ~= x.kind
      or count >= num(x.max) or NOW < math.max(num(j.filed_at), num(j.redriven_at)) + num(x.delay_ms) then
    return {kind = 'skipped', id = x.id, state = j.state}
  end
  count = count + 1
  local name, value, again = REDRIVE_STEP[x.kind](j, x, count)
  if name == nil then return {kind = 'skipped', id = x.id, state = j.state} end
  redis.call('HSET', jkey(x.id), field, count, 'redriven_at', NOW_S)
  if again and count < num(x.max) then
    redis.call('ZADD', redrive_key(), NOW + num(x.delay_ms), x.id)
  else
    redis.call('ZREM', redrive_key(), x.id)
  end
  event('job.redriven', x.id, {'kind', x.kind, 'count', fmt(count), 'epoch', j.epoch, name, value})
  return {kind = 'redriven', id = x.id, problem = x.kind, count = count, [name] = value}
end
