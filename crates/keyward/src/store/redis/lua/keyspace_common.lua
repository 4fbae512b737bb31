-- Head of every keyspace script, after the prelude. ARG.prefix: the
-- keyspace's key prefix `{kw:ks:NAME}` (the hash tag: one cluster slot).
-- KEYS[1] is the definition hash, given for routing.
local K = ARG.prefix
local DEF = K .. KEYSPACE_DEF
local ISSUED = K .. ':issued'
-- Activated tokens (display form) -> time of their first activation: the
-- keyspace's `activated` count is its HLEN. (Part 1 kept only this.)
local ACT = K .. ':act'
-- Tokens with activations or a revocation -> their marks, as JSON:
-- {"a": [[at_ms], [at_ms, fingerprint], ...], "r": [at_ms, reason?]},
-- times as decimal strings. A token in ACT but not here is a Part 1
-- activation: one slot without a fingerprint.
local TOK = K .. ':tok'
-- Batch ranges, all at score 0, ordered by member: 14 hex digits of the
-- range's last counter, 14 of its first, then the batch name; the range
-- of counter i is the first member >= hex(i), if its first <= i.
local RANGES = K .. ':ranges'
-- Batch counts: 'i:NAME', 'a:NAME', 'r:NAME' -> issued, activated, revoked.
local BATCH = K .. ':batch'

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

-- Activation slots per token (absent: 1, as before they could change).
local function max_activations()
  return tonumber(redis.call('HGET', DEF, 'max_activations') or '1')
end

-- The counts every keyspace reply ends with: issued, activated, shape,
-- max_activations, revoked.
local function keyspace_counts()
  local d = redis.call('HMGET', DEF, 'shape', 'max_activations', 'revoked')
  return issued(), redis.call('HLEN', ACT), d[1] or '', tonumber(d[2] or '1'), tonumber(d[3] or '0')
end

-- Counters stay below 2^53, so 14 hex digits hold them.
local function hex(n)
  return string.format('%014x', n)
end

-- The batch counter `index` (a number) was issued under, or nil. O(log b).
local function batch_of(index)
  local m = redis.call('ZRANGEBYLEX', RANGES, '[' .. hex(index), '+', 'LIMIT', 0, 1)[1]
  if m and tonumber(string.sub(m, 15, 28), 16) <= index then
    return string.sub(m, 29)
  end
  return nil
end

-- Files counters first..last (numbers) under batch `name`, joining the
-- last range when it is the same batch's and ends just before. O(log b).
local function file_batch(first, last, name)
  local top = redis.call('ZRANGE', RANGES, -1, -1)[1]
  if top and string.sub(top, 29) == name and tonumber(string.sub(top, 1, 14), 16) == first - 1 then
    redis.call('ZREM', RANGES, top)
    first = tonumber(string.sub(top, 15, 28), 16)
  end
  redis.call('ZADD', RANGES, 0, hex(last) .. hex(first) .. name)
end

-- Moves a batch count (`field` 'a' or 'r') of the batch of `index` by `by`.
local function count_batch(index, field, by)
  local name = batch_of(index)
  if name then
    redis.call('HINCRBY', BATCH, field .. ':' .. name, by)
  end
end

-- A token's marks as a table {a = {...}, r = ... or nil}. O(m).
local function read_marks(token)
  local text = redis.call('HGET', TOK, token)
  if text then
    local marks = cjson.decode(text)
    if type(marks.a) ~= 'table' then
      marks.a = {}
    end
    return marks
  end
  local at = redis.call('HGET', ACT, token)
  if at then
    return { a = { { at } } }
  end
  return { a = {} }
end

-- Stores a token's marks (none: the field goes) and returns them as JSON.
local function write_marks(token, marks)
  if #marks.a == 0 and not marks.r then
    redis.call('HDEL', TOK, token)
    return ''
  end
  local out = { r = marks.r }
  if #marks.a > 0 then
    out.a = marks.a
  end
  local text = cjson.encode(out)
  redis.call('HSET', TOK, token, text)
  return text
end

-- What the scripts that change one token start with: OK, the token's index
-- (a number) and its marks when ARG.secret is the stored one and token
-- ARG.index (ARG.token shown) was issued, else the code saying why.
local function token_marks()
  local c = check_issued(ARG.secret, ARG.index)
  if c ~= OK then
    return c
  end
  return OK, tonumber(ARG.index), read_marks(ARG.token)
end

-- The reply of every token script: {OK, marks JSON or "", batch or ""}.
local function token_reply(text, index)
  return { OK, text, batch_of(index) or '' }
end

-- ---- the operation ----
