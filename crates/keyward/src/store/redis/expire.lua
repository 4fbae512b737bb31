-- expire_due, one bounded step. ARGV[3]: most entries to handle.
-- Reply: {keys purged, leases ended, the pool's next deadline or ""}; the
-- next deadline is also stored as `due_at` for the due index.
if redis.call('EXISTS', META) == 0 then
  return { 0, 0, '' }
end
local keys, leases = expire_some(tonumber(ARGV[3]))
local e = earliest()
if e then
  redis.call('HSET', META, 'due_at', int(e))
  return { keys, leases, int(e) }
end
redis.call('HDEL', META, 'due_at')
return { keys, leases, '' }
