-- Adds ARG.name to the name set KEYS[1] (`kw:pools` or `kw:keyspaces`)
-- unless the set already holds ARG.max names: the pool and keyspace
-- limits, counted atomically in O(1) (SISMEMBER, SCARD).
-- Reply: {OK} if the name is in the set now, {FULL} if the set is full.
if redis.call('SISMEMBER', KEYS[1], ARG.name) == 1 then
  return { OK }
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARG.max) then
  return { FULL }
end
redis.call('SADD', KEYS[1], ARG.name)
return { OK }
