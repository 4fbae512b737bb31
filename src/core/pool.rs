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
    /// The key now looks like this (created, leased, released, extended).
    Put(KeyView),
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
    key: Box<str>,
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
            if pool.find(&view.key).is_some() {
                continue;
            }
            let Ok(slot) = pool.insert_slot(view.key.into(), view.created_at, view.alive_until)
            else {
                break;
            };
            if let Some(lease) = view.lease {
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

    /// Generates `count` new keys from the OS CSPRNG, unique among the live
    /// keys, alive for `keepalive_ttl`. O(count) (amortised O(1) each).
    pub fn generate(&mut self, count: usize, now: Timestamp) -> Result<Vec<KeyView>, PoolError> {
        self.expire(now);
        let len = self.settings.key_length.get();
        if self.stats().total as usize + count > VACANT as usize {
            return Err(PoolError::Full);
        }
        let mut keys = Vec::with_capacity(count);
        let mut random = RandomChars::default();
        let alive_until = now.after(self.settings.keepalive_ttl);
        while keys.len() < count {
            let key: String = (0..len).map(|_| random.next()).collect();
            // 62^8 or more candidates: a collision is astronomically rare,
            // and retrying keeps keys unique among the live ones.
            if self.find(&key).is_some() {
                continue;
            }
            let slot = self.insert_slot(key.into(), now, alive_until)?;
            keys.push(self.slot(slot).view());
        }
        Ok(keys)
    }

    /// Leases a uniformly random free key for `lease_ttl`. O(log n).
    pub fn lease<R: Rng + ?Sized>(
        &mut self,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<KeyView, PoolError> {
        self.expire(now);
        if self.free.is_empty() {
            return Err(PoolError::NoFreeKey);
        }
        let slot = self.free[rng.random_range(0..self.free.len())];
        self.take_free(slot);
        self.last_lease_id += 1;
        let until = now.after(self.settings.lease_ttl);
        let id = self.last_lease_id;
        let s = self.slot_mut(slot);
        s.lease_id = id;
        s.leased_until = until;
        self.leases.insert(until, slot);
        Ok(self.put_change(slot))
    }

    /// Ends the key's lease now. With `lease_id`, only if it is the current
    /// lease. O(log n).
    pub fn release(
        &mut self,
        key: &str,
        lease_id: Option<u64>,
        now: Timestamp,
    ) -> Result<KeyView, PoolError> {
        self.expire(now);
        let slot = self.find(key).ok_or(PoolError::KeyNotFound)?;
        let s = self.slot(slot);
        if s.lease_id == 0 {
            return Err(PoolError::NotLeased);
        }
        if lease_id.is_some_and(|id| id != s.lease_id) {
            return Err(PoolError::LeaseMismatch);
        }
        self.end_lease(slot);
        Ok(self.put_change(slot))
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
        self.expire(now);
        let slot = self.find(key).ok_or(PoolError::KeyNotFound)?;
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
        self.expire(now);
        self.find(key)
            .map(|slot| self.slot(slot).view())
            .ok_or(PoolError::KeyNotFound)
    }

    /// Purges the key for good. O(log n).
    pub fn delete(&mut self, key: &str, now: Timestamp) -> Result<(), PoolError> {
        self.expire(now);
        let slot = self.find(key).ok_or(PoolError::KeyNotFound)?;
        self.remove_slot(slot);
        Ok(())
    }

    /// Ends every lease and purges every key whose deadline is at or before
    /// `now`. O(m log n) for the m due entries; nothing else is visited.
    pub fn expire(&mut self, now: Timestamp) -> Expired {
        self.expire_some(now, usize::MAX)
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
                self.put_change(slot);
                done.leases += 1;
            } else {
                break;
            }
        }
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
        let view = self.slot(slot).view();
        if self.record {
            self.changes.push(KeyChange::Put(view.clone()));
        }
        view
    }

    /// Adds a free key. Amortised O(log n).
    fn insert_slot(
        &mut self,
        key: Box<str>,
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
