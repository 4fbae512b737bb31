-- Head of every keyspace script, after the prelude. ARG.prefix: the
-- keyspace's key prefix `{kw:ks:NAME}` (the hash tag: one cluster slot).
-- KEYS[1] is the definition hash, given for routing.
local K = ARG.prefix
local DEF = K .. KEYSPACE_DEF
local ISSUED = K .. ':issued'
local ACT = K .. ':act'

local function issued()
  return tonumber(redis.call('GET', ISSUED) or '0')
end

-- KEYSPACE_NOT_FOUND or STALE unless the stored secret is `secret`: the
-- caller's cached codec must be the one every process uses.
local function check_secret(secret)
  local stored = redis.call('HGET', DEF, 'secret')
  if not stored then
    return KEYSPACE_NOT_FOUND
  end
  if stored ~= secret then
    return STALE
  end
  return OK
end

-- OK if `secret` is the stored one and the token of index `index`
-- (decimal text) was issued, else the code saying why. An index at or
-- above 2^53 rounds to 2^53 or more, which no counter reaches, so the
-- comparison stays right.
local function check_issued(secret, index)
  local c = check_secret(secret)
  if c ~= OK then
    return c
  end
  if tonumber(index) >= issued() then
    return NOT_ISSUED
  end
  return OK
end

-- ---- the operation ----
