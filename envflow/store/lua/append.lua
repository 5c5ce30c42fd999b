-- Append output entries of a running attempt to its history and publish them.
-- Idempotent: entries whose sequence number was already written are skipped, so a
-- batch can be resent after a lost reply. A fenced-out attempt writes nothing.
-- An entry past the next expected seq means the history lacks lines the writer had sent (a
-- failover lost them in the replication lag): unless ARGV[5] accepts the gap, nothing from that
-- entry on is written, and the reply, lower than the writer's next seq, tells it to send them again.
-- KEYS[1] run hash   KEYS[2] output stream (also the live channel)
-- ARGV[1] attempt   ARGV[2] max lines kept   ARGV[3] history ttl (s)   ARGV[4] max bytes kept
-- ARGV[5] 1: accept a gap (those lines are lost), 0: stop at one
-- ARGV[6..] groups of 5: first line seq, stream (o|e), partial (0|1), line count, data
-- Returns the next expected seq, or -1 when the attempt is no longer ours.
local run, stream = KEYS[1], KEYS[2]
local attempt = ARGV[1]
local f = redis.call('HMGET', run, 'state', 'attempt', 'out_seq', 'out_bytes')
if f[1] ~= S.RUNNING or f[2] ~= attempt then return -1 end
local next_seq = tonumber(f[3] or '0')
local bytes = tonumber(f[4] or '0')
local max_lines, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[4])
local accept_gap = ARGV[5] == '1'
for i = 6, #ARGV, 5 do
  local seq = tonumber(ARGV[i])
  if seq > next_seq and not accept_gap then break end
  if seq >= next_seq then
    local id = attempt .. '-' .. seq
    local n = ARGV[i + 3]
    output_entry(stream, id, ARGV[i + 1], ARGV[i + 2], n, ARGV[i + 4])
    next_seq = seq + tonumber(n)
    bytes = bytes + #ARGV[i + 4]
  end
end
-- Caps: drop the oldest entries (earlier attempts' first) while the history holds more than
-- max_bytes, or while their lines all lie more than max_lines behind the newest line.
local threshold = next_seq - max_lines
while threshold > 0 or bytes > max_bytes do
  local doomed, oldest = {}, redis.call('XRANGE', stream, '-', '+', 'COUNT', 16)
  if #oldest == 0 then bytes = 0 end  -- nothing left to count
  for _, e in ipairs(oldest) do
    local a, s = string.match(e[1], '^(%d+)%-(%d+)$')
    local n, size = 0, 0
    for j = 1, #e[2], 2 do
      if e[2][j] == 'n' then n = tonumber(e[2][j + 1]) elseif e[2][j] == 'd' then size = #e[2][j + 1] end
    end
    local too_old = threshold > 0 and not (a == attempt and tonumber(s) + n > threshold)
    if not too_old and bytes <= max_bytes then break end
    doomed[#doomed + 1] = e[1]
    bytes = bytes - size
  end
  if #doomed == 0 then break end
  redis.call('XDEL', stream, unpack(doomed))
  if bytes <= max_bytes then break end  -- the line cap trims a few entries per call, cheaply
end
redis.call('HSET', run, 'out_seq', next_seq, 'out_bytes', bytes)
redis.call('EXPIRE', stream, ARGV[3])
return next_seq
