-- lease_key: a uniformly random free key (ZRANDMEMBER of the free index). A pick that turns
-- out dead (a due entry the bounded expiry left) is purged and the pick
-- repeated; with no free key, a due lease, cooldown or quarantine is ended
-- and its key taken. Each repeat removes one due entry or repairs one
-- index entry for good, so the loop ends, costs O(log n) per entry as
-- expiring it would, and never answers NO_FREE_KEY while a live key could
-- be leased.
-- Reply: key_reply + {due index score or ""}, or {NO_FREE_KEY, ms until
-- the earliest lease, cooldown or quarantine end} ({NO_FREE_KEY} when
-- none will end by itself, or there is no pool).
local ttl = live_pool()
if not ttl then
  return { NO_FREE_KEY }
end
while true do
  local k = pick_free()
  if not k then
    local due = redis.call('ZRANGEBYSCORE', fresh(LEASES), '-inf', NOW, 'LIMIT', 0, 1)
    if #due == 0 then
      local e = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
      if e[2] then
        return { NO_FREE_KEY, math.max(tonumber(e[2]) - NOW, 1) }
      end
      return { NO_FREE_KEY }
    end
    k = due[1]
  end
  local f = touch(k)
  if f and f.state == 'free' then
    local id = next_lease_id()
    local leased_until = NOW + tonumber(ttl)
    move(k, f, 'leased', leased_until, id)
    local reply = key_reply(k, f)
    reply[#reply + 1] = reindex(leased_until)
    return reply
  end
  -- Only reachable if an index disagrees with the key's hash (evicted or
  -- edited by hand): repair it from the hash so the loop makes progress.
  if not f then
    purge(k, 'free')
  else
    zrem(IN('free'), k)
    zadd(IN(f.state), f.n, k)
    if f.state == 'leased' then
      zadd(LEASES, int(f.lu), k)
    elseif f.avail then
      zadd(LEASES, int(f.avail), k)
    else
      zrem(LEASES, k)
    end
    -- A deadline restored from the hash may be earlier than `due_at`:
    -- lazy expiry runs on every call again until the reaper resets it.
    redis.call('HSET', META, DUE_AT, '0')
    INDEXED = '0'
  end
end
