-- expire_due, one step of at most REAP_STEP entries; a pool an older
-- keyward made is first brought to this layout, REAP_STEP keys a step.
-- Reply: {OK, keys purged, leases ended, cooldowns and quarantines ended,
-- the pool's next deadline or ""}; the next deadline is also stored as
-- `due_at` for the due index.
if redis.call('EXISTS', META) == 0 then
  return { OK, 0, 0, 0, '' }
end
local layout = settings('layout')[1]
if layout ~= LAYOUT then
  -- Every key of an older pool is in ALIVE (it had no keys without a
  -- keep-alive); reading a key gives it its listing number. A key
  -- missed while ranks move is adopted when it is next touched.
  local at = tonumber(redis.call('HGET', META, 'adopted') or '0')
  local keys = redis.call('ZRANGE', ALIVE, at, at + REAP_STEP - 1)
  for _, k in ipairs(keys) do
    read_key(k)
  end
  if #keys < REAP_STEP then
    redis.call('HSET', META, 'layout', LAYOUT)
    redis.call('HDEL', META, 'adopted')
    -- Free keys are in IN('free') now; the old set would only mislead.
    redis.call('UNLINK', OLD_FREE)
  else
    redis.call('HSET', META, 'adopted', at + #keys)
  end
end
-- A pool made before META kept its generation learns it here.
if not redis.call('HGET', META, 'gen') then
  redis.call('HSET', META, 'gen', gen())
end
local keys, leases, recovered = expire_some(REAP_STEP)
if leases + recovered > 0 then
  wake()
end
local e = earliest()
if e then
  redis.call('HSET', META, DUE_AT, int(e))
  return { OK, keys, leases, recovered, int(e) }
end
redis.call('HDEL', META, DUE_AT)
return { OK, keys, leases, recovered, '' }
