-- Set or remove a concurrency limit. It takes effect at once: raised, the runs in line that it now
-- admits start; lowered, running runs keep their slots and new ones wait; removed, its holders are
-- forgotten and every run in its line is woken (it may still wait for its other limits).
-- KEYS[1] limits hash   KEYS[2] the limit's holders   KEYS[3] its line
-- ARGV[1] limit name   ARGV[2] slots ('' removes the limit)
-- Returns 1, or 0 when removing a limit that does not exist.
local name = ARGV[1]
if ARGV[2] == '' then
  if redis.call('HDEL', KEYS[1], name) == 0 then return 0 end
  redis.call('DEL', KEYS[2])
else
  redis.call('HSET', KEYS[1], name, ARGV[2])
end
wake(name)
return 1
