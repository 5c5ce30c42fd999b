-- Helpers prepended to every envflow script (see envflow/protocol.py).
-- S (state names) and FINAL (the final states) are rendered in from envflow/models.py.

-- Append one JSON value (given as text) to a JSON array kept in a hash field,
-- without decoding it: cjson would turn user data such as [] into {}.
local function append_json(key, field, item)
  local cur = redis.call('HGET', key, field)
  if not cur or cur == '[]' then
    cur = '[' .. item .. ']'
  else
    cur = string.sub(cur, 1, -2) .. ',' .. item .. ']'
  end
  redis.call('HSET', key, field, cur)
end

-- The run id of a run hash key ("envflow:run:<id>").
local function run_id(key)
  return string.match(key, ':run:([^:]+)$')
end

-- Record a state change with its timestamp (now is a decimal string).
local function transition(key, state, now, attempt)
  redis.call('HSET', key, 'state', state, 'updated_at', now)
  append_json(key, 'transitions', '["' .. state .. '",' .. now .. ',' .. attempt .. ']')
end

-- Publish one history entry on the live channel: "<id>|<stream>|<partial>|<lines>|<data>".
local function publish_entry(channel, id, stream, partial, n, data)
  redis.call('PUBLISH', channel, id .. '|' .. stream .. '|' .. partial .. '|' .. n .. '|' .. data)
end

-- Write the end-of-attempt record: stream "x", data = JSON with state and finality.
-- Its id follows the attempt's last line so every reader sees it last.
local function end_record(run_key, stream_key, attempt, state, final, history_ttl)
  local seq = 0
  local fields = redis.call('HMGET', run_key, 'attempt', 'out_seq')
  if fields[1] == tostring(attempt) and fields[2] then seq = tonumber(fields[2]) end
  if tostring(attempt) == '0' and seq == 0 then seq = 1 end  -- a run ended before it ran; 0-0 is no stream id
  local id = attempt .. '-' .. seq
  local data = cjson.encode({state = state, final = final, attempt = tonumber(attempt)})
  redis.call('XADD', stream_key, id, 's', 'x', 'p', '0', 'n', '0', 'd', data)
  redis.call('HSET', run_key, 'out_seq', seq + 1)
  redis.call('HINCRBY', run_key, 'out_bytes', #data)
  redis.call('EXPIRE', stream_key, history_ttl)
  publish_entry(stream_key, id, 'x', '0', '0', data)
end
