-- Head of every pool script, after the prelude. ARG.prefix: the pool's
-- key prefix `{kw:p:NAME}` (the hash tag: every key below hashes to one
-- cluster slot). ARG.now: now in ms, or "" for Redis TIME. The keys built
-- here all carry that tag; KEYS[1] is the meta hash, given so that the
-- call is routed to the pool's slot.
local P = ARG.prefix
local META = P .. POOL_META
local FREE = P .. ':free'
local LEASES = P .. ':leases'
local ALIVE = P .. ':alive'
local SEQ = P .. ':seq'

local NOW = clock(ARG.now)

-- Integers as exact decimal text (Lua numbers are doubles; every value
-- kept here is below 2^53).
local function int(n)
  return string.format('%d', n)
end

-- The pool's generation: 0 (absent) for a pool never deleted under this
-- name, else how many times it was. A key's hash carries it, so the
-- hashes of a deleted pool, reclaimed later, are never read as a new
-- pool's.
local GEN = redis.call('GET', P .. POOL_GEN) or '0'

local function khash_of(gen, k)
  if gen == '0' then
    return P .. ':k:' .. k
  end
  return P .. ':g' .. gen .. ':k:' .. k
end

local function khash(k)
  return khash_of(GEN, k)
end

local function purge(k)
  redis.call('DEL', khash(k))
  redis.call('ZREM', ALIVE, k)
  redis.call('ZREM', LEASES, k)
  redis.call('SREM', FREE, k)
end

local function end_lease(k)
  redis.call('HSET', khash(k), 'lease_id', '0', 'leased_until', '0')
  redis.call('ZREM', LEASES, k)
  redis.call('SADD', FREE, k)
end

-- Adds to the pool's expiry counters (read by /metrics).
local function count_expired(keys, leases)
  if keys > 0 then
    redis.call('HINCRBY', META, 'purged_keys', keys)
  end
  if leases > 0 then
    redis.call('HINCRBY', META, 'expired_leases', leases)
  end
end

-- Purges due keys, then ends due leases, at most `limit` entries in all.
-- O(m log n) for the m entries handled; a deadline equal to now is due.
local function expire_some(limit)
  local keys, leases = 0, 0
  local due = redis.call('ZRANGEBYSCORE', ALIVE, '-inf', NOW, 'LIMIT', 0, limit)
  for _, k in ipairs(due) do
    purge(k)
    keys = keys + 1
  end
  local left = limit - keys
  if left > 0 then
    due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW, 'LIMIT', 0, left)
    for _, k in ipairs(due) do
      end_lease(k)
      leases = leases + 1
    end
  end
  count_expired(keys, leases)
  return keys, leases
end

-- The key's fields after its own deadlines are applied, or nil if it is
-- gone: {created_at, alive_until, lease_id, leased_until, lease_id text}.
local function touch(k)
  local f = redis.call('HMGET', khash(k), 'created_at', 'alive_until', 'lease_id', 'leased_until')
  if not f[1] then
    return nil
  end
  local created, alive, lid, lu = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  local lid_text = f[3]
  if alive <= NOW then
    purge(k)
    count_expired(1, 0)
    return nil
  end
  if lid ~= 0 and lu <= NOW then
    end_lease(k)
    count_expired(0, 1)
    lid, lu, lid_text = 0, 0, '0'
  end
  return { created, alive, lid, lu, lid_text }
end

-- For the scripts that act on one key: expires up to LAZY_EXPIRY_BOUND due
-- entries, then returns `touch(k)`; nil if the pool or the key is gone.
local function live_key(k)
  if redis.call('EXISTS', META) == 0 then
    return nil
  end
  expire_some(LAZY_EXPIRY_BOUND)
  return touch(k)
end

local function setting(field)
  return tonumber(redis.call('HGET', META, field))
end

-- The pool's earliest deadline (lease end or purge), or nil. O(log n).
local function earliest()
  local a = redis.call('ZRANGE', ALIVE, 0, 0, 'WITHSCORES')
  local l = redis.call('ZRANGE', LEASES, 0, 0, 'WITHSCORES')
  local e = a[2] and tonumber(a[2])
  if l[2] and (not e or tonumber(l[2]) < e) then
    e = tonumber(l[2])
  end
  return e
end

-- The global due index (`kw:due`, another slot, so keyward writes it
-- after the script) must hold this pool no later than its earliest
-- deadline. `due_at` in META is the score keyward was last asked to
-- index; after a change that may bring the earliest deadline forward,
-- this returns the new score as text when it is earlier, else "".
local function reindex()
  local e = earliest()
  if not e then
    return ''
  end
  local indexed = redis.call('HGET', META, DUE_AT)
  if indexed and tonumber(indexed) <= e then
    return ''
  end
  redis.call('HSET', META, DUE_AT, int(e))
  return int(e)
end

local function key_reply(k, created, alive, lid, lu)
  return { OK, k, created, alive, lid, lu }
end

-- {lease_ttl_ms, keepalive_ttl_ms, key_length, total, free, purged_keys, expired_leases}
local function pool_state()
  local s = redis.call('HMGET', META, 'lease_ttl_ms', 'keepalive_ttl_ms', 'key_length', 'purged_keys', 'expired_leases')
  return { tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), redis.call('ZCARD', ALIVE), redis.call('SCARD', FREE),
    tonumber(s[4] or 0), tonumber(s[5] or 0) }
end

-- Creates the meta hash from the defaults ARG.default_lease_ttl_ms,
-- ARG.default_keepalive_ttl_ms and ARG.default_key_length if absent.
-- CREATED if it did, else EXISTED.
local function ensure_pool()
  if redis.call('EXISTS', META) == 1 then
    return EXISTED
  end
  redis.call('HSET', META, 'lease_ttl_ms', ARG.default_lease_ttl_ms, 'keepalive_ttl_ms',
    ARG.default_keepalive_ttl_ms, 'key_length', ARG.default_key_length)
  return CREATED
end

-- ---- the operation ----
