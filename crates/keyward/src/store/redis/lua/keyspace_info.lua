-- keyspace_info. Reply: {OK, alphabet, length, secret, issued, activated,
-- shape or "", max_activations, revoked} or {KEYSPACE_NOT_FOUND}.
local def = redis.call('HMGET', DEF, 'alphabet', 'length', 'secret')
if not def[1] then
  return { KEYSPACE_NOT_FOUND }
end
return { OK, def[1], def[2], def[3], keyspace_counts() }
