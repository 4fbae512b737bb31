-- put_pool. ARGV[3..5]: defaults for a new pool; ARGV[6..8]: new lease
-- TTL, keep-alive TTL, key length, "" to keep. Reply: {created, state...}.
local created = ensure_pool()
local fields = { 'lease_ttl_ms', 'keepalive_ttl_ms', 'key_length' }
for i = 1, 3 do
  if ARGV[5 + i] ~= '' then
    redis.call('HSET', META, fields[i], ARGV[5 + i])
  end
end
expire_some(LAZY_LIMIT)
local s = pool_state()
return { created, s[1], s[2], s[3], s[4], s[5], s[6], s[7] }
