-- issue_token: the next index, if below ARG.limit = min(capacity, 2^53)
-- (Lua numbers are doubles: counting stays exact below 2^53).
-- Reply: {OK, index} or {code}.
local c = check_secret(ARG.secret)
if c ~= OK then
  return { c }
end
if issued() >= tonumber(ARG.limit) then
  return { EXHAUSTED }
end
return { OK, redis.call('INCR', ISSUED) - 1 }
