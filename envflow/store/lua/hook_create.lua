-- Record one hook delivery, once: a second deliverer expanding the same event (handed on by XAUTOCLAIM)
-- finds it and leaves it, tries and codes included. Not prepended with the run helpers.
-- KEYS[1] delivery hash   KEYS[2] due zset   KEYS[3] deliveries index zset   KEYS[4] the run's deliveries set
-- ARGV[1] delivery id   ARGV[2] now   ARGV[3] lease (s): the creator tries it at once, others after that
-- ARGV[4] ttl (s)   ARGV[5] how many ids the index keeps   ARGV[6..] field/value pairs
-- Returns 1 when created, 0 when it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'created', ARGV[2], 'tries', 0, 'status', 'pending')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[5]) - 1)
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[4]))
return 1
