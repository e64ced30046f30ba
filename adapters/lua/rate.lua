--------------------------------------------------------------------------------- rate --
-- Rate limits of job types, enforced by the claim (GCRA with a burst of 1), and the `claim`
-- op itself, in front of the routes of claim.lua (loaded before this file). In the queue's
-- hash tag, so a claim reads them in its one slot:
--   `rates` (hash)          job type -> '<interval ms>' or '<interval ms> <input field>',
--                           written by every daemon at start from its app's declarations
--   `rate:<type>` (string)  when the type's last job started (ms); per value of the input
--   `rate:<type>:<key>`     field for a keyed limit; expires a minute after the next may
--                           start (an absent key: start now)
-- With a burst of 1, GCRA's theoretical arrival time is the last start plus one interval
-- (a start happens only once that time is not in the future, so max(TAT, now) is now).
-- Keeping the last start rather than the TAT lets a changed limit apply at once: the next
-- start is one interval of the current limit after the last. A limited job is simply not
-- taken: it stays queued, its record untouched; the claim answers `next_at`.

local RATE_KEEP_MS = 60000 -- a key outlives the next start by this (its expiry frees memory)
local RATE_SCAN = 64           -- a keyed type: how many of its head jobs one claim looks at

-- The queue's limits: type -> {interval = ms, field = input field or nil}; nil when none.
local function rate_limits()
  local flat = redis.call('HGETALL', P .. 'rates')
  if #flat == 0 then return nil end
  local limits = {}
  for i = 1, #flat, 2 do
    local interval, field = string.match(flat[i + 1], '^(%S+) ?(.*)$')
    limits[flat[i]] = {interval = tonumber(interval), field = field ~= '' and field or nil}
  end
  return limits
end

local function rate_key(job_type, key)
  if key == nil then return P .. 'rate:' .. job_type end
  return P .. 'rate:' .. job_type .. ':' .. key
end

-- The value a keyed limit counts by: the input's top-level field, as text ('' when the
-- input is not an object or lacks it: those jobs share one bucket).
local function rate_input_key(input, field)
  local ok, v = pcall(cjson.decode, input or '')
  if not ok or type(v) ~= 'table' then return '' end
  v = v[field]
  if v == nil or v == cjson.null then return '' end
  if type(v) == 'string' then return v end
  if type(v) == 'number' then
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format('%d', v) end
    return tostring(v)
  end
  return cjson.encode(v)
end

-- When the next job under `rk` may start (NOW or earlier: now).
local function rate_next(rk, interval)
  local last = tonumber(redis.call('GET', rk) or '')
  if last == nil then return 0 end
  return last + interval
end

-- A job under `rk` started now.
local function rate_take(rk, interval)
  redis.call('SET', rk, string.format('%.3f', NOW), 'PX', math.ceil(interval) + RATE_KEEP_MS)
end

-- A daemon publishes its types' limits: x.limits = {{type, spec}, ...}, spec '' for none.
function OP.rate_limits(x)
  for _, l in ipairs(x.limits or {}) do
    if l[2] == '' then redis.call('HDEL', P .. 'rates', l[1])
    else redis.call('HSET', P .. 'rates', l[1], l[2]) end
  end
  return {kind = 'recorded', id = QUEUE}
end

----------------------------------------------------------------- rate-limited claims --
-- When the queue has rate limits (`rates`, see rate.lua) and a type the claim may take is
-- limited and has queued jobs, the limited types go first: of each, the jobs whose limit
-- allows a start now, one per type (or one per key of a keyed type, looking at its first
-- RATE_SCAN jobs), each charged to its limit only once it moved to active. The rest of the
-- claim (n less those) goes through the usual routes, over the unlimited types only. A job
-- its limit holds back is not touched: it stays queued, in its place, with no new state and
-- no retry used. The reply's `next_at` (ms) is the earliest time one of them may start
-- (counting those behind a job this claim took).
local function claim_limited(x, limits)
  local served
  if x.types ~= nil then
    local any = false
    served = {}
    for _, t in ipairs(x.types) do served[t] = true; any = any or limits[t] ~= nil end
    if not any then return nil end -- none of its types is limited: the usual routes
  end
  local limited, free = {}, {}
  for _, t in ipairs(redis.call('SMEMBERS', K_QUEUED_TYPES)) do
    if served == nil or served[t] then
      if limits[t] then limited[#limited + 1] = t else free[#free + 1] = t end
    end
  end
  if #limited == 0 then return nil end
  table.sort(limited)
  table.sort(free)
  local n = num(x.n)
  local taken, next_at = {}, nil
  local function held(at) if next_at == nil or at < next_at then next_at = at end end
  for _, t in ipairs(limited) do
    if #taken >= n then break end
    local lim = limits[t]
    if lim.field == nil then
      local rk = rate_key(t)
      local at = rate_next(rk, lim.interval)
      if at > NOW then held(at)
      else
        local head = redis.call('ZRANGE', qkey(t), 0, 1)
        if head[1] then taken[#taken + 1] = {id = head[1], type = t, rk = rk, interval = lim.interval} end
        if head[2] then held(math.max(at, NOW) + lim.interval) end
      end
    else
      local seen = {}
      for _, id in ipairs(redis.call('ZRANGE', qkey(t), 0, RATE_SCAN - 1)) do
        if #taken >= n then break end
        local key = rate_input_key(redis.call('HGET', jkey(id), 'input'), lim.field)
        if seen[key] then held(seen[key]) -- its key took a job, or holds one back, already
        else
          local rk = rate_key(t, key)
          local at = rate_next(rk, lim.interval)
          if at > NOW then held(at); seen[key] = at
          else
            taken[#taken + 1] = {id = id, type = t, rk = rk, interval = lim.interval}
            seen[key] = math.max(at, NOW) + lim.interval
          end
        end
      end
    end
  end
  local jobs = {}
  if #taken > 0 then
    local ids = {}
    for i, e in ipairs(taken) do
      ids[i] = e.id
      redis.call('ZREM', qkey(e.type), e.id)
      if redis.call('EXISTS', qkey(e.type)) == 0 then redis.call('SREM', K_QUEUED_TYPES, e.type) end
    end
    redis.call('ZREM', K_QUEUED_ALL, unpack(ids))
    x.popped = true
    for _, e in ipairs(taken) do
      local j = job_record(e.id, CLAIM_FIELDS)
      if j ~= nil then
        local r = job_move(j, 'claim', x)
        if r.kind == 'moved' then
          rate_take(e.rk, e.interval)
          jobs[#jobs + 1] = claimed_view(j, r.token, r.lease_deadline)
        end
      end
    end
  end
  if #jobs < n and #free > 0 then
    local sub = {}
    for k, v in pairs(x) do sub[k] = v end
    sub.n, sub.types, sub.popped = n - #jobs, free, nil
    local rest = claim_routes(sub)
    for _, j in ipairs(rest.jobs or {}) do jobs[#jobs + 1] = j end
  end
  return {kind = 'claimed', jobs = #jobs > 0 and jobs or nil, n = #jobs, next_at = next_at}
end

function OP.claim(x)
  if queue_paused() then return {kind = 'claimed', n = 0, state = 'paused'} end
  local limits = rate_limits()
  if limits ~= nil then
    local r = claim_limited(x, limits)
    if r ~= nil then return r end
  end
  return claim_routes(x)
end
