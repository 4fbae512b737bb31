-- Adds the name ARGV[1] to the name set KEYS[1] (`kw:pools` or
-- `kw:keyspaces`) unless the set already holds ARGV[2] names: the pool and
-- keyspace limits, counted atomically in O(1) (SISMEMBER, SCARD).
-- Reply: 1 if the name is in the set now, 0 if the set is full.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
