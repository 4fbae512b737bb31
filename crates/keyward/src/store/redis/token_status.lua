-- token_status. ARGV[2]: secret (hex); ARGV[3]: the token's index
-- (decimal); ARGV[4]: the token. Reply: {OK} or {OK, activated_at}, or
-- {code}.
local c = check_secret(ARGV[2])
if c ~= OK then
  return { c }
end
-- An index at or above 2^53 rounds to 2^53 or more, which no counter
-- reaches, so the comparison stays right.
if tonumber(ARGV[3]) >= issued() then
  return { NOT_ISSUED }
end
local at = redis.call('HGET', ACT, ARGV[4])
if at then
  return { OK, tonumber(at) }
end
return { OK }
