-- Claim the hook deliveries that are due, for one deliverer: each is pushed a lease ahead, so a deliverer
-- that dies while trying one hands it on when the lease ends (the outbox's consumer group does the same for
-- events not yet expanded into deliveries: XAUTOCLAIM). Not prepended with the run helpers.
-- KEYS[1] due zset
-- ARGV[1] now   ARGV[2] lease (s)   ARGV[3] how many at most
-- Returns the claimed delivery ids.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], until_, id) end
return ids
