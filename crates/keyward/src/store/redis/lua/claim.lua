-- claim: records, for the idempotency key of a waiting request, the key
-- this process leased for it (ARG.key, lease ARG.lease_id) while it
-- waited: the wrapper replays an earlier record instead (the caller then
-- gives the key back). O(1).
-- Reply: key_reply, or {LEASE_MISMATCH} if the lease is not that one.
local k = ARG.key
local f = live_key(k)
if not f or f.state ~= 'leased' or f.lid_text ~= ARG.lease_id then
  return { LEASE_MISMATCH }
end
return key_reply(k, f)
