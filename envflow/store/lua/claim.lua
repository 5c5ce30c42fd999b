-- Claim a run for a new attempt on this worker.
-- KEYS[1] run hash   KEYS[2] lease   KEYS[3] active zset   KEYS[4] pending zset   KEYS[5] output stream
-- KEYS[6] paused queues set   KEYS[7] packed output
-- ARGV[1] worker name   ARGV[2] now (seconds)   ARGV[3] lease ttl (ms)   ARGV[4] history ttl (s)   ARGV[5] run ttl (s)
-- ARGV[6] the queue the job came from
-- Returns {'ok', attempt, deployment snapshot (JSON, or '' when the spec is inline), field, value, ...}
--       | {'missing'} | {'ended', state} | {'busy', holder} | {'paused'}
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

-- End the run before it starts (a cancel request, a lost deployment snapshot).
local function end_now(final_state)
  transition(run, final_state, now, attempt)
  output_end(run, stream, KEYS[7], attempt, final_state, true, ARGV[4], ARGV[5])
  redis.call('ZREM', active, id)
  redis.call('ZREM', pending, id)
  hook_event(run, final_state, now)
  return {'ended', final_state}
end

if state == S.RUNNING then
  -- The previous attempt's worker died and no reaper has seen it yet.
  local prev = redis.call('HMGET', run, 'worker', 'attempt_started_at')
  add_attempt(run, {n = tostring(attempt), worker = prev[1], started = prev[2], ended = now, state = S.CRASHED,
                    reason = 'worker lost (found by the next claim)'})
  transition(run, S.CRASHED, now, attempt)
  output_end(run, stream, KEYS[7], attempt, S.CRASHED, false, ARGV[4], ARGV[5])
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
attempt = attempt + 1
redis.call('HSET', run, 'attempt', attempt, 'worker', worker, 'attempt_started_at', now, 'out_seq', 0)
redis.call('HDEL', run, 'waiting')  -- it waits no more (waits.py)
transition(run, S.RUNNING, now, attempt)
redis.call('SET', lease, worker, 'PX', ARGV[3])
redis.call('ZADD', active, now, id)
redis.call('ZREM', pending, id)
local out = {'ok', attempt, snapshot}
local all = redis.call('HGETALL', run)
for i = 1, #all do out[#out + 1] = all[i] end
return out
