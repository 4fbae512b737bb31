-- put_pool. ARG.lease_ttl_ms, ARG.keepalive_ttl_ms, ARG.key_length: new
-- values, "" to keep. Reply: {CREATED | EXISTED, state...}.
local created = ensure_pool()
for _, field in ipairs({ 'lease_ttl_ms', 'keepalive_ttl_ms', 'key_length' }) do
  if ARG[field] ~= '' then
    redis.call('HSET', META, field, ARG[field])
  end
end
expire_some(LAZY_EXPIRY_BOUND)
local s = pool_state()
return { created, s[1], s[2], s[3], s[4], s[5], s[6], s[7] }
