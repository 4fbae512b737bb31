-- delete_key. ARGV[3]: the key.
if redis.call('EXISTS', META) == 0 then
  return { KEY_NOT_FOUND }
end
expire_some(LAZY_LIMIT)
local k = ARGV[3]
if not touch(k) then
  return { KEY_NOT_FOUND }
end
purge(k)
return { OK }
