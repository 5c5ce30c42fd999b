-- Mark a run LATE: it has not started late_after seconds after it was due. An event, not a state: the run
-- goes on waiting. Once per run (the late_at field), and only for a run that never started.
-- KEYS[1] run hash   KEYS[2] late zset
-- ARGV[1] now
-- Returns 1 when the LATE event was written, else 0.
local run = KEYS[1]
redis.call('ZREM', KEYS[2], run_id(run))
local f = redis.call('HMGET', run, 'state', 'attempt', 'late_at')
if (f[1] ~= S.PENDING and f[1] ~= S.SCHEDULED) or (f[2] and f[2] ~= '0') or f[3] then return 0 end
redis.call('HSET', run, 'late_at', ARGV[1])
hook_event(run, 'LATE', ARGV[1])
return 1
