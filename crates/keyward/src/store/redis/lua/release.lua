-- release_key. ARG.lease_id: the lease id, or "" for any.
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
if f[3] == 0 then
  return { NOT_LEASED }
end
if ARG.lease_id ~= '' and ARG.lease_id ~= f[5] then
  return { LEASE_MISMATCH }
end
end_lease(k)
return key_reply(k, f[1], f[2], 0, 0)
