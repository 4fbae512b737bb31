-- keyspace_info. Reply: {OK, alphabet, length, secret, issued, activated,
-- shape or ""} or {KEYSPACE_NOT_FOUND}.
local def = redis.call('HMGET', DEF, 'alphabet', 'length', 'secret', 'shape')
if not def[1] then
  return { KEYSPACE_NOT_FOUND }
end
return { OK, def[1], def[2], def[3], issued(), redis.call('HLEN', ACT), def[4] or '' }
