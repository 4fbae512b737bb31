-- issue_token: the next index, if below ARGV[3] = min(capacity, 2^53)
-- (Lua numbers are doubles: counting stays exact below 2^53). ARGV[2]: the
-- caller's secret (hex). Reply: {OK, index} or {code}.
local c = check_secret(ARGV[2])
if c ~= OK then
  return { c }
end
if issued() >= tonumber(ARGV[3]) then
  return { EXHAUSTED }
end
return { OK, redis.call('INCR', ISSUED) - 1 }
