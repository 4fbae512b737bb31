-- Head of every pool script, after the prelude. ARG.prefix: the pool's
-- key prefix `{kw:p:NAME}` (the hash tag: every key below hashes to one
-- cluster slot). ARG.now: now in ms, or "" for Redis TIME. The keys built
-- here all carry that tag; KEYS[1] is the meta hash, given so that the
-- call is routed to the pool's slot.
local P = ARG.prefix
local META = P .. POOL_META
-- Free keys live in IN('free') (ZRANDMEMBER is the uniform pick); this
-- set is what keyward kept them in before the key states. Only deleted
-- now (by drop_pool and once a pool is adopted).
local OLD_FREE = P .. ':free'
-- Lease ends, cooldown ends and quarantine ends: one sorted set, so the
-- bounded lazy expiry and the due index read one index, not two.
local LEASES = P .. ':leases'
local ALIVE = P .. ':alive'
local SEQ = P .. ':seq'
-- Every live key by its listing number `n` (creation order): the stable
-- order of an unfiltered listing, and the total (ZCARD).
local ALL = P .. ':keys'
local KSEQ = P .. ':kseq'

local NOW = clock(ARG.now)

-- Integers as exact decimal text (Lua numbers are doubles; every value
-- kept here is below 2^53).
local function int(n)
  return string.format('%d', n)
end

-- The listing index of one state, by listing number; each name is built
-- once per call.
local IN_NAMES = {}
local function IN(state)
  local name = IN_NAMES[state]
  if not name then
    name = P .. ':in:' .. state
    IN_NAMES[state] = name
  end
  return name
end

-- Writes to the sorted sets, and the lease counter, either go to Redis at
-- once or, in a batch (DEFER, set by `batch.lua`), are kept here and sent
-- by `flush`: one ZREM and one ZADD per set for the whole batch instead of
-- a few per call. The last write of a member wins, as it would in Redis.
-- Every read of a sorted set that a batched body can reach flushes first
-- (`fresh`), so nothing reads a stale index; hashes are always written at
-- once.
local DEFER = false
local PENDING = {}
local DIRTY = false
-- The lease counter as the batch has advanced it (nil: not read yet).
local SEQ_AT = nil

-- Writes `score` (false: removal) of `member` to the sorted set `set`,
-- now or, in a batch, at the flush.
local function zwrite(set, member, score)
  if not DEFER then
    if score then
      redis.call('ZADD', set, score, member)
    else
      redis.call('ZREM', set, member)
    end
    return
  end
  local p = PENDING[set]
  if not p then
    p = {}
    PENDING[set] = p
  end
  p[member] = score
  DIRTY = true
end

local function zadd(set, score, member)
  zwrite(set, member, score)
end

local function zrem(set, member)
  zwrite(set, member, false)
end

-- Sends the kept writes. O(m log n) for the m members written.
local function flush()
  if SEQ_AT then
    redis.call('SET', SEQ, string.format('%d', SEQ_AT))
    SEQ_AT = nil
  end
  if not DIRTY then
    return
  end
  for set, p in pairs(PENDING) do
    local adds, rems = {}, {}
    for member, score in pairs(p) do
      if score then
        adds[#adds + 1] = score
        adds[#adds + 1] = member
      else
        rems[#rems + 1] = member
      end
    end
    if #rems > 0 then
      redis.call('ZREM', set, unpack(rems))
    end
    if #adds > 0 then
      redis.call('ZADD', set, unpack(adds))
    end
  end
  PENDING = {}
  DIRTY = false
end

-- `set`, after the kept writes are sent: for every sorted set read.
local function fresh(set)
  if DIRTY then
    flush()
  end
  return set
end

-- The next lease id: INCR, or in a batch one GET and one SET for all.
local function next_lease_id()
  if not DEFER then
    return redis.call('INCR', SEQ)
  end
  SEQ_AT = (SEQ_AT or tonumber(redis.call('GET', SEQ) or '0')) + 1
  return SEQ_AT
end

-- Free keys drawn ahead for the leases of a batch, and how many of its
-- leases have yet to pick (set by `batch.lua`; 1 outside a batch).
local PICKS = {}
local PICKS_WANTED = 1

-- A uniformly random free key, or false if none. In a batch, one
-- ZRANDMEMBER draws distinct keys for all leases still to come; the keys
-- stay free until picked (leases take only picks, releases never touch a
-- free key), and a pick expired meanwhile is found dead by `touch`. O(m)
-- per draw of m keys (ZRANDMEMBER copies a set smaller than 3m).
local function pick_free()
  if #PICKS == 0 then
    if PICKS_WANTED <= 1 then
      return redis.call('ZRANDMEMBER', fresh(IN('free')))
    end
    PICKS = redis.call('ZRANDMEMBER', fresh(IN('free')), PICKS_WANTED)
    if #PICKS == 0 then
      return false
    end
  end
  return table.remove(PICKS)
end

-- The pool's generation: 0 (absent) for a pool never deleted under this
-- name, else how many times it was. A key's hash carries it, so the
-- hashes of a deleted pool, reclaimed later, are never read as a new
-- pool's.
-- Read once per call, and only when needed: META keeps it as 'gen' (from
-- when the pool was made), which the hot scripts read with their
-- settings; a pool an older keyward made has it only in POOL_GEN.
local GEN = nil

local function gen()
  if not GEN then
    GEN = redis.call('GET', P .. POOL_GEN) or '0'
  end
  return GEN
end

-- Takes `gen` as read from META ('gen'; false when absent).
local function learn_gen(stored)
  if stored then
    GEN = stored
  end
end

local function khash_of(gen, k)
  if gen == '0' then
    return P .. ':k:' .. k
  end
  return P .. ':g' .. gen .. ':k:' .. k
end

local function khash(k)
  return khash_of(gen(), k)
end

-- The fields `touch` reads, in HMGET order. Absent ones (a key written by
-- an older keyward) mean: free or leased by lease_id, no labels, no
-- failures, no listing number yet.
local FIELDS = { 'created_at', 'alive_until', 'lease_id', 'leased_until', 'state', 'available_at',
  'reason', 'failures', 'quarantines', 'labels', 'n' }

local function state_of(lid, stored)
  if stored then
    return stored
  end
  if lid ~= 0 then
    return 'leased'
  end
  return 'free'
end

-- Removes the key and every index entry pointing at it. `state` is its
-- state when known (saves a read).
local function purge(k, state)
  local h = khash(k)
  if not state then
    local f = redis.call('HMGET', h, 'lease_id', 'state')
    state = state_of(tonumber(f[1] or '0'), f[2])
  end
  redis.call('DEL', h)
  zrem(ALIVE, k)
  zrem(LEASES, k)
  zrem(ALL, k)
  zrem(IN(state), k)
end

-- Moves key `k` (fields `f`, as `touch` returns them) to state `to`,
-- writing only what changes: `ends` is the lease end (leased) or the end
-- of the cooldown or quarantine; `id` the lease id (leased). The caller
-- writes failures, quarantines and reason. O(log n).
local function move(k, f, to, ends, id)
  local from = f.state
  if from ~= to then
    zrem(IN(from), k)
    zadd(IN(to), f.n, k)
  end
  local h = f.h
  local ends_text = ends and int(ends)
  if to == 'leased' then
    local id_text = int(id)
    redis.call('HSET', h, 'lease_id', id_text, 'leased_until', ends_text)
    f.lid, f.lu, f.lid_text = id, ends, id_text
  elseif to == 'free' then
    redis.call('HSET', h, 'lease_id', '0', 'leased_until', '0')
    if f.stored_state then
      redis.call('HDEL', h, 'state', 'available_at')
    end
    f.lid, f.lu, f.lid_text, f.avail, f.stored_state = 0, 0, '0', nil, nil
  elseif to == 'disabled' then
    redis.call('HSET', h, 'lease_id', '0', 'leased_until', '0', 'state', to)
    redis.call('HDEL', h, 'available_at')
    f.lid, f.lu, f.lid_text, f.avail, f.stored_state = 0, 0, '0', nil, to
  else
    redis.call('HSET', h, 'lease_id', '0', 'leased_until', '0', 'state', to, 'available_at', ends_text)
    f.lid, f.lu, f.lid_text, f.avail, f.stored_state = 0, 0, '0', ends, to
  end
  if to == 'leased' or to == 'cooling' or to == 'quarantined' then
    zadd(LEASES, ends_text, k)
  elseif from == 'leased' or from == 'cooling' or from == 'quarantined' then
    zrem(LEASES, k)
  end
  f.state = to
end

-- Sets failures, quarantines in a row and reason of `k` to those in `f`
-- (as `read_key` returns it; `f.reason` nil: none), writing only what
-- differs from `old`.
local function write_health(k, f, old)
  local h = f.h
  for _, field in ipairs({ 'failures', 'quarantines' }) do
    if f[field] ~= old[field] then
      if f[field] == 0 then
        redis.call('HDEL', h, field)
      else
        redis.call('HSET', h, field, int(f[field]))
      end
    end
  end
  if f.reason ~= old.reason then
    if f.reason then
      redis.call('HSET', h, 'reason', f.reason)
    else
      redis.call('HDEL', h, 'reason')
    end
  end
end

-- Adds to the pool's expiry counters (read by /metrics).
local function count_expired(keys, leases, recovered)
  if keys > 0 then
    redis.call('HINCRBY', META, 'purged_keys', keys)
  end
  if leases > 0 then
    redis.call('HINCRBY', META, 'expired_leases', leases)
  end
  if recovered > 0 then
    redis.call('HINCRBY', META, 'recovered', recovered)
  end
end

-- A key an older keyward wrote has no listing number: give it one and
-- put it into the listing indexes. O(log n), once per key.
local function adopt(k, f)
  local n = redis.call('INCR', KSEQ)
  redis.call('HSET', f.h, 'n', int(n))
  zadd(ALL, n, k)
  zadd(IN(f.state), n, k)
  f.n = n
end

-- The key's fields, or nil if it has no hash; `h` is its hash's name.
-- Only what is compared or counted becomes a number (`created` and `n`
-- stay text, for the reply and as a score), and '0', the usual value of
-- three of them, without `tonumber`: Lua's conversion is costly here.
local function read_key(k)
  local h = khash(k)
  local r = redis.call('HMGET', h, unpack(FIELDS))
  if not r[1] then
    return nil
  end
  local lid = r[3] == '0' and 0 or tonumber(r[3])
  local f = {
    created = r[1], alive = r[2] == '0' and 0 or tonumber(r[2]), lid = lid,
    lu = r[4] == '0' and 0 or tonumber(r[4]), lid_text = r[3], stored_state = r[5],
    state = state_of(lid, r[5]), avail = r[6] and tonumber(r[6]) or nil, reason = r[7] or nil,
    failures = r[8] and tonumber(r[8]) or 0, quarantines = r[9] and tonumber(r[9]) or 0,
    labels = r[10] or '', n = r[11] or nil, h = h,
  }
  if not f.n then
    adopt(k, f)
  end
  return f
end

-- The key's fields after its own deadlines are applied, or nil if it is
-- gone. Each of `counts` (purged, leases ended, recovered) it applies is
-- added to the pool's counters.
local function settle(k, f)
  if f.alive ~= 0 and f.alive <= NOW then
    purge(k, f.state)
    return nil, 1, 0, 0
  end
  if f.state == 'leased' and f.lu <= NOW then
    move(k, f, 'free')
    return f, 0, 1, 0
  end
  if (f.state == 'cooling' or f.state == 'quarantined') and f.avail and f.avail <= NOW then
    move(k, f, 'free')
    if f.reason then
      f.reason = nil
      redis.call('HDEL', f.h, 'reason')
    end
    return f, 0, 0, 1
  end
  return f, 0, 0, 0
end

-- Purges due keys, then ends due leases, cooldowns and quarantines, at
-- most `limit` entries in all. O(m log n) for the m entries handled; a
-- deadline equal to now is due.
local function expire_some(limit)
  local keys, leases, recovered = 0, 0, 0
  local due = redis.call('ZRANGEBYSCORE', fresh(ALIVE), '-inf', NOW, 'LIMIT', 0, limit)
  for _, k in ipairs(due) do
    purge(k)
    keys = keys + 1
  end
  local left = limit - keys
  if left > 0 then
    due = redis.call('ZRANGEBYSCORE', fresh(LEASES), '-inf', NOW, 'LIMIT', 0, left)
    for _, k in ipairs(due) do
      local f = read_key(k)
      local _, p, l, r
      if f then
        _, p, l, r = settle(k, f)
        keys, leases, recovered = keys + p, leases + l, recovered + r
      end
      if not f or p + l + r == 0 then
        -- The index disagrees with the hash (edited by hand): drop the entry.
        zrem(LEASES, k)
      end
    end
  end
  count_expired(keys, leases, recovered)
  return keys, leases, recovered
end

-- The key's fields after its own deadlines are applied, or nil if it is
-- gone: created, alive, lid, lu, lid_text, state, avail, reason,
-- failures, quarantines, labels, n.
local function touch(k)
  local f = read_key(k)
  if not f then
    return nil
  end
  local g, p, l, r = settle(k, f)
  count_expired(p, l, r)
  return g
end

-- Wakes the keyward processes with waiting leases for this pool: a key
-- may be free now, or the pool's first deadline moved. One EXISTS while
-- nobody waits; one PUBLISH (plain, so a cluster broadcasts it to every
-- node) while some process keeps the pool's waiting marker set. Once per
-- call: subscribers hear it after the whole call, batch included.
local WOKEN = false

local function wake()
  if WOKEN then
    return
  end
  WOKEN = true
  if redis.call('EXISTS', P .. POOL_WAITING) == 1 then
    redis.call('PUBLISH', P .. POOL_WAKE, '')
  end
end

-- The pool settings, each 'nil' when the meta hash lacks it (an older
-- keyward's pool: the caller takes the default).
local function settings(...)
  return redis.call('HMGET', META, ...)
end

-- `due_at` of META as read by this call (false: absent), or nil until
-- read: `reindex` compares with it instead of reading it again.
local INDEXED = nil

-- INDEXED as a number, parsed once per change of INDEXED.
local INDEXED_TEXT, INDEXED_AT = nil, nil

-- The lazy expiry of every key script, once `due_at` is read (INDEXED):
-- up to LAZY_EXPIRY_BOUND due entries expire, unless `due_at` (never
-- later than any deadline of the pool) is still ahead, when nothing can be
-- due and the two index reads are skipped. O(1) then, else O(m log n).
local function expire_lazily()
  if INDEXED ~= INDEXED_TEXT then
    INDEXED_TEXT, INDEXED_AT = INDEXED, INDEXED and tonumber(INDEXED)
  end
  if not INDEXED_AT or INDEXED_AT <= NOW then
    expire_some(LAZY_EXPIRY_BOUND)
  end
end

-- The settings the key scripts read, from one HMGET per call (a batch
-- included: no lease or release changes them): lease TTL (nil: no pool),
-- cooldown, failures before quarantine, first quarantine, each as text.
-- The first read also learns the generation and `due_at`; after it,
-- INDEXED follows every change of `due_at`.
local HOT = nil

local function hot_settings()
  if not HOT then
    local m = redis.call('HMGET', META, 'lease_ttl_ms', DUE_AT, 'gen', 'cooldown_ms', 'max_failures',
      'quarantine_ms')
    learn_gen(m[3])
    INDEXED = m[2]
    HOT = { m[1] or nil, m[4] or DEFAULT_COOLDOWN_MS, m[5] or DEFAULT_MAX_FAILURES, m[6] or DEFAULT_QUARANTINE_MS }
  end
  return HOT
end

-- The pool's lease TTL after the lazy expiry, or nil if there is no pool.
local function live_pool()
  local ttl = hot_settings()[1]
  if ttl then
    expire_lazily()
  end
  return ttl
end

-- For the scripts that act on one key: the lazy expiry, then `touch(k)`;
-- nil if the pool or the key is gone.
local function live_key(k)
  if not live_pool() then
    return nil
  end
  return touch(k)
end

local function setting(field)
  return tonumber(redis.call('HGET', META, field))
end

-- The keep-alive deadline of a key created or kept alive now; 0 for none.
local function alive_from()
  local s = settings('keepalive_ttl_ms', 'no_keepalive')
  if s[2] == '1' then
    return 0
  end
  return NOW + tonumber(s[1])
end

-- Sets the key's keep-alive deadline to `alive` (0: none).
local function set_alive(k, alive)
  redis.call('HSET', khash(k), 'alive_until', int(alive))
  if alive == 0 then
    redis.call('ZREM', ALIVE, k)
  else
    redis.call('ZADD', ALIVE, int(alive), k)
  end
end

-- The pool's earliest deadline (purge, or lease, cooldown or quarantine
-- end), or nil. O(log n).
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
-- index, never later than any deadline (scripts that add one call this,
-- the reaper resets it to the earliest after expiring). After a change
-- that added the deadline `at`, this returns `at` as text when it is
-- earlier than `due_at`, else "". O(1): the deadline just added is the
-- only one that can be earlier.
local function reindex(at)
  if at == 0 then
    return ''
  end
  local indexed = INDEXED
  if indexed == nil then
    indexed = redis.call('HGET', META, DUE_AT)
  end
  if indexed and tonumber(indexed) <= at then
    return ''
  end
  redis.call('HSET', META, DUE_AT, int(at))
  INDEXED = int(at)
  return int(at)
end

-- {OK, key, created_at, alive_until, lease_id, leased_until, state,
-- available_at or "", reason or "", failures, quarantines, labels or ""}
local function key_reply(k, f)
  return { OK, k, f.created, f.alive, f.lid, f.lu, f.state, f.avail and int(f.avail) or '', f.reason or '',
    f.failures, f.quarantines, f.labels }
end

-- {settings..., counts..., expiry counters...}: see `Reply::pool_state`.
local function pool_state()
  local s = redis.call('HMGET', META, 'lease_ttl_ms', 'keepalive_ttl_ms', 'key_length', 'cooldown_ms',
    'max_failures', 'quarantine_ms', 'no_keepalive', 'purged_keys', 'expired_leases', 'recovered', 'quarantines')
  return { tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), s[4] or DEFAULT_COOLDOWN_MS,
    s[5] or DEFAULT_MAX_FAILURES, s[6] or DEFAULT_QUARANTINE_MS, s[7] or '0',
    redis.call('ZCARD', ALL), redis.call('ZCARD', IN('free')), redis.call('ZCARD', IN('leased')),
    redis.call('ZCARD', IN('cooling')), redis.call('ZCARD', IN('quarantined')), redis.call('ZCARD', IN('disabled')),
    tonumber(s[8] or 0), tonumber(s[9] or 0), tonumber(s[10] or 0), tonumber(s[11] or 0) }
end

-- Creates the meta hash from the ARG.default_* settings if absent.
-- CREATED if it did, else EXISTED.
local function ensure_pool()
  if redis.call('EXISTS', META) == 1 then
    return EXISTED
  end
  redis.call('HSET', META, 'lease_ttl_ms', ARG.default_lease_ttl_ms, 'keepalive_ttl_ms',
    ARG.default_keepalive_ttl_ms, 'key_length', ARG.default_key_length, 'cooldown_ms', ARG.default_cooldown_ms,
    'max_failures', ARG.default_max_failures, 'quarantine_ms', ARG.default_quarantine_ms, 'no_keepalive',
    ARG.default_no_keepalive, 'layout', LAYOUT, 'gen', gen())
  return CREATED
end

-- ---- the operation ----
