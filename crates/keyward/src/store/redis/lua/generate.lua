-- generate_keys. ARG.candidates: random candidates of CANDIDATE_LEN
-- characters each, back to back, cut to the pool's key length here (Lua's
-- math.random is seeded the same on every call, so the randomness comes
-- from the caller's CSPRNG). A candidate that is a live key is skipped;
-- the caller asks again for the rest. Refused whole (KEY_LIMIT) if the
-- pool would hold more than ARG.max_keys keys.
-- Reply: {OK, due index score or "", created_at, alive_until, key...} or
-- {KEY_LIMIT}.
expire_some(LAZY_EXPIRY_BOUND)
local count = #ARG.candidates / CANDIDATE_LEN
if redis.call('ZCARD', ALIVE) + count > tonumber(ARG.max_keys) then
  return { KEY_LIMIT }
end
ensure_pool()
local len = setting('key_length')
local alive = NOW + setting('keepalive_ttl_ms')
local out = { OK, '', NOW, alive }
for i = 0, count - 1 do
  local k = string.sub(ARG.candidates, i * CANDIDATE_LEN + 1, i * CANDIDATE_LEN + len)
  local h = khash(k)
  if redis.call('EXISTS', h) == 0 then
    redis.call('HSET', h, 'created_at', int(NOW), 'alive_until', int(alive), 'lease_id', '0', 'leased_until', '0')
    redis.call('SADD', FREE, k)
    redis.call('ZADD', ALIVE, int(alive), k)
    out[#out + 1] = k
  end
end
out[2] = reindex()
return out
