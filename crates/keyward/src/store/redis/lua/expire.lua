-- expire_due, one step of at most REAP_STEP entries.
-- Reply: {OK, keys purged, leases ended, the pool's next deadline or ""};
-- the next deadline is also stored as `due_at` for the due index.
if redis.call('EXISTS', META) == 0 then
  return { OK, 0, 0, '' }
end
local keys, leases = expire_some(REAP_STEP)
local e = earliest()
if e then
  redis.call('HSET', META, DUE_AT, int(e))
  return { OK, keys, leases, int(e) }
end
redis.call('HDEL', META, DUE_AT)
return { OK, keys, leases, '' }
