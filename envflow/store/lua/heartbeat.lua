-- Renew a running attempt's lease; tell the worker whether a cancel was requested.
-- KEYS[1] run hash   KEYS[2] lease
-- ARGV[1] attempt   ARGV[2] worker name   ARGV[3] lease ttl (ms)
-- Returns 1 cancel requested | 0 keep going | -1 the attempt is no longer ours (stop it)
local f = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'cancel_requested_at')
if f[1] ~= S.RUNNING or f[2] ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if f[3] then return 1 end
return 0
