-- enable_key: a cooling, quarantined or disabled key is free now, its
-- failures, quarantines in a row and reason reset; a free or leased key
-- is returned as it is. O(log n). Wakes waiting leases when it frees one.
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
if f.state ~= 'free' and f.state ~= 'leased' then
  local old = { failures = f.failures, quarantines = f.quarantines, reason = f.reason }
  move(k, f, 'free')
  f.failures, f.quarantines, f.reason = 0, 0, nil
  write_health(k, f, old)
  wake()
end
return key_reply(k, f)
