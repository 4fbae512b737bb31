-- The reaper's question: pools of the due index KEYS[1] (`kw:due`) whose
-- earliest deadline is at or before now, at most ARG.limit of them.
-- O(log P + m).
local now = clock(ARG.now)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARG.limit))
