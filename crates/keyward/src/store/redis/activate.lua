-- activate_token. ARGV[2]: secret (hex); ARGV[3]: index; ARGV[4]: token;
-- ARGV[5]: now in ms or "" for Redis TIME. Reply: {OK, activated_at} or
-- {code}.
local c = check_secret(ARGV[2])
if c ~= OK then
  return { c }
end
if tonumber(ARGV[3]) >= issued() then
  return { NOT_ISSUED }
end
local now = now_ms(ARGV[5])
if redis.call('HSETNX', ACT, ARGV[4], string.format('%d', now)) == 0 then
  return { ALREADY }
end
return { OK, now }
