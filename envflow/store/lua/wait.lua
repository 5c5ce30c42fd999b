-- Say why runs wait: set each PENDING run's 'waiting' field and announce it, where it changed.
-- KEYS run hashes   ARGV[1] the Waiting record (JSON, without 'since'; '' clears it)   ARGV[2] now
-- 'since' is kept while the kind stays the same. A run parked on a full concurrency limit keeps the
-- reason _limits.lua gave it until it is woken. Returns how many runs changed.
local changed = 0
if ARGV[1] == '' then  -- the reason no longer holds (a worker appeared, say): say nothing rather than a stale reason
  for _, run in ipairs(KEYS) do
    if redis.call('HEXISTS', run, 'parked_on') == 0 then changed = changed + redis.call('HDEL', run, 'waiting') end
  end
  return changed
end
local new = cjson.decode(ARGV[1])
for _, run in ipairs(KEYS) do
  if redis.call('HGET', run, 'state') == S.PENDING and redis.call('HEXISTS', run, 'parked_on') == 0 then
    local ok, old = pcall(cjson.decode, redis.call('HGET', run, 'waiting') or '')
    if not ok or type(old) ~= 'table' then old = {} end
    if old.kind ~= new.kind or old.message ~= new.message then
      new.since = (old.kind == new.kind and old.since) or tonumber(ARGV[2])
      local text = cjson.encode(new)
      redis.call('HSET', run, 'waiting', text)
      redis.call('PUBLISH', run .. ':waiting', text)
      changed = changed + 1
    end
  end
end
return changed
