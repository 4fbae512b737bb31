//! Names of pools and keyspaces: 1–64 of `[A-Za-z0-9._-]`; and the rule of
//! the free texts clients attach (reasons, fingerprints).
//!
//! Parsed once at the edge; a [`Name`] cannot hold anything else.

use std::fmt;
use std::sync::Arc;

/// Whether `s` is a free text clients may attach: 1 to `max` characters,
/// none a control character (so it cannot break a log line). O(len).
pub(crate) fn is_short_text(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

/// A validated pool or keyspace name. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

/// The name did not match `[A-Za-z0-9._-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
pub struct InvalidName;

impl Name {
    /// Longest accepted name, in bytes (all accepted characters are ASCII).
    pub const MAX_LEN: usize = 64;

    /// Accepts exactly `[A-Za-z0-9._-]{1,64}`. O(n) in the name's length.
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(InvalidName)
        }
    }

    /// The pool and keyspace that exist from the start. O(1).
    pub fn default_name() -> Self {
        Self("default".into())
    }

    /// The name as text. O(1).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Names order as their text, so ordered sets of names can be searched
// from any text (a page cursor) without parsing it first.
impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_the_documented_rule() {
        for ok in ["a", "default", "A.b_c-9", &"x".repeat(64)] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é", "..%00", &"x".repeat(65)] {
            assert_eq!(Name::parse(bad), Err(InvalidName), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_the_alphabet(s in "\\PC{0,80}") {
            if let Ok(n) = Name::parse(&s) {
                prop_assert!(n.as_str().len() <= 64);
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            }
        }
    }
}
