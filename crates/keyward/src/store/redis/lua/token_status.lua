-- token_status. ARG.index: the token's index (decimal).
-- Reply: {OK} or {OK, activated_at}, or {code}.
local c = check_issued(ARG.secret, ARG.index)
if c ~= OK then
  return { c }
end
local at = redis.call('HGET', ACT, ARG.token)
if at then
  return { OK, tonumber(at) }
end
return { OK }
