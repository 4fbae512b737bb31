//! An ordered set of slot ids as a hierarchical bitset: the per-state index
//! that key listing walks.
//!
//! Level 0 has one bit per slot id; bit `i` of level `k + 1` is set when
//! word `i` of level `k` is non-zero. Insert, remove and "first member at
//! or after `id`" touch one word per level: O(log₆₄ n), at most 6 levels
//! for 2^32 ids. Memory is about 1.02 bits per slot id, whether the slot is
//! a member or not — a pool keeps one set per key state, about 0.65 bytes
//! per key in all, where an ordered tree of ids would cost 8–16 bytes per
//! member. Slot ids never move while a key lives, so walking a set in id
//! order lists every key that stays in it exactly once, whatever else
//! happens meanwhile.

use crate::core::chunked::Chunked;

/// A set of `u32` slot ids, iterated in increasing order.
#[derive(Debug, Default, Clone)]
pub(super) struct SlotSet {
    /// Chunked, so the word a new id needs is appended, never the level
    /// copied.
    levels: Vec<Chunked<u64>>,
    len: u64,
}

impl SlotSet {
    /// Adds `id`. O(log₆₄ n).
    pub(super) fn insert(&mut self, id: u32) {
        self.grow_to(id);
        let mut pos = id as usize;
        for (depth, level) in self.levels.iter_mut().enumerate() {
            let word = &mut level[pos / 64];
            let was_empty = *word == 0;
            let bit = 1u64 << (pos % 64);
            if *word & bit != 0 {
                return;
            }
            if depth == 0 {
                self.len += 1;
            }
            *word |= bit;
            if !was_empty {
                return;
            }
            pos /= 64;
        }
    }

    /// Removes `id` if present. O(log₆₄ n).
    pub(super) fn remove(&mut self, id: u32) {
        let mut pos = id as usize;
        for (depth, level) in self.levels.iter_mut().enumerate() {
            let Some(word) = level.get_mut(pos / 64) else {
                return;
            };
            let bit = 1u64 << (pos % 64);
            if *word & bit == 0 {
                return;
            }
            if depth == 0 {
                self.len -= 1;
            }
            *word &= !bit;
            if *word != 0 {
                return;
            }
            pos /= 64;
        }
    }

    /// True when `id` is a member. O(1).
    #[cfg(test)]
    pub(super) fn contains(&self, id: u32) -> bool {
        let pos = id as usize;
        self.levels
            .first()
            .and_then(|l| l.get(pos / 64))
            .is_some_and(|w| w & (1u64 << (pos % 64)) != 0)
    }

    /// The smallest member `>= from`. O(log₆₄ n).
    pub(super) fn first_from(&self, from: u64) -> Option<u32> {
        let mut pos = usize::try_from(from).ok()?;
        let mut depth = 0;
        // Climb until a word holds a set bit at or after `pos`.
        loop {
            let level = self.levels.get(depth)?;
            let w = pos / 64;
            let word = *level.get(w)?;
            let bits = word & (!0u64 << (pos % 64));
            if bits != 0 {
                pos = w * 64 + bits.trailing_zeros() as usize;
                break;
            }
            pos = w + 1;
            depth += 1;
        }
        // Descend: every set bit above points at a non-zero word below.
        while depth > 0 {
            depth -= 1;
            let word = self.levels[depth][pos];
            pos = pos * 64 + word.trailing_zeros() as usize;
        }
        u32::try_from(pos).ok()
    }

    /// Number of members. O(1).
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Makes room for `id` at every level, adding levels until the top one
    /// is a single word. O(levels) for the next id.
    fn grow_to(&mut self, id: u32) {
        let mut words = id as usize / 64 + 1;
        let mut depth = 0;
        loop {
            if self.levels.len() == depth {
                self.levels.push(Chunked::default());
            }
            let level = &mut self.levels[depth];
            if level.len() < words {
                level.resize(words, 0);
            }
            if level.len() == 1 {
                break;
            }
            words = level.len().div_ceil(64);
            depth += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_slot_set_behaves_like_an_ordered_set(
            ops in prop::collection::vec((any::<bool>(), 0u32..300_000), 1..400),
            probes in prop::collection::vec(0u64..300_100, 1..50),
        ) {
            let mut set = SlotSet::default();
            let mut model = BTreeSet::new();
            for (insert, id) in ops {
                if insert {
                    set.insert(id);
                    model.insert(id);
                } else {
                    set.remove(id);
                    model.remove(&id);
                }
                prop_assert_eq!(set.len(), model.len() as u64);
                prop_assert_eq!(set.contains(id), model.contains(&id));
            }
            for from in probes {
                let want = model.range(u32::try_from(from).unwrap_or(u32::MAX)..).next().copied();
                prop_assert_eq!(set.first_from(from), want);
            }
        }
    }
}
