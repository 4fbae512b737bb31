//! A pool of API keys: generate, lease a uniformly random free key,
//! release, keep alive, delete, and expire — each in O(1) or O(log n).
//!
//! Layout, chosen so no operation walks the keys:
//! - `slots`: a slab of key entries addressed by a `u32` slot id;
//! - `index`: a hash table of slot ids, hashed by the key text, for O(1)
//!   lookup without storing the key twice;
//! - `free`: a dense vector of free slot ids; each entry knows its
//!   position, so a random pick and a removal are O(1) swap-removes;
//! - `leases` / `alive`: ordered deadline indexes, so expiry pops only the
//!   due entries (O(m log n) for m of them).
//!
//! The pool never reads a clock: every call takes `now`. Callers that
//! persist state ask it to record [`KeyChange`]s and drain them after each
//! call.

use std::hash::{BuildHasher, RandomState};

use compact_str::CompactString;
use hashbrown::HashTable;
use rand::Rng;
use rand::RngExt;
use rand::TryRng;

use super::deadlines::Deadlines;
use super::time::{Timestamp, Ttl};

/// Length of generated keys, 8–128 characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyLength(u8);

impl KeyLength {
    /// The default length: the seed's 20 characters.
    pub const DEFAULT: Self = Self(20);

    /// `None` unless `8 <= n <= 128`.
    pub fn new(n: u64) -> Option<Self> {
        (8..=128).contains(&n).then_some(Self(n as u8))
    }

    /// The length in characters.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// Per-pool settings. New values apply to deadlines set from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// How long a lease lasts unless released or extended.
    pub lease_ttl: Ttl,
    /// How long a key lives without a keep-alive.
    pub keepalive_ttl: Ttl,
    /// Length of keys generated from now on.
    pub key_length: KeyLength,
}

/// A key's current lease. `id` is a fencing token: it only grows within a
/// pool, so a holder whose lease expired cannot end the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Fencing token of this lease.
    pub id: u64,
    /// When the lease ends by itself.
    pub until: Timestamp,
}

/// A snapshot of one key, as clients see it and as stores persist it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    /// The key text.
    pub key: String,
    /// When the key was generated.
    pub created_at: Timestamp,
    /// When the key is purged unless kept alive.
    pub alive_until: Timestamp,
    /// The current lease; `None` when the key is free.
    pub lease: Option<Lease>,
}

/// Counts of a pool's keys; each is O(1) to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Live keys.
    pub total: u64,
    /// Keys that can be leased.
    pub free: u64,
    /// Keys under a lease.
    pub leased: u64,
}

/// What one expiry pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Expired {
    /// Leases that ended by themselves.
    pub leases: u64,
    /// Keys purged for want of a keep-alive.
    pub keys: u64,
}

impl Expired {
    /// Adds another pass's counts.
    pub fn add(&mut self, other: Expired) {
        self.leases += other.leases;
        self.keys += other.keys;
    }
}

/// A change to persist, recorded only when the caller asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// The key now looks like this (created or kept alive; its lease may
    /// have changed too).
    Put(KeyView),
    /// Only the key's lease changed (leased, released, ended by itself):
    /// the view is whole, but a store may rewrite just the lease.
    Lease(KeyView),
    /// The key is gone for good (deleted or purged).
    Remove(String),
}

/// Why a pool operation did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No live key has that text.
    #[error("no such key in this pool")]
    KeyNotFound,
    /// Release of a key that is free.
    #[error("the key is not leased")]
    NotLeased,
    /// The given lease id is not the key's current lease.
    #[error("the lease id is not the key's current lease")]
    LeaseMismatch,
    /// Every live key is leased (or there are none).
    #[error("no free key in this pool")]
    NoFreeKey,
    /// The pool holds the most keys a slot id can address.
    #[error("the pool is full")]
    Full,
}

const VACANT: u32 = u32::MAX;
const KEY_CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug)]
struct Slot {
    /// Inline up to 24 bytes (the default 20-character keys): no heap
    /// block and no pointer per key, the largest saving of RAM per key.
    key: CompactString,
    created_at: Timestamp,
    alive_until: Timestamp,
    /// 0 while free; lease ids start at 1.
    lease_id: u64,
    leased_until: Timestamp,
    /// Position in `free`, or `VACANT` while leased.
    free_pos: u32,
}

impl Slot {
    fn view(&self) -> KeyView {
        KeyView {
            key: self.key.to_string(),
            created_at: self.created_at,
            alive_until: self.alive_until,
            lease: (self.lease_id != 0).then_some(Lease {
                id: self.lease_id,
                until: self.leased_until,
            }),
        }
    }
}

/// One pool's keys and their deadlines.
#[derive(Debug)]
pub struct Pool {
    settings: PoolSettings,
    slots: Vec<Option<Slot>>,
    vacant: Vec<u32>,
    index: HashTable<u32>,
    hasher: RandomState,
    free: Vec<u32>,
    leases: Deadlines,
    alive: Deadlines,
    last_lease_id: u64,
    expired: Expired,
    record: bool,
    changes: Vec<KeyChange>,
}

impl Pool {
    /// An empty pool. With `record`, every change is queued for
    /// [`Pool::drain_changes`].
    pub fn new(settings: PoolSettings, record: bool) -> Self {
        Self {
            settings,
            slots: Vec::new(),
            vacant: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            free: Vec::new(),
            leases: Deadlines::default(),
            alive: Deadlines::default(),
            last_lease_id: 0,
            expired: Expired::default(),
            record,
            changes: Vec::new(),
        }
    }

    /// Rebuilds a pool from persisted keys. `last_lease_id` is raised to the
    /// highest lease id seen, so ids never go backwards. Duplicate keys keep
    /// the last record. O(k log k) for k keys. Due expiry is left to the
    /// next call that takes `now`.
    pub fn restore(
        settings: PoolSettings,
        last_lease_id: u64,
        keys: impl IntoIterator<Item = KeyView>,
        record: bool,
    ) -> Self {
        let mut pool = Self::new(settings, record);
        pool.last_lease_id = last_lease_id;
        for view in keys {
            // A later record of the same key is newer: it replaces the first.
            if let Some(slot) = pool.find(&view.key) {
                pool.remove_slot(slot);
            }
            let Ok(slot) = pool.insert_slot(view.key.into(), view.created_at, view.alive_until)
            else {
                break;
            };
            if let Some(lease) = view.lease.filter(|l| l.id != 0) {
                pool.last_lease_id = pool.last_lease_id.max(lease.id);
                pool.take_free(slot);
                let s = pool.slot_mut(slot);
                s.lease_id = lease.id;
                s.leased_until = lease.until;
                pool.leases.insert(lease.until, slot);
            }
        }
        pool.changes.clear();
        pool
    }

    /// Current settings. O(1).
    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// Replaces the settings; existing deadlines stay as they are. O(1).
    pub fn set_settings(&mut self, settings: PoolSettings) {
        self.settings = settings;
    }

    /// The highest lease id handed out so far (0 if none). O(1).
    pub fn last_lease_id(&self) -> u64 {
        self.last_lease_id
    }

    /// Key counts. O(1).
    pub fn stats(&self) -> PoolStats {
        let total = (self.slots.len() - self.vacant.len()) as u64;
        let free = self.free.len() as u64;
        PoolStats {
            total,
            free,
            leased: total - free,
        }
    }

    /// Leases ended and keys purged by expiry since this pool was built
    /// (restores start from zero). O(1).
    pub fn expired_total(&self) -> Expired {
        self.expired
    }

    /// Generates `count` new keys from the OS CSPRNG, unique among the live
    /// keys, alive for `keepalive_ttl`. O(count) (amortised O(1) each).
    pub fn generate(&mut self, count: usize, now: Timestamp) -> Result<Vec<KeyView>, PoolError> {
        self.expire_lazily(now);
        let len = self.settings.key_length.get();
        if count > VACANT as usize - self.stats().total as usize {
            return Err(PoolError::Full);
        }
        let mut keys = Vec::with_capacity(count);
        let mut random = RandomChars::default();
        let alive_until = now.after(self.settings.keepalive_ttl);
        while keys.len() < count {
            let key: CompactString = (0..len).map(|_| random.next()).collect();
            // 62^8 or more candidates: a collision is astronomically rare,
            // and retrying keeps keys unique among the live ones.
            if self.find(&key).is_some() {
                continue;
            }
            let slot = self.insert_slot(key, now, alive_until)?;
            keys.push(self.slot(slot).view());
        }
        Ok(keys)
    }

    /// Leases a uniformly random free key for `lease_ttl`. O(log n)
    /// amortised: a picked key that is already due for purge is purged and
    /// the pick repeated (rejection sampling keeps the pick uniform among
    /// live keys), and with no free key a due lease is ended and its key
    /// taken. Every retry removes a due entry for good, so its cost is
    /// expiry that had to happen anyway, and `NoFreeKey` is never answered
    /// while a live key could be leased.
    pub fn lease<R: Rng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<KeyView, PoolError> {
        self.expire_lazily(now);
        let slot = loop {
            if self.free.is_empty() {
                // Expire one more due entry (an ended lease frees its key);
                // with none left, nothing can be leased.
                if self.expire_some(now, 1) == Expired::default() {
                    return Err(PoolError::NoFreeKey);
                }
                continue;
            }
            let slot = self.free[rng.random_range(0..self.free.len())];
            if self.settle(slot, now).is_some() {
                break slot;
            }
        };
        // A fencing token must never repeat or wrap to 0 (the "free"
        // marker); capped at i64::MAX, what a database integer holds.
        let id = self
            .last_lease_id
            .checked_add(1)
            .filter(|&id| id <= i64::MAX as u64)
            .ok_or(PoolError::Full)?;
        self.last_lease_id = id;
        self.take_free(slot);
        let until = now.after(self.settings.lease_ttl);
        let s = self.slot_mut(slot);
        s.lease_id = id;
        s.leased_until = until;
        self.leases.insert(until, slot);
        Ok(self.lease_change(slot))
    }

    /// Ends the key's lease now. With `lease_id`, only if it is the current
    /// lease. O(log n).
    pub fn release(
        &mut self,
        key: &str,
        lease_id: Option<u64>,
        now: Timestamp,
    ) -> Result<KeyView, PoolError> {
        let slot = self.find_live(key, now).ok_or(PoolError::KeyNotFound)?;
        let s = self.slot(slot);
        if s.lease_id == 0 {
            return Err(PoolError::NotLeased);
        }
        if lease_id.is_some_and(|id| id != s.lease_id) {
            return Err(PoolError::LeaseMismatch);
        }
        self.end_lease(slot);
        Ok(self.lease_change(slot))
    }

    /// Keeps the key alive for another `keepalive_ttl`; with the current
    /// `lease_id` also extends the lease by `lease_ttl`. A `lease_id` that is
    /// not the current lease changes nothing. O(log n).
    pub fn keepalive(
        &mut self,
        key: &str,
        lease_id: Option<u64>,
        now: Timestamp,
    ) -> Result<KeyView, PoolError> {
        let slot = self.find_live(key, now).ok_or(PoolError::KeyNotFound)?;
        let (alive_until, lease_id_now, leased_until) = {
            let s = self.slot(slot);
            (s.alive_until, s.lease_id, s.leased_until)
        };
        if let Some(id) = lease_id {
            if lease_id_now == 0 || id != lease_id_now {
                return Err(PoolError::LeaseMismatch);
            }
            let until = now.after(self.settings.lease_ttl);
            self.leases.reschedule(leased_until, until, slot);
            self.slot_mut(slot).leased_until = until;
        }
        let alive = now.after(self.settings.keepalive_ttl);
        self.alive.reschedule(alive_until, alive, slot);
        self.slot_mut(slot).alive_until = alive;
        Ok(self.put_change(slot))
    }

    /// The key's current state. O(1) after due expiry.
    pub fn get(&mut self, key: &str, now: Timestamp) -> Result<KeyView, PoolError> {
        self.find_live(key, now)
            .map(|slot| self.slot(slot).view())
            .ok_or(PoolError::KeyNotFound)
    }

    /// Purges the key for good. O(log n).
    pub fn delete(&mut self, key: &str, now: Timestamp) -> Result<(), PoolError> {
        let slot = self.find_live(key, now).ok_or(PoolError::KeyNotFound)?;
        self.remove_slot(slot);
        Ok(())
    }

    /// Most due entries one request expires on its way; the reaper takes
    /// the rest in bounded steps, so a burst of deadlines (10,000 keys made
    /// by one `generate`) never lands on a single request.
    pub const LAZY_STEP: usize = 256;

    /// Ends every lease and purges every key whose deadline is at or before
    /// `now`. O(m log n) for the m due entries; nothing else is visited.
    pub fn expire(&mut self, now: Timestamp) -> Expired {
        self.expire_some(now, usize::MAX)
    }

    /// The expiry a request applies before it acts: at most
    /// [`Pool::LAZY_STEP`] due entries. Operations on one key also settle
    /// that key's own deadlines exactly, so what a client sees of a key is
    /// never stale. O(LAZY_STEP log n).
    pub fn expire_lazily(&mut self, now: Timestamp) -> Expired {
        self.expire_some(now, Self::LAZY_STEP)
    }

    /// Like [`Pool::expire`] but stops after `limit` entries, so a caller
    /// holding a lock can bound each pass. O(min(m, limit) log n).
    pub fn expire_some(&mut self, now: Timestamp, limit: usize) -> Expired {
        let mut done = Expired::default();
        while ((done.keys + done.leases) as usize) < limit {
            // The popped entry is already gone from its index; removing it
            // again below is a no-op.
            if let Some((_, slot)) = self.alive.pop_due(now) {
                self.remove_slot(slot);
                done.keys += 1;
            } else if let Some((_, slot)) = self.leases.pop_due(now) {
                self.end_lease(slot);
                self.lease_change(slot);
                done.leases += 1;
            } else {
                break;
            }
        }
        self.expired.add(done);
        done
    }

    /// The earliest pending deadline, so a reaper knows when to look again.
    /// O(log n).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        match (self.alive.next(), self.leases.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the changes recorded since the last call. O(changes).
    pub fn drain_changes(&mut self) -> Vec<KeyChange> {
        std::mem::take(&mut self.changes)
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hash(key), |&id| {
                slots[id as usize].as_ref().is_some_and(|s| &*s.key == key)
            })
            .copied()
    }

    /// The key's slot after due expiry of the pool (bounded) and of the
    /// key itself (exact); `None` if it does not exist or was just purged.
    fn find_live(&mut self, key: &str, now: Timestamp) -> Option<u32> {
        self.expire_lazily(now);
        let slot = self.find(key)?;
        self.settle(slot, now).map(|()| slot)
    }

    /// Applies the slot's own due deadlines: purges it (`None`) or ends its
    /// lease. O(log n).
    fn settle(&mut self, slot: u32, now: Timestamp) -> Option<()> {
        let s = self.slot(slot);
        if s.alive_until <= now {
            self.remove_slot(slot);
            self.expired.keys += 1;
            return None;
        }
        if s.lease_id != 0 && s.leased_until <= now {
            self.end_lease(slot);
            self.lease_change(slot);
            self.expired.leases += 1;
        }
        Some(())
    }

    fn slot(&self, slot: u32) -> &Slot {
        self.slots[slot as usize]
            .as_ref()
            .expect("indexed slots are occupied")
    }

    fn slot_mut(&mut self, slot: u32) -> &mut Slot {
        self.slots[slot as usize]
            .as_mut()
            .expect("indexed slots are occupied")
    }

    fn put_change(&mut self, slot: u32) -> KeyView {
        self.record_change(slot, KeyChange::Put)
    }

    fn lease_change(&mut self, slot: u32) -> KeyView {
        self.record_change(slot, KeyChange::Lease)
    }

    fn record_change(&mut self, slot: u32, change: fn(KeyView) -> KeyChange) -> KeyView {
        let view = self.slot(slot).view();
        if self.record {
            self.changes.push(change(view.clone()));
        }
        view
    }

    /// Adds a free key. Amortised O(log n).
    fn insert_slot(
        &mut self,
        key: CompactString,
        created_at: Timestamp,
        alive_until: Timestamp,
    ) -> Result<u32, PoolError> {
        let slot = match self.vacant.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&id| id != VACANT)
                    .ok_or(PoolError::Full)?;
                self.slots.push(None);
                id
            }
        };
        let hash = self.hash(&key);
        self.slots[slot as usize] = Some(Slot {
            key,
            created_at,
            alive_until,
            lease_id: 0,
            leased_until: Timestamp::default(),
            free_pos: self.free.len() as u32,
        });
        self.free.push(slot);
        let slots = &self.slots;
        self.index.insert_unique(hash, slot, |&id| {
            self.hasher.hash_one(
                &slots[id as usize]
                    .as_ref()
                    .expect("indexed slots are occupied")
                    .key,
            )
        });
        self.alive.insert(alive_until, slot);
        self.put_change(slot);
        Ok(slot)
    }

    /// Removes a key and every index entry pointing at it. O(log n).
    fn remove_slot(&mut self, slot: u32) {
        let (alive_until, lease_id, leased_until) = {
            let s = self.slot(slot);
            (s.alive_until, s.lease_id, s.leased_until)
        };
        if lease_id == 0 {
            self.take_free(slot);
        } else {
            self.leases.remove(leased_until, slot);
        }
        self.alive.remove(alive_until, slot);
        let hash = self.hash(&self.slot(slot).key);
        if let Ok(entry) = self.index.find_entry(hash, |&id| id == slot) {
            entry.remove();
        }
        let gone = self.slots[slot as usize]
            .take()
            .expect("indexed slots are occupied");
        self.vacant.push(slot);
        if self.record {
            self.changes.push(KeyChange::Remove(gone.key.into()));
        }
    }

    /// Swap-removes a free slot from the free vector. O(1).
    fn take_free(&mut self, slot: u32) {
        let pos = self.slot(slot).free_pos as usize;
        self.free.swap_remove(pos);
        if let Some(&moved) = self.free.get(pos) {
            self.slot_mut(moved).free_pos = pos as u32;
        }
        self.slot_mut(slot).free_pos = VACANT;
    }

    /// Returns a leased slot to the free vector. O(log n).
    fn end_lease(&mut self, slot: u32) {
        let until = self.slot(slot).leased_until;
        self.leases.remove(until, slot);
        let pos = self.free.len() as u32;
        self.free.push(slot);
        let s = self.slot_mut(slot);
        s.lease_id = 0;
        s.leased_until = Timestamp::default();
        s.free_pos = pos;
    }
}

/// Uniform characters of `A-Za-z0-9` from the OS CSPRNG, fetched in blocks
/// to spare system calls, by rejection sampling (no modulo bias).
struct RandomChars {
    buf: [u8; 256],
    pos: usize,
}

impl Default for RandomChars {
    fn default() -> Self {
        Self {
            buf: [0; 256],
            pos: 256,
        }
    }
}

impl RandomChars {
    fn next(&mut self) -> char {
        loop {
            if self.pos >= self.buf.len() {
                rand::rngs::SysRng
                    .try_fill_bytes(&mut self.buf)
                    .expect("the OS random source does not fail on supported systems");
                self.pos = 0;
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            // 248 = 4 * 62: accepting only bytes below it keeps every
            // character equally likely.
            if b < 248 {
                return KEY_CHARS[usize::from(b % 62)] as char;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use proptest::prelude::*;
    use proptest::sample::Index;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const LEASE_MS: u64 = 50;
    const KEEPALIVE_MS: u64 = 120;
    /// An arbitrary start, far from 0 so `now - x` never underflows.
    const T0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn ttl(ms: u64) -> Ttl {
        Ttl::from_millis(ms).expect("test TTLs are positive")
    }

    fn settings(lease_ms: u64, keepalive_ms: u64) -> PoolSettings {
        PoolSettings {
            lease_ttl: ttl(lease_ms),
            keepalive_ttl: ttl(keepalive_ms),
            key_length: KeyLength::DEFAULT,
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// A pool with the test TTLs holding `n` keys generated at `T0`.
    fn pool_with(n: usize, record: bool) -> (Pool, Vec<String>) {
        let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), record);
        let keys = pool.generate(n, at(T0)).unwrap();
        (pool, keys.into_iter().map(|v| v.key).collect())
    }

    fn stats(total: u64, free: u64, leased: u64) -> PoolStats {
        PoolStats {
            total,
            free,
            leased,
        }
    }

    /// Every live key among `keys`, as `get` shows it at `now`.
    fn live_views(pool: &mut Pool, keys: &[String], now: Timestamp) -> BTreeMap<String, KeyView> {
        keys.iter()
            .filter_map(|k| pool.get(k, now).ok())
            .map(|v| (v.key.clone(), v))
            .collect()
    }

    fn replay(map: &mut BTreeMap<String, KeyView>, changes: Vec<KeyChange>) {
        for change in changes {
            match change {
                KeyChange::Put(view) | KeyChange::Lease(view) => {
                    map.insert(view.key.clone(), view);
                }
                KeyChange::Remove(key) => {
                    assert!(map.remove(&key).is_some(), "{key} removed but never put");
                }
            }
        }
    }

    #[test]
    fn generate_gives_distinct_keys_of_the_configured_length_from_a_z_a_z_0_9() {
        let mut chars_seen = HashSet::new();
        for (length, count) in [(8, 2000), (20, 500), (128, 50)] {
            let mut s = settings(LEASE_MS, KEEPALIVE_MS);
            s.key_length = KeyLength::new(length as u64).unwrap();
            let mut pool = Pool::new(s, false);
            let keys = pool.generate(count, at(T0)).unwrap();
            assert_eq!(keys.len(), count);
            let distinct: HashSet<&str> = keys.iter().map(|v| v.key.as_str()).collect();
            assert_eq!(distinct.len(), count);
            for view in &keys {
                assert_eq!(view.key.len(), length, "{}", view.key);
                assert!(view.key.bytes().all(|b| b.is_ascii_alphanumeric()));
                chars_seen.extend(view.key.bytes());
                assert_eq!(view.created_at, at(T0));
                assert_eq!(view.alive_until, at(T0 + KEEPALIVE_MS));
                assert_eq!(view.lease, None);
                assert_eq!(pool.get(&view.key, at(T0)).as_ref(), Ok(view));
            }
            let n = count as u64;
            assert_eq!(pool.stats(), stats(n, n, 0));
        }
        assert_eq!(
            chars_seen.len(),
            62,
            "every character of A-Za-z0-9 shows up"
        );
        assert_eq!(KeyLength::DEFAULT.get(), 20);
        assert_eq!(KeyLength::new(7), None);
        assert_eq!(KeyLength::new(129), None);
        assert_eq!(KeyLength::new(8).map(KeyLength::get), Some(8));
        assert_eq!(KeyLength::new(128).map(KeyLength::get), Some(128));
    }

    #[test]
    fn a_slot_with_a_default_key_fits_in_64_bytes_with_no_heap_block() {
        assert!(std::mem::size_of::<Option<Slot>>() <= 64);
        let (pool, _) = pool_with(1, false);
        let slot = pool.slots[0].as_ref().unwrap();
        assert!(!slot.key.is_heap_allocated());
    }

    #[test]
    fn a_burst_of_due_keys_costs_one_request_at_most_a_lazy_step() {
        let n = 4 * Pool::LAZY_STEP;
        let (mut pool, keys) = pool_with(n, false);
        let mut rng = rng();
        let later = at(T0 + KEEPALIVE_MS);
        // The touched key is settled exactly, the rest only in part.
        assert_eq!(pool.get(&keys[0], later), Err(PoolError::KeyNotFound));
        let left = pool.stats().total;
        assert!(left >= (n - Pool::LAZY_STEP - 1) as u64, "{left}");
        assert!(left < n as u64);
        // Every due key is gone to every operation, whether popped or not.
        for key in &keys[1..] {
            assert_eq!(pool.get(key, later), Err(PoolError::KeyNotFound));
        }
        let (mut pool, keys) = pool_with(n, false);
        assert_eq!(pool.lease(later, &mut rng), Err(PoolError::NoFreeKey));
        assert_eq!(
            pool.release(&keys[1], None, later),
            Err(PoolError::KeyNotFound)
        );
        assert_eq!(
            pool.keepalive(&keys[2], None, later),
            Err(PoolError::KeyNotFound)
        );
        assert_eq!(pool.delete(&keys[3], later), Err(PoolError::KeyNotFound));
        pool.expire(later);
        assert_eq!(pool.stats(), stats(0, 0, 0));
        assert_eq!(pool.expired_total().keys, n as u64);
    }

    #[test]
    fn lease_skips_due_keys_and_takes_a_live_one_among_them() {
        let (mut pool, _) = pool_with(40 * Pool::LAZY_STEP, false);
        let fresh = pool.generate(1, at(T0 + 10)).unwrap().remove(0);
        let mut rng = rng();
        let later = at(T0 + KEEPALIVE_MS);
        let view = pool.lease(later, &mut rng).unwrap();
        assert_eq!(view.key, fresh.key);
        assert_eq!(pool.lease(later, &mut rng), Err(PoolError::NoFreeKey));
    }

    #[test]
    fn with_no_free_key_lease_takes_a_due_lease_behind_a_burst_of_due_keys() {
        let (mut pool, _) = pool_with(1, false);
        let mut rng = rng();
        let first = pool.lease(at(T0), &mut rng).unwrap();
        // Keys that fall due before the lease and stay leased, ahead of it
        // in the expiry order.
        pool.set_settings(settings(10 * LEASE_MS, LEASE_MS));
        pool.generate(2 * Pool::LAZY_STEP, at(T0)).unwrap();
        for _ in 0..2 * Pool::LAZY_STEP {
            pool.lease(at(T0), &mut rng).unwrap();
        }
        let later = at(T0 + LEASE_MS);
        let again = pool.lease(later, &mut rng).unwrap();
        assert_eq!(again.key, first.key);
        assert!(again.lease.unwrap().id > first.lease.unwrap().id);
    }

    #[test]
    fn a_due_lease_of_the_touched_key_ends_even_when_others_are_due_first() {
        let (mut pool, keys) = pool_with(2 * Pool::LAZY_STEP, false);
        let mut rng = rng();
        let mut leased = Vec::new();
        for _ in 0..keys.len() {
            leased.push(pool.lease(at(T0), &mut rng).unwrap());
        }
        let last = leased.last().unwrap();
        let view = pool.get(&last.key, at(T0 + LEASE_MS)).unwrap();
        assert_eq!(view.lease, None);
        assert_eq!(
            pool.release(&last.key, Some(last.lease.unwrap().id), at(T0 + LEASE_MS)),
            Err(PoolError::NotLeased)
        );
    }

    #[test]
    fn generate_refuses_an_impossible_count_instead_of_panicking() {
        let (mut pool, _) = pool_with(1, false);
        assert_eq!(pool.generate(usize::MAX, at(T0)), Err(PoolError::Full));
        assert_eq!(pool.stats(), stats(1, 1, 0));
    }

    #[test]
    fn lease_hands_out_every_free_key_once_then_no_free_key() {
        let (mut pool, keys) = pool_with(5, false);
        let mut rng = rng();
        let mut leased = HashSet::new();
        for i in 0..5u64 {
            let view = pool.lease(at(T0 + i), &mut rng).unwrap();
            assert!(keys.contains(&view.key));
            assert!(leased.insert(view.key.clone()), "{} leased twice", view.key);
            assert_eq!(
                view.lease,
                Some(Lease {
                    id: i + 1,
                    until: at(T0 + i + LEASE_MS)
                })
            );
            // Leasing does not extend the key's life.
            assert_eq!(view.alive_until, at(T0 + KEEPALIVE_MS));
            assert_eq!(pool.stats(), stats(5, 4 - i, i + 1));
        }
        assert_eq!(pool.lease(at(T0 + 5), &mut rng), Err(PoolError::NoFreeKey));
        assert_eq!(pool.last_lease_id(), 5);

        let mut empty = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), false);
        assert_eq!(empty.lease(at(T0), &mut rng), Err(PoolError::NoFreeKey));
        assert_eq!(empty.last_lease_id(), 0);
    }

    #[test]
    fn lease_picks_free_keys_uniformly() {
        let (mut pool, keys) = pool_with(10, false);
        let mut rng = rng();
        let mut counts: HashMap<String, u32> = HashMap::new();
        for _ in 0..20_000 {
            let view = pool.lease(at(T0), &mut rng).unwrap();
            *counts.entry(view.key.clone()).or_default() += 1;
            pool.release(&view.key, None, at(T0)).unwrap();
        }
        assert_eq!(counts.len(), keys.len());
        // Expected 2000 each, sd ~42: 10 sd either way is a broken sampler.
        for (key, n) in counts {
            assert!((1580..=2420).contains(&n), "{key} leased {n} times");
        }
    }

    #[test]
    fn release_with_the_current_lease_id_or_without_one_frees_the_key() {
        let (mut pool, _) = pool_with(2, false);
        let mut rng = rng();
        for lease_id in [None, Some(())] {
            let view = pool.lease(at(T0 + 1), &mut rng).unwrap();
            let id = lease_id.map(|()| view.lease.unwrap().id);
            let released = pool.release(&view.key, id, at(T0 + 2)).unwrap();
            assert_eq!(released.lease, None);
            assert_eq!(released.created_at, view.created_at);
            // Releasing does not extend the key's life either.
            assert_eq!(released.alive_until, view.alive_until);
            assert_eq!(pool.get(&view.key, at(T0 + 2)), Ok(released));
            assert_eq!(pool.stats(), stats(2, 2, 0));
        }
    }

    #[test]
    fn release_of_a_free_key_is_not_leased() {
        let (mut pool, keys) = pool_with(1, false);
        assert_eq!(
            pool.release(&keys[0], None, at(T0)),
            Err(PoolError::NotLeased)
        );
        assert_eq!(
            pool.release(&keys[0], Some(1), at(T0)),
            Err(PoolError::NotLeased)
        );
        assert_eq!(pool.stats(), stats(1, 1, 0));
    }

    #[test]
    fn release_with_another_lease_id_is_lease_mismatch_and_keeps_the_lease() {
        let (mut pool, _) = pool_with(1, false);
        let view = pool.lease(at(T0), &mut rng()).unwrap();
        let id = view.lease.unwrap().id;
        for wrong in [0, id - 1, id + 1, u64::MAX] {
            assert_eq!(
                pool.release(&view.key, Some(wrong), at(T0 + 1)),
                Err(PoolError::LeaseMismatch)
            );
        }
        assert_eq!(pool.get(&view.key, at(T0 + 1)), Ok(view));
        assert_eq!(pool.stats(), stats(1, 0, 1));
    }

    #[test]
    fn lease_ids_strictly_grow_and_an_expired_lease_id_is_refused_after_re_lease() {
        let (mut pool, keys) = pool_with(1, false);
        let mut rng = rng();
        let mut now = T0;
        let mut last = 0;
        for _ in 0..3 {
            let view = pool.lease(at(now), &mut rng).unwrap();
            let id = view.lease.unwrap().id;
            assert!(id > last, "lease id {id} after {last}");
            last = id;
            pool.release(&keys[0], Some(id), at(now)).unwrap();
        }

        let first = pool.lease(at(now), &mut rng).unwrap().lease.unwrap();
        now += LEASE_MS;
        let second = pool.lease(at(now), &mut rng).unwrap().lease.unwrap();
        assert!(second.id > first.id);
        assert_eq!(
            pool.release(&keys[0], Some(first.id), at(now)),
            Err(PoolError::LeaseMismatch)
        );
        assert_eq!(
            pool.keepalive(&keys[0], Some(first.id), at(now)),
            Err(PoolError::LeaseMismatch)
        );
        assert_eq!(pool.get(&keys[0], at(now)).unwrap().lease, Some(second));
        assert!(pool.release(&keys[0], Some(second.id), at(now)).is_ok());
    }

    #[test]
    fn keepalive_with_the_current_lease_id_extends_the_lease_and_the_life() {
        let (mut pool, keys) = pool_with(1, false);
        let leased = pool.lease(at(T0), &mut rng()).unwrap();
        let id = leased.lease.unwrap().id;
        let now = T0 + 30;
        let kept = pool.keepalive(&keys[0], Some(id), at(now)).unwrap();
        assert_eq!(
            kept.lease,
            Some(Lease {
                id,
                until: at(now + LEASE_MS)
            })
        );
        assert_eq!(kept.alive_until, at(now + KEEPALIVE_MS));
        assert_eq!(kept.created_at, at(T0));
        // The old lease deadline no longer applies...
        let after_old_deadline = at(T0 + LEASE_MS);
        assert_eq!(pool.get(&keys[0], after_old_deadline), Ok(kept.clone()));
        // ...the new one does.
        let freed = pool.get(&keys[0], at(now + LEASE_MS)).unwrap();
        assert_eq!(freed.lease, None);
        assert_eq!(freed.alive_until, at(now + KEEPALIVE_MS));
    }

    #[test]
    fn keepalive_without_a_lease_id_extends_only_the_life() {
        let (mut pool, keys) = pool_with(1, false);
        let leased = pool.lease(at(T0), &mut rng()).unwrap();
        let kept = pool.keepalive(&keys[0], None, at(T0 + 30)).unwrap();
        assert_eq!(kept.lease, leased.lease);
        assert_eq!(kept.alive_until, at(T0 + 30 + KEEPALIVE_MS));

        let (mut pool, keys) = pool_with(1, false);
        let kept = pool.keepalive(&keys[0], None, at(T0 + 100)).unwrap();
        assert_eq!(kept.lease, None);
        assert_eq!(kept.alive_until, at(T0 + 100 + KEEPALIVE_MS));
        // Alive past the first deadline, gone at the second.
        assert!(pool.get(&keys[0], at(T0 + KEEPALIVE_MS)).is_ok());
        assert_eq!(
            pool.get(&keys[0], at(T0 + 100 + KEEPALIVE_MS)),
            Err(PoolError::KeyNotFound)
        );
    }

    #[test]
    fn keepalive_with_a_wrong_lease_id_changes_nothing() {
        let (mut pool, keys) = pool_with(2, false);
        let leased = pool.lease(at(T0), &mut rng()).unwrap();
        let id = leased.lease.unwrap().id;
        let free_key = keys.iter().find(|k| **k != leased.key).unwrap();
        let free = pool.get(free_key, at(T0)).unwrap();

        for wrong in [0, id + 1, u64::MAX] {
            assert_eq!(
                pool.keepalive(&leased.key, Some(wrong), at(T0 + 40)),
                Err(PoolError::LeaseMismatch)
            );
            assert_eq!(
                pool.keepalive(free_key, Some(wrong), at(T0 + 40)),
                Err(PoolError::LeaseMismatch)
            );
        }
        assert_eq!(
            pool.keepalive(free_key, Some(id), at(T0 + 40)),
            Err(PoolError::LeaseMismatch)
        );
        assert_eq!(pool.get(&leased.key, at(T0 + 40)), Ok(leased.clone()));
        assert_eq!(pool.get(free_key, at(T0 + 40)), Ok(free));
        // The deadlines did not move either.
        assert_eq!(pool.next_deadline(), Some(at(T0 + LEASE_MS)));
        assert_eq!(
            pool.expire(at(T0 + KEEPALIVE_MS)),
            Expired { leases: 0, keys: 2 }
        );
    }

    #[test]
    fn a_deleted_key_is_not_found_everywhere() {
        let (mut pool, keys) = pool_with(2, false);
        let mut rng = rng();
        let leased = pool.lease(at(T0), &mut rng).unwrap();
        let id = leased.lease.unwrap().id;
        for key in &keys {
            pool.delete(key, at(T0 + 1)).unwrap();
        }
        assert_eq!(pool.stats(), stats(0, 0, 0));
        assert_eq!(pool.next_deadline(), None);
        for key in &keys {
            let now = at(T0 + 2);
            assert_eq!(pool.get(key, now), Err(PoolError::KeyNotFound));
            assert_eq!(pool.delete(key, now), Err(PoolError::KeyNotFound));
            assert_eq!(pool.release(key, None, now), Err(PoolError::KeyNotFound));
            assert_eq!(
                pool.release(key, Some(id), now),
                Err(PoolError::KeyNotFound)
            );
            assert_eq!(pool.keepalive(key, None, now), Err(PoolError::KeyNotFound));
            assert_eq!(
                pool.keepalive(key, Some(id), now),
                Err(PoolError::KeyNotFound)
            );
        }
        assert_eq!(pool.lease(at(T0 + 2), &mut rng), Err(PoolError::NoFreeKey));
        assert_eq!(pool.expire(at(T0 + 10 * KEEPALIVE_MS)), Expired::default());
    }

    #[test]
    fn a_lease_expires_exactly_at_lease_ttl_and_returns_the_key_to_the_free_set() {
        let (mut pool, keys) = pool_with(1, false);
        let mut rng = rng();
        let leased = pool.lease(at(T0 + 10), &mut rng).unwrap();
        assert_eq!(pool.next_deadline(), Some(at(T0 + 10 + LEASE_MS)));
        let just_before = at(T0 + 10 + LEASE_MS - 1);
        assert_eq!(pool.get(&keys[0], just_before), Ok(leased.clone()));
        assert_eq!(pool.lease(just_before, &mut rng), Err(PoolError::NoFreeKey));

        let deadline = at(T0 + 10 + LEASE_MS);
        assert_eq!(pool.expire(deadline), Expired { leases: 1, keys: 0 });
        assert_eq!(pool.stats(), stats(1, 1, 0));
        let freed = pool.get(&keys[0], deadline).unwrap();
        assert_eq!(freed.lease, None);
        assert_eq!(freed.alive_until, leased.alive_until);
        assert_eq!(
            pool.release(&keys[0], None, deadline),
            Err(PoolError::NotLeased)
        );
        assert_eq!(pool.next_deadline(), Some(leased.alive_until));

        // Lazily too: the next lease at the deadline finds the key free.
        let (mut pool, keys) = pool_with(1, false);
        pool.lease(at(T0), &mut rng).unwrap();
        let again = pool.lease(at(T0 + LEASE_MS), &mut rng).unwrap();
        assert_eq!(again.key, keys[0]);
        assert_eq!(again.lease.unwrap().until, at(T0 + 2 * LEASE_MS));
    }

    #[test]
    fn a_key_without_keepalive_is_purged_at_keepalive_ttl_even_when_leased() {
        let (mut pool, keys) = pool_with(3, true);
        let mut rng = rng();
        let now = T0 + KEEPALIVE_MS - 5;
        // Keep one key's lease going past the key's life.
        let leased = pool.lease(at(T0 + 70), &mut rng).unwrap();
        let id = leased.lease.unwrap().id;
        pool.keepalive(&leased.key, Some(id), at(now)).unwrap();
        let survivor = keys.iter().find(|k| **k != leased.key).unwrap();
        pool.keepalive(survivor, None, at(now)).unwrap();
        pool.drain_changes();

        let just_before = at(now + KEEPALIVE_MS - 1);
        assert_eq!(pool.expire(at(T0 + KEEPALIVE_MS - 1)), Expired::default());
        assert_eq!(
            pool.expire(at(T0 + KEEPALIVE_MS)),
            Expired { leases: 0, keys: 1 }
        );
        assert_eq!(pool.stats(), stats(2, 1, 1));
        assert_eq!(pool.expire(just_before), Expired { leases: 1, keys: 0 });
        assert_eq!(
            pool.expire(at(now + KEEPALIVE_MS)),
            Expired { leases: 0, keys: 2 }
        );
        assert_eq!(pool.stats(), stats(0, 0, 0));
        assert_eq!(pool.next_deadline(), None);
        for key in &keys {
            assert_eq!(
                pool.get(key, at(now + KEEPALIVE_MS)),
                Err(PoolError::KeyNotFound)
            );
        }
        let removed: HashSet<String> = pool
            .drain_changes()
            .into_iter()
            .filter_map(|c| match c {
                KeyChange::Remove(k) => Some(k),
                KeyChange::Put(_) | KeyChange::Lease(_) => None,
            })
            .collect();
        assert_eq!(removed, keys.iter().cloned().collect());

        // A leased key whose life ends before its lease is purged as a key;
        // its lease is not counted as expired.
        let mut pool = Pool::new(settings(1_000, 100), false);
        pool.generate(1, at(T0)).unwrap();
        let leased = pool.lease(at(T0), &mut rng).unwrap();
        assert_eq!(pool.expire(at(T0 + 5_000)), Expired { leases: 0, keys: 1 });
        assert_eq!(
            pool.get(&leased.key, at(T0 + 5_000)),
            Err(PoolError::KeyNotFound)
        );
    }

    #[test]
    fn expire_some_respects_its_limit() {
        let (mut pool, _) = pool_with(10, false);
        let mut rng = rng();
        for _ in 0..4 {
            pool.lease(at(T0), &mut rng).unwrap();
        }
        let late = at(T0 + LEASE_MS);
        assert_eq!(pool.expire_some(late, 0), Expired::default());
        assert_eq!(pool.expire_some(late, 3), Expired { leases: 3, keys: 0 });
        assert_eq!(pool.stats(), stats(10, 9, 1));
        assert_eq!(pool.expire_some(late, 3), Expired { leases: 1, keys: 0 });
        assert_eq!(pool.expire_some(late, 3), Expired::default());

        let later = at(T0 + KEEPALIVE_MS);
        let mut total = Expired::default();
        for expected_total in [7, 4, 1, 0] {
            let step = pool.expire_some(later, 3);
            assert!(step.keys + step.leases <= 3);
            total.add(step);
            assert_eq!(pool.stats().total, expected_total);
        }
        assert_eq!(
            total,
            Expired {
                leases: 0,
                keys: 10
            }
        );
    }

    #[test]
    fn a_settings_change_applies_only_to_new_deadlines() {
        let (mut pool, keys) = pool_with(2, false);
        let mut rng = rng();
        let old_lease = pool.lease(at(T0), &mut rng).unwrap();
        let new_settings = PoolSettings {
            lease_ttl: ttl(500),
            keepalive_ttl: ttl(1_000),
            key_length: KeyLength::new(8).unwrap(),
        };
        pool.set_settings(new_settings);
        assert_eq!(pool.settings(), new_settings);
        // Old deadlines stand.
        assert_eq!(pool.get(&old_lease.key, at(T0)), Ok(old_lease.clone()));
        let freed = pool.get(&old_lease.key, at(T0 + LEASE_MS)).unwrap();
        assert_eq!(freed.lease, None);
        assert_eq!(freed.alive_until, at(T0 + KEEPALIVE_MS));
        // New deadlines follow the new settings.
        let new_lease = pool.lease(at(T0 + 60), &mut rng).unwrap();
        assert_eq!(new_lease.lease.unwrap().until, at(T0 + 60 + 500));
        let kept = pool.keepalive(&keys[0], None, at(T0 + 60)).unwrap();
        assert_eq!(kept.alive_until, at(T0 + 60 + 1_000));
        let fresh = pool.generate(1, at(T0 + 60)).unwrap();
        assert_eq!(fresh[0].key.len(), 8);
        assert_eq!(fresh[0].alive_until, at(T0 + 60 + 1_000));
        // Keys made before the change keep their length.
        assert!(keys.iter().all(|k| k.len() == 20));
    }

    #[test]
    fn stats_always_add_up() {
        let (mut pool, keys) = pool_with(6, false);
        let mut rng = rng();
        let check = |pool: &Pool| {
            let s = pool.stats();
            assert_eq!(s.total, s.free + s.leased, "{s:?}");
        };
        check(&pool);
        let a = pool.lease(at(T0), &mut rng).unwrap();
        let b = pool.lease(at(T0), &mut rng).unwrap();
        check(&pool);
        assert_eq!(pool.stats(), stats(6, 4, 2));
        pool.release(&a.key, None, at(T0 + 1)).unwrap();
        assert_eq!(pool.stats(), stats(6, 5, 1));
        pool.delete(&b.key, at(T0 + 1)).unwrap();
        assert_eq!(pool.stats(), stats(5, 5, 0));
        let free = keys.iter().find(|k| **k != b.key).unwrap();
        pool.delete(free, at(T0 + 1)).unwrap();
        assert_eq!(pool.stats(), stats(4, 4, 0));
        pool.lease(at(T0 + 2), &mut rng).unwrap();
        pool.generate(3, at(T0 + 2)).unwrap();
        assert_eq!(pool.stats(), stats(7, 6, 1));
        pool.expire(at(T0 + KEEPALIVE_MS));
        assert_eq!(pool.stats(), stats(3, 3, 0));
        check(&pool);
    }

    #[test]
    fn restore_rebuilds_an_equal_pool() {
        let (mut pool, mut keys) = pool_with(8, false);
        let mut rng = rng();
        let a = pool.lease(at(T0), &mut rng).unwrap();
        let b = pool.lease(at(T0 + 10), &mut rng).unwrap();
        pool.release(&a.key, None, at(T0 + 11)).unwrap();
        let c = pool.lease(at(T0 + 12), &mut rng).unwrap();
        pool.keepalive(&c.key, c.lease.map(|l| l.id), at(T0 + 20))
            .unwrap();
        pool.keepalive(&keys[0], None, at(T0 + 30)).unwrap();
        pool.delete(&b.key, at(T0 + 31)).unwrap();
        keys.extend(
            pool.generate(2, at(T0 + 40))
                .unwrap()
                .into_iter()
                .map(|v| v.key),
        );

        let now = at(T0 + 40);
        let views = live_views(&mut pool, &keys, now);
        assert_eq!(views.len(), 9);
        let mut restored = Pool::restore(
            pool.settings(),
            pool.last_lease_id(),
            views.into_values(),
            true,
        );
        assert_eq!(restored.drain_changes(), []);
        assert_eq!(restored.settings(), pool.settings());
        assert_eq!(restored.stats(), pool.stats());
        assert_eq!(restored.last_lease_id(), pool.last_lease_id());
        assert_eq!(restored.next_deadline(), pool.next_deadline());
        // Both expire the same way from here on.
        for later in [
            40,
            LEASE_MS + 12,
            LEASE_MS + 20,
            KEEPALIVE_MS,
            KEEPALIVE_MS + 20,
            200,
        ] {
            let now = at(T0 + later);
            assert_eq!(restored.expire(now), pool.expire(now), "at +{later}");
            assert_eq!(
                live_views(&mut restored, &keys, now),
                live_views(&mut pool, &keys, now),
                "at +{later}"
            );
            assert_eq!(restored.stats(), pool.stats());
            assert_eq!(restored.next_deadline(), pool.next_deadline());
        }
    }

    #[test]
    fn restore_raises_the_last_lease_id_to_the_highest_one_seen() {
        let view = KeyView {
            key: "restoredkey0000000001".to_owned(),
            created_at: at(T0),
            alive_until: at(T0 + KEEPALIVE_MS),
            lease: Some(Lease {
                id: 41,
                until: at(T0 + LEASE_MS),
            }),
        };
        let pool = Pool::restore(settings(LEASE_MS, KEEPALIVE_MS), 7, [view.clone()], false);
        assert_eq!(pool.last_lease_id(), 41);
        let mut pool = Pool::restore(settings(LEASE_MS, KEEPALIVE_MS), 99, [view.clone()], false);
        assert_eq!(pool.last_lease_id(), 99);
        assert_eq!(pool.stats(), stats(1, 0, 1));
        assert_eq!(pool.get(&view.key, at(T0)), Ok(view.clone()));
        // A lease that fell due while down ends on the next call with `now`.
        assert_eq!(
            pool.expire(at(T0 + LEASE_MS)),
            Expired { leases: 1, keys: 0 }
        );
        let next = pool.lease(at(T0 + LEASE_MS), &mut rng()).unwrap();
        assert_eq!(next.lease.unwrap().id, 100);
    }

    #[test]
    fn restore_keeps_the_last_record_of_a_duplicate_key() {
        let older = KeyView {
            key: "duplicatekey000000001".to_owned(),
            created_at: at(T0),
            alive_until: at(T0 + KEEPALIVE_MS),
            lease: None,
        };
        let newer = KeyView {
            alive_until: at(T0 + 10 + KEEPALIVE_MS),
            lease: Some(Lease {
                id: 3,
                until: at(T0 + 10 + LEASE_MS),
            }),
            ..older.clone()
        };
        let mut pool = Pool::restore(
            settings(LEASE_MS, KEEPALIVE_MS),
            3,
            [older, newer.clone()],
            false,
        );
        assert_eq!(pool.stats(), stats(1, 0, 1));
        assert_eq!(pool.get(&newer.key, at(T0 + 10)), Ok(newer));
    }

    /// Replays the pool's recorded changes into `map` and checks it
    /// against the live keys.
    fn check(pool: &mut Pool, map: &mut BTreeMap<String, KeyView>, keys: &[String], now: u64) {
        replay(map, pool.drain_changes());
        assert_eq!(*map, live_views(pool, keys, at(now)), "at {now}");
        // `get` records nothing.
        assert_eq!(pool.drain_changes(), []);
    }

    #[test]
    fn recorded_changes_replayed_into_a_map_equal_the_live_keys() {
        let (mut pool, mut keys) = pool_with(6, true);
        let mut rng = rng();
        let mut map = BTreeMap::new();
        let mut now = T0;
        check(&mut pool, &mut map, &keys, now);
        let a = pool.lease(at(now), &mut rng).unwrap();
        let b = pool.lease(at(now), &mut rng).unwrap();
        check(&mut pool, &mut map, &keys, now);
        now += 10;
        pool.release(&a.key, a.lease.map(|l| l.id), at(now))
            .unwrap();
        pool.keepalive(&b.key, b.lease.map(|l| l.id), at(now))
            .unwrap();
        check(&mut pool, &mut map, &keys, now);
        let free = keys.iter().find(|k| **k != b.key).unwrap().clone();
        pool.delete(&free, at(now)).unwrap();
        // `free` is one of the first two keys, so keys[5] is alive.
        pool.keepalive(&keys[5], None, at(now)).unwrap();
        check(&mut pool, &mut map, &keys, now);
        // Refusals record nothing.
        assert!(pool.release(&free, None, at(now)).is_err());
        assert!(pool.keepalive(&b.key, Some(0), at(now)).is_err());
        assert_eq!(pool.drain_changes(), []);
        keys.extend(
            pool.generate(2, at(now))
                .unwrap()
                .into_iter()
                .map(|v| v.key),
        );
        check(&mut pool, &mut map, &keys, now);
        // Expiry of leases and keys, lazily and by `expire`.
        now = T0 + 10 + LEASE_MS;
        pool.get(&b.key, at(now)).unwrap();
        check(&mut pool, &mut map, &keys, now);
        now = T0 + KEEPALIVE_MS;
        pool.expire(at(now));
        check(&mut pool, &mut map, &keys, now);
        now += 1_000;
        pool.expire(at(now));
        check(&mut pool, &mut map, &keys, now);
        assert!(map.is_empty());
    }

    #[test]
    fn next_deadline_is_the_earliest_lease_end_or_purge() {
        let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), false);
        assert_eq!(pool.next_deadline(), None);
        pool.generate(1, at(T0)).unwrap();
        assert_eq!(pool.next_deadline(), Some(at(T0 + KEEPALIVE_MS)));
        pool.lease(at(T0 + 5), &mut rng()).unwrap();
        assert_eq!(pool.next_deadline(), Some(at(T0 + 5 + LEASE_MS)));
        pool.set_settings(settings(10_000, KEEPALIVE_MS));
        pool.generate(1, at(T0 + 6)).unwrap();
        assert_eq!(pool.next_deadline(), Some(at(T0 + 5 + LEASE_MS)));
        pool.expire(at(T0 + 5 + LEASE_MS));
        assert_eq!(pool.next_deadline(), Some(at(T0 + KEEPALIVE_MS)));
    }

    // ---- model-based property test -------------------------------------

    /// One key as the model sees it; times in milliseconds.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct ModelKey {
        created: u64,
        alive_until: u64,
        /// `(lease id, leased until)`.
        lease: Option<(u64, u64)>,
    }

    /// The obvious implementation: a sorted map, scanned on every expiry.
    #[derive(Debug)]
    struct Model {
        keys: BTreeMap<String, ModelKey>,
        last_lease_id: u64,
        lease_ttl: u64,
        keepalive_ttl: u64,
    }

    impl Model {
        fn expire(&mut self, now: u64) -> Expired {
            let before = self.keys.len();
            self.keys.retain(|_, k| k.alive_until > now);
            let mut done = Expired {
                leases: 0,
                keys: (before - self.keys.len()) as u64,
            };
            for k in self.keys.values_mut() {
                if k.lease.is_some_and(|(_, until)| until <= now) {
                    k.lease = None;
                    done.leases += 1;
                }
            }
            done
        }

        fn view(&self, key: &str) -> Result<KeyView, PoolError> {
            let k = self.keys.get(key).ok_or(PoolError::KeyNotFound)?;
            Ok(KeyView {
                key: key.to_owned(),
                created_at: at(k.created),
                alive_until: at(k.alive_until),
                lease: k.lease.map(|(id, until)| Lease {
                    id,
                    until: at(until),
                }),
            })
        }

        fn views(&self) -> BTreeMap<String, KeyView> {
            self.keys
                .keys()
                .map(|k| (k.clone(), self.view(k).unwrap()))
                .collect()
        }

        fn stats(&self) -> PoolStats {
            let total = self.keys.len() as u64;
            let leased = self.keys.values().filter(|k| k.lease.is_some()).count() as u64;
            stats(total, total - leased, leased)
        }

        fn next_deadline(&self) -> Option<Timestamp> {
            self.keys
                .values()
                .flat_map(|k| [Some(k.alive_until), k.lease.map(|(_, until)| until)])
                .flatten()
                .min()
                .map(at)
        }

        fn lease_id(&self, key: &str, arg: &LeaseArg) -> Option<u64> {
            match arg {
                LeaseArg::Absent => None,
                LeaseArg::Current => Some(
                    self.keys
                        .get(key)
                        .and_then(|k| k.lease)
                        .map_or(self.last_lease_id, |(id, _)| id),
                ),
                LeaseArg::Older(back) => Some(self.last_lease_id.saturating_sub(*back)),
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Pick {
        /// A key the model holds now.
        Live(Index),
        /// Any key ever generated, dead or alive.
        Ever(Index),
        /// A key the pool never had.
        Unknown,
    }

    #[derive(Clone, Debug)]
    enum LeaseArg {
        Absent,
        /// The key's current lease id (the last one handed out if free).
        Current,
        /// The last lease id handed out, minus this.
        Older(u64),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Generate(usize),
        Lease,
        Release(Pick, LeaseArg),
        Keepalive(Pick, LeaseArg),
        Delete(Pick),
        Get(Pick),
        Advance(u64),
        Expire,
        ChangeTtls(u64, u64),
        Restore,
    }

    fn pick() -> impl Strategy<Value = Pick> {
        prop_oneof![
            6 => any::<Index>().prop_map(Pick::Live),
            3 => any::<Index>().prop_map(Pick::Ever),
            1 => Just(Pick::Unknown),
        ]
    }

    fn lease_arg() -> impl Strategy<Value = LeaseArg> {
        prop_oneof![
            Just(LeaseArg::Absent),
            Just(LeaseArg::Current),
            (0..3u64).prop_map(LeaseArg::Older),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..4usize).prop_map(Op::Generate),
            4 => Just(Op::Lease),
            3 => (pick(), lease_arg()).prop_map(|(p, a)| Op::Release(p, a)),
            3 => (pick(), lease_arg()).prop_map(|(p, a)| Op::Keepalive(p, a)),
            1 => pick().prop_map(Op::Delete),
            2 => pick().prop_map(Op::Get),
            4 => (0..2 * LEASE_MS).prop_map(Op::Advance),
            1 => (0..2 * KEEPALIVE_MS).prop_map(Op::Advance),
            1 => Just(Op::Expire),
            1 => (1..2 * LEASE_MS, 1..2 * KEEPALIVE_MS).prop_map(|(l, k)| Op::ChangeTtls(l, k)),
            1 => Just(Op::Restore),
        ]
    }

    fn key_of(pick: &Pick, model: &Model, ever: &[String]) -> String {
        match pick {
            Pick::Live(i) if !model.keys.is_empty() => model
                .keys
                .keys()
                .nth(i.index(model.keys.len()))
                .cloned()
                .expect("the index is in range"),
            Pick::Ever(i) if !ever.is_empty() => i.get(ever).clone(),
            _ => "neverGeneratedKey000".to_owned(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn pool_behaves_like_a_map_of_keys_under_random_operations(
            ops in prop::collection::vec(op(), 1..200),
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), true);
            let mut model = Model {
                keys: BTreeMap::new(),
                last_lease_id: 0,
                lease_ttl: LEASE_MS,
                keepalive_ttl: KEEPALIVE_MS,
            };
            let mut journal = BTreeMap::new();
            let mut ever: Vec<String> = Vec::new();
            let mut now = T0;

            for op in ops {
                match &op {
                    Op::Generate(n) => {
                        model.expire(now);
                        let views = pool.generate(*n, at(now)).unwrap();
                        prop_assert_eq!(views.len(), *n);
                        for view in views {
                            prop_assert!(!model.keys.contains_key(&view.key), "{} is not new", view.key);
                            model.keys.insert(view.key.clone(), ModelKey {
                                created: now,
                                alive_until: now + model.keepalive_ttl,
                                lease: None,
                            });
                            prop_assert_eq!(Ok(view.clone()), model.view(&view.key));
                            ever.push(view.key);
                        }
                    }
                    Op::Lease => {
                        model.expire(now);
                        match pool.lease(at(now), &mut rng) {
                            Ok(view) => {
                                let k = model.keys.get_mut(&view.key);
                                prop_assert!(k.as_ref().is_some_and(|k| k.lease.is_none()),
                                    "{} was not free: {:?}", view.key, k);
                                model.last_lease_id += 1;
                                k.expect("checked above").lease =
                                    Some((model.last_lease_id, now + model.lease_ttl));
                                prop_assert_eq!(Ok(view.clone()), model.view(&view.key));
                            }
                            Err(e) => {
                                prop_assert_eq!(e, PoolError::NoFreeKey);
                                prop_assert_eq!(model.stats().free, 0);
                            }
                        }
                    }
                    Op::Release(p, arg) => {
                        model.expire(now);
                        let key = key_of(p, &model, &ever);
                        let lease_id = model.lease_id(&key, arg);
                        let expected = match model.keys.get_mut(&key) {
                            None => Err(PoolError::KeyNotFound),
                            Some(ModelKey { lease: None, .. }) => Err(PoolError::NotLeased),
                            Some(ModelKey { lease: Some((id, _)), .. })
                                if lease_id.is_some_and(|given| given != *id) =>
                            {
                                Err(PoolError::LeaseMismatch)
                            }
                            Some(k) => {
                                k.lease = None;
                                model.view(&key)
                            }
                        };
                        prop_assert_eq!(pool.release(&key, lease_id, at(now)), expected);
                    }
                    Op::Keepalive(p, arg) => {
                        model.expire(now);
                        let key = key_of(p, &model, &ever);
                        let lease_id = model.lease_id(&key, arg);
                        let (lease_ttl, keepalive_ttl) = (model.lease_ttl, model.keepalive_ttl);
                        let expected = match model.keys.get_mut(&key) {
                            None => Err(PoolError::KeyNotFound),
                            Some(k) => match (lease_id, k.lease) {
                                (Some(given), Some((id, _))) if given == id => {
                                    k.lease = Some((id, now + lease_ttl));
                                    k.alive_until = now + keepalive_ttl;
                                    model.view(&key)
                                }
                                (Some(_), _) => Err(PoolError::LeaseMismatch),
                                (None, _) => {
                                    k.alive_until = now + keepalive_ttl;
                                    model.view(&key)
                                }
                            },
                        };
                        prop_assert_eq!(pool.keepalive(&key, lease_id, at(now)), expected);
                    }
                    Op::Delete(p) => {
                        model.expire(now);
                        let key = key_of(p, &model, &ever);
                        let expected = model.keys.remove(&key).map(|_| ()).ok_or(PoolError::KeyNotFound);
                        prop_assert_eq!(pool.delete(&key, at(now)), expected);
                    }
                    Op::Get(p) => {
                        model.expire(now);
                        let key = key_of(p, &model, &ever);
                        prop_assert_eq!(pool.get(&key, at(now)), model.view(&key));
                    }
                    Op::Advance(ms) => now += ms,
                    Op::Expire => prop_assert_eq!(pool.expire(at(now)), model.expire(now)),
                    Op::ChangeTtls(lease, keepalive) => {
                        model.lease_ttl = *lease;
                        model.keepalive_ttl = *keepalive;
                        pool.set_settings(settings(*lease, *keepalive));
                    }
                    Op::Restore => {
                        replay(&mut journal, pool.drain_changes());
                        pool = Pool::restore(
                            pool.settings(),
                            pool.last_lease_id(),
                            journal.values().cloned(),
                            true,
                        );
                    }
                }
                replay(&mut journal, pool.drain_changes());
                prop_assert_eq!(&journal, &model.views(), "journal after {:?}", op);
                prop_assert_eq!(pool.stats(), model.stats(), "stats after {:?}", op);
                prop_assert_eq!(pool.last_lease_id(), model.last_lease_id);
                prop_assert_eq!(pool.next_deadline(), model.next_deadline(), "after {:?}", op);
            }
        }
    }
}
