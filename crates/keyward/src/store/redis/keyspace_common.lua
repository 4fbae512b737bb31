-- Shared head of every keyspace script (keyward, src/store/redis.rs).
-- ARGV[1]: the keyspace's key prefix `{kw:ks:NAME}` (the hash tag: one
-- cluster slot). KEYS[1] is the definition hash, given for routing.
local K = ARGV[1]
local DEF = K .. ':def'
local ISSUED = K .. ':issued'
local ACT = K .. ':act'

-- Reply codes, mirrored in redis.rs.
local OK, NOT_FOUND, STALE, EXHAUSTED, NOT_ISSUED, ALREADY = 0, 1, 2, 3, 4, 5

local function issued()
  return tonumber(redis.call('GET', ISSUED) or '0')
end

-- NOT_FOUND or STALE unless the stored secret is `secret`: the caller's
-- cached codec must be the one every process uses.
local function check_secret(secret)
  local stored = redis.call('HGET', DEF, 'secret')
  if not stored then
    return NOT_FOUND
  end
  if stored ~= secret then
    return STALE
  end
  return OK
end

local function now_ms(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ---- the operation ----
