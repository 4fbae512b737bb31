-- pool_info. Reply: {OK, state...} or {POOL_NOT_FOUND}.
if redis.call('EXISTS', META) == 0 then
  return { POOL_NOT_FOUND }
end
expire_some(LAZY_EXPIRY_BOUND)
local out = pool_state()
table.insert(out, 1, OK)
return out
