-- batch_info: ARG.batch's counts. O(1).
-- Reply: {OK, issued, activated, revoked} or {code}.
if redis.call('EXISTS', DEF) == 0 then
  return { KEYSPACE_NOT_FOUND }
end
local n = redis.call('HMGET', BATCH, 'i:' .. ARG.batch, 'a:' .. ARG.batch, 'r:' .. ARG.batch)
if not n[1] then
  return { BATCH_NOT_FOUND }
end
return { OK, tonumber(n[1]), tonumber(n[2] or '0'), tonumber(n[3] or '0') }
