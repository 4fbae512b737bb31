-- token_status. ARG.index: the token's index (decimal).
-- Reply: {OK} or {OK, activated_at}, or {code}.
local c = check_secret(ARG.secret)
if c ~= OK then
  return { c }
end
-- An index at or above 2^53 rounds to 2^53 or more, which no counter
-- reaches, so the comparison stays right.
if tonumber(ARG.index) >= issued() then
  return { NOT_ISSUED }
end
local at = redis.call('HGET', ACT, ARG.token)
if at then
  return { OK, tonumber(at) }
end
return { OK }
