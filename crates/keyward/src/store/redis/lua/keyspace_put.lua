-- put_keyspace, first creator wins. ARG.secret: a fresh secret (hex) used
-- only if this call creates the keyspace; ARG.replace_if_unissued: "1" to
-- replace another definition while nothing is issued (the `default`
-- keyspace at start-up), else "0". ARG.shape: the preset and format as
-- keyward writes them, "" for none. ARG.max_activations: slots per token,
-- "" to keep an existing keyspace's (1 for a new one); the one field that
-- may change.
-- Reply: {CREATED | EXISTED (same definition) | DIFFERS, alphabet, length,
-- secret, issued, activated, shape or "", max_activations, revoked}.
local n = issued()
local def = redis.call('HMGET', DEF, 'alphabet', 'length', 'secret', 'shape')
if def[1] then
  local shape = def[4] or ''
  if def[1] == ARG.alphabet and def[2] == ARG.length and shape == ARG.shape then
    if ARG.max_activations ~= '' then
      redis.call('HSET', DEF, 'max_activations', ARG.max_activations)
    end
    return { EXISTED, def[1], def[2], def[3], keyspace_counts() }
  end
  if ARG.replace_if_unissued ~= '1' or n > 0 then
    return { DIFFERS, def[1], def[2], def[3], keyspace_counts() }
  end
  redis.call('DEL', ACT, ISSUED, TOK, RANGES, BATCH)
  redis.call('HDEL', DEF, 'revoked')
end
redis.call('HSET', DEF, 'alphabet', ARG.alphabet, 'length', ARG.length, 'secret', ARG.secret,
  'max_activations', ARG.max_activations ~= '' and ARG.max_activations or '1')
if ARG.shape ~= '' then
  redis.call('HSET', DEF, 'shape', ARG.shape)
else
  redis.call('HDEL', DEF, 'shape')
end
return { CREATED, ARG.alphabet, ARG.length, ARG.secret, keyspace_counts() }
