-- Claim a run for a new attempt on this worker.
-- KEYS[1] run hash   KEYS[2] lease   KEYS[3] active zset   KEYS[4] pending zset   KEYS[5] output stream
-- KEYS[6] paused queues set   KEYS[7] packed output
-- ARGV[1] worker name   ARGV[2] now (seconds)   ARGV[3] lease ttl (ms)   ARGV[4] history ttl (s)   ARGV[5] run ttl (s)
-- ARGV[6] the queue the job came from
-- Returns {'ok', attempt, deployment snapshot (JSON, or '' when the spec is inline), field, value, ...}
--       | {'missing'} | {'ended', state} | {'busy', holder} | {'paused'}
--       | {'limited', limit, reason}: a limit of the run is full; the run is parked (PENDING, in line on
--         each of its limits, its job out of the queue) until a slot frees (_limits.lua)
local run, lease, active, pending, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker, now = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[6], ARGV[6]) == 1 then return {'paused'} end
local state = redis.call('HGET', run, 'state')
if not state then return {'missing'} end
if FINAL[state] then return {'ended', state} end
local holder = redis.call('GET', lease)
if holder then return {'busy', holder} end
local attempt = tonumber(redis.call('HGET', run, 'attempt') or '0')
local id = run_id(run)
local freed = {}  -- limits whose slots a crashed previous attempt held

-- End the run before it starts (a cancel request, a lost deployment snapshot, a full limit).
local function end_now(final_state)
  transition(run, final_state, now, attempt)
  output_end(run, stream, KEYS[7], attempt, final_state, true, ARGV[4], ARGV[5])
  redis.call('ZREM', active, id)
  redis.call('ZREM', pending, id)
  hook_event(run, final_state, now)
  leave(run, id)
  wake_all(freed)
  return {'ended', final_state}
end

if state == S.RUNNING then
  -- The previous attempt's worker died and no reaper has seen it yet.
  local prev = redis.call('HMGET', run, 'worker', 'attempt_started_at')
  add_attempt(run, {n = tostring(attempt), worker = prev[1], started = prev[2], ended = now, state = S.CRASHED,
                    reason = 'worker lost (found by the next claim)'})
  transition(run, S.CRASHED, now, attempt)
  output_end(run, stream, KEYS[7], attempt, S.CRASHED, false, ARGV[4], ARGV[5])
  freed = release(run, id, attempt)
end
if redis.call('HEXISTS', run, 'cancel_requested_at') == 1 then return end_now(S.CANCELLED) end
-- The deployment as the run was created with it: a shared snapshot the run refers to.
local snapshot = ''
local ok, spec = pcall(cjson.decode, redis.call('HGET', run, 'spec') or '')
local ref = ok and type(spec) == 'table' and spec.ref
if ref then
  ref = string.match(tostring(ref), '^%x+$') or 'invalid'
  snapshot = redis.call('GET', SPEC .. ref)
  if not snapshot then
    redis.call('HSET', run, 'error_type', 'DeploymentSnapshotExpired', 'error', "the deployment this run was " ..
      "created with is no longer stored (it waited longer than ENVFLOW_RUN_TTL for a worker); start it again")
    return end_now(S.FAILED)
  end
  redis.call('EXPIRE', SPEC .. ref, ARGV[5])
end
-- Its limits: a slot of each, or none and it waits in line (or, with on_limit cancel, ends).
local limits = run_limits(run)
if #limits > 0 then
  local score = redis.call('ZSCORE', pending, id) or now
  for _, lim in ipairs(limits) do
    if not admits(lim, id, score) then
      local where = limit_state(lim, id, score)
      if redis.call('HGET', run, 'on_limit') == 'cancel' then
        local reason = 'no free slot of ' .. where .. ', and on_limit is cancel'
        redis.call('HSET', run, 'reason', reason)
        if attempt == 0 then output_note(run, stream, 'envflow: cancelled: ' .. reason) end
        return end_now(S.CANCELLED)
      end
      if state ~= S.PENDING then
        transition(run, S.PENDING, now, attempt)
        redis.call('ZREM', active, id)
        redis.call('ZADD', pending, score, id)
      end
      park(run, id, limits, score, lim.name, where, now)
      wake_all(freed)
      return {'limited', lim.name, 'waiting for a slot of ' .. where}
    end
  end
end
attempt = attempt + 1
if #limits > 0 then
  take(id, limits, attempt)
  redis.call('HDEL', run, 'parked_on', 'waiting')
end
redis.call('HSET', run, 'attempt', attempt, 'worker', worker, 'attempt_started_at', now, 'out_seq', 0)
redis.call('HDEL', run, 'waiting')  -- it waits no more (waits.py)
transition(run, S.RUNNING, now, attempt)
redis.call('SET', lease, worker, 'PX', ARGV[3])
redis.call('ZADD', active, now, id)
redis.call('ZREM', pending, id)
wake_all(freed)
local out = {'ok', attempt, snapshot}
local all = redis.call('HGETALL', run)
for i = 1, #all do out[#out + 1] = all[i] end
return out
