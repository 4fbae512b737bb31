-- put_keyspace, first creator wins. ARG.secret: a fresh secret (hex) used
-- only if this call creates the keyspace; ARG.replace_if_unissued: "1" to
-- replace another definition while nothing is issued (the `default`
-- keyspace at start-up), else "0".
-- Reply: {CREATED | EXISTED (identical) | DIFFERS, alphabet, length,
-- secret, issued, activated}.
local n = issued()
local def = redis.call('HMGET', DEF, 'alphabet', 'length', 'secret')
if def[1] then
  if def[1] == ARG.alphabet and def[2] == ARG.length then
    return { EXISTED, def[1], def[2], def[3], n, redis.call('HLEN', ACT) }
  end
  if ARG.replace_if_unissued ~= '1' or n > 0 then
    return { DIFFERS, def[1], def[2], def[3], n, redis.call('HLEN', ACT) }
  end
  redis.call('DEL', ACT, ISSUED)
end
redis.call('HSET', DEF, 'alphabet', ARG.alphabet, 'length', ARG.length, 'secret', ARG.secret)
return { CREATED, ARG.alphabet, ARG.length, ARG.secret, 0, 0 }
