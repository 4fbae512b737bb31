//! Batches: names given to ranges of issue counters, with their counts.
//! Nothing is stored per token: a token's batch is the range its counter
//! falls in.

use std::collections::BTreeMap;

use crate::core::names::Name;

/// Counters `first..end` issued under `name`. Issues of one batch that
/// follow each other share one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRange {
    /// The first counter.
    pub first: u128,
    /// One past the last counter.
    pub end: u128,
    /// The batch.
    pub name: Name,
}

/// A batch's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batch.
    pub name: Name,
    /// Tokens issued under it.
    pub issued: u128,
    /// Of those, tokens holding at least one activation.
    pub activated: u128,
    /// Of those, tokens revoked.
    pub revoked: u128,
}

/// The ranges ordered by first counter, and each batch's counts.
#[derive(Clone, Debug, Default)]
pub(super) struct Batches {
    /// First counter → (end, batch).
    ranges: BTreeMap<u128, (u128, Name)>,
    /// Ordered, as `Keyspace::marks` is, so no batch rehashes them all.
    counts: BTreeMap<Name, BatchInfo>,
}

impl Batches {
    /// Files counters `first..end`, which follow every range filed so far,
    /// under `name`, extending the last range when it is the same batch's.
    /// Returns the range as it now stands. O(log b) for b ranges.
    pub(super) fn file(&mut self, first: u128, end: u128, name: &Name) -> BatchRange {
        let start = match self.ranges.last_key_value() {
            Some((&start, (last_end, last))) if *last_end == first && last == name => start,
            _ => first,
        };
        self.ranges.insert(start, (end, name.clone()));
        self.counts
            .entry(name.clone())
            .or_insert_with(|| BatchInfo {
                name: name.clone(),
                issued: 0,
                activated: 0,
                revoked: 0,
            })
            .issued += end - first;
        BatchRange {
            first: start,
            end,
            name: name.clone(),
        }
    }

    /// The batch counter `index` was issued under. O(log b).
    pub(super) fn of(&self, index: u128) -> Option<&Name> {
        self.entry(index).map(|(_, (_, name))| name)
    }

    /// The range counter `index` lies in. O(log b).
    pub(super) fn range_of(&self, index: u128) -> Option<BatchRange> {
        self.entry(index).map(|(&first, (end, name))| BatchRange {
            first,
            end: *end,
            name: name.clone(),
        })
    }

    fn entry(&self, index: u128) -> Option<(&u128, &(u128, Name))> {
        self.ranges
            .range(..=index)
            .next_back()
            .filter(|(_, (end, _))| index < *end)
    }

    /// A batch's counts. O(log b).
    pub(super) fn info(&self, name: &Name) -> Option<&BatchInfo> {
        self.counts.get(name)
    }

    /// Moves the counts of the batch of counter `index` by `activated` and
    /// `revoked` (each -1, 0 or 1). O(log b).
    pub(super) fn count(&mut self, index: u128, activated: i8, revoked: i8) {
        let Some(name) = self.of(index).cloned() else {
            return;
        };
        if let Some(info) = self.counts.get_mut(&name) {
            info.activated = step(info.activated, activated);
            info.revoked = step(info.revoked, revoked);
        }
    }
}

/// `n` moved by `by` (-1, 0 or 1).
pub(super) fn step(n: u128, by: i8) -> u128 {
    match by {
        1 => n + 1,
        -1 => n - 1,
        _ => n,
    }
}
