-- get_key.
if redis.call('EXISTS', META) == 0 then
  return { KEY_NOT_FOUND }
end
expire_some(LAZY_EXPIRY_BOUND)
local k = ARG.key
local f = touch(k)
if not f then
  return { KEY_NOT_FOUND }
end
return key_reply(k, f[1], f[2], f[3], f[4])
