//! The hash index from key text to slot id, grown a few buckets at a time.
//!
//! A hash table that is full rehashes every entry in the one insert that
//! finds it so: at 2·10^6 keys that insert took a third of a second,
//! under the store's lock. This index makes a new table instead and moves
//! the old one's entries over `STEP` buckets per insert, so no insert
//! rehashes more than `STEP` entries. Until the move is done, lookups try
//! both tables.
//!
//! The index stores only slot ids; callers pass the hash of an id's key
//! (its slot holds the text) whenever entries may move.

use hashbrown::HashTable;

/// Buckets of the old table moved per insert: few, so an insert during a
/// move costs a few more hashes, not a burst. The move of a table of b
/// buckets takes b / `STEP` inserts, and the new table has room for at
/// least 7b/16 of them (see `insert`), so it ends before that one fills.
const STEP: usize = 4;

/// Slot ids by the hash of their key.
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    table: HashTable<u32>,
    /// The table being emptied into `table` while a move runs, and the
    /// next bucket to move.
    old: Option<HashTable<u32>>,
    cursor: usize,
}

impl KeyIndex {
    /// The id with `hash` for which `eq` holds. O(1) expected.
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.table
            .find(hash, |&id| eq(id))
            .or_else(|| self.old.as_ref()?.find(hash, |&id| eq(id)))
            .copied()
    }

    /// Removes the id with `hash` for which `eq` holds; false if none.
    /// O(1) expected.
    pub(super) fn remove(&mut self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> bool {
        if let Ok(entry) = self.table.find_entry(hash, |&id| eq(id)) {
            entry.remove();
            return true;
        }
        if let Some(old) = &mut self.old
            && let Ok(entry) = old.find_entry(hash, |&id| eq(id))
        {
            entry.remove();
            return true;
        }
        false
    }

    /// Adds `id` (not present) with `hash`; `hash_of` gives any id's hash.
    /// O(1): at most `STEP` old buckets move, and a new table's control
    /// bytes are written when one is made (one byte per bucket: 16 MB,
    /// a few ms, at 10^7 keys).
    pub(super) fn insert(&mut self, hash: u64, id: u32, hash_of: impl Fn(u32) -> u64) {
        self.step(&hash_of);
        if self.table.len() == self.table.capacity() {
            // Never while a move runs (see `STEP`); if it did, the move
            // would finish first rather than lose the old table.
            while self.old.is_some() {
                self.step(&hash_of);
            }
            // Twice the buckets, as hashbrown grows, with room for 7b/8
            // more entries; the same number when under 7/16 of the table
            // holds keys (the rest are removed keys' tombstones), with room
            // for 7b/16 more.
            let buckets = self.table.num_buckets();
            let room = if self.table.len() * 16 < buckets * 7 {
                buckets * 7 / 8
            } else {
                buckets * 7 / 4
            };
            let room = room.max(3);
            let full = std::mem::replace(&mut self.table, HashTable::with_capacity(room));
            self.old = Some(full);
            self.cursor = 0;
            self.step(&hash_of);
        }
        self.table.insert_unique(hash, id, |&id| hash_of(id));
    }

    /// Moves the entries of the next `STEP` old buckets; frees the old
    /// table once it is empty. O(STEP).
    fn step(&mut self, hash_of: &impl Fn(u32) -> u64) {
        let Some(old) = &mut self.old else {
            return;
        };
        let end = (self.cursor + STEP).min(old.num_buckets());
        for bucket in self.cursor..end {
            if let Ok(entry) = old.get_bucket_entry(bucket) {
                let (id, _) = entry.remove();
                self.table.insert_unique(hash_of(id), id, |&id| hash_of(id));
            }
        }
        self.cursor = end;
        // Past the last bucket nothing is left: inserts go to `table`.
        if old.is_empty() {
            self.old = None;
            self.cursor = 0;
        }
    }

    /// Entries the index holds (both tables). O(1).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len() + self.old.as_ref().map_or(0, HashTable::len)
    }

    /// True while entries are still moving to a grown table. O(1).
    #[cfg(test)]
    pub(super) fn moving(&self) -> bool {
        self.old.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// A weak hash on purpose: ids collide in groups of four, so `eq` is
    /// what tells them apart.
    fn hash(id: u32) -> u64 {
        u64::from(id / 4).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[test]
    fn no_insert_moves_more_than_a_step_of_buckets() {
        let mut index = KeyIndex::default();
        let (mut grown, mut spread) = (0, 0);
        for id in 0..200_000u32 {
            let buckets = index.table.num_buckets();
            let moving = index.moving();
            let old_left = index.old.as_ref().map_or(0, HashTable::len);
            index.insert(hash(id), id, hash);
            if index.table.num_buckets() != buckets {
                grown += 1;
                assert!(!moving, "a table grew while the last move still ran");
                assert!(
                    index.table.num_buckets() <= 2 * buckets.max(2),
                    "a table only doubles: {buckets} -> {}",
                    index.table.num_buckets()
                );
            }
            // Each insert moves at most STEP buckets' worth of entries.
            if index.moving() {
                spread += 1;
            }
            if moving && index.moving() {
                assert!(old_left - index.old.as_ref().map_or(0, HashTable::len) <= STEP);
            }
            assert_eq!(index.len(), id as usize + 1);
        }
        assert!(grown > 10, "the test crossed many capacities");
        assert!(spread > 1000, "moves spread over many inserts: {spread}");
        assert!((0..200_000).all(|id| index.find(hash(id), |x| x == id) == Some(id)));
        assert_eq!(index.find(hash(200_000), |x| x == 200_000), None);
    }

    proptest! {
        #[test]
        fn finds_exactly_what_was_inserted_and_not_removed(
            ops in prop::collection::vec((any::<bool>(), 0..3000u32), 0..4000),
        ) {
            let mut index = KeyIndex::default();
            let mut model = HashSet::new();
            for (insert, id) in ops {
                if insert {
                    if model.insert(id) {
                        index.insert(hash(id), id, hash);
                    }
                } else {
                    prop_assert_eq!(index.remove(hash(id), |x| x == id), model.remove(&id));
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for id in 0..3000 {
                let found = index.find(hash(id), |x| x == id);
                prop_assert_eq!(found, model.contains(&id).then_some(id));
            }
        }
    }
}
