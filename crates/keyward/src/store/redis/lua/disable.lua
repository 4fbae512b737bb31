-- disable_key: out of use until enabled, whatever the state; a lease ends
-- now, so its id is refused from then on. Failures are kept; ARG.reason
-- ("" for none) replaces any earlier reason. O(log n).
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
local old = { failures = f.failures, quarantines = f.quarantines, reason = f.reason }
move(k, f, 'disabled')
if ARG.reason ~= '' then
  f.reason = ARG.reason
else
  f.reason = nil
end
write_health(k, f, old)
return key_reply(k, f)
