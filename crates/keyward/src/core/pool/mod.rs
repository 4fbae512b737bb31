//! A pool of API keys: generate or import, lease a uniformly random free
//! key, release with an outcome, cool down, quarantine, disable, keep
//! alive, delete, list and expire — each in O(1) or O(log n).
//!
//! Layout (kept in step by `slots.rs`), chosen so no operation walks the
//! keys:
//! - `slots`: a slab of 64-byte key entries addressed by a `u32` slot id;
//! - `index`: a hash table of slot ids, hashed by the key text, for O(1)
//!   lookup without storing the key twice (`index.rs`: it grows a step
//!   per insert, never rehashing all at once);
//! - `free`: a dense vector of free slot ids; each entry knows its
//!   position, so a random pick and a removal are O(1) swap-removes;
//! - `leases` / `held` / `alive`: ordered deadline indexes (lease ends;
//!   cooling and quarantine ends; keep-alive purges), so expiry pops only
//!   the due entries (O(m log n) for m of them);
//! - `states`: one hierarchical bitset of slot ids per [`KeyState`]
//!   (`slotset.rs`), the ordered index listing walks, ~0.65 B per key;
//! - `labels`: each distinct label set once, refcounted (`labels.rs`);
//! - `health`: failures, quarantines in a row and reason, only for the
//!   keys that have any, so healthy keys pay nothing for them.
//!
//! The slab and the free and vacant lists are [`Chunked`]: growing copies
//! no key, so no add request pays for all the keys before it.
//!
//! This file holds the state machine: the public types and every
//! operation's rules (who may release, when a deadline counts, what is
//! recorded). `tests.rs` checks one behaviour per test; `model.rs` checks
//! random operation sequences against a plain sorted map.
//!
//! The pool never reads a clock: every call takes `now`. Callers that
//! persist state ask it to record [`KeyChange`]s and drain them after each
//! call.

use std::collections::BTreeMap;
use std::hash::RandomState;

use compact_str::CompactString;
use rand::Rng;
use rand::RngExt;

use super::chunked::Chunked;
use super::deadlines::Deadlines;
use super::keygen::{OsRandom, random_chars};
use super::time::{Timestamp, Ttl};

mod health;
mod index;
mod labels;
#[cfg(test)]
mod model;
mod slots;
mod slotset;
#[cfg(test)]
mod tests;

pub use health::{InvalidReason, KeyState, MAX_REASON, MaxFailures, Outcome, Reason, Recovery};
pub use labels::{InvalidLabels, Labels, MAX_LABEL_NAME, MAX_LABEL_VALUE, MAX_LABELS};

use index::KeyIndex;
use labels::LabelSets;
use slots::{Health, MAX_KEYS, NEVER, Slot};
use slotset::SlotSet;

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

/// A key text a caller brings to [`Pool::import`]: 1–256 visible ASCII
/// characters (`!` to `~`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey(CompactString);

/// A key text that is empty, longer than [`PoolKey::MAX_LEN`] or holds a
/// character outside `!`–`~`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a key must be 1 to 256 visible ASCII characters (! to ~)")]
pub struct InvalidPoolKey;

impl PoolKey {
    /// Longest key accepted, in characters.
    pub const MAX_LEN: usize = 256;

    /// Validates `s`. O(len).
    pub fn parse(s: &str) -> Result<Self, InvalidPoolKey> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.into())).ok_or(InvalidPoolKey)
    }

    /// The key text. O(1).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Per-pool settings. New values apply to deadlines set from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// How long a lease lasts unless released or extended.
    pub lease_ttl: Ttl,
    /// How long a key lives without a keep-alive (unused with
    /// `no_keepalive`).
    pub keepalive_ttl: Ttl,
    /// Length of keys generated from now on.
    pub key_length: KeyLength,
    /// Cooldown, failure and quarantine rules.
    pub recovery: Recovery,
    /// Keys created or kept alive from now on get no keep-alive deadline
    /// and live until deleted (the API's `keepalive_ttl_ms: 0`).
    pub no_keepalive: bool,
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
/// `Default` is a free key with no labels, for stores that fill in the
/// Part 1 fields only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyView {
    /// The key text.
    pub key: String,
    /// When the key was generated.
    pub created_at: Timestamp,
    /// When the key is purged unless kept alive; meaningless (0) with
    /// `no_keepalive`.
    pub alive_until: Timestamp,
    /// The current lease; `None` unless the key is leased.
    pub lease: Option<Lease>,
    /// Where the key stands; `Leased` exactly when `lease` is set.
    pub state: KeyState,
    /// The key's labels.
    pub labels: Labels,
    /// When a cooling or quarantined key becomes free by itself.
    pub available_at: Option<Timestamp>,
    /// Why the key is cooling, quarantined or disabled.
    pub reason: Option<Reason>,
    /// Consecutive `failed` outcomes (kept through a quarantine, so a key
    /// on probation is quarantined again by its next failure).
    pub failures: u32,
    /// Quarantines in a row: the doubling exponent, reset by `ok` or
    /// enable.
    pub quarantines: u32,
    /// The key has no keep-alive deadline.
    pub no_keepalive: bool,
}

impl KeyView {
    /// A key with the Part 1 fields only: leased when `lease` is set, else
    /// free; no labels, no failures, with a keep-alive deadline. O(1).
    pub fn new(
        key: String,
        created_at: Timestamp,
        alive_until: Timestamp,
        lease: Option<Lease>,
    ) -> Self {
        Self {
            key,
            created_at,
            alive_until,
            lease,
            state: match lease {
                Some(_) => KeyState::Leased,
                None => KeyState::Free,
            },
            ..Self::default()
        }
    }

    /// When the key is purged unless kept alive; `None` when never. O(1).
    pub fn alive_deadline(&self) -> Option<Timestamp> {
        (!self.no_keepalive).then_some(self.alive_until)
    }
}

/// Counts of a pool's keys; each is O(1) to read. The five states add up
/// to `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Live keys.
    pub total: u64,
    /// Keys that can be leased.
    pub free: u64,
    /// Keys under a lease.
    pub leased: u64,
    /// Rate-limited keys waiting out their cooldown.
    pub cooling: u64,
    /// Keys in quarantine.
    pub quarantined: u64,
    /// Keys disabled until enabled.
    pub disabled: u64,
}

/// What one expiry pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Expired {
    /// Leases that ended by themselves.
    pub leases: u64,
    /// Keys purged for want of a keep-alive.
    pub keys: u64,
    /// Cooldowns and quarantines that ended (the key is free again).
    pub recovered: u64,
}

impl Expired {
    /// Adds another pass's counts. O(1).
    pub fn add(&mut self, other: Expired) {
        self.leases += other.leases;
        self.keys += other.keys;
        self.recovered += other.recovered;
    }

    fn count(&self) -> u64 {
        self.leases + self.keys + self.recovered
    }
}

/// A change to persist, recorded only when the caller asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// The key now looks like this (created, imported, kept alive, cooled,
    /// quarantined, disabled, enabled, recovered; its lease may have
    /// changed too).
    Put(KeyView),
    /// Only the key's lease (and so its state) changed (leased, released
    /// `ok` with nothing else to reset, ended by itself): the view is
    /// whole, but a store may rewrite just the lease.
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
    /// Release of a key that is not leased.
    #[error("the key is not leased")]
    NotLeased,
    /// The given lease id is not the key's current lease.
    #[error("the lease id is not the key's current lease")]
    LeaseMismatch,
    /// No live key is free; [`Pool::next_free_at`] tells when one will be.
    #[error("no free key in this pool")]
    NoFreeKey,
    /// The pool holds the most keys (or label sets) a slot id can address.
    #[error("the pool is full")]
    Full,
}

/// Where listing resumes: the slot id to look at next. Valid for the pool
/// instance that returned it (a restore renumbers slots).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyCursor(u64);

impl KeyCursor {
    /// The start of a listing.
    pub const START: Self = Self(0);

    /// A cursor from its serialized form; any value is valid. O(1).
    pub const fn new(at: u64) -> Self {
        Self(at)
    }

    /// The serialized form. O(1).
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// One page of [`Pool::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, in slot order.
    pub keys: Vec<KeyView>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<KeyCursor>,
}

/// What [`Pool::import`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// The keys added, as they now are.
    pub added: Vec<KeyView>,
    /// Keys that were already in the pool, left unchanged.
    pub existing: Vec<String>,
}

/// One pool's keys and their deadlines.
#[derive(Debug)]
pub struct Pool {
    settings: PoolSettings,
    slots: Chunked<Option<Slot>>,
    vacant: Chunked<u32>,
    index: KeyIndex,
    hasher: RandomState,
    free: Chunked<u32>,
    leases: Deadlines,
    /// Ends of cooldowns and quarantines.
    held: Deadlines,
    alive: Deadlines,
    /// One set of slot ids per state, in `KeyState::ALL` order.
    states: [SlotSet; 5],
    labels: LabelSets,
    /// Ordered, not hashed: a hash map rehashes all its entries in the
    /// insert that outgrows it, and troubled keys may be many.
    health: BTreeMap<u32, Health>,
    last_lease_id: u64,
    expired: Expired,
    /// Quarantines begun since this pool was built.
    quarantines: u64,
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
            slots: Chunked::default(),
            vacant: Chunked::default(),
            index: KeyIndex::default(),
            hasher: RandomState::new(),
            free: Chunked::default(),
            leases: Deadlines::default(),
            held: Deadlines::default(),
            alive: Deadlines::default(),
            states: Default::default(),
            labels: LabelSets::default(),
            health: BTreeMap::new(),
            last_lease_id: 0,
            expired: Expired::default(),
            quarantines: 0,
            record,
            changes: Vec::new(),
        }
    }

    /// Rebuilds a pool from persisted keys. `last_lease_id` is raised to the
    /// highest lease id seen, so ids never go backwards. Duplicate keys keep
    /// the last record. A view with a lease is leased whatever its `state`;
    /// a cooling or quarantined view without `available_at` comes back
    /// free. O(k log k) for k keys. Due expiry is left to the next call
    /// that takes `now`.
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
            let alive_until = match view.no_keepalive {
                true => NEVER,
                false => view.alive_until,
            };
            let Ok(slot) =
                pool.insert_slot(view.key.into(), view.created_at, alive_until, &view.labels)
            else {
                break;
            };
            pool.set_health(
                slot,
                Health {
                    failures: view.failures,
                    quarantines: view.quarantines,
                    reason: view.reason,
                },
            );
            match (
                view.lease.filter(|l| l.id != 0),
                view.state,
                view.available_at,
            ) {
                (Some(lease), _, _) => {
                    pool.last_lease_id = pool.last_lease_id.max(lease.id);
                    pool.move_to(slot, KeyState::Leased, lease.until, lease.id);
                }
                (None, state @ (KeyState::Cooling | KeyState::Quarantined), Some(at)) => {
                    pool.move_to(slot, state, at, 0);
                }
                (None, KeyState::Disabled, _) => {
                    pool.move_to(slot, KeyState::Disabled, Timestamp::default(), 0);
                }
                _ => {}
            }
            // Only a cooling, quarantined or disabled key keeps a reason.
            if matches!(pool.slot(slot).state(), KeyState::Free | KeyState::Leased) {
                pool.clear_reason(slot);
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
        let count = |state: KeyState| self.states[state as usize].len();
        PoolStats {
            total: (self.slots.len() - self.vacant.len()) as u64,
            free: count(KeyState::Free),
            leased: count(KeyState::Leased),
            cooling: count(KeyState::Cooling),
            quarantined: count(KeyState::Quarantined),
            disabled: count(KeyState::Disabled),
        }
    }

    /// Distinct non-empty label sets held by the pool's keys. O(1).
    pub fn label_sets(&self) -> usize {
        self.labels.len()
    }

    /// Leases ended, keys purged and cooldowns/quarantines ended by expiry
    /// since this pool was built (restores start from zero). O(1).
    pub fn expired_total(&self) -> Expired {
        self.expired
    }

    /// Quarantines begun since this pool was built (restores start from
    /// zero). O(1).
    pub fn quarantines_total(&self) -> u64 {
        self.quarantines
    }

    /// Generates `count` new keys from the OS CSPRNG, unique among the live
    /// keys, alive for `keepalive_ttl`. O(count) (amortised O(1) each).
    pub fn generate(&mut self, count: usize, now: Timestamp) -> Result<Vec<KeyView>, PoolError> {
        self.generate_labelled(count, &Labels::default(), now)
    }

    /// [`Pool::generate`] with every new key carrying `labels` (one shared
    /// copy). O(count + labels).
    pub fn generate_labelled(
        &mut self,
        count: usize,
        labels: &Labels,
        now: Timestamp,
    ) -> Result<Vec<KeyView>, PoolError> {
        self.expire_lazily(now);
        let len = self.settings.key_length.get();
        if count > MAX_KEYS as usize - self.stats().total as usize {
            return Err(PoolError::Full);
        }
        let mut keys = Vec::with_capacity(count);
        let mut rng = OsRandom::default();
        let alive_until = self.alive_from(now);
        while keys.len() < count {
            let key: CompactString = random_chars(&mut rng).take(len).collect();
            // 62^8 or more candidates: a collision is astronomically rare,
            // and retrying keeps keys unique among the live ones.
            if self.find(&key).is_some() {
                continue;
            }
            let slot = self.insert_slot(key, now, alive_until, labels)?;
            keys.push(self.put_change(slot));
        }
        Ok(keys)
    }

    /// How many of `keys` an [`Pool::import`] at `now` would add: those
    /// not live in the pool, each counted once. Lets a store check its key
    /// limit before importing, without counting keys already there.
    /// O(k) expected for k keys.
    pub fn count_new<'a>(&self, keys: impl IntoIterator<Item = &'a str>, now: Timestamp) -> u64 {
        let mut seen = std::collections::HashSet::new();
        keys.into_iter()
            .filter(|key| seen.insert(*key))
            .filter(|key| {
                self.find(key)
                    .is_none_or(|slot| self.slot(slot).alive_until <= now)
            })
            .count() as u64
    }

    /// Adds the caller's keys, free, alive for `keepalive_ttl`, carrying
    /// `labels`. A key already in the pool (or repeated in `keys`) is
    /// reported in `existing` and left unchanged. O(count) expected.
    pub fn import(
        &mut self,
        keys: impl IntoIterator<Item = PoolKey>,
        labels: &Labels,
        now: Timestamp,
    ) -> Result<Imported, PoolError> {
        self.expire_lazily(now);
        let keys: Vec<PoolKey> = keys.into_iter().collect();
        if keys.len() > MAX_KEYS as usize - self.stats().total as usize {
            return Err(PoolError::Full);
        }
        let alive_until = self.alive_from(now);
        let mut done = Imported::default();
        for key in keys {
            let live = self
                .find(key.as_str())
                .and_then(|slot| self.settle(slot, now));
            match live {
                Some(()) => done.existing.push(key.as_str().to_owned()),
                None => {
                    let slot = self.insert_slot(key.0, now, alive_until, labels)?;
                    done.added.push(self.put_change(slot));
                }
            }
        }
        Ok(done)
    }

    /// Leases a uniformly random free key for `lease_ttl`. O(log n)
    /// amortised: a picked key that is already due for purge is purged and
    /// the pick repeated (rejection sampling keeps the pick uniform among
    /// live keys), and with no free key a due lease, cooldown or quarantine
    /// is ended and its key taken. Every retry removes a due entry for
    /// good, so its cost is expiry that had to happen anyway, and
    /// `NoFreeKey` is never answered while a live key could be leased.
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
        self.move_to(
            slot,
            KeyState::Leased,
            now.after(self.settings.lease_ttl),
            id,
        );
        Ok(self.lease_change(slot))
    }

    /// When some key will become free by itself: the earliest lease,
    /// cooldown or quarantine end; `None` when none will (every key is
    /// disabled, or there are none). Meant for after `NoFreeKey`, when
    /// nothing due is left. O(log n).
    pub fn next_free_at(&self) -> Option<Timestamp> {
        earliest(self.leases.next(), self.held.next())
    }

    /// Ends the key's lease now, as an `ok` outcome. With `lease_id`, only
    /// if it is the current lease. O(log n).
    pub fn release(
        &mut self,
        key: &str,
        lease_id: Option<u64>,
        now: Timestamp,
    ) -> Result<KeyView, PoolError> {
        self.release_with(key, lease_id, Outcome::Ok, None, now)
    }

    /// Ends the key's lease now with its holder's `outcome`. With
    /// `lease_id`, only if it is the current lease. O(log n).
    ///
    /// - `Ok`: free, failures and quarantines in a row reset to 0;
    /// - `RateLimited`: cooling until `now + retry_after` (else the pool's
    ///   `cooldown`); failures unchanged;
    /// - `Failed`: failures + 1; once they reach `max_failures` the key is
    ///   quarantined for `quarantine × 2^(quarantines in a row − 1)` (at
    ///   most 24 h), else free. Failures keep counting through the
    ///   quarantine, so a key back on probation is quarantined again
    ///   (doubled) by its next failure; only `ok` or enable resets them.
    ///
    /// `reason` is kept while the key cools or is quarantined; a key that
    /// goes free has none.
    pub fn release_with(
        &mut self,
        key: &str,
        lease_id: Option<u64>,
        outcome: Outcome,
        reason: Option<Reason>,
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
        let mut health = self.health.get(&slot).cloned().unwrap_or_default();
        let before = health.clone();
        let recovery = self.settings.recovery;
        let (state, until) = match outcome {
            Outcome::Ok => {
                health = Health::default();
                (KeyState::Free, Timestamp::default())
            }
            Outcome::RateLimited { retry_after } => (
                KeyState::Cooling,
                now.after(retry_after.unwrap_or(recovery.cooldown)),
            ),
            Outcome::Failed => {
                health.failures = health.failures.saturating_add(1);
                if health.failures >= recovery.max_failures.get() {
                    health.quarantines = health.quarantines.saturating_add(1);
                    self.quarantines += 1;
                    let until = recovery.quarantine_end(health.quarantines, now);
                    (KeyState::Quarantined, until)
                } else {
                    (KeyState::Free, Timestamp::default())
                }
            }
        };
        health.reason = if state == KeyState::Free {
            None
        } else {
            reason
        };
        self.move_to(slot, state, until, 0);
        let changed = health != before;
        self.set_health(slot, health);
        Ok(match changed || state != KeyState::Free {
            true => self.put_change(slot),
            false => self.lease_change(slot),
        })
    }

    /// Takes the key out of use until [`Pool::enable`], whatever its state;
    /// a lease on it ends now, so its holder's lease id is refused from
    /// then on. Failures are kept; `reason` replaces any earlier one.
    /// O(log n).
    pub fn disable(
        &mut self,
        key: &str,
        reason: Option<Reason>,
        now: Timestamp,
    ) -> Result<KeyView, PoolError> {
        let slot = self.find_live(key, now).ok_or(PoolError::KeyNotFound)?;
        self.move_to(slot, KeyState::Disabled, Timestamp::default(), 0);
        let mut health = self.health.get(&slot).cloned().unwrap_or_default();
        health.reason = reason;
        self.set_health(slot, health);
        Ok(self.put_change(slot))
    }

    /// Frees a cooling, quarantined or disabled key now, with failures and
    /// quarantines in a row reset to 0; a free or leased key is left as it
    /// is. O(log n).
    pub fn enable(&mut self, key: &str, now: Timestamp) -> Result<KeyView, PoolError> {
        let slot = self.find_live(key, now).ok_or(PoolError::KeyNotFound)?;
        match self.slot(slot).state() {
            KeyState::Free | KeyState::Leased => Ok(self.slot_view(slot)),
            _ => {
                self.move_to(slot, KeyState::Free, Timestamp::default(), 0);
                self.set_health(slot, Health::default());
                Ok(self.put_change(slot))
            }
        }
    }

    /// Keeps the key alive for another `keepalive_ttl` (or for good with
    /// `no_keepalive`); with the current `lease_id` also extends the lease
    /// by `lease_ttl`. A `lease_id` that is not the current lease changes
    /// nothing. O(log n).
    pub fn keepalive(
        &mut self,
        key: &str,
        lease_id: Option<u64>,
        now: Timestamp,
    ) -> Result<KeyView, PoolError> {
        let slot = self.find_live(key, now).ok_or(PoolError::KeyNotFound)?;
        let (alive_until, lease_id_now, leased_until) = {
            let s = self.slot(slot);
            (s.alive_until, s.lease_id, s.until)
        };
        if let Some(id) = lease_id {
            if lease_id_now == 0 || id != lease_id_now {
                return Err(PoolError::LeaseMismatch);
            }
            let until = now.after(self.settings.lease_ttl);
            self.leases.reschedule(leased_until, until, slot);
            self.slot_mut(slot).until = until;
        }
        let alive = self.alive_from(now);
        self.set_alive(slot, alive_until, alive);
        Ok(self.put_change(slot))
    }

    /// The key's current state. O(1) after due expiry.
    pub fn get(&mut self, key: &str, now: Timestamp) -> Result<KeyView, PoolError> {
        self.find_live(key, now)
            .map(|slot| self.slot_view(slot))
            .ok_or(PoolError::KeyNotFound)
    }

    /// Purges the key for good. O(log n).
    pub fn delete(&mut self, key: &str, now: Timestamp) -> Result<(), PoolError> {
        let slot = self.find_live(key, now).ok_or(PoolError::KeyNotFound)?;
        self.remove_slot(slot);
        Ok(())
    }

    /// A page of at most `limit` keys from `from` on, in slot order, only
    /// those in `state` when given. Walks the per-state bitsets, so a page
    /// costs O(limit · log n) whatever the filter (plus the due deadlines
    /// of the keys it visits, which settle exactly as in [`Pool::get`]).
    ///
    /// Stable between pages: slots never move while a key lives, so a key
    /// that lives (and, with a filter, stays in `state`) throughout a
    /// listing is listed exactly once; a key is never listed twice; keys
    /// added or changed meanwhile may or may not appear.
    pub fn list(
        &mut self,
        state: Option<KeyState>,
        from: KeyCursor,
        limit: usize,
        now: Timestamp,
    ) -> KeyPage {
        self.expire_lazily(now);
        let mut keys = Vec::with_capacity(limit.min(1024));
        let mut at = from.get();
        while keys.len() < limit {
            let Some(slot) = self.first_listed(state, at) else {
                return KeyPage { keys, next: None };
            };
            at = u64::from(slot) + 1;
            if self.settle(slot, now).is_none() {
                continue;
            }
            if state.is_none_or(|st| self.slot(slot).state() == st) {
                keys.push(self.slot_view(slot));
            }
        }
        let next = self.first_listed(state, at).map(|_| KeyCursor::new(at));
        KeyPage { keys, next }
    }

    /// Most due entries one request expires on its way; the reaper takes
    /// the rest in bounded steps, so a burst of deadlines (10,000 keys made
    /// by one `generate`) never lands on a single request.
    pub const LAZY_STEP: usize = 256;

    /// Ends every lease, cooldown and quarantine and purges every key whose
    /// deadline is at or before `now`. O(m log n) for the m due entries;
    /// nothing else is visited.
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
        while (done.count() as usize) < limit {
            // The popped entry is already gone from its index; removing it
            // again below is a no-op.
            if let Some((_, slot)) = self.alive.pop_due(now) {
                self.remove_slot(slot);
                done.keys += 1;
            } else if let Some((_, slot)) = self.leases.pop_due(now) {
                self.move_to(slot, KeyState::Free, Timestamp::default(), 0);
                self.lease_change(slot);
                done.leases += 1;
            } else if let Some((_, slot)) = self.held.pop_due(now) {
                self.recover(slot);
                done.recovered += 1;
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
        earliest(self.alive.next(), self.next_free_at())
    }

    /// Takes the changes recorded since the last call. O(changes).
    pub fn drain_changes(&mut self) -> Vec<KeyChange> {
        std::mem::take(&mut self.changes)
    }

    /// The keep-alive deadline of a key created or kept alive at `now`.
    fn alive_from(&self, now: Timestamp) -> Timestamp {
        match self.settings.no_keepalive {
            true => NEVER,
            false => now.after(self.settings.keepalive_ttl),
        }
    }

    /// The first slot at or after `at` that a listing of `state` shows.
    /// O(log n).
    fn first_listed(&self, state: Option<KeyState>, at: u64) -> Option<u32> {
        match state {
            Some(state) => self.states[state as usize].first_from(at),
            None => self.states.iter().filter_map(|s| s.first_from(at)).min(),
        }
    }

    /// A cooldown or quarantine ended: the key is free (on probation after
    /// a quarantine: failures are kept), its reason dropped. O(log n).
    fn recover(&mut self, slot: u32) {
        self.move_to(slot, KeyState::Free, Timestamp::default(), 0);
        self.clear_reason(slot);
        self.put_change(slot);
    }

    /// The key's slot after due expiry of the pool (bounded) and of the
    /// key itself (exact); `None` if it does not exist or was just purged.
    fn find_live(&mut self, key: &str, now: Timestamp) -> Option<u32> {
        self.expire_lazily(now);
        let slot = self.find(key)?;
        self.settle(slot, now).map(|()| slot)
    }

    /// Applies the slot's own due deadlines: purges it (`None`), ends its
    /// lease, cooldown or quarantine. O(log n).
    fn settle(&mut self, slot: u32, now: Timestamp) -> Option<()> {
        let s = self.slot(slot);
        if s.alive_until <= now {
            self.remove_slot(slot);
            self.expired.keys += 1;
            return None;
        }
        let due = s.until <= now;
        match s.state() {
            KeyState::Leased if due => {
                self.move_to(slot, KeyState::Free, Timestamp::default(), 0);
                self.lease_change(slot);
                self.expired.leases += 1;
            }
            KeyState::Cooling | KeyState::Quarantined if due => {
                self.recover(slot);
                self.expired.recovered += 1;
            }
            _ => {}
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
        let view = self.slot_view(slot);
        if self.record {
            self.changes.push(change(view.clone()));
        }
        view
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
