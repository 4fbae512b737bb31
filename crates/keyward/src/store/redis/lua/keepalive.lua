-- keepalive_key. ARG.lease_id: the current lease id to extend the lease
-- too, or "".
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
local leased_until = f[4]
if ARG.lease_id ~= '' then
  if f[3] == 0 or ARG.lease_id ~= f[5] then
    return { LEASE_MISMATCH }
  end
  leased_until = NOW + setting('lease_ttl_ms')
  redis.call('HSET', khash(k), 'leased_until', int(leased_until))
  redis.call('ZADD', LEASES, int(leased_until), k)
end
local alive = NOW + setting('keepalive_ttl_ms')
redis.call('HSET', khash(k), 'alive_until', int(alive))
redis.call('ZADD', ALIVE, int(alive), k)
local reply = key_reply(k, f[1], alive, f[3], leased_until)
reply[#reply + 1] = reindex()
return reply
