-- report_key (and release_key, its `ok`): ends the lease with the
-- holder's outcome. ARG.lease_id: the lease id, or "" for any;
-- ARG.outcome: ok | rate_limited | failed; ARG.retry_after_ms: "" for the
-- pool's cooldown; ARG.reason: "" for none; ARG.forget: the idempotency
-- key whose record goes with this release ("" for none: see
-- idempotency.lua). The rules are the core's
-- `Pool::release_with`. O(log n). Wakes waiting leases (`wake`).
-- Reply: key_reply + {due index score or ""}.
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
if f.state ~= 'leased' then
  return { NOT_LEASED }
end
if ARG.lease_id ~= '' and ARG.lease_id ~= f.lid_text then
  return { LEASE_MISMATCH }
end
local old = { failures = f.failures, quarantines = f.quarantines, reason = f.reason }
local to, ends = 'free', 0
if ARG.outcome == 'ok' then
  f.failures, f.quarantines = 0, 0
elseif ARG.outcome == 'rate_limited' then
  local ms = ARG.retry_after_ms
  if ms == '' then
    ms = hot_settings()[2]
  end
  to, ends = 'cooling', NOW + tonumber(ms)
else
  local s = hot_settings()
  f.failures = f.failures + 1
  if f.failures >= tonumber(s[3]) then
    f.quarantines = f.quarantines + 1
    redis.call('HINCRBY', META, 'quarantines', 1)
    -- quarantine × 2^(n−1), at most MAX_QUARANTINE_MS unless the base is
    -- longer (doubles: exact while below the cap, which is below 2^53).
    local base = tonumber(s[4])
    to, ends = 'quarantined', NOW + math.min(base * 2 ^ (f.quarantines - 1), math.max(MAX_QUARANTINE_MS, base))
  end
end
if to == 'free' then
  f.reason = nil
elseif ARG.reason ~= '' then
  f.reason = ARG.reason
else
  f.reason = nil
end
move(k, f, to, ends)
write_health(k, f, old)
if ARG.forget ~= '' then
  idem_forget(ARG.forget)
end
-- Freed, or cooling or quarantined until a deadline a waiter must learn.
wake()
local reply = key_reply(k, f)
reply[#reply + 1] = reindex(ends)
return reply
