-- pool_info. Reply: {OK, state...} or {POOL_NOT_FOUND}.
if redis.call('EXISTS', META) == 0 then
  return { POOL_NOT_FOUND }
end
expire_some(LAZY_EXPIRY_BOUND)
local s = pool_state()
return { OK, s[1], s[2], s[3], s[4], s[5], s[6], s[7] }
