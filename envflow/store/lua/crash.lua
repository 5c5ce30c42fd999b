-- Declare a running attempt lost because its worker stopped heartbeating; its limits' slots are freed
-- and handed to the next run in line.
-- KEYS[1] run hash   KEYS[2] lease   KEYS[3] active zset   KEYS[4] pending zset   KEYS[5] output stream
-- KEYS[6] packed output
-- ARGV[1] attempt   ARGV[2] now   ARGV[3] will be retried (1|0)   ARGV[4] reason
-- ARGV[5] history ttl   ARGV[6] run ttl
-- Returns the state the run moved to, or false when the attempt is not lost (lease alive, or already ended).
local run, lease, active, pending, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local attempt, now = ARGV[1], ARGV[2]
local f = redis.call('HMGET', run, 'state', 'attempt', 'worker', 'attempt_started_at', 'cancel_requested_at')
if f[1] ~= S.RUNNING or f[2] ~= attempt then return false end
if redis.call('EXISTS', lease) == 1 then return false end
add_attempt(run, {n = attempt, worker = f[3], started = f[4], ended = now, state = S.CRASHED, reason = ARGV[4]})
local state, final = S.CRASHED, true
if f[5] then
  state = S.CANCELLED
elseif ARGV[3] == '1' then
  state, final = S.PENDING, false
end
redis.call('HSET', run, 'reason', ARGV[4])
output_end(run, stream, KEYS[6], attempt, state, final, ARGV[5], ARGV[6])
if state == S.PENDING then transition(run, S.CRASHED, now, attempt) end
transition(run, state, now, attempt)
local id = run_id(run)
redis.call('ZREM', active, id)
if not final then redis.call('ZADD', pending, now, id) end
if final then hook_event(run, state, now) end
wake_all(release(run, id, attempt))
return state
