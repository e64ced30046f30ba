-------------------------------------------------------------------------------- batch ops --
-- The ops on batches: create, add, close, finalize, cancel, the monitor's sweep.

function OP.batch_create(x)
  if redis.call('EXISTS', bkey(x.id)) == 1 then return {kind = 'exists', id = x.id} end
  local start = initial_state(M.batch, {})
  redis.call('HSET', bkey(x.id), 'id', x.id, 'queue', QUEUE, 'state', start.state,
    'expected', x.expected or '', 'members', 0, 'completed', 0, 'failed', 0, 'cancelled', 0,
    'threshold', x.threshold, 'progress_every', x.progress_every or 0,
    'stuck_after_ms', x.stuck_after_ms or 0, 'closed', '', 'notify', x.notify and '1' or '0',
    'webhook_url', x.webhook_url or '', 'epoch', 0, 'created_at', NOW_S,
    'updated_at', NOW_S)
  local b = load_batch(x.id)
  local c = {m = M.batch, r = b, x = x, set = {}}
  for _, e in ipairs(start.fx) do EFFECT.batch[e](c) end
  if #start.fx > 0 then FX[#FX + 1] = start.fx end
  event('batch.created', x.id, {'to', start.state, 'expected', x.expected})
  batch_filled(b) -- it expects no members: closed at once
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
  batch_filled(b)
  batch_finalize(b, false)
  return {kind = 'added', id = x.id, added = #fresh, state = b.state}
end

function OP.batch_close(x)
  local b = load_batch(x.id)
  if b == nil then return {kind = 'not_found', error = 'batch', id = x.id} end
  local r = batch_move(b, 'close', {})
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
  return batch_move(b, 'cancel', {})
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
