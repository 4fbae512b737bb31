-- delete_key.
if redis.call('EXISTS', META) == 0 then
  return { KEY_NOT_FOUND }
end
expire_some(LAZY_EXPIRY_BOUND)
local k = ARG.key
if not touch(k) then
  return { KEY_NOT_FOUND }
end
purge(k)
return { OK }
