--------------------------------------------------------------------------------- batches --
-- The batch machine's record and effects (machines/batch.py), and the member counters a
-- member's own transition moves.

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

-- The guards of the batch machine (machines/batch.py batch_facts). The size is known once
-- membership is closed or an expected total was given; until then neither the threshold nor
-- "every member terminal" can make the batch ready, only the stuck sweep can.
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


local B = EFFECT.batch

function B.touch(c) batch_touch(c.r) end
function B.mark_closed(c) put(c, 'closed', '1') end
function B.record_reason(c) put(c, 'reason', M.batch.reason[c.trigger] or '') end
function B.finish(c) put(c, 'finished_at', NOW_S) end
function B.notify(c) batch_notify(c.r, c.o.notify, 0) end

-- After the batch is written: every unfinished member is cancelled (reason `batch_cancelled`).
function B.cancel_members(c)
  local id = c.r.id
  c.reply.members_cancelled = 0
  later(c, function()
    local cancelled = 0
    for _, member in ipairs(redis.call('SMEMBERS', bkey(id) .. ':members')) do
      local j = load_job(member)
      if j ~= nil and job_move(j, 'cancel', {reason = 'batch_cancelled'}).kind == 'moved' then
        cancelled = cancelled + 1
      end
    end
    c.reply.members_cancelled = cancelled
  end)
end

MACHINE.batch = {
  prepare = function(c) end,
  write = function(c)
    local b = c.r
    redis.call('HSET', bkey(b.id), unpack(c.set))
    reindex(c)
    local notify = c.o.notify
    event(notify ~= '' and notify or ('batch.' .. c.trigger), b.id, {'from', c.from, 'to', c.to,
      'reason', b.reason, 'completed', b.completed, 'failed', b.failed, 'cancelled', b.cancelled})
    c.reply.state = c.to
  end,
}

local function batch_move(b, trigger, facts) return move('batch', b, trigger, facts, {}) end

-- The one guarded finalize every trigger funnels into (the threshold, every member terminal,
-- close, the monitor's stuck and ready sweeps): finalize, then settle, in this one atomic step.
-- Only the stuck sweep can make a batch ready with neither its threshold met nor every member
-- terminal: that one settles `failed` with the reason `stuck`.
local function batch_finalize(b, stuck)
  local facts = batch_facts(b, stuck)
  local r = batch_move(b, 'finalize', facts)
  if r.kind ~= 'moved' then return r end
  local settled = batch_move(b, 'settle', facts)
  settled.from = r.from
  return settled
end

-- Why `adding` more members would be refused (a `rejected` reply), or nil.
batch_refusal = function(batch_id, adding)
  local b = load_batch(batch_id)
  if b == nil then return {kind = 'not_found', error = 'batch', id = batch_id} end
  local why
  if M.batch.terminal[b.state] then why = 'is ' .. b.state
  elseif b.expected ~= '' and num(b.members) + adding > num(b.expected) then
    why = 'expects ' .. b.expected .. ' members and has ' .. num(b.members)
  elseif b.closed == '1' then why = 'is closed'
  end
  if why == nil then return nil end
  return {kind = 'rejected', id = batch_id, error = 'batch ' .. batch_id .. ' ' .. why .. '; no more members can be added'}
end

-- A batch created with an expected total is closed once that many members have been added:
-- it leaves `open` (members still being added) for `running`.
local function batch_filled(b)
  if b.closed ~= '1' and b.expected ~= '' and num(b.members) >= num(b.expected) then
    return batch_move(b, 'close', {})
  end
end

-- A new job joins a live batch at submit (batch_refusal said yes in the same step).
batch_member_added = function(batch_id, job_id)
  redis.call('HINCRBY', bkey(batch_id), 'members', 1)
  redis.call('SADD', bkey(batch_id) .. ':members', job_id)
  local b = load_batch(batch_id)
  batch_touch(b)
  batch_filled(b)
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
  if batch_move(b, 'member_done', {}).kind ~= 'moved' then return end -- terminal: counters only
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

