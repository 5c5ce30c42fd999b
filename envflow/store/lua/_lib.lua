-- Helpers prepended to every envflow script (see envflow/store/protocol.py). Rendered in from Python:
-- S (state names), FINAL (the final states), CODE (each state's letter in the compact history),
-- IDX (the state indexes' key prefix), SPEC (the deployment snapshots' key prefix).
-- The run hash's fields and their encodings are described in envflow/store/run_hash.py.
-- A run's output (its history stream, live channel and packed history) is _output.lua's alone.

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

-- Microseconds from the run's creation to t (both decimal strings), as text; 'null' without t.
local function since(created, t)
  if not t or t == '' then return 'null' end
  return string.format('%.0f', (tonumber(t) - tonumber(created)) * 1e6)
end

-- Move a run from one state's indexes (every run's, and its deployment's) to another's,
-- scored by its creation time.
local function reindex(id, from, to, created, dep)
  if from == to then return end
  if from then
    redis.call('ZREM', IDX .. from, id)
    if dep then redis.call('ZREM', IDX .. from .. ':' .. dep, id) end
  end
  redis.call('ZADD', IDX .. to, created, id)
  if dep then redis.call('ZADD', IDX .. to .. ':' .. dep, created, id) end
end

-- Record a state change with its timestamp (now is a decimal string), and move the run's index entries.
local function transition(key, state, now, attempt)
  local f = redis.call('HMGET', key, 'state', 'created_at', 'deployment', 'transitions')
  reindex(run_id(key), f[1], state, f[2], f[3])
  redis.call('HSET', key, 'state', state)
  local item = CODE[state] .. since(f[2], now) .. '/' .. attempt
  redis.call('HSET', key, 'transitions', f[4] and (f[4] .. ',' .. item) or item)
end

-- Append an ended attempt to the run's attempts.
-- a: {n, worker, started, ended, state, exit_code, error_type, error, reason, start}, numbers as text.
local function add_attempt(key, a)
  local f = redis.call('HMGET', key, 'attempts', 'created_at')
  local parts = {a.n, cjson.encode(a.worker or ''), since(f[2], a.started), since(f[2], a.ended),
                 '"' .. CODE[a.state] .. '"'}
  local tail = {a.exit_code, a.error_type, a.error, a.reason, a.start}
  local last = 0
  for i = 1, 5 do if tail[i] and tail[i] ~= '' then last = i end end
  for i = 1, last do
    local v = tail[i]
    if not v or v == '' then
      parts[#parts + 1] = 'null'
    elseif i == 1 then
      parts[#parts + 1] = v  -- the exit code, a number
    else
      parts[#parts + 1] = cjson.encode(v)
    end
  end
  append_json(key, 'attempts', '[' .. table.concat(parts, ',') .. ']')
end
