--------------------------------------------------------------------------------- rate --
-- Rate limits of job types, enforced by the claim (GCRA with a burst of 1). In the queue's
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
