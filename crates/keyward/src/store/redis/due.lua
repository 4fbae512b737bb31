-- The reaper's question: pools of the due index KEYS[1] (`kw:due`) whose
-- earliest deadline is at or before now. ARGV[1]: now in ms, or "" for
-- Redis TIME; ARGV[2]: most names to return. O(log P + m).
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
