-- Claim a run for a new attempt on this worker.
-- KEYS[1] run hash   KEYS[2] lease   KEYS[3] active zset   KEYS[4] pending zset   KEYS[5] output stream
-- KEYS[6] paused queues set
-- ARGV[1] worker name   ARGV[2] now (seconds)   ARGV[3] lease ttl (ms)   ARGV[4] history ttl (s)   ARGV[5] run ttl (s)
-- ARGV[6] the queue the job came from
-- Returns {'ok', attempt, field, value, ...} | {'missing'} | {'ended', state} | {'busy', holder} | {'paused'}
local run, lease, active, pending, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local worker, now = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[6], ARGV[6]) == 1 then return {'paused'} end
local state = redis.call('HGET', run, 'state')
if not state then return {'missing'} end
if FINAL[state] then return {'ended', state} end
local holder = redis.call('GET', lease)
if holder then return {'busy', holder} end
local attempt = tonumber(redis.call('HGET', run, 'attempt') or '0')
if state == S.RUNNING then
  -- The previous attempt's worker died and no reaper has seen it yet.
  local prev = redis.call('HMGET', run, 'worker', 'attempt_started_at')
  append_json(run, 'attempts', cjson.encode({n = attempt, worker = prev[1] or '', started_at = tonumber(prev[2] or '0'),
    ended_at = tonumber(now), state = S.CRASHED, reason = 'worker lost (found by the next claim)'}))
  transition(run, S.CRASHED, now, attempt)
  end_record(run, stream, attempt, S.CRASHED, false, ARGV[4])
end
if redis.call('HEXISTS', run, 'cancel_requested_at') == 1 then
  transition(run, S.CANCELLED, now, attempt)
  end_record(run, stream, attempt, S.CANCELLED, true, ARGV[4])
  redis.call('ZREM', active, run_id(run))
  redis.call('ZREM', pending, run_id(run))
  redis.call('EXPIRE', run, ARGV[5])
  return {'ended', S.CANCELLED}
end
attempt = attempt + 1
redis.call('HSET', run, 'attempt', attempt, 'worker', worker, 'attempt_started_at', now, 'out_seq', 0)
transition(run, S.RUNNING, now, attempt)
redis.call('SET', lease, worker, 'PX', ARGV[3])
local id = run_id(run)
redis.call('ZADD', active, now, id)
redis.call('ZREM', pending, id)
local out = {'ok', attempt}
local all = redis.call('HGETALL', run)
for i = 1, #all do out[#out + 1] = all[i] end
return out
