-- Idempotency records of this pool or keyspace, after its head. Every
-- pool and keyspace script is wrapped (see `scripts.rs`): with
-- ARG.idem_key set, a live record of that key answers in place of the
-- body (or IDEM_REUSED when ARG.idem_digest differs), and a body that
-- succeeds has its reply recorded in the same script, so the change and
-- its record are one atomic step. Records live in the hash P:idem (key ->
-- 64 hex digits of digest, then the reply in MessagePack), their ends in
-- the sorted set P:idem:at; at most IDEM_POP expired ones are removed per
-- call, and both keys carry a TTL as long as their longest-lived record,
-- so an idle scope's records go too.
local IDEM = ARG.idem_key ~= '' and ARG.idem_key or nil
local IDEM_H = ARG.prefix .. ':idem'
local IDEM_AT = IDEM_H .. ':at'
-- Now in ms, read once per call (only with a key).
local IDEM_NOW = IDEM and clock(ARG.now)
-- Expired records were removed by this call already.
local IDEM_SWEPT = false
-- In a batch (IDEM_DEFER, set by `batch.lua`), new records are kept here
-- (key -> {record, end}) and written by `idem_flush` at its end: one
-- HSET, one ZADD and one TTL update for the batch. A lookup reads the
-- kept ones first.
local IDEM_DEFER = false
local IDEM_KEPT = {}
local IDEM_KEPT_TTL = 0

-- A recorded reply as keyward reads a replay: each element as `len:text`
-- (numbers in decimal), back to back. A record is MessagePack, packed in
-- C by `cmsgpack`: about seven times cheaper than building that text on
-- every call, and most records are never replayed. A record in the text
-- form already (an older keyward's: it starts with a digit, where
-- MessagePack starts with a byte of 0x80 or more) goes as it is.
-- O(length).
local function idem_text(packed)
  if (string.byte(packed, 1) or 0) < 0x80 then
    return packed
  end
  local parts = {}
  for i, v in ipairs(cmsgpack.unpack(packed)) do
    local s = type(v) == 'number' and string.format('%d', v) or tostring(v)
    parts[i] = #s .. ':' .. s
  end
  return table.concat(parts)
end

-- Removes at most IDEM_POP expired records, once per call (IDEM_NOW set).
-- O(IDEM_POP log r).
local function idem_sweep()
  if IDEM_SWEPT then
    return
  end
  IDEM_SWEPT = true
  local due = redis.call('ZRANGEBYSCORE', IDEM_AT, '-inf', IDEM_NOW, 'LIMIT', 0, IDEM_POP)
  if #due > 0 then
    redis.call('HDEL', IDEM_H, unpack(due))
    redis.call('ZREM', IDEM_AT, unpack(due))
  end
end

-- The records of a batch's keys, read at once by `idem_read_ahead` (key ->
-- record, or false for none); a key not in it is read by itself.
local IDEM_READ = {}

-- Reads the records of `keys` with one HMGET after the sweep (so none of
-- them is one the sweep removes), instead of one HGET per operation of a
-- batch (IDEM_NOW set). O(m) for m keys.
local function idem_read_ahead(keys)
  if #keys == 0 then
    return
  end
  idem_sweep()
  local recs = redis.call('HMGET', IDEM_H, unpack(keys))
  for i, key in ipairs(keys) do
    IDEM_READ[key] = recs[i]
  end
end

-- The recorded reply for ARG.idem_key as {REPLAYED, `idem_text`},
-- {IDEM_REUSED}, or nil (no key, or no live record: one past its end is
-- never answered, popped or not). O(log r) plus the bounded removal of
-- expired records.
local function idem_replay()
  if not IDEM then
    return nil
  end
  idem_sweep()
  local kept = IDEM_KEPT[IDEM]
  local rec = kept and kept[1]
  if not kept then
    -- Stored before this call: read ahead by the batch, else read now.
    rec = IDEM_READ[IDEM]
    if rec == nil then
      rec = redis.call('HGET', IDEM_H, IDEM)
    end
    if not rec then
      return nil
    end
    -- Past its end but not popped yet (a call pops at most IDEM_POP):
    -- gone all the same, and the request runs anew.
    local ends = redis.call('ZSCORE', IDEM_AT, IDEM)
    if ends and tonumber(ends) <= IDEM_NOW then
      return nil
    end
  end
  if string.sub(rec, 1, 64) ~= ARG.idem_digest then
    return { IDEM_REUSED }
  end
  return { REPLAYED, idem_text(string.sub(rec, 65)) }
end

-- Writes records (`fields`: key, record, …) and their ends (`ends`: end,
-- key, …), and makes both keys live at least `ttl` ms more: the longest
-- record's life. O(m log r).
local function idem_write(fields, ends, ttl)
  redis.call('HSET', IDEM_H, unpack(fields))
  redis.call('ZADD', IDEM_AT, unpack(ends))
  -- Lengthen the keys' TTL (GT), or give them one (NX: a key without a
  -- TTL counts as longer for GT): one call in the usual case.
  for _, k in ipairs({ IDEM_H, IDEM_AT }) do
    if redis.call('PEXPIRE', k, ttl, 'GT') == 0 then
      redis.call('PEXPIRE', k, ttl, 'NX')
    end
  end
end

-- Records `reply` for ARG.idem_key if it is a success; returns it.
-- O(len(reply) + log r).
local function idem_record(reply)
  local code = reply[1]
  if not IDEM or (code ~= OK and code ~= CREATED and code ~= EXISTED) then
    return reply
  end
  local ttl = tonumber(ARG.idem_ttl_ms)
  local rec = ARG.idem_digest .. cmsgpack.pack(reply)
  if IDEM_DEFER then
    IDEM_KEPT[IDEM] = { rec, IDEM_NOW + ttl }
    IDEM_KEPT_TTL = math.max(IDEM_KEPT_TTL, ttl)
  else
    idem_write({ IDEM, rec }, { IDEM_NOW + ttl, IDEM }, ttl)
  end
  return reply
end

-- Writes the kept records of a batch. O(m log r) for its m records.
local function idem_flush()
  local fields, ends = {}, {}
  for key, kept in pairs(IDEM_KEPT) do
    fields[#fields + 1] = key
    fields[#fields + 1] = kept[1]
    ends[#ends + 1] = kept[2]
    ends[#ends + 1] = key
  end
  if #fields > 0 then
    idem_write(fields, ends, IDEM_KEPT_TTL)
  end
end

-- Removes the record of `key` (its change was undone: a key leased for a
-- waiter that left was given back). O(log r).
local function idem_forget(key)
  IDEM_KEPT[key] = nil
  IDEM_READ[key] = false
  redis.call('HDEL', IDEM_H, key)
  redis.call('ZREM', IDEM_AT, key)
end
