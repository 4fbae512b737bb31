-- add_keys. ARG.mode: 'generate' or 'import'. Generate: ARG.keys holds
-- random candidates of CANDIDATE_LEN characters each, back to back, cut
-- to the pool's key length here (Lua's math.random is seeded the same on
-- every call, so the randomness comes from the caller's CSPRNG); a
-- candidate that is a live key is skipped, and the caller asks again for
-- the rest. Import: ARG.keys holds the caller's keys separated by single
-- spaces (a key is visible ASCII, never a space); one that is a live key
-- (or repeated) is left as it is and reported as existing. ARG.count:
-- how many keys ARG.keys holds; ARG.want: how many to generate (the
-- caller sends spare candidates, so one call is enough even when some
-- are taken: the call is then one atomic step, idempotency record
-- included). ARG.labels: the labels every new key
-- carries, as keyward encodes them ("" for none). Refused whole
-- (KEY_LIMIT) if the pool would come to hold more than ARG.max_keys keys
-- (an import counts only the keys not already live, each once).
-- O(count log n).
-- Reply: {OK, due index score or "", created_at, alive_until, added
-- count, added key..., existing key...} or {KEY_LIMIT}.
expire_some(LAZY_EXPIRY_BOUND)
local count = tonumber(ARG.count)
local fresh = tonumber(ARG.want)
if ARG.mode ~= 'generate' then
  fresh = 0
  local seen = {}
  for k in string.gmatch(ARG.keys, '[^ ]+') do
    if not seen[k] then
      seen[k] = true
      if not touch(k) then
        fresh = fresh + 1
      end
    end
  end
end
if redis.call('ZCARD', ALL) + fresh > tonumber(ARG.max_keys) then
  return { KEY_LIMIT }
end
ensure_pool()
local alive = alive_from()
local added, existing = {}, {}
local function add(k)
  local n = redis.call('INCR', KSEQ)
  local h = khash(k)
  redis.call('HSET', h, 'created_at', int(NOW), 'alive_until', int(alive), 'lease_id', '0', 'leased_until', '0',
    'n', int(n))
  if ARG.labels ~= '' then
    redis.call('HSET', h, 'labels', ARG.labels)
  end
  redis.call('ZADD', ALL, n, k)
  redis.call('ZADD', IN('free'), n, k)
  if alive ~= 0 then
    redis.call('ZADD', ALIVE, int(alive), k)
  end
  added[#added + 1] = k
end
if ARG.mode == 'generate' then
  local len = setting('key_length')
  for i = 0, count - 1 do
    if #added == fresh then
      break
    end
    local k = string.sub(ARG.keys, i * CANDIDATE_LEN + 1, i * CANDIDATE_LEN + len)
    if redis.call('EXISTS', khash(k)) == 0 then
      add(k)
    end
  end
else
  for k in string.gmatch(ARG.keys, '[^ ]+') do
    if touch(k) then
      existing[#existing + 1] = k
    else
      add(k)
    end
  end
end
if #added > 0 then
  wake()
end
local out = { OK, reindex(alive), NOW, alive, #added }
for _, k in ipairs(added) do
  out[#out + 1] = k
end
for _, k in ipairs(existing) do
  out[#out + 1] = k
end
return out
