-- activate_token. Reply: {OK, activated_at} or {code}.
local c = check_secret(ARG.secret)
if c ~= OK then
  return { c }
end
if tonumber(ARG.index) >= issued() then
  return { NOT_ISSUED }
end
local now = clock(ARG.now)
if redis.call('HSETNX', ACT, ARG.token, string.format('%d', now)) == 0 then
  return { ALREADY_ACTIVATED }
end
return { OK, now }
