//! Keyspaces: finite token spaces `alphabet^length` that issue each token
//! once, activate a token once, and say how many tokens are left.
//!
//! A token is a keyed permutation of the issue counter written in the
//! keyspace's alphabet ([`TokenCodec`]), so tokens are unique by
//! construction: issuing never retries, and costs the same when the space is
//! 99.99 % used as when it is empty. "Is this token issued?" is
//! `decode(token) < issued`, so the only per-token state kept is the
//! activation time of activated tokens ([`Keyspace`]).
//!
//! - `alphabet`: [`Alphabet`] and [`KeyspaceSpec`], parsed and validated;
//! - `codec`: [`TokenCodec`], FF1 for large spaces, a keyed Feistel
//!   network for small ones, and its [`Secret`];
//! - `check`: [`CheckScheme`], the check character of readable codes
//!   (Damm's algorithm where the alphabet's size allows, else Luhn mod N);
//! - `format`: alphabet [`Preset`]s and a token's display and input forms
//!   ([`Format`]: prefix, groups, check character);
//! - this file: [`Keyspace`], the issue counter and the activations.
//!
//! Pure and synchronous: no I/O and no clock reads (activation takes `now`).
//! Persisting the issue counter and the activations is left to the stores; a
//! Redis backend can keep the counter in Redis and use [`TokenCodec`] alone.

use std::collections::HashMap;

use super::time::Timestamp;

mod alphabet;
mod check;
mod codec;
mod format;
#[cfg(test)]
mod tests;

pub use alphabet::{Alphabet, KeyspaceSpec};
pub use check::{CheckScheme, Guarantee};
pub use codec::{Secret, TokenCodec};
pub use format::{Format, Preset};

/// Why a keyspace operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyspaceError {
    /// The alphabet, length or stored state does not describe a valid
    /// keyspace; the text says why, for a human.
    #[error("invalid keyspace: {0}")]
    InvalidKeyspace(String),
    /// The token has the wrong number of characters or a character outside
    /// the alphabet, so no keyspace of this shape could have issued it.
    #[error("the token has the wrong length or a character outside the alphabet")]
    InvalidToken,
    /// A readable code's check character is not the one its characters
    /// give: a typo, caught before any lookup.
    #[error("check character does not match")]
    CheckMismatch,
    /// The token is well formed but has not been issued (yet).
    #[error("the token has not been issued")]
    NotIssued,
    /// The token was activated before; activation happens once.
    #[error("the token is already activated")]
    AlreadyActivated,
    /// Every token of the keyspace has been issued.
    #[error("every token of the keyspace has been issued")]
    Exhausted,
}

fn invalid(reason: impl Into<String>) -> KeyspaceError {
    KeyspaceError::InvalidKeyspace(reason.into())
}

/// Tokens issued together, with contiguous counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedMany {
    /// The tokens, in counter order, in their display form.
    pub tokens: Vec<String>,
    /// The counter of the first.
    pub first: u128,
    /// Tokens that can still be issued after these.
    pub remaining: u128,
}

/// What is known about one issued token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenStatus {
    /// The token, as issued.
    pub token: String,
    /// When it was activated; `None` while it is only issued.
    pub activated_at: Option<Timestamp>,
}

/// A freshly issued token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The new token.
    pub token: String,
    /// Its issue number: the `index`-th token issued, counting from 0.
    pub index: u128,
    /// Tokens that can still be issued after this one.
    pub remaining: u128,
}

/// Counters of a keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyspaceInfo {
    /// Number of distinct tokens, `alphabet.len()^length`.
    pub capacity: u128,
    /// Tokens issued so far.
    pub issued: u128,
    /// Issued tokens that were activated.
    pub activated: u128,
    /// Tokens that can still be issued: `capacity - issued`.
    pub remaining: u128,
}

/// The state of one keyspace: how many tokens were issued, and when each
/// activated token was activated. Issued tokens are not stored: token `i` is
/// issued iff `i < issued`.
#[derive(Clone, Debug)]
pub struct Keyspace {
    codec: TokenCodec,
    issued: u128,
    activations: HashMap<u128, Timestamp>,
}

impl Keyspace {
    /// A keyspace with nothing issued. O(1).
    pub fn new(codec: TokenCodec) -> Self {
        Self {
            codec,
            issued: 0,
            activations: HashMap::new(),
        }
    }

    /// Rebuilds a keyspace from its stored counter and activations.
    /// O(a · length) for `a` activations.
    ///
    /// Fails with [`KeyspaceError::InvalidKeyspace`] when `issued` exceeds the
    /// capacity, or an activation names a token that is malformed, not issued
    /// or listed twice: the stored state does not belong to this codec.
    pub fn restore(
        codec: TokenCodec,
        issued: u128,
        activations: impl IntoIterator<Item = (String, Timestamp)>,
    ) -> Result<Self, KeyspaceError> {
        let capacity = codec.spec().capacity();
        if issued > capacity {
            return Err(invalid(format!(
                "{issued} tokens issued from a keyspace of {capacity}"
            )));
        }
        let mut restored = HashMap::new();
        for (token, at) in activations {
            let index = match codec.read_input(&token).map(|(index, _)| index) {
                Ok(index) if index < issued => index,
                Ok(_) => {
                    return Err(invalid(format!(
                        "activated token {token:?} was never issued"
                    )));
                }
                Err(_) => {
                    return Err(invalid(format!(
                        "activated token {token:?} does not fit the alphabet and length"
                    )));
                }
            };
            if restored.insert(index, at).is_some() {
                return Err(invalid(format!("token {token:?} is activated twice")));
            }
        }
        Ok(Self {
            codec,
            issued,
            activations: restored,
        })
    }

    /// The codec that writes this keyspace's tokens. O(1).
    pub fn codec(&self) -> &TokenCodec {
        &self.codec
    }

    /// Issues the next token. O(length), however full the space is: no
    /// retries. Fails with [`KeyspaceError::Exhausted`] once every token is
    /// issued.
    pub fn issue(&mut self) -> Result<Issued, KeyspaceError> {
        let capacity = self.codec.spec().capacity();
        if self.issued == capacity {
            return Err(KeyspaceError::Exhausted);
        }
        let index = self.issued;
        let token = self.codec.show(index);
        self.issued += 1;
        Ok(Issued {
            token,
            index,
            remaining: capacity - self.issued,
        })
    }

    /// The status of an issued token. O(length).
    ///
    /// Fails with [`KeyspaceError::InvalidToken`] for a malformed token and
    /// [`KeyspaceError::NotIssued`] for one not issued yet.
    pub fn status(&self, token: &str) -> Result<TokenStatus, KeyspaceError> {
        let (index, token) = self.issued_index(token)?;
        Ok(TokenStatus {
            token,
            activated_at: self.activations.get(&index).copied(),
        })
    }

    /// Activates an issued token at `now`, once. O(length).
    ///
    /// Fails with [`KeyspaceError::InvalidToken`], [`KeyspaceError::NotIssued`]
    /// or, from the second time on, [`KeyspaceError::AlreadyActivated`].
    pub fn activate(&mut self, token: &str, now: Timestamp) -> Result<TokenStatus, KeyspaceError> {
        let (index, token) = self.issued_index(token)?;
        if self.activations.contains_key(&index) {
            return Err(KeyspaceError::AlreadyActivated);
        }
        self.activations.insert(index, now);
        Ok(TokenStatus {
            token,
            activated_at: Some(now),
        })
    }

    /// Issues the next `count` tokens, whose counters are contiguous, all
    /// or nothing: [`KeyspaceError::Exhausted`] with nothing issued when
    /// fewer are left. O(count · length), however full the space is.
    pub fn issue_many(&mut self, count: u128) -> Result<IssuedMany, KeyspaceError> {
        let capacity = self.codec.spec().capacity();
        if count == 0 || capacity - self.issued < count {
            return Err(KeyspaceError::Exhausted);
        }
        let first = self.issued;
        self.issued += count;
        Ok(IssuedMany {
            tokens: (first..self.issued).map(|i| self.codec.show(i)).collect(),
            first,
            remaining: capacity - self.issued,
        })
    }

    /// Capacity, issued, activated and remaining counts. O(1).
    pub fn info(&self) -> KeyspaceInfo {
        let capacity = self.codec.spec().capacity();
        KeyspaceInfo {
            capacity,
            issued: self.issued,
            activated: u128::try_from(self.activations.len()).expect("a usize count fits in u128"),
            remaining: capacity - self.issued,
        }
    }

    /// The index of an issued token typed as `token`, and its display
    /// form.
    fn issued_index(&self, token: &str) -> Result<(u128, String), KeyspaceError> {
        let (index, shown) = self.codec.read_input(token)?;
        if index < self.issued {
            Ok((index, shown))
        } else {
            Err(KeyspaceError::NotIssued)
        }
    }
}
