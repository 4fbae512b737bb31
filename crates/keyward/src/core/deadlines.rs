//! An ordered index of deadlines, so expiry pops only what is due.
//!
//! Each entry is `(deadline, slot)`; the slot id breaks ties so two keys
//! may share a deadline. Popping the `m` due entries of an index of `n`
//! costs O(m log n); nothing ever scans the keys that are not due.

use std::collections::BTreeSet;

use super::time::Timestamp;

/// Deadlines of the slots of one pool, earliest first.
#[derive(Debug, Default, Clone)]
pub struct Deadlines {
    set: BTreeSet<(Timestamp, u32)>,
}

impl Deadlines {
    /// Adds `slot` due at `at`. O(log n).
    pub fn insert(&mut self, at: Timestamp, slot: u32) {
        self.set.insert((at, slot));
    }

    /// Removes the entry of `slot` due at `at`, if present. O(log n).
    pub fn remove(&mut self, at: Timestamp, slot: u32) {
        self.set.remove(&(at, slot));
    }

    /// Moves `slot` from `old` to `new`. O(log n).
    pub fn reschedule(&mut self, old: Timestamp, new: Timestamp, slot: u32) {
        if old != new {
            self.remove(old, slot);
            self.insert(new, slot);
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`
    /// (deadline <= now). O(log n).
    pub fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, u32)> {
        match self.set.first() {
            Some(&(at, _)) if at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    /// The earliest deadline, if any. O(log n).
    pub fn next(&self) -> Option<Timestamp> {
        self.set.first().map(|&(at, _)| at)
    }

    /// Number of entries. O(1).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no deadline is pending. O(1).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_due_returns_only_entries_at_or_before_now_in_order() {
        let mut d = Deadlines::default();
        d.insert(Timestamp::from_millis(30), 1);
        d.insert(Timestamp::from_millis(10), 2);
        d.insert(Timestamp::from_millis(10), 3);
        let now = Timestamp::from_millis(10);
        assert_eq!(d.pop_due(now), Some((now, 2)));
        assert_eq!(d.pop_due(now), Some((now, 3)));
        assert_eq!(d.pop_due(now), None);
        assert_eq!(d.next(), Some(Timestamp::from_millis(30)));
        d.reschedule(Timestamp::from_millis(30), Timestamp::from_millis(5), 1);
        assert_eq!(d.pop_due(now), Some((Timestamp::from_millis(5), 1)));
        assert!(d.is_empty());
    }
}
