-- A run's output as the run protocol writes it, prepended after _lib.lua to every script: the history
-- stream (entries "<attempt>-<first line seq>" with fields s, p, n, d), its live channel (the same name)
-- and the packed history of an ended run. The Python side is envflow/output/ (format.py is the format);
-- another transport replaces this file, append.lua and envflow/output/, and no transition script.
-- Rendered in from Python: PACK_MAX_BYTES and PACK_MAX_ENTRIES (envflow/store/packing.py).

-- Publish one history entry on the live channel: "<id>|<stream>|<partial>|<lines>|<data>".
local function publish_entry(channel, id, stream, partial, n, data)
  redis.call('PUBLISH', channel, id .. '|' .. stream .. '|' .. partial .. '|' .. n .. '|' .. data)
end

-- Write the end-of-attempt record: stream "x", data = JSON with state and finality.
-- Its id follows the attempt's last line so every reader sees it last.
local function end_record(run_key, stream_key, attempt, state, final, history_ttl)
  local seq = 0
  local fields = redis.call('HMGET', run_key, 'attempt', 'out_seq')
  if (fields[1] or '0') == tostring(attempt) and fields[2] then seq = tonumber(fields[2]) end  -- 0 is not stored
  if tostring(attempt) == '0' and seq == 0 then seq = 1 end  -- a run ended before it ran; 0-0 is no stream id
  local id = attempt .. '-' .. seq
  local data = cjson.encode({state = state, final = final, attempt = tonumber(attempt)})
  redis.call('XADD', stream_key, id, 's', 'x', 'p', '0', 'n', '0', 'd', data)
  redis.call('HSET', run_key, 'out_seq', seq + 1)
  redis.call('HINCRBY', run_key, 'out_bytes', #data)
  redis.call('EXPIRE', stream_key, history_ttl)
  publish_entry(stream_key, id, 'x', '0', '0', data)
end

-- The run has ended: its record expires after the run ttl. A short history is packed into one
-- string and its stream deleted: a stream's own overhead (about 4.7 KB) is most of what a short
-- run costs. Packed: "<id>|<stream>|<partial>|<lines>|<data bytes>|<data>" per entry, in order.
local function finalize(run_key, stream_key, packed_key, run_ttl, history_ttl)
  redis.call('EXPIRE', run_key, run_ttl)
  local bytes = tonumber(redis.call('HGET', run_key, 'out_bytes') or '0')
  redis.call('HDEL', run_key, 'out_seq', 'out_bytes')
  if bytes > PACK_MAX_BYTES or redis.call('XLEN', stream_key) > PACK_MAX_ENTRIES then return end
  local entries = redis.call('XRANGE', stream_key, '-', '+')
  if #entries == 0 then return end
  local parts = {}
  for i, e in ipairs(entries) do
    local f = {}
    for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
    parts[i] = e[1] .. '|' .. f.s .. '|' .. f.p .. '|' .. f.n .. '|' .. #f.d .. '|' .. f.d
  end
  redis.call('SET', packed_key, table.concat(parts), 'EX', history_ttl)
  redis.call('DEL', stream_key)
end

-- Append one entry to the history and publish it.
local function output_entry(stream_key, id, stream, partial, n, data)
  redis.call('XADD', stream_key, id, 's', stream, 'p', partial, 'n', n, 'd', data)
  publish_entry(stream_key, id, stream, partial, n, data)
end

-- A note from envflow as the first line of a run that never ran (its output says why it ended).
local function output_note(run_key, stream_key, text)
  output_entry(stream_key, '0-1', 'e', '0', '1', text)
  redis.call('HSET', run_key, 'out_seq', 2)
  redis.call('HINCRBY', run_key, 'out_bytes', #text)
end

-- The one call a transition makes when an attempt ends: the end record, and, for a final state,
-- the run's expiry and its history packed.
local function output_end(run_key, stream_key, packed_key, attempt, state, final, history_ttl, run_ttl)
  end_record(run_key, stream_key, attempt, state, final, history_ttl)
  if final then finalize(run_key, stream_key, packed_key, run_ttl, history_ttl) end
end
