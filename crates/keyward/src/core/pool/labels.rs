//! Key labels and their interning: a label set shared by many keys is
//! stored once per pool, and each key holds a 4-byte id of its set.
//!
//! [`Labels`] is the validated set as callers see it; [`LabelSets`] is the
//! pool's refcounted table of the distinct sets in use. Id 0 is the empty
//! set, never stored, so keys without labels cost nothing beyond the id
//! field their slot already has room for.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::chunked::Chunked;

/// Most labels one key may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label name, in characters.
pub const MAX_LABEL_NAME: usize = 64;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 256;

/// Why a label set was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLabels {
    /// More than [`MAX_LABELS`] labels.
    #[error("at most {MAX_LABELS} labels")]
    TooMany,
    /// A name that is empty, too long, or not `[A-Za-z0-9._/-]`.
    #[error("label name {0:?} must be 1 to {MAX_LABEL_NAME} characters of A-Z a-z 0-9 . _ / -")]
    Name(String),
    /// A value that is too long or holds a control character.
    #[error(
        "the value of label {0:?} must be at most {MAX_LABEL_VALUE} characters, none a control character"
    )]
    Value(String),
}

/// A validated set of labels (name → value), sorted by name. Cloning is
/// O(1): the map is shared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<BTreeMap<String, String>>);

impl Labels {
    /// Validates `pairs`; a repeated name keeps its last value.
    /// O(k log k) for k labels.
    pub fn parse<I, N, V>(pairs: I) -> Result<Self, InvalidLabels>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            let (name, value) = (name.into(), value.into());
            let name_ok = (1..=MAX_LABEL_NAME).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
            if !name_ok {
                return Err(InvalidLabels::Name(name));
            }
            if value.chars().count() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
                return Err(InvalidLabels::Value(name));
            }
            map.insert(name, value);
            if map.len() > MAX_LABELS {
                return Err(InvalidLabels::TooMany);
            }
        }
        Ok(Self(Arc::new(map)))
    }

    /// The value of label `name`. O(log k).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The labels in name order. O(1) to start.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels. O(1).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty set. O(1).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The distinct label sets of one pool, each stored once with the number
/// of keys holding it. Interning and releasing are O(k log s) for a set of
/// k labels among s sets: ordered and chunked, so that no intern copies or
/// rehashes every set when a pool has many.
#[derive(Debug, Default)]
pub(super) struct LabelSets {
    /// Id − 1 → the set and its reference count; `None` once unused.
    sets: Chunked<Option<(Labels, u64)>>,
    vacant: Chunked<u32>,
    ids: BTreeMap<Labels, u32>,
}

impl LabelSets {
    /// The id of `labels`, counting one more holder; 0 for the empty set.
    /// `None` when 2^32 − 1 distinct sets are already in use.
    pub(super) fn intern(&mut self, labels: &Labels) -> Option<u32> {
        if labels.is_empty() {
            return Some(0);
        }
        if let Some(&id) = self.ids.get(labels) {
            if let Some((_, refs)) = &mut self.sets[id as usize - 1] {
                *refs += 1;
            }
            return Some(id);
        }
        let id = match self.vacant.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.sets.len() + 1).ok()?;
                self.sets.push(None);
                id
            }
        };
        self.sets[id as usize - 1] = Some((labels.clone(), 1));
        self.ids.insert(labels.clone(), id);
        Some(id)
    }

    /// Drops one holder of set `id`; the last one frees the set.
    pub(super) fn release(&mut self, id: u32) {
        if id == 0 {
            return;
        }
        let entry = &mut self.sets[id as usize - 1];
        let last = match entry {
            Some((_, refs)) => {
                *refs -= 1;
                *refs == 0
            }
            None => false,
        };
        if last {
            if let Some((labels, _)) = entry.take() {
                self.ids.remove(&labels);
            }
            self.vacant.push(id);
        }
    }

    /// The set with this id (the empty set for 0). O(1).
    pub(super) fn get(&self, id: u32) -> Labels {
        match id {
            0 => Labels::default(),
            _ => self.sets[id as usize - 1]
                .as_ref()
                .map(|(labels, _)| labels.clone())
                .expect("a key's label set is interned while the key lives"),
        }
    }

    /// Number of distinct non-empty sets in use. O(1).
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::parse(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn labels_refuse_bad_names_bad_values_and_too_many() {
        assert!(matches!(
            Labels::parse([("", "x")]),
            Err(InvalidLabels::Name(_))
        ));
        assert!(matches!(
            Labels::parse([("a b", "x")]),
            Err(InvalidLabels::Name(_))
        ));
        assert!(matches!(
            Labels::parse([("a", "x\ny")]),
            Err(InvalidLabels::Value(_))
        ));
        let long = "v".repeat(MAX_LABEL_VALUE + 1);
        assert!(matches!(
            Labels::parse([("a", long)]),
            Err(InvalidLabels::Value(_))
        ));
        let many = (0..=MAX_LABELS).map(|i| (format!("l{i}"), String::new()));
        assert_eq!(Labels::parse(many), Err(InvalidLabels::TooMany));
        let ok = labels(&[("region", "eu-west"), ("tier", "gold")]);
        assert_eq!(ok.get("tier"), Some("gold"));
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn a_label_set_shared_by_many_keys_is_stored_once_until_its_last_holder_goes() {
        let mut sets = LabelSets::default();
        let gold = labels(&[("tier", "gold")]);
        assert_eq!(sets.intern(&Labels::default()), Some(0));
        let id = sets.intern(&gold).unwrap();
        assert_eq!(sets.intern(&labels(&[("tier", "gold")])), Some(id));
        assert_eq!(sets.len(), 1);
        assert_eq!(sets.get(id), gold);
        sets.release(id);
        assert_eq!(sets.len(), 1, "one holder left");
        sets.release(id);
        assert_eq!(sets.len(), 0);
        assert_eq!(
            sets.intern(&labels(&[("tier", "silver")])),
            Some(id),
            "id reused"
        );
    }
}
