-- End a running attempt: record its outcome, release the lease, write the end record.
-- KEYS[1] run hash   KEYS[2] lease   KEYS[3] active zset   KEYS[4] pending zset   KEYS[5] output stream
-- ARGV[1] attempt   ARGV[2] state the run moves to   ARGV[3] now   ARGV[4] final (1|0)
-- ARGV[5] attempt record (JSON)   ARGV[6] history ttl   ARGV[7] run ttl
-- ARGV[8..] field/value pairs to set on the run (exit_code, result, error, ...)
-- Returns 1, or 0 when the attempt is no longer ours.
local run, lease, active, pending, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local attempt, state, now, final = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local f = redis.call('HMGET', run, 'state', 'attempt')
if f[1] ~= S.RUNNING or f[2] ~= attempt then return 0 end
for i = 8, #ARGV, 2 do redis.call('HSET', run, ARGV[i], ARGV[i + 1]) end
append_json(run, 'attempts', ARGV[5])
end_record(run, stream, attempt, state, final, ARGV[6])
transition(run, state, now, attempt)
redis.call('DEL', lease)
local id = run_id(run)
redis.call('ZREM', active, id)
if final then
  redis.call('EXPIRE', run, ARGV[7])
else
  redis.call('ZADD', pending, now, id)
end
return 1
