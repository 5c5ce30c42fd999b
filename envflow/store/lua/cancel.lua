-- Request a run's cancellation. Durable: the flag stays on the run record, so a
-- worker that missed the stop message still acts on it at its next heartbeat. A run waiting for a
-- limit's slot leaves its line (the runs behind it move up).
-- KEYS[1] run hash   KEYS[2] pending zset   KEYS[3] output stream   KEYS[4] packed output
-- ARGV[1] now   ARGV[2] reason   ARGV[3] history ttl   ARGV[4] run ttl
-- Returns {'missing'} | {'ended', state} | {'cancelled'} (was not running) | {'requested', worker}
local run = KEYS[1]
local f = redis.call('HMGET', run, 'state', 'attempt', 'worker')
if not f[1] then return {'missing'} end
if FINAL[f[1]] then return {'ended', f[1]} end
redis.call('HSET', run, 'cancel_requested_at', ARGV[1], 'reason', ARGV[2])
if f[1] == S.RUNNING then return {'requested', f[3] or ''} end
local attempt = f[2] or '0'
output_end(run, KEYS[3], KEYS[4], attempt, S.CANCELLED, true, ARGV[3], ARGV[4])
transition(run, S.CANCELLED, ARGV[1], attempt)
redis.call('ZREM', KEYS[2], run_id(run))
hook_event(run, S.CANCELLED, ARGV[1])
leave(run, run_id(run))
return {'cancelled'}
