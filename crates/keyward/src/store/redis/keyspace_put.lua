-- put_keyspace, first creator wins. ARGV[2]: alphabet; ARGV[3]: length;
-- ARGV[4]: a fresh secret (hex) used only if this call creates it;
-- ARGV[5]: "1" to replace another definition while nothing is issued (the
-- `default` keyspace at start-up), else "0".
-- Reply: {code, alphabet, length, secret, issued, activated} with code 0
-- created, 1 existed identical, 2 exists and differs.
local n = issued()
local def = redis.call('HMGET', DEF, 'alphabet', 'length', 'secret')
if def[1] then
  if def[1] == ARGV[2] and def[2] == ARGV[3] then
    return { 1, def[1], def[2], def[3], n, redis.call('HLEN', ACT) }
  end
  if ARGV[5] ~= '1' or n > 0 then
    return { 2, def[1], def[2], def[3], n, redis.call('HLEN', ACT) }
  end
  redis.call('DEL', ACT, ISSUED)
end
redis.call('HSET', DEF, 'alphabet', ARGV[2], 'length', ARGV[3], 'secret', ARGV[4])
return { 0, ARGV[2], ARGV[3], ARGV[4], 0, 0 }
