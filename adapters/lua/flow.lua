------------------------------------------------------------------------------------ flows --
-- Dependencies between the jobs of one queue (README, "Dependencies, flows and chains").
-- A job submitted with dependencies keeps their ids (`deps`, joined by ','), its policy
-- (`dep_policy`: fail | ignore | continue) and how many of them it still waits for
-- (`deps_left`); a flow's child names its parent (`parent`). While a dependency is live, the
-- set `dependents:<id>` lists the jobs waiting on it (and its record says so: `dependents`,
-- one of the fields every move reads). Its finish (the table's `release_dependents`, in every
-- row into a terminal state) reads that set (only then), deletes it and the mark and,
-- after the dependency is written, counts the finish on each dependent still `waiting` and
-- fires `deps_done` or `dependency_failed` on it through `move`, as its policy says: in the
-- same step, so nothing polls, and once: a later retry of the dependency finds no set and
-- releases nobody again. A dependent that left `waiting` (released early, cancelled) is not
-- touched. Submits refuse an unknown dependency before anything is written; every
-- dependency is a key of this queue, so a dependency of another queue is unknown here.

-- What a job with dependencies does now: 'wait', 'release' (deps_done) or 'fail'
-- (dependency_failed), from its policy, how many it still waits for (`left`) and whether a
-- dependency it just counted ended in anything but success (`failed`).
local function dep_decision(policy, left, failed)
  if failed and policy == 'fail' then return 'fail' end
  if failed and policy == 'continue' then return 'release' end
  if left <= 0 then return 'release' end
  return 'wait'
end

local function split_ids(s)
  local ids = {}
  if s == nil or s == '' then return ids end
  for id in string.gmatch(s, '[^,]+') do ids[#ids + 1] = id end
  return ids
end

local FLOW = {} -- the submit's and the claim's use of dependencies

-- A submit's dependencies, read before anything is written: nil and the refusal when one is
-- unknown; else the plan: those still live (`pending`), the first that ended in anything but
-- success (`failed`), and what the policy makes of them now (`decision`).
function FLOW.plan(x)
  local pending, failed = {}, nil
  for _, id in ipairs(x.deps) do
    local state = redis.call('HGET', jkey(id), 'state')
    if not state then
      return nil, {kind = 'rejected', error = 'depends_on: no job ' .. id .. ' in queue ' .. QUEUE}
    end
    if not M.job.terminal[state] then pending[#pending + 1] = id
    elseif not M.job.succeeded[state] and failed == nil then failed = id end
  end
  return {pending = pending, failed = failed,
    decision = dep_decision(x.dep_policy, #pending, failed ~= nil)}
end

-- The new job's fields and its place in each live dependency's `dependents`; a job its
-- policy fails at once is `dependency_failed` here, in the submit's step.
function FLOW.stage(c, x, plan)
  put(c, 'deps', table.concat(x.deps, ','))
  put(c, 'dep_policy', x.dep_policy)
  put(c, 'deps_left', #plan.pending)
end

function FLOW.register(x, plan)
  if plan.decision == 'fail' then
    job_move(load_job(x.id), 'dependency_failed', {cause = plan.failed})
    return
  end
  for _, id in ipairs(plan.pending) do
    redis.call('SADD', P .. 'dependents:' .. id, x.id)
    redis.call('HSET', jkey(id), 'dependents', '1') -- its finish reads the set only then
  end
end

-- What a worker sees of a claimed job's dependencies: {id, state, result JSON} each, in the
-- order they were given (a dependency retention deleted: state '', result null).
function FLOW.view(j)
  if j.deps == nil or j.deps == '' then return nil end
  local out = {}
  for _, id in ipairs(split_ids(j.deps)) do
    local v = redis.call('HMGET', jkey(id), 'state', 'result')
    out[#out + 1] = {id, v[1] or '', v[2] or 'null'}
  end
  return out
end

-- One dependent of `from` (which just finished, successfully or not): counted and moved
-- when it still waits; untouched otherwise.
local function release_one(id, from, ok)
  local j = load_job(id, {'deps_left', 'dep_policy'})
  if j == nil or not has_row(M.job, j.state, 'deps_done') then return end
  local left = redis.call('HINCRBY', jkey(id), 'deps_left', -1)
  local decision = dep_decision(j.dep_policy, left, not ok)
  if decision == 'release' then job_move(j, 'deps_done', {cause = from})
  elseif decision == 'fail' then job_move(j, 'dependency_failed', {cause = from}) end
end

function J.release_dependents(c)
  if c.r.dependents ~= '1' then return end -- no job ever waited on it: nothing to read
  local id = c.r.id
  local key = P .. 'dependents:' .. id
  local waiting = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  redis.call('HDEL', jkey(id), 'dependents')
  if #waiting == 0 then return end
  table.sort(waiting)
  local ok = M.job.succeeded[c.to] == true
  later(c, function()
    for _, dependent in ipairs(waiting) do release_one(dependent, id, ok) end
  end)
end

-- A flow's parent cancelled: each of its children (the dependencies that name it as
-- `parent`) still unfinished is cancelled too, after the parent is written.
function J.cancel_children(c)
  local parent = c.r.id
  local children = split_ids(c.r.deps)
  if #children == 0 then return end
  later(c, function()
    for _, id in ipairs(children) do
      if redis.call('HGET', jkey(id), 'parent') == parent then
        job_move(load_job(id), 'cancel', {reason = 'parent_cancelled', cause = parent})
      end
    end
  end)
end

-- A flow: its jobs submitted in one step, in the order given (each dependency before the
-- jobs that depend on it). Everything is checked first: no id taken, every dependency an
-- existing job or one listed earlier (so no cycle can be written), no idempotency key or
-- batch (a flow is one unit); a refusal writes nothing.
function OP.flow(x)
  local listed = {}
  for _, s in ipairs(x.jobs) do
    if (s.idem or '') ~= '' or (s.batch or '') ~= '' then
      return {kind = 'rejected', error = 'flow: a job of a flow takes no idempotency key or batch'}
    end
    if listed[s.id] or redis.call('EXISTS', jkey(s.id)) == 1 then
      return {kind = 'rejected', error = 'job id ' .. s.id .. ' already exists'}
    end
    for _, d in ipairs(s.deps or {}) do
      if not listed[d] and redis.call('EXISTS', jkey(d)) == 0 then
        return {kind = 'rejected', error = 'depends_on: no job ' .. d .. ' in queue ' .. QUEUE}
      end
    end
    listed[s.id] = true
  end
  local jobs = {}
  for i, s in ipairs(x.jobs) do
    local r = OP.submit(s)
    jobs[i] = {r.id, r.state}
  end
  return {kind = 'flow', jobs = jobs}
end
