------------------------------------------------------------------------------- re-drive --

-- A job type's re-drive policy (adapters/redrive.py) redelivers the dead notification of a job
-- filed `notification_failed`, at most `max` times, each `delay_ms` after the filing or the last
-- re-drive. `file` puts such a job in `redrive` (score: when it is due) while its count is
-- below the policy's cap; `redrives` lists the due ones; `redrive` performs one, guarded: the
-- job is of the policy's type, filed under that problem at the epoch the caller read, its count is below the cap,
-- the delay has passed, and the webhook machine's `redeliver` moves its current notification
-- (dead -> pending: a new delivery of the same event id). Then, in the same step, the count
-- `redrive:<kind>` and `redriven_at` on the job, one `job.redriven` event, and the job's next
-- look (`delay_ms` on) while the cap allows. Any guard that fails answers `skipped`, nothing
-- written: of two daemons offering the same re-drive exactly one performs it.

local REDRIVE_KINDS = {notification_failed = true}

local function redrive_key() return P .. 'redrive' end

-- Due re-drives, at most x.n, with what `redrive` needs. x.policies: job type -> {max,
-- delay_ms}. Entries no longer candidates (gone, retried, filed otherwise, no policy, cap
-- reached, notification delivered) are dropped; one whose notification is still on its way,
-- or whose delay (a policy changed) has not passed, is looked at again when it may be due.
function OP.redrives(x)
  local key = redrive_key()
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', NOW, 'LIMIT', 0, x.n)) do
    local j = load_job(id, {'filed_epoch', 'filed_at', 'problem', 'redriven_at', 'redrive:notification_failed'})
    local policy = j and x.policies[j.type]
    local note = j and notification_of(j)
    if j == nil or policy == nil or j.filed_epoch ~= j.epoch or not REDRIVE_KINDS[j.problem]
        or num(j['redrive:' .. j.problem]) >= num(policy[1]) or note == 'delivered' or note == ''
        or note == 'missing' then
      redis.call('ZREM', key, id)
    else
      local due = math.max(num(j.filed_at), num(j.redriven_at)) + num(policy[2])
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

-- One re-drive of job x.id (of x.type, x.kind, read at x.epoch; the type's policy: x.max, x.delay_ms).
-- Performed: `redriven`, with the job's count of that kind and the delivery re-sent.
function OP.redrive(x)
  if not REDRIVE_KINDS[x.kind] then return {kind = 'rejected', error = 'redrive: no kind ' .. tostring(x.kind)} end
  local field = 'redrive:' .. x.kind
  local j = load_job(x.id, {'filed_epoch', 'filed_at', 'problem', 'redriven_at', field})
  if j == nil then return {kind = 'not_found', error = 'job', id = x.id} end
  local skipped = {kind = 'skipped', id = x.id, state = j.state}
  local count = num(j[field])
  if j.type ~= x.type or j.filed_epoch ~= j.epoch or num(j.epoch) ~= num(x.epoch) or j.problem ~= x.kind
      or count >= num(x.max)
      or NOW < math.max(num(j.filed_at), num(j.redriven_at)) + num(x.delay_ms) or j.notify ~= '1' then
    return skipped
  end
  local did = j.id .. '~' .. M.job.notifications[j.state] .. '~' .. j.epoch
  local d = load_delivery(did)
  if d == nil then return skipped end
  local r = move('webhook', d, 'redeliver', {}, {id = did})
  if r.kind ~= 'moved' then return skipped end -- delivered, or already on its way again
  count = count + 1
  redis.call('HSET', jkey(x.id), field, count, 'redriven_at', NOW_S)
  if count < num(x.max) then
    redis.call('ZADD', redrive_key(), NOW + num(x.delay_ms), x.id)
  else
    redis.call('ZREM', redrive_key(), x.id)
  end
  event('job.redriven', x.id, {'kind', x.kind, 'count', fmt(count), 'epoch', j.epoch, 'delivery', did})
  return {kind = 'redriven', id = x.id, problem = x.kind, count = count, delivery = did}
end
