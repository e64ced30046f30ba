------------------------------------------------------------------------------ deliveries --
-- The webhook delivery machine's record and effects (machines/webhook.py).

local DELIVERY_FIELDS = {'state', 'attempts', 'event', 'object', 'url', 'snapshot', 'epoch',
  'created_at', 'token', 'traceparent'}

local function load_delivery(id) return load_hash(dkey(id), DELIVERY_FIELDS, id) end

-- The guards' facts (machines/webhook.py webhook_facts).
local function webhook_facts(attempts, max_attempts) return {attempts_left = attempts < max_attempts} end

local W = EFFECT.webhook

function W.count_attempt(c)
  local attempts = num(c.r.attempts) + 1
  put(c, 'attempts', attempts)
  put(c, 'token', c.x.nonce .. '.' .. attempts)
  c.score = NOW + num(c.x.lease_ms)
end

function W.drop_token(c) put(c, 'token', '') end

function W.record_response(c)
  local x = c.x
  if x.status == nil and x.error == nil then return end -- a send lease that ran out: no report
  put(c, 'last_status', x.status or '')
  put(c, 'last_error', x.error or '')
end

function W.arm_backoff(c) c.score = c.x.retry_at end

function W.reset_attempts(c)
  put(c, 'attempts', 0)
  put(c, 'token', '')
end

-- The job or batch records where its notification stands: settled, or re-sent by an operator.
function W.settle_notification(c)
  local d = c.r
  local object_key = (string.sub(d.event, 1, 4) == 'job.') and jkey(d.object) or bkey(d.object)
  if redis.call('EXISTS', object_key) == 1 then
    redis.call('HSET', object_key, 'notification', c.to, 'notification_event', d.event)
  end
end

MACHINE.webhook = {
  prepare = function(c) c.score = NOW end,
  write = function(c)
    local d = c.r
    redis.call('HSET', dkey(d.id), unpack(c.set))
    reindex(c)
    event('webhook.' .. c.trigger, d.object, {'delivery', d.id, 'from', c.from, 'to', c.to,
      'attempt', d.attempts, 'event', d.event, 'status', d.last_status, 'error', d.last_error})
  end,
}

