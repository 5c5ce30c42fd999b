-- End a waiting run that no live worker can take (none has its env) within ENVFLOW_ENV_WAIT: FAILED.
-- KEYS[1] run hash   KEYS[2] pending zset   KEYS[3] output stream   KEYS[4] packed output
-- ARGV[1] now   ARGV[2] reason   ARGV[3] history ttl   ARGV[4] run ttl
-- Returns 1, or 0 when the run is no longer waiting.
local run = KEYS[1]
local f = redis.call('HMGET', run, 'state', 'attempt')
if f[1] ~= S.PENDING and f[1] ~= S.SCHEDULED then return 0 end
local attempt = f[2] or '0'
redis.call('HSET', run, 'error_type', 'EnvNotFound', 'error', ARGV[2])
if attempt == '0' then  -- it never ran: its output says why, as a failed start's would (0-0 is no stream id)
  output_note(run, KEYS[3], 'envflow: ' .. ARGV[2])
end
output_end(run, KEYS[3], KEYS[4], attempt, S.FAILED, true, ARGV[3], ARGV[4])
transition(run, S.FAILED, ARGV[1], attempt)
redis.call('ZREM', KEYS[2], run_id(run))
hook_event(run, S.FAILED, ARGV[1])
leave(run, run_id(run))
return 1
