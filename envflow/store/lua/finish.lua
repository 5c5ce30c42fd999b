-- End a running attempt: record its outcome, release the lease and its limits' slots (handed to the
-- next run in line), write the end record.
-- KEYS[1] run hash   KEYS[2] lease   KEYS[3] active zset   KEYS[4] pending zset   KEYS[5] output stream
-- KEYS[6] packed output
-- ARGV[1] attempt   ARGV[2] state the run moves to   ARGV[3] now   ARGV[4] final (1|0)
-- ARGV[5] history ttl   ARGV[6] run ttl
-- ARGV[7..15] the attempt: worker, started at, ended at, state, exit code, error type, error, reason, how its
--   process started ('' for none)
-- ARGV[16..] field/value pairs to set on the run (exit_code, result, error, ...); an empty value removes the field
-- Returns 1, or 0 when the attempt is no longer ours.
local run, lease, active, pending, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local attempt, state, now, final = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local f = redis.call('HMGET', run, 'state', 'attempt')
if f[1] ~= S.RUNNING or f[2] ~= attempt then return 0 end
for i = 16, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', run, ARGV[i]) else redis.call('HSET', run, ARGV[i], ARGV[i + 1]) end
end
add_attempt(run, {n = attempt, worker = ARGV[7], started = ARGV[8], ended = ARGV[9], state = ARGV[10],
                  exit_code = ARGV[11], error_type = ARGV[12], error = ARGV[13], reason = ARGV[14], start = ARGV[15]})
output_end(run, stream, KEYS[6], attempt, state, final, ARGV[5], ARGV[6])
transition(run, state, now, attempt)
redis.call('DEL', lease)
local id = run_id(run)
redis.call('ZREM', active, id)
if not final then redis.call('ZADD', pending, now, id) end
if final then hook_event(run, state, now) end
wake_all(release(run, id, attempt))
return 1
