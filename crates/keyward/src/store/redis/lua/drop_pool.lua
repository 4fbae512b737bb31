-- delete_pool: O(1) whatever the pool's size. The pool's index keys go
-- (UNLINK frees big ones in Redis's background thread); its list of live
-- keys is kept as the generation's graveyard `P:gone:GEN`, listed in
-- `P:gones`, for `reclaim` to delete their hashes in bounded steps; the
-- generation moves on, so a new pool of this name starts empty. The list
-- is ALL, or for a pool an older keyward made and not yet brought to this
-- layout, ALIVE (which then holds every key).
-- Reply: {OK} or {POOL_NOT_FOUND}.
if redis.call('EXISTS', META) == 0 then
  return { POOL_NOT_FOUND }
end
local list, other = ALL, ALIVE
if settings('layout')[1] ~= LAYOUT then
  list, other = ALIVE, ALL
end
if redis.call('ZCARD', list) > 0 then
  redis.call('RENAME', list, P .. POOL_GONE .. gen())
  redis.call('SADD', P .. POOL_GONES, gen())
end
redis.call('UNLINK', META, OLD_FREE, LEASES, SEQ, KSEQ, other, IN('free'), IN('leased'), IN('cooling'),
  IN('quarantined'), IN('disabled'))
redis.call('INCR', P .. POOL_GEN)
return { OK }
