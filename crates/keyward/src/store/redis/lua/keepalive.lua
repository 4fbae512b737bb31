-- keepalive_key. ARG.lease_id: the current lease id to extend the lease
-- too, or "". With the pool's no_keepalive the key loses its keep-alive
-- deadline (lives until deleted).
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
local score = ''
if ARG.lease_id ~= '' then
  if f.lid == 0 or ARG.lease_id ~= f.lid_text then
    return { LEASE_MISMATCH }
  end
  f.lu = NOW + setting('lease_ttl_ms')
  redis.call('HSET', f.h, 'leased_until', int(f.lu))
  redis.call('ZADD', LEASES, int(f.lu), k)
  score = reindex(f.lu)
end
f.alive = alive_from()
set_alive(k, f.alive)
local reply = key_reply(k, f)
local s2 = reindex(f.alive)
if s2 ~= '' then
  score = s2
end
reply[#reply + 1] = score
return reply
