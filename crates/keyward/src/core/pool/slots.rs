//! The pool's storage layout: the slab of [`Slot`]s, the hash index from
//! key text to slot, and the free vector with each free slot's position in
//! it. Every method here keeps those three and the deadline indexes in
//! step; the rules of leasing and expiry are the state machine's
//! (`pool/mod.rs`).

use std::hash::BuildHasher;

use compact_str::CompactString;

use super::{KeyChange, KeyView, Lease, Pool, PoolError};
use crate::core::time::Timestamp;

/// Marks a slot that is not in the free vector (it is leased), and is the
/// one slot id never handed out.
pub(super) const VACANT: u32 = u32::MAX;

/// One live key and its deadlines.
#[derive(Debug)]
pub(super) struct Slot {
    /// Inline up to 24 bytes (the default 20-character keys): no heap
    /// block and no pointer per key, the largest saving of RAM per key.
    pub(super) key: CompactString,
    pub(super) created_at: Timestamp,
    pub(super) alive_until: Timestamp,
    /// 0 while free; lease ids start at 1.
    pub(super) lease_id: u64,
    pub(super) leased_until: Timestamp,
    /// Position in `free`, or `VACANT` while leased.
    pub(super) free_pos: u32,
}

impl Slot {
    /// The key as clients see it. O(key length).
    pub(super) fn view(&self) -> KeyView {
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

impl Pool {
    /// The index hash of a key text. O(key length).
    pub(super) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot holding `key`, due or not. O(1) expected.
    pub(super) fn find(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hash(key), |&id| {
                slots[id as usize].as_ref().is_some_and(|s| &*s.key == key)
            })
            .copied()
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

    /// Adds a free key. Amortised O(log n).
    pub(super) fn insert_slot(
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
    pub(super) fn remove_slot(&mut self, slot: u32) {
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
    pub(super) fn take_free(&mut self, slot: u32) {
        let pos = self.slot(slot).free_pos as usize;
        self.free.swap_remove(pos);
        if let Some(&moved) = self.free.get(pos) {
            self.slot_mut(moved).free_pos = pos as u32;
        }
        self.slot_mut(slot).free_pos = VACANT;
    }

    /// Returns a leased slot to the free vector. O(log n).
    pub(super) fn end_lease(&mut self, slot: u32) {
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
