//! The pool's storage layout: the slab of [`Slot`]s, the hash index from
//! key text to slot, the free vector with each free slot's position in it,
//! the per-state slot sets, the label-set ids and the side table of key
//! health. Every method here keeps those and the deadline indexes in step;
//! the rules of leasing, outcomes and expiry are the state machine's
//! (`pool/mod.rs`).

use std::hash::BuildHasher;

use compact_str::CompactString;

use super::{KeyChange, KeyState, KeyView, Labels, Lease, Pool, PoolError, Reason};
use crate::core::time::Timestamp;

/// `Slot::pos` of a leased key; the marks below it name the other states
/// that are not free. Free positions and slot ids stay below them all.
const LEASED: u32 = u32::MAX;
const COOLING: u32 = u32::MAX - 1;
const QUARANTINED: u32 = u32::MAX - 2;
const DISABLED: u32 = u32::MAX - 3;

/// Most keys a pool holds: slot ids and free positions stay below the
/// state marks.
pub(super) const MAX_KEYS: u32 = DISABLED;

/// The keep-alive deadline of a key that has none; never put in `alive`.
pub(super) const NEVER: Timestamp = Timestamp::from_millis(u64::MAX);

/// One live key and its deadlines: 64 bytes with a key of up to 24 bytes.
/// What only troubled keys need (failures, reason) lives in `health`.
#[derive(Debug)]
pub(super) struct Slot {
    /// Inline up to 24 bytes (the default 20-character keys): no heap
    /// block and no pointer per key, the largest saving of RAM per key.
    pub(super) key: CompactString,
    pub(super) created_at: Timestamp,
    /// `NEVER` when the key has no keep-alive deadline.
    pub(super) alive_until: Timestamp,
    /// 0 unless leased; lease ids start at 1.
    pub(super) lease_id: u64,
    /// The end of the current lease, cooldown or quarantine.
    pub(super) until: Timestamp,
    /// Position in `free` while free, else the state's mark: the state
    /// costs no byte of its own.
    pub(super) pos: u32,
    /// Id of the key's label set in `labels`; 0 for none.
    pub(super) labels: u32,
}

impl Slot {
    /// The key's state, from its position mark. O(1).
    pub(super) fn state(&self) -> KeyState {
        match self.pos {
            LEASED => KeyState::Leased,
            COOLING => KeyState::Cooling,
            QUARANTINED => KeyState::Quarantined,
            DISABLED => KeyState::Disabled,
            _ => KeyState::Free,
        }
    }
}

/// What a key's holders have reported, kept only while not all default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Health {
    pub(super) failures: u32,
    pub(super) quarantines: u32,
    pub(super) reason: Option<Reason>,
}

impl Pool {
    /// The index hash of a key text. O(key length).
    pub(super) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot holding `key`, due or not. O(1) expected.
    pub(super) fn find(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(self.hash(key), |id| {
            slots[id as usize].as_ref().is_some_and(|s| &*s.key == key)
        })
    }

    /// An occupied slot. O(1).
    pub(super) fn slot(&self, slot: u32) -> &Slot {
        self.slots[slot as usize]
            .as_ref()
            .expect("indexed slots are occupied")
    }

    /// An occupied slot, to change. O(1).
    pub(super) fn slot_mut(&mut self, slot: u32) -> &mut Slot {
        self.slots[slot as usize]
            .as_mut()
            .expect("indexed slots are occupied")
    }

    /// The key as clients see it. O(key length + labels).
    pub(super) fn slot_view(&self, slot: u32) -> KeyView {
        let s = self.slot(slot);
        let health = self.health.get(&slot);
        let state = s.state();
        KeyView {
            key: s.key.to_string(),
            created_at: s.created_at,
            alive_until: match s.alive_until {
                NEVER => Timestamp::default(),
                at => at,
            },
            lease: (state == KeyState::Leased).then_some(Lease {
                id: s.lease_id,
                until: s.until,
            }),
            state,
            labels: self.labels.get(s.labels),
            available_at: matches!(state, KeyState::Cooling | KeyState::Quarantined)
                .then_some(s.until),
            reason: health.and_then(|h| h.reason.clone()),
            failures: health.map_or(0, |h| h.failures),
            quarantines: health.map_or(0, |h| h.quarantines),
            no_keepalive: s.alive_until == NEVER,
        }
    }

    /// Adds a free key. O(log n).
    pub(super) fn insert_slot(
        &mut self,
        key: CompactString,
        created_at: Timestamp,
        alive_until: Timestamp,
        labels: &Labels,
    ) -> Result<u32, PoolError> {
        let slot = match self.vacant.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&id| id < MAX_KEYS)
                    .ok_or(PoolError::Full)?;
                self.slots.push(None);
                id
            }
        };
        let Some(labels) = self.labels.intern(labels) else {
            self.vacant.push(slot);
            return Err(PoolError::Full);
        };
        let hash = self.hash(&key);
        self.slots[slot as usize] = Some(Slot {
            key,
            created_at,
            alive_until,
            lease_id: 0,
            until: Timestamp::default(),
            pos: DISABLED,
            labels,
        });
        self.enter(slot, KeyState::Free, Timestamp::default());
        let slots = &self.slots;
        self.index.insert(hash, slot, |id| {
            self.hasher.hash_one(
                &slots[id as usize]
                    .as_ref()
                    .expect("indexed slots are occupied")
                    .key,
            )
        });
        if alive_until != NEVER {
            self.alive.insert(alive_until, slot);
        }
        Ok(slot)
    }

    /// Removes a key and every index entry pointing at it. O(log n).
    pub(super) fn remove_slot(&mut self, slot: u32) {
        self.leave(slot);
        let alive_until = self.slot(slot).alive_until;
        self.alive.remove(alive_until, slot);
        let hash = self.hash(&self.slot(slot).key);
        self.index.remove(hash, |id| id == slot);
        let gone = self.slots[slot as usize]
            .take()
            .expect("indexed slots are occupied");
        self.labels.release(gone.labels);
        self.health.remove(&slot);
        self.vacant.push(slot);
        if self.record {
            self.changes.push(KeyChange::Remove(gone.key.into()));
        }
    }

    /// Moves a key to `state`, due at `until` (lease, cooldown or
    /// quarantine end) with `lease_id` when leased. O(log n).
    pub(super) fn move_to(&mut self, slot: u32, state: KeyState, until: Timestamp, lease_id: u64) {
        self.leave(slot);
        self.enter(slot, state, until);
        if state == KeyState::Leased {
            self.slot_mut(slot).lease_id = lease_id;
        }
    }

    /// Takes a key out of its state's indexes. O(log n).
    fn leave(&mut self, slot: u32) {
        let (state, until, pos) = {
            let s = self.slot(slot);
            (s.state(), s.until, s.pos)
        };
        match state {
            KeyState::Free => {
                // Swap-remove from the free vector. O(1).
                let pos = pos as usize;
                self.free.swap_remove(pos);
                if let Some(&moved) = self.free.get(pos) {
                    self.slot_mut(moved).pos = pos as u32;
                }
            }
            KeyState::Leased => self.leases.remove(until, slot),
            KeyState::Cooling | KeyState::Quarantined => self.held.remove(until, slot),
            KeyState::Disabled => {}
        }
        self.states[state as usize].remove(slot);
        let s = self.slot_mut(slot);
        s.lease_id = 0;
        s.until = Timestamp::default();
        s.pos = DISABLED;
    }

    /// Puts a key that is in no state's indexes into `state`'s. O(log n).
    fn enter(&mut self, slot: u32, state: KeyState, until: Timestamp) {
        let pos = match state {
            KeyState::Free => {
                self.free.push(slot);
                (self.free.len() - 1) as u32
            }
            KeyState::Leased => {
                self.leases.insert(until, slot);
                LEASED
            }
            KeyState::Cooling => {
                self.held.insert(until, slot);
                COOLING
            }
            KeyState::Quarantined => {
                self.held.insert(until, slot);
                QUARANTINED
            }
            KeyState::Disabled => DISABLED,
        };
        self.states[state as usize].insert(slot);
        let s = self.slot_mut(slot);
        s.pos = pos;
        if state != KeyState::Free && state != KeyState::Disabled {
            s.until = until;
        }
    }

    /// Moves the key's keep-alive deadline from `old` to `new` (either may
    /// be `NEVER`, which is not indexed). O(log n).
    pub(super) fn set_alive(&mut self, slot: u32, old: Timestamp, new: Timestamp) {
        if old != NEVER {
            self.alive.remove(old, slot);
        }
        if new != NEVER {
            self.alive.insert(new, slot);
        }
        self.slot_mut(slot).alive_until = new;
    }

    /// Stores the key's health, dropping the entry when it is all default
    /// so healthy keys cost nothing. O(log h) for h troubled keys.
    pub(super) fn set_health(&mut self, slot: u32, health: Health) {
        if health == Health::default() {
            self.health.remove(&slot);
        } else {
            self.health.insert(slot, health);
        }
    }

    /// Drops the key's reason (it went free). O(log h).
    pub(super) fn clear_reason(&mut self, slot: u32) {
        if let Some(mut health) = self.health.remove(&slot) {
            health.reason = None;
            self.set_health(slot, health);
        }
    }
}
