-- list_keys. ARG.state: the state to list, "" for all; ARG.after: the
-- listing number the page starts after, "" for the first page;
-- ARG.limit: most keys. Walks the state's index (or the index of all
-- keys) by listing number, which never changes while a key lives, so a
-- key that lives (and stays in the state) through a listing is listed
-- exactly once. Keys visited are settled as `get` does; one that leaves
-- the state so is skipped and the page filled from further on.
-- O(limit log n) plus the due entries settled.
-- Reply: {OK, next listing number or "", key_reply fields (without the
-- code) of each key...} or {POOL_NOT_FOUND}.
if redis.call('EXISTS', META) == 0 then
  return { POOL_NOT_FOUND }
end
expire_some(LAZY_EXPIRY_BOUND)
local index = ALL
if ARG.state ~= '' then
  index = IN(ARG.state)
end
local limit = tonumber(ARG.limit)
local at = ARG.after
local out = { OK, '' }
local listed = 0
-- Each round lists or settles away what it reads; bounded all the same.
for _ = 1, 64 do
  if listed >= limit then
    break
  end
  local from = '-inf'
  if at ~= '' then
    from = '(' .. at
  end
  local batch = redis.call('ZRANGEBYSCORE', index, from, '+inf', 'WITHSCORES', 'LIMIT', 0, limit - listed)
  if #batch == 0 then
    at = nil
    break
  end
  for i = 1, #batch, 2 do
    local k = batch[i]
    at = batch[i + 1]
    local f = touch(k)
    if not f then
      -- Purged just now, or an entry without a hash (edited by hand).
      redis.call('ZREM', index, k)
    elseif ARG.state == '' or f.state == ARG.state then
      local r = key_reply(k, f)
      for j = 2, #r do
        out[#out + 1] = r[j]
      end
      listed = listed + 1
    end
  end
end
if at and at ~= '' then
  if #redis.call('ZRANGEBYSCORE', index, '(' .. at, '+inf', 'LIMIT', 0, 1) > 0 then
    out[2] = at
  end
end
return out
