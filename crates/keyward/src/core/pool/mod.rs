//! A pool of API keys: generate, lease a uniformly random free key,
//! release, keep alive, delete, and expire — each in O(1) or O(log n).
//!
//! Layout (kept in step by `slots.rs`), chosen so no operation walks the
//! keys:
//! - `slots`: a slab of key entries addressed by a `u32` slot id;
//! - `index`: a hash table of slot ids, hashed by the key text, for O(1)
//!   lookup without storing the key twice;
//! - `free`: a dense vector of free slot ids; each entry knows its
//!   position, so a random pick and a removal are O(1) swap-removes;
//! - `leases` / `alive`: ordered deadline indexes, so expiry pops only the
//!   due entries (O(m log n) for m of them).
//!
//! This file holds the state machine: the public types and every
//! operation's rules (who may release, when a deadline counts, what is
//! recorded). `tests.rs` checks one behaviour per test; `model.rs` checks
//! random operation sequences against a plain sorted map.
//!
//! The pool never reads a clock: every call takes `now`. Callers that
//! persist state ask it to record [`KeyChange`]s and drain them after each
//! call.

use std::hash::RandomState;

use compact_str::CompactString;
use hashbrown::HashTable;
use rand::Rng;
use rand::RngExt;

use super::deadlines::Deadlines;
use super::keygen::{OsRandom, random_chars};
use super::time::{Timestamp, Ttl};

#[cfg(test)]
mod model;
mod slots;
#[cfg(test)]
mod tests;

use slots::{Slot, VACANT};

/// Length of generated keys, 8–128 characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyLength(u8);

impl KeyLength {
    /// The default length, 20 characters: 62^20 (about 2^119) possible
    /// keys, so a key cannot be guessed.
    pub const DEFAULT: Self = Self(20);

    /// `None` unless `8 <= n <= 128`. O(1).
    pub fn new(n: u64) -> Option<Self> {
        (8..=128).contains(&n).then_some(Self(n as u8))
    }

    /// The length in characters. O(1).
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
    /// Adds another pass's counts. O(1).
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
    /// [`Pool::drain_changes`]. O(1): nothing is allocated until keys
    /// arrive.
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
        let mut rng = OsRandom::default();
        let alive_until = now.after(self.settings.keepalive_ttl);
        while keys.len() < count {
            let key: CompactString = random_chars(&mut rng).take(len).collect();
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
}
