-- activate_token. Reply: {OK, activated_at} or {code}.
local c = check_issued(ARG.secret, ARG.index)
if c ~= OK then
  return { c }
end
local now = clock(ARG.now)
if redis.call('HSETNX', ACT, ARG.token, string.format('%d', now)) == 0 then
  return { ALREADY_ACTIVATED }
end
return { OK, now }
