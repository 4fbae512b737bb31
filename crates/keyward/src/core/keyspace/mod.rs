//! Keyspaces: finite token spaces `alphabet^length` that issue each token
//! once, activate a token once, and say how many tokens are left.
//!
//! A token is a keyed permutation of the issue counter written in the
//! keyspace's alphabet ([`TokenCodec`]), so tokens are unique by
//! construction: issuing never retries, and costs the same when the space is
//! 99.99 % used as when it is empty. "Is this token issued?" is
//! `decode(token) < issued`, and a token's batch is the range its counter
//! falls in, so the only per-token state kept is the activations and
//! revocation of tokens that have them ([`Keyspace`]).
//!
//! - `alphabet`: [`Alphabet`] and [`KeyspaceSpec`], parsed and validated;
//! - `codec`: [`TokenCodec`], FF1 for large spaces, a keyed Feistel
//!   network for small ones, and its [`Secret`];
//! - `check`: [`CheckScheme`], the check character of readable codes
//!   (Damm's algorithm where the alphabet's size allows, else Luhn mod N);
//! - `format`: alphabet [`Preset`]s and a token's display and input forms
//!   ([`Format`]: prefix, groups, check character);
//! - `batches`: names of counter ranges, with their counts;
//! - `marks`: a token's activations and revocation, and their rules' types;
//! - this file: [`Keyspace`], the issue counter, batches and marks.
//!
//! Pure and synchronous: no I/O and no clock reads (activation takes `now`).
//! Persisting the issue counter and the activations is left to the stores; a
//! Redis backend can keep the counter in Redis and use [`TokenCodec`] alone.

use std::collections::BTreeMap;

use super::names::Name;
use super::pool::Reason;
use super::time::Timestamp;

mod alphabet;
mod batches;
mod check;
mod codec;
mod format;
mod marks;
#[cfg(test)]
mod tests;

pub use alphabet::{Alphabet, KeyspaceSpec};
pub use batches::{BatchInfo, BatchRange};
use batches::{Batches, step};
pub use check::{CheckScheme, Guarantee};
pub use codec::{Secret, TokenCodec};
pub use format::{Format, Preset};
pub use marks::{
    Activation, Fingerprint, InvalidFingerprint, MAX_FINGERPRINT, Marks, MaxActivations,
    Revocation, TokenState,
};

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
    /// Every activation slot of the token is taken.
    #[error("the token is already activated: every activation slot is taken")]
    AlreadyActivated,
    /// The token was revoked: it cannot be activated.
    #[error("the token was revoked")]
    Revoked,
    /// The token holds no activation with that fingerprint.
    #[error("the token has no activation with that fingerprint")]
    ActivationNotFound,
    /// No token was issued under that batch name.
    #[error("no such batch")]
    BatchNotFound,
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
    /// The token, in its display form.
    pub token: String,
    /// Its activations and revocation.
    pub marks: Marks,
    /// The batch it was issued under.
    pub batch: Option<Name>,
}

impl TokenStatus {
    /// A token with nothing stored. O(1).
    pub fn issued(token: String, batch: Option<Name>) -> Self {
        Self {
            token,
            marks: Marks::default(),
            batch,
        }
    }

    /// The first activation still held. O(1).
    pub fn activated_at(&self) -> Option<Timestamp> {
        self.marks.activated_at()
    }
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
    /// Issued tokens holding at least one activation.
    pub activated: u128,
    /// Issued tokens revoked.
    pub revoked: u128,
    /// Tokens that can still be issued: `capacity - issued`.
    pub remaining: u128,
    /// Activation slots per token.
    pub max_activations: MaxActivations,
}

/// The state of one keyspace: how many tokens were issued, the batches
/// they were issued under, and the marks of tokens activated or revoked.
/// Issued tokens are not stored: token `i` is issued iff `i < issued`.
#[derive(Clone, Debug)]
pub struct Keyspace {
    codec: TokenCodec,
    issued: u128,
    max_activations: MaxActivations,
    /// Counter → marks, for tokens that have any. Ordered, not hashed: a
    /// hash map rehashes every entry in the one insert that outgrows it.
    marks: BTreeMap<u128, Marks>,
    /// Tokens in `marks` holding an activation.
    activated: u128,
    /// Tokens in `marks` revoked.
    revoked: u128,
    batches: Batches,
}

impl Keyspace {
    /// A keyspace with nothing issued and one activation per token. O(1).
    pub fn new(codec: TokenCodec) -> Self {
        Self {
            codec,
            issued: 0,
            max_activations: MaxActivations::DEFAULT,
            marks: BTreeMap::new(),
            activated: 0,
            revoked: 0,
            batches: Batches::default(),
        }
    }

    /// Rebuilds a keyspace from its stored counter, batch ranges (in
    /// counter order) and marks. O(b log b + a · length) for b ranges and
    /// a marked tokens.
    ///
    /// Fails with [`KeyspaceError::InvalidKeyspace`] when `issued` exceeds
    /// the capacity, a range overlaps another or was not issued, or a mark
    /// names a token that is malformed, not issued or listed twice: the
    /// stored state does not belong to this codec.
    pub fn restore(
        codec: TokenCodec,
        issued: u128,
        max_activations: MaxActivations,
        ranges: impl IntoIterator<Item = BatchRange>,
        marks: impl IntoIterator<Item = (String, Marks)>,
    ) -> Result<Self, KeyspaceError> {
        let capacity = codec.spec().capacity();
        if issued > capacity {
            return Err(invalid(format!(
                "{issued} tokens issued from a keyspace of {capacity}"
            )));
        }
        let mut ks = Self::new(codec);
        ks.issued = issued;
        ks.max_activations = max_activations;
        let mut next = 0;
        for range in ranges {
            if range.first < next || range.end <= range.first || range.end > issued {
                return Err(invalid(format!(
                    "batch {} range {}..{} overlaps another or was not issued",
                    range.name, range.first, range.end
                )));
            }
            next = range.end;
            ks.batches.file(range.first, range.end, &range.name);
        }
        for (token, mark) in marks {
            let index = match ks.codec.read_input(&token).map(|(index, _)| index) {
                Ok(index) if index < issued => index,
                Ok(_) => {
                    return Err(invalid(format!("marked token {token:?} was never issued")));
                }
                Err(_) => {
                    return Err(invalid(format!(
                        "marked token {token:?} does not fit the alphabet and length"
                    )));
                }
            };
            if ks.marks.contains_key(&index) {
                return Err(invalid(format!("token {token:?} is stored twice")));
            }
            ks.put_marks(index, mark);
        }
        Ok(ks)
    }

    /// The codec that writes this keyspace's tokens. O(1).
    pub fn codec(&self) -> &TokenCodec {
        &self.codec
    }

    /// Activation slots per token. O(1).
    pub fn max_activations(&self) -> MaxActivations {
        self.max_activations
    }

    /// Changes the slots per token. Tokens holding more keep them; they
    /// take no new one until they are below the limit. O(1).
    pub fn set_max_activations(&mut self, max: MaxActivations) {
        self.max_activations = max;
    }

    /// Issues the next token. O(length), however full the space is: no
    /// retries. Fails with [`KeyspaceError::Exhausted`] once every token is
    /// issued.
    pub fn issue(&mut self) -> Result<Issued, KeyspaceError> {
        self.issue_in(None)
    }

    /// [`Keyspace::issue`] under a batch. O(length + log b).
    pub fn issue_in(&mut self, batch: Option<&Name>) -> Result<Issued, KeyspaceError> {
        let capacity = self.codec.spec().capacity();
        if self.issued == capacity {
            return Err(KeyspaceError::Exhausted);
        }
        let index = self.issued;
        let token = self.codec.show(index);
        self.issued += 1;
        if let Some(name) = batch {
            self.batches.file(index, self.issued, name);
        }
        Ok(Issued {
            token,
            index,
            remaining: capacity - self.issued,
        })
    }

    /// Issues the next `count` tokens, whose counters are contiguous, all
    /// or nothing: [`KeyspaceError::Exhausted`] with nothing issued when
    /// fewer are left. O(count · length), however full the space is.
    pub fn issue_many(&mut self, count: u128) -> Result<IssuedMany, KeyspaceError> {
        self.issue_many_in(count, None)
    }

    /// [`Keyspace::issue_many`] under a batch. O(count · length + log b).
    pub fn issue_many_in(
        &mut self,
        count: u128,
        batch: Option<&Name>,
    ) -> Result<IssuedMany, KeyspaceError> {
        let capacity = self.codec.spec().capacity();
        if count == 0 || capacity - self.issued < count {
            return Err(KeyspaceError::Exhausted);
        }
        let first = self.issued;
        self.issued += count;
        if let Some(name) = batch {
            self.batches.file(first, self.issued, name);
        }
        Ok(IssuedMany {
            tokens: (first..self.issued).map(|i| self.codec.show(i)).collect(),
            first,
            remaining: capacity - self.issued,
        })
    }

    /// The batch range counter `index` lies in, as it now stands: what a
    /// store writes after an issue under a batch. O(log b).
    pub fn range_of(&self, index: u128) -> Option<BatchRange> {
        self.batches.range_of(index)
    }

    /// The status of an issued token. O(length + log b + log a + m) for b
    /// batches, a tokens with marks and its m activations.
    ///
    /// Fails with [`KeyspaceError::InvalidToken`] or
    /// [`KeyspaceError::CheckMismatch`] for a malformed token and
    /// [`KeyspaceError::NotIssued`] for one not issued yet.
    pub fn status(&self, token: &str) -> Result<TokenStatus, KeyspaceError> {
        let (index, token) = self.issued_index(token)?;
        Ok(self.status_of(index, token))
    }

    /// Takes an activation slot of an issued token at `now`. The same
    /// `fingerprint` again is the slot it holds (unchanged); no fingerprint
    /// always takes a new slot. O(length + log b + log a + m), m ≤ 1000.
    ///
    /// Fails with [`KeyspaceError::Revoked`] for a revoked token and
    /// [`KeyspaceError::AlreadyActivated`] when every slot is taken, besides
    /// the errors of [`Keyspace::status`].
    pub fn activate(
        &mut self,
        token: &str,
        fingerprint: Option<&Fingerprint>,
        now: Timestamp,
    ) -> Result<TokenStatus, KeyspaceError> {
        let (index, token) = self.issued_index(token)?;
        let mut marks = self.marks.get(&index).cloned().unwrap_or_default();
        if marks.revoked.is_some() {
            return Err(KeyspaceError::Revoked);
        }
        if fingerprint.is_some_and(|f| marks.slot_of(f).is_some()) {
            return Ok(self.status_of(index, token));
        }
        if marks.activations.len() >= usize::from(self.max_activations.get()) {
            return Err(KeyspaceError::AlreadyActivated);
        }
        marks.activations.push(Activation {
            fingerprint: fingerprint.cloned(),
            at: now,
        });
        self.put_marks(index, marks);
        Ok(self.status_of(index, token))
    }

    /// Frees the slot `fingerprint` holds; a token left with none is
    /// issued again. O(length + log b + log a + m).
    ///
    /// Fails with [`KeyspaceError::ActivationNotFound`] when no slot has
    /// that fingerprint, besides the errors of [`Keyspace::status`].
    pub fn deactivate(
        &mut self,
        token: &str,
        fingerprint: &Fingerprint,
    ) -> Result<TokenStatus, KeyspaceError> {
        let (index, token) = self.issued_index(token)?;
        let mut marks = self.marks.get(&index).cloned().unwrap_or_default();
        let slot = marks
            .slot_of(fingerprint)
            .ok_or(KeyspaceError::ActivationNotFound)?;
        marks.activations.remove(slot);
        self.put_marks(index, marks);
        Ok(self.status_of(index, token))
    }

    /// Revokes an issued token for good at `now`, keeping its
    /// activations; a revoked token stays as it was (first reason kept).
    /// O(length + log b + log a + m).
    pub fn revoke(
        &mut self,
        token: &str,
        reason: Option<Reason>,
        now: Timestamp,
    ) -> Result<TokenStatus, KeyspaceError> {
        let (index, token) = self.issued_index(token)?;
        let mut marks = self.marks.get(&index).cloned().unwrap_or_default();
        if marks.revoked.is_none() {
            marks.revoked = Some(Revocation { at: now, reason });
            self.put_marks(index, marks);
        }
        Ok(self.status_of(index, token))
    }

    /// A batch's counts. O(log b) for b batches; [`KeyspaceError::BatchNotFound`] when no
    /// token was issued under it.
    pub fn batch(&self, name: &Name) -> Result<BatchInfo, KeyspaceError> {
        self.batches
            .info(name)
            .cloned()
            .ok_or(KeyspaceError::BatchNotFound)
    }

    /// Capacity, issued, activated, revoked and remaining counts. O(1).
    pub fn info(&self) -> KeyspaceInfo {
        let capacity = self.codec.spec().capacity();
        KeyspaceInfo {
            capacity,
            issued: self.issued,
            activated: self.activated,
            revoked: self.revoked,
            remaining: capacity - self.issued,
            max_activations: self.max_activations,
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

    fn status_of(&self, index: u128, token: String) -> TokenStatus {
        TokenStatus {
            token,
            marks: self.marks.get(&index).cloned().unwrap_or_default(),
            batch: self.batches.of(index).cloned(),
        }
    }

    /// Replaces a token's marks, moving the keyspace's and its batch's
    /// counts. O(log b).
    fn put_marks(&mut self, index: u128, marks: Marks) {
        let (held, revoked) = (!marks.activations.is_empty(), marks.revoked.is_some());
        let old = if marks.is_empty() {
            self.marks.remove(&index)
        } else {
            self.marks.insert(index, marks)
        }
        .unwrap_or_default();
        let activated = i8::from(held) - i8::from(!old.activations.is_empty());
        let revoked = i8::from(revoked) - i8::from(old.revoked.is_some());
        self.activated = step(self.activated, activated);
        self.revoked = step(self.revoked, revoked);
        if activated != 0 || revoked != 0 {
            self.batches.count(index, activated, revoked);
        }
    }
}
