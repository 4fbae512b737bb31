-- Adds ARG.name to the name registry KEYS[1] (a sorted set, score 0, so
-- `ZRANGEBYLEX` pages it by name) unless it already holds ARG.max names:
-- the pool and keyspace limits, counted atomically in O(log n) (ZSCORE,
-- ZCARD, ZADD).
-- Reply: {OK} if the name is in the registry now, {FULL} if it is full.
if redis.call('ZSCORE', KEYS[1], ARG.name) then
  return { OK }
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARG.max) then
  return { FULL }
end
redis.call('ZADD', KEYS[1], 0, ARG.name)
return { OK }
