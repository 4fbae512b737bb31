-- put_pool. ARG.lease_ttl_ms, ARG.keepalive_ttl_ms, ARG.key_length,
-- ARG.cooldown_ms, ARG.max_failures, ARG.quarantine_ms, ARG.no_keepalive
-- ('1' none, '0' with a keep-alive): new values, "" to keep.
-- Reply: {CREATED | EXISTED, state...}.
local created = ensure_pool()
for _, field in ipairs({ 'lease_ttl_ms', 'keepalive_ttl_ms', 'key_length', 'cooldown_ms', 'max_failures',
  'quarantine_ms', 'no_keepalive' }) do
  if ARG[field] ~= '' then
    redis.call('HSET', META, field, ARG[field])
  end
end
expire_some(LAZY_EXPIRY_BOUND)
local out = pool_state()
table.insert(out, 1, created)
return out
