-- lease_key: a uniformly random free key (SRANDMEMBER). A pick that turns
-- out dead (a due entry the bounded expiry left) is purged and the pick
-- repeated; with no free key, a due lease is ended and its key taken. Each
-- repeat removes one due entry or repairs one index entry for good, so the
-- loop ends, costs O(log n) per entry as expiring it would, and never
-- answers NO_FREE_KEY while a live key could be leased.
if redis.call('EXISTS', META) == 0 then
  return { NO_FREE_KEY }
end
expire_some(LAZY_EXPIRY_BOUND)
while true do
  local k = redis.call('SRANDMEMBER', FREE)
  if not k then
    local due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW, 'LIMIT', 0, 1)
    if #due == 0 then
      return { NO_FREE_KEY }
    end
    k = due[1]
  end
  local f = touch(k)
  if f and f[3] == 0 then
    local id = redis.call('INCR', SEQ)
    local leased_until = NOW + setting('lease_ttl_ms')
    redis.call('HSET', khash(k), 'lease_id', int(id), 'leased_until', int(leased_until))
    redis.call('SREM', FREE, k)
    redis.call('ZADD', LEASES, int(leased_until), k)
    local reply = key_reply(k, f[1], f[2], id, leased_until)
    reply[#reply + 1] = reindex()
    return reply
  end
  -- Only reachable if an index disagrees with the key's hash (evicted or
  -- edited by hand): repair it from the hash so the loop makes progress.
  if not f then
    purge(k)
  else
    redis.call('SREM', FREE, k)
    redis.call('ZADD', LEASES, int(f[4]), k)
  end
end
