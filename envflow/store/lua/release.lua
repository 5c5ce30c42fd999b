-- Give a claimed attempt back before its flow started: the worker found the run's env gone (it lacks it
-- now), so the run waits again for a worker that has it, as if this claim had not happened.
-- KEYS[1] run hash   KEYS[2] lease   KEYS[3] active zset   KEYS[4] pending zset   KEYS[5] output stream
-- ARGV[1] worker name   ARGV[2] the attempt claimed   ARGV[3] now
-- Returns 1, or 0 when the attempt is not this worker's (any more).
local run = KEYS[1]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local f = redis.call('HMGET', run, 'state', 'attempt')
if f[1] ~= S.RUNNING or f[2] ~= ARGV[2] then return 0 end
local previous = tonumber(ARGV[2]) - 1
-- Notes the attempt wrote before the env was found missing: the next claim starts this attempt afresh.
for _, entry in ipairs(redis.call('XRANGE', KEYS[5], ARGV[2] .. '-0', ARGV[2] .. '-18446744073709551615')) do
  redis.call('XDEL', KEYS[5], entry[1])
end
redis.call('HSET', run, 'attempt', previous)
redis.call('HDEL', run, 'worker', 'attempt_started_at')
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], run_id(run))
redis.call('ZADD', KEYS[4], ARGV[3], run_id(run))
transition(run, S.PENDING, ARGV[3], previous)
return 1
