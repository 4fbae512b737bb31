//! What is stored per token: its activations and its revocation. Only
//! tokens that were activated or revoked have any.

use crate::core::names::is_short_text;
use crate::core::pool::Reason;
use crate::core::time::Timestamp;

/// Longest fingerprint, in characters.
pub const MAX_FINGERPRINT: usize = 256;

/// Who activated a token (a machine id, an account): 1–256 characters, none
/// a control character. The same fingerprint again takes the same slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(Box<str>);

/// A fingerprint that is empty, too long or holds a control character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint must be 1 to {MAX_FINGERPRINT} characters, none a control character")]
pub struct InvalidFingerprint;

impl Fingerprint {
    /// Validates `s`. O(len).
    pub fn parse(s: &str) -> Result<Self, InvalidFingerprint> {
        if is_short_text(s, MAX_FINGERPRINT) {
            Ok(Self(s.into()))
        } else {
            Err(InvalidFingerprint)
        }
    }

    /// The text. O(1).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many activation slots each token has: 1–1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxActivations(u16);

impl MaxActivations {
    /// One activation per token, as in the first API.
    pub const DEFAULT: Self = Self(1);
    /// The most a keyspace may allow.
    pub const MAX: u16 = 1000;

    /// `None` unless `1 <= n <= 1000`. O(1).
    pub fn new(n: u64) -> Option<Self> {
        (1..=u64::from(Self::MAX))
            .contains(&n)
            .then(|| Self(u16::try_from(n).expect("at most 1000")))
    }

    /// The count. O(1).
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for MaxActivations {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One taken activation slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activation {
    /// Who took it; `None`: nobody said, so it is a slot of its own.
    pub fingerprint: Option<Fingerprint>,
    /// When.
    pub at: Timestamp,
}

/// A token revoked for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// When.
    pub at: Timestamp,
    /// Why, if the caller said.
    pub reason: Option<Reason>,
}

/// A token's state as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// Issued, no slot taken.
    Issued,
    /// At least one slot taken.
    Activated,
    /// Revoked (whatever its activations).
    Revoked,
}

impl TokenState {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Activated => "activated",
            Self::Revoked => "revoked",
        }
    }
}

/// Everything stored for one token: its activations in the order they were
/// taken, and its revocation. The default (nothing) is not stored at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// Slots taken, oldest first; at most the keyspace's `max_activations`
    /// when they were taken.
    pub activations: Vec<Activation>,
    /// Set once, never cleared.
    pub revoked: Option<Revocation>,
}

impl Marks {
    /// Nothing to store. O(1).
    pub fn is_empty(&self) -> bool {
        self.activations.is_empty() && self.revoked.is_none()
    }

    /// The first activation still held; `None` when no slot is taken. O(1).
    pub fn activated_at(&self) -> Option<Timestamp> {
        self.activations.first().map(|a| a.at)
    }

    /// Issued, activated or revoked. O(1).
    pub fn state(&self) -> TokenState {
        if self.revoked.is_some() {
            TokenState::Revoked
        } else if self.activations.is_empty() {
            TokenState::Issued
        } else {
            TokenState::Activated
        }
    }

    /// The slot `fingerprint` holds. O(m) for the token's m ≤ 1000
    /// activations.
    pub fn slot_of(&self, fingerprint: &Fingerprint) -> Option<usize> {
        self.activations
            .iter()
            .position(|a| a.fingerprint.as_ref() == Some(fingerprint))
    }
}
