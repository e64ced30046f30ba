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

