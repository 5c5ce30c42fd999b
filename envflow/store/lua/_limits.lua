-- Concurrency limits, prepended after _output.lua to every script: a limit's slots are taken by the
-- claim that makes a run RUNNING (all of the run's limits or none), released by the script that ends
-- that attempt, and handed to the oldest run in line in that same script. Layout: envflow/store/keys.py.
-- Rendered in from Python: LIMITS (name -> slots), LIMIT (the per-limit keys' prefix), DEP_LIMIT (the
-- prefix of a deployment's own limit), RUN (run hashes' prefix), PENDING (the pending zset), RQ_JOB and
-- RQ_QUEUE (RQ's job hash and queue prefixes), RQ_QUEUED (RQ's queued status).
--
-- A run in line for a limit is a member of its waiting zset, scored by when it became due. A run may
-- take a slot only while fewer runs are in line ahead of it than the limit has free slots, so the
-- oldest run is never passed over on any of its limits. A parked run (its job held by envflow, out
-- of every RQ queue) is in line on each of its limits and has the run fields parked_on and waiting;
-- a run woken up leaves every line and its job goes to the front of its RQ queue (the job's origin),
-- so it starts within one dequeue; a claim that finds a limit full again puts it back in line, in
-- its place.

local function holders_key(name) return LIMIT .. name .. ':holders' end
local function waiting_key(name) return LIMIT .. name .. ':waiting' end

-- The limits a run is under now: its deployment's own and each of its tags that has one,
-- as {name = ..., slots = n}.
local function run_limits(run)
  local f = redis.call('HMGET', run, 'deployment', 'tags')
  local names = {DEP_LIMIT .. (f[1] or '')}
  if f[2] then
    for _, tag in ipairs(cjson.decode(f[2])) do names[#names + 1] = tag end
  end
  local slots = redis.call('HMGET', LIMITS, unpack(names))
  local out = {}
  for i, name in ipairs(names) do
    if slots[i] then out[#out + 1] = {name = name, slots = tonumber(slots[i])} end
  end
  return out
end

-- How many runs are in line for the limit ahead of a run (due at score, when it is not in line itself).
local function ahead(name, id, score)
  local key = waiting_key(name)
  local rank = redis.call('ZRANK', key, id)
  if rank then return rank end
  return redis.call('ZCOUNT', key, '-inf', '(' .. score)
end

local function admits(lim, id, score)
  return redis.call('HLEN', holders_key(lim.name)) + ahead(lim.name, id, score) < lim.slots
end

-- What a waiting run shows: "limit gpu (1 of 1, held by run 8e775718)", or "deployment f/d (...)".
local function limit_label(name)
  if string.sub(name, 1, #DEP_LIMIT) == DEP_LIMIT then return 'deployment ' .. string.sub(name, #DEP_LIMIT + 1) end
  return 'limit ' .. name
end

local function limit_state(lim, id, score)
  local held = redis.call('HKEYS', holders_key(lim.name))
  local text = #held .. ' of ' .. lim.slots
  if #held > 0 then
    local ids = {}
    for i = 1, math.min(#held, 3) do ids[i] = string.sub(held[i], 1, 8) end
    text = text .. ', held by run' .. (#held > 1 and 's ' or ' ') .. table.concat(ids, ', ')
    if #held > 3 then text = text .. ' and ' .. (#held - 3) .. ' more' end
  end
  local before = ahead(lim.name, id, score)
  if before > 0 then text = text .. '; ' .. before .. ' earlier run' .. (before > 1 and 's' or '') .. ' in line' end
  return limit_label(lim.name) .. ' (' .. text .. ')'
end

-- Leave every line the run is in, without waking anyone; the names of the lines it was in.
local function unpark(run, id, limits)
  local left = {}
  for _, lim in ipairs(limits) do
    if redis.call('ZREM', waiting_key(lim.name), id) == 1 then left[#left + 1] = lim.name end
  end
  redis.call('HDEL', run, 'parked_on', 'waiting')
  return left
end

-- Park a run: in line on each of its limits, its job held until a slot frees. Why it waits is the
-- run's waiting record (envflow/waits.py, kind "limit"), announced to its followers as wait.lua does.
local function park(run, id, limits, score, blocked, reason, now)
  for _, lim in ipairs(limits) do redis.call('ZADD', waiting_key(lim.name), 'NX', score, id) end
  local waiting = cjson.encode({kind = 'limit', message = 'waiting for a slot of ' .. reason,
                                details = {limit = blocked}, since = tonumber(now)})
  redis.call('HSET', run, 'parked_on', blocked, 'waiting', waiting)
  redis.call('PUBLISH', run .. ':waiting', waiting)
  -- Its job is queued again, as RQ's set_status would write it: here, before any wake-up can hand
  -- it to another worker (the claim's own worker only undoes its execution).
  if redis.call('EXISTS', RQ_JOB .. id) == 1 then redis.call('HSET', RQ_JOB .. id, 'status', RQ_QUEUED) end
end

-- Take a slot of each limit for the run's attempt.
local function take(id, limits, attempt)
  for _, lim in ipairs(limits) do
    redis.call('HSET', holders_key(lim.name), id, attempt)
    redis.call('ZREM', waiting_key(lim.name), id)
  end
end

-- Wake parked runs up: out of every line, their jobs to the front of their RQ queues, oldest first.
local function wake_runs(ids)
  for i = #ids, 1, -1 do
    local id = ids[i]
    local run = RUN .. id
    unpark(run, id, run_limits(run))
    local origin = redis.call('HGET', RQ_JOB .. id, 'origin')
    if origin then redis.call('LPUSH', RQ_QUEUE .. origin, id) end
  end
end

-- Hand a limit's free slots on: wake each of the first runs in line that every one of its limits
-- admits now (one blocked elsewhere keeps its place, and its slot here, until that frees too).
-- A removed limit wakes every run in its line.
local function wake(name)
  local key = waiting_key(name)
  local slots = redis.call('HGET', LIMITS, name)
  if not slots then
    local parked = {}
    for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      if redis.call('HEXISTS', RUN .. id, 'parked_on') == 1 then parked[#parked + 1] = id end
    end
    redis.call('DEL', key)
    wake_runs(parked)
    return
  end
  local free = tonumber(slots) - redis.call('HLEN', holders_key(name))
  if free <= 0 then return end
  local woken = {}
  for _, id in ipairs(redis.call('ZRANGE', key, 0, free - 1)) do
    local run = RUN .. id
    local f = redis.call('HMGET', run, 'state', 'parked_on')
    if f[1] ~= S.PENDING and f[1] ~= S.SCHEDULED then
      redis.call('ZREM', key, id)  -- ended or running: not in line any more
    elseif f[2] then
      local ready, score = true, redis.call('ZSCORE', key, id)
      for _, lim in ipairs(run_limits(run)) do
        if lim.name ~= name and not admits(lim, id, score) then ready = false break end
      end
      if ready then woken[#woken + 1] = id end
    end
  end
  wake_runs(woken)
end

local function wake_all(names)
  for _, name in ipairs(names) do wake(name) end
end

-- The attempt has ended: free the slots it held; the names of the limits whose slots it freed
-- (wake them once the transition is written).
local function release(run, id, attempt)
  local freed = {}
  for _, lim in ipairs(run_limits(run)) do
    local key = holders_key(lim.name)
    if redis.call('HGET', key, id) == tostring(attempt) then
      redis.call('HDEL', key, id)
      freed[#freed + 1] = lim.name
    end
  end
  return freed
end

-- The run ends without running (cancelled, failed before it started): out of every line, and the
-- runs behind it move up.
local function leave(run, id)
  wake_all(unpark(run, id, run_limits(run)))
end
