-- One bounded step of reclaiming deleted generations of a pool: the hashes
-- of at most REAP_STEP keys of one graveyard. O(REAP_STEP log n).
-- Reply: {OK, 1} if graveyards remain, {OK, 0} when none do.
local gen = redis.call('SRANDMEMBER', P .. POOL_GONES)
if not gen then
  return { OK, 0 }
end
local gone = P .. POOL_GONE .. gen
local keys = redis.call('ZRANGE', gone, 0, REAP_STEP - 1)
for _, k in ipairs(keys) do
  redis.call('UNLINK', khash_of(gen, k))
end
if #keys > 0 then
  redis.call('ZREMRANGEBYRANK', gone, 0, #keys - 1)
end
if redis.call('EXISTS', gone) == 0 then
  redis.call('SREM', P .. POOL_GONES, gen)
end
return { OK, redis.call('SCARD', P .. POOL_GONES) > 0 and 1 or 0 }
