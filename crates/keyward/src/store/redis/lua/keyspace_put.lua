-- put_keyspace, first creator wins. ARG.secret: a fresh secret (hex) used
-- only if this call creates the keyspace; ARG.replace_if_unissued: "1" to
-- replace another definition while nothing is issued (the `default`
-- keyspace at start-up), else "0". ARG.shape: the preset and format as
-- keyward writes them, "" for none.
-- Reply: {CREATED | EXISTED (identical) | DIFFERS, alphabet, length,
-- secret, issued, activated, shape or ""}.
local n = issued()
local def = redis.call('HMGET', DEF, 'alphabet', 'length', 'secret', 'shape')
if def[1] then
  local shape = def[4] or ''
  if def[1] == ARG.alphabet and def[2] == ARG.length and shape == ARG.shape then
    return { EXISTED, def[1], def[2], def[3], n, redis.call('HLEN', ACT), shape }
  end
  if ARG.replace_if_unissued ~= '1' or n > 0 then
    return { DIFFERS, def[1], def[2], def[3], n, redis.call('HLEN', ACT), shape }
  end
  redis.call('DEL', ACT, ISSUED)
end
redis.call('HSET', DEF, 'alphabet', ARG.alphabet, 'length', ARG.length, 'secret', ARG.secret)
if ARG.shape ~= '' then
  redis.call('HSET', DEF, 'shape', ARG.shape)
else
  redis.call('HDEL', DEF, 'shape')
end
return { CREATED, ARG.alphabet, ARG.length, ARG.secret, 0, 0, ARG.shape }
