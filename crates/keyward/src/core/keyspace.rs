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
//! Spaces of 10^6 tokens or more use NIST FF1 (SP 800-38G, the `fpe` crate).
//! FF1 refuses smaller domains, and cycle-walking FF1 on 10^6 values down to a
//! space of ten would cost ~10^5 encryptions per token, so smaller spaces use a
//! keyed Feistel network over the next even power of two with cycle-walking,
//! which takes fewer than four passes on average.
//!
//! Pure and synchronous: no I/O and no clock reads (activation takes `now`).
//! Persisting the issue counter and the activations is left to the stores; a
//! Redis backend can keep the counter in Redis and use [`TokenCodec`] alone.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aes::Aes256Enc;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use fpe::ff1::{FF1, FlexibleNumeralString};
use rand::TryRng;
use rand::rngs::SysRng;

use super::time::Timestamp;

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

/// The characters tokens are written with: 2 to 65 536 distinct Unicode
/// characters, none of them whitespace, a control character or `/`.
///
/// Each character is one digit; its value is its position in the alphabet.
#[derive(Clone)]
pub struct Alphabet {
    text: String,
    chars: Vec<char>,
    // Digits sorted by their character, so decoding a character is a binary
    // search: O(log n), 16 steps for a 65 536-character alphabet, at 2 bytes
    // per character where a hash map took about 18 (a keyspace is at most
    // ~0.6 MB instead of ~1.7 MB, which `--max-keyspaces` multiplies).
    order: Vec<u16>,
}

impl Alphabet {
    /// Fewest characters: a one-character alphabet has one token per length.
    pub const MIN_LEN: usize = 2;
    /// Most characters: FF1 is defined for radixes up to 2^16.
    pub const MAX_LEN: usize = 1 << 16;

    /// Accepts 2 to 65 536 distinct characters, none whitespace, control or
    /// `/` (tokens travel as URL path segments). O(n log n) in the
    /// alphabet's length.
    pub fn parse(s: &str) -> Result<Self, KeyspaceError> {
        let mut chars = Vec::new();
        for c in s.chars() {
            if c.is_whitespace() {
                return Err(invalid(format!(
                    "the alphabet contains the whitespace character U+{:04X}",
                    u32::from(c)
                )));
            }
            if c.is_control() {
                return Err(invalid(format!(
                    "the alphabet contains the control character U+{:04X}",
                    u32::from(c)
                )));
            }
            if c == '/' {
                return Err(invalid("the alphabet contains '/'"));
            }
            if chars.len() == Self::MAX_LEN {
                return Err(invalid(format!(
                    "the alphabet has more than {} characters",
                    Self::MAX_LEN
                )));
            }
            chars.push(c);
        }
        let mut order: Vec<u16> = (0..chars.len())
            .map(|i| u16::try_from(i).expect("at most 2^16 characters, checked above"))
            .collect();
        order.sort_unstable_by_key(|&i| chars[usize::from(i)]);
        if let Some(pair) = order
            .windows(2)
            .find(|w| chars[usize::from(w[0])] == chars[usize::from(w[1])])
        {
            let c = chars[usize::from(pair[0])];
            return Err(invalid(format!("the alphabet repeats the character {c:?}")));
        }
        if chars.len() < Self::MIN_LEN {
            let noun = if chars.len() == 1 {
                "character"
            } else {
                "characters"
            };
            return Err(invalid(format!(
                "the alphabet has {} {noun}; at least {} are needed",
                chars.len(),
                Self::MIN_LEN
            )));
        }
        Ok(Self {
            text: s.to_owned(),
            chars,
            order,
        })
    }

    /// The alphabet as given to [`Alphabet::parse`]. O(1).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of characters (not bytes), i.e. the radix of tokens. O(1).
    #[expect(
        clippy::len_without_is_empty,
        reason = "an alphabet always holds at least two characters"
    )]
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    fn char_of(&self, digit: u16) -> char {
        self.chars[usize::from(digit)]
    }

    /// O(log n).
    fn digit_of(&self, c: char) -> Option<u16> {
        let at = self
            .order
            .binary_search_by(|&i| self.chars[usize::from(i)].cmp(&c))
            .ok()?;
        Some(self.order[at])
    }
}

impl PartialEq for Alphabet {
    fn eq(&self, other: &Self) -> bool {
        // `chars` and `order` are functions of `text`.
        self.text == other.text
    }
}

impl Eq for Alphabet {}

impl fmt::Debug for Alphabet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Alphabet").field(&self.text).finish()
    }
}

/// The shape of a keyspace: an alphabet and a token length in characters,
/// with `capacity = alphabet.len()^length` below 2^128.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceSpec {
    alphabet: Alphabet,
    length: u32,
    capacity: u128,
}

impl KeyspaceSpec {
    /// Parses the alphabet and checks `length >= 1` and
    /// `alphabet.len()^length < 2^128`. O(n) in the alphabet's length.
    pub fn new(alphabet: &str, length: u32) -> Result<Self, KeyspaceError> {
        let alphabet = Alphabet::parse(alphabet)?;
        if length == 0 {
            return Err(invalid("the token length must be at least 1"));
        }
        let radix =
            u128::try_from(alphabet.len()).expect("an alphabet has at most 2^16 characters");
        let capacity = radix.checked_pow(length).ok_or_else(|| {
            invalid(format!(
                "{}^{length} tokens is not below 2^128; use a shorter length or a smaller alphabet",
                alphabet.len()
            ))
        })?;
        Ok(Self {
            alphabet,
            length,
            capacity,
        })
    }

    /// The alphabet tokens are written with. O(1).
    pub fn alphabet(&self) -> &Alphabet {
        &self.alphabet
    }

    /// Characters per token. O(1).
    pub fn length(&self) -> u32 {
        self.length
    }

    /// Number of distinct tokens, `alphabet.len()^length`. O(1).
    pub fn capacity(&self) -> u128 {
        self.capacity
    }
}

/// The 32-byte secret key of a keyspace. Whoever holds it can predict every
/// token, so `Debug` prints `Secret(..)` and never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl Secret {
    /// A fresh secret from the operating system's CSPRNG. O(1).
    ///
    /// # Panics
    ///
    /// If the OS random source fails, as `rand::rng()` does: a keyspace must
    /// never get a guessable secret.
    pub fn generate() -> Self {
        let mut bytes = [0; 32];
        SysRng
            .try_fill_bytes(&mut bytes)
            .expect("the OS random source must work to create a keyspace secret");
        Self(bytes)
    }

    /// A secret read back from storage. O(1).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key, for storage. O(1).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Smallest domain NIST FF1 accepts (SP 800-38G Rev. 1); `fpe` refuses less.
const FF1_MIN_CAPACITY: u128 = 1_000_000;

/// Feistel rounds for small spaces, as many as FF1 uses: with halves of at
/// most 10 bits, extra rounds are the cheap way to mix them well. Each round
/// is one AES block.
const FEISTEL_ROUNDS: u8 = 10;

/// A keyed permutation of `0..capacity`.
#[derive(Clone)]
enum Permutation {
    // Behind `Arc` because `FF1` is not `Clone`, and so that clones of a
    // codec share one AES key schedule instead of copying it.
    Ff1(Arc<FF1<Aes256Enc>>),
    Feistel(Arc<Feistel>),
}

/// A balanced Feistel network on `2 * half_bits`-bit values, restricted to
/// `0..capacity` by cycle-walking.
struct Feistel {
    aes: Aes256Enc,
    half_bits: u32,
    capacity: u32,
}

impl Feistel {
    fn new(secret: &Secret, capacity: u32) -> Self {
        // The smallest even power of two >= capacity, and at least 2^2 so each
        // half has a bit: then the domain is under 4 * capacity and a walk
        // takes fewer than 4 passes on average.
        let half_bits = capacity
            .next_power_of_two()
            .trailing_zeros()
            .div_ceil(2)
            .max(1);
        Self {
            aes: Aes256Enc::new(&Array::from(secret.0)),
            half_bits,
            capacity,
        }
    }

    fn mask(&self) -> u32 {
        (1 << self.half_bits) - 1
    }

    fn round(&self, round: u8, half: u32) -> u32 {
        let mut block = Array::from([0u8; 16]);
        // Tag, round and shape in the block keep these outputs apart from
        // each other and from the AES calls of any other construction.
        block[..4].copy_from_slice(b"kwfe");
        block[4] = round;
        block[5..9].copy_from_slice(&self.capacity.to_be_bytes());
        block[12..].copy_from_slice(&half.to_be_bytes());
        self.aes.encrypt_block(&mut block);
        u32::from_be_bytes([block[0], block[1], block[2], block[3]]) & self.mask()
    }

    fn forward_pass(&self, x: u32) -> u32 {
        let (mut left, mut right) = (x >> self.half_bits, x & self.mask());
        for r in 0..FEISTEL_ROUNDS {
            (left, right) = (right, left ^ self.round(r, right));
        }
        (left << self.half_bits) | right
    }

    fn backward_pass(&self, y: u32) -> u32 {
        let (mut left, mut right) = (y >> self.half_bits, y & self.mask());
        for r in (0..FEISTEL_ROUNDS).rev() {
            (left, right) = (right ^ self.round(r, left), left);
        }
        (left << self.half_bits) | right
    }

    // Cycle-walking: following the permutation's cycle from an in-range value
    // always reaches another in-range value (at worst the start), so the walk
    // ends and stays a bijection on 0..capacity.
    fn encrypt(&self, x: u32) -> u32 {
        let mut y = self.forward_pass(x);
        while y >= self.capacity {
            y = self.forward_pass(y);
        }
        y
    }

    fn decrypt(&self, y: u32) -> u32 {
        let mut x = self.backward_pass(y);
        while x >= self.capacity {
            x = self.backward_pass(x);
        }
        x
    }
}

/// The keyed bijection between issue indexes `0..capacity` and tokens.
///
/// Token number `i` is a keyed permutation of `i` written as `length` digits
/// of the alphabet, most significant first. Without the secret the order of
/// tokens cannot be predicted. `Debug` redacts the secret. Shared by the
/// local engine and by backends that keep the issue counter elsewhere.
#[derive(Clone)]
pub struct TokenCodec {
    spec: KeyspaceSpec,
    secret: Secret,
    permutation: Permutation,
}

impl TokenCodec {
    /// Builds the permutation for `spec` keyed by `secret`: FF1 with AES-256
    /// for 10^6 tokens or more, a Feistel network with AES-256 rounds below.
    /// O(1) (one AES key schedule).
    pub fn new(spec: KeyspaceSpec, secret: Secret) -> Self {
        let permutation = if spec.capacity >= FF1_MIN_CAPACITY {
            let radix = u32::try_from(spec.alphabet.len())
                .expect("an alphabet has at most 2^16 characters");
            // radix^length >= 10^6 is exactly FF1's minimum length for this
            // radix, and alphabets hold 2..=2^16 characters, FF1's radix range.
            let ff1 = FF1::<Aes256Enc>::new(&secret.0, radix)
                .expect("alphabet sizes are within FF1's radix range 2..=2^16");
            Permutation::Ff1(Arc::new(ff1))
        } else {
            let capacity = u32::try_from(spec.capacity).expect("capacity is below 10^6 here");
            Permutation::Feistel(Arc::new(Feistel::new(&secret, capacity)))
        };
        Self {
            spec,
            secret,
            permutation,
        }
    }

    /// The keyspace shape this codec writes tokens for. O(1).
    pub fn spec(&self) -> &KeyspaceSpec {
        &self.spec
    }

    /// The key of the permutation, for storage. O(1).
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The token issued as number `index`. O(length): one FF1 encryption, or
    /// fewer than 4 Feistel passes on average; independent of how many tokens
    /// were issued.
    ///
    /// # Panics
    ///
    /// If `index >= capacity`: such an index has no token, and issuing it
    /// would repeat one.
    pub fn encode(&self, index: u128) -> String {
        assert!(
            index < self.spec.capacity,
            "token index {index} is outside the keyspace of {} tokens",
            self.spec.capacity
        );
        let digits = match &self.permutation {
            Permutation::Ff1(ff1) => {
                let plain = FlexibleNumeralString::from(self.digits_of(index));
                let encrypted = ff1
                    .encrypt(&[], &plain)
                    .expect("digits are below the radix and at least FF1's minimum length");
                Vec::from(encrypted)
            }
            Permutation::Feistel(feistel) => {
                let index = u32::try_from(index).expect("Feistel spaces hold under 10^6 tokens");
                self.digits_of(u128::from(feistel.encrypt(index)))
            }
        };
        self.write(&digits)
    }

    /// The index `token` was issued as (whether or not it was issued yet).
    /// O(length), independent of how many tokens were issued.
    ///
    /// Fails with [`KeyspaceError::InvalidToken`] when the token does not
    /// have `length` characters (not bytes) or uses one outside the alphabet.
    pub fn decode(&self, token: &str) -> Result<u128, KeyspaceError> {
        let digits = self.read(token)?;
        match &self.permutation {
            Permutation::Ff1(ff1) => {
                let decrypted = ff1
                    .decrypt(&[], &FlexibleNumeralString::from(digits))
                    .expect("digits are below the radix and at least FF1's minimum length");
                Ok(self.value_of(&Vec::from(decrypted)))
            }
            Permutation::Feistel(feistel) => {
                let permuted = u32::try_from(self.value_of(&digits))
                    .expect("Feistel spaces hold under 10^6 tokens");
                Ok(u128::from(feistel.decrypt(permuted)))
            }
        }
    }

    fn radix(&self) -> u128 {
        u128::try_from(self.spec.alphabet.len()).expect("an alphabet has at most 2^16 characters")
    }

    /// `value` as `length` digits, most significant first.
    fn digits_of(&self, mut value: u128) -> Vec<u16> {
        let radix = self.radix();
        let mut digits = vec![0; self.spec.length as usize];
        for digit in digits.iter_mut().rev() {
            *digit = u16::try_from(value % radix).expect("a digit is below the radix <= 2^16");
            value /= radix;
        }
        digits
    }

    fn value_of(&self, digits: &[u16]) -> u128 {
        let radix = self.radix();
        // `length` digits below the radix are below capacity < 2^128.
        digits
            .iter()
            .fold(0, |value, &digit| value * radix + u128::from(digit))
    }

    fn write(&self, digits: &[u16]) -> String {
        digits
            .iter()
            .map(|&digit| self.spec.alphabet.char_of(digit))
            .collect()
    }

    fn read(&self, token: &str) -> Result<Vec<u16>, KeyspaceError> {
        let length = self.spec.length as usize;
        let mut digits = Vec::with_capacity(length);
        for c in token.chars() {
            // Stop at the first excess character so an oversized token costs
            // no more than a valid one.
            if digits.len() == length {
                return Err(KeyspaceError::InvalidToken);
            }
            digits.push(
                self.spec
                    .alphabet
                    .digit_of(c)
                    .ok_or(KeyspaceError::InvalidToken)?,
            );
        }
        if digits.len() == length {
            Ok(digits)
        } else {
            Err(KeyspaceError::InvalidToken)
        }
    }
}

impl fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let permutation = match self.permutation {
            Permutation::Ff1(_) => "ff1",
            Permutation::Feistel(_) => "feistel",
        };
        f.debug_struct("TokenCodec")
            .field("spec", &self.spec)
            .field("secret", &self.secret)
            .field("permutation", &permutation)
            .finish()
    }
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
        let capacity = codec.spec.capacity;
        if issued > capacity {
            return Err(invalid(format!(
                "{issued} tokens issued from a keyspace of {capacity}"
            )));
        }
        let mut restored = HashMap::new();
        for (token, at) in activations {
            let index = match codec.decode(&token) {
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
        let capacity = self.codec.spec.capacity;
        if self.issued == capacity {
            return Err(KeyspaceError::Exhausted);
        }
        let index = self.issued;
        let token = self.codec.encode(index);
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
        let index = self.issued_index(token)?;
        Ok(TokenStatus {
            token: token.to_owned(),
            activated_at: self.activations.get(&index).copied(),
        })
    }

    /// Activates an issued token at `now`, once. O(length).
    ///
    /// Fails with [`KeyspaceError::InvalidToken`], [`KeyspaceError::NotIssued`]
    /// or, from the second time on, [`KeyspaceError::AlreadyActivated`].
    pub fn activate(&mut self, token: &str, now: Timestamp) -> Result<TokenStatus, KeyspaceError> {
        let index = self.issued_index(token)?;
        if self.activations.contains_key(&index) {
            return Err(KeyspaceError::AlreadyActivated);
        }
        self.activations.insert(index, now);
        Ok(TokenStatus {
            token: token.to_owned(),
            activated_at: Some(now),
        })
    }

    /// Capacity, issued, activated and remaining counts. O(1).
    pub fn info(&self) -> KeyspaceInfo {
        let capacity = self.codec.spec.capacity;
        KeyspaceInfo {
            capacity,
            issued: self.issued,
            activated: u128::try_from(self.activations.len()).expect("a usize count fits in u128"),
            remaining: capacity - self.issued,
        }
    }

    fn issued_index(&self, token: &str) -> Result<u128, KeyspaceError> {
        let index = self.codec.decode(token)?;
        if index < self.issued {
            Ok(index)
        } else {
            Err(KeyspaceError::NotIssued)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// The default keyspace's alphabet, the original service's.
    const SEED_ALPHABET: &str = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM";
    const CYRILLIC: &str = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя";
    const HEX: &str = "0123456789abcdef";

    fn secret(byte: u8) -> Secret {
        Secret::from_bytes([byte; 32])
    }

    fn codec_with(alphabet: &str, length: u32, secret: Secret) -> TokenCodec {
        TokenCodec::new(KeyspaceSpec::new(alphabet, length).unwrap(), secret)
    }

    fn codec_for(alphabet: &str, length: u32) -> TokenCodec {
        codec_with(alphabet, length, secret(7))
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// `n` distinct characters that alphabets accept, starting past Latin-1.
    fn distinct_chars(n: usize) -> String {
        (0x100..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| !c.is_whitespace() && !c.is_control() && *c != '/')
            .take(n)
            .collect()
    }

    /// Token `index` if tokens were issued in plain counting order.
    fn counting_token(alphabet: &str, length: u32, mut index: u128) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let radix = chars.len() as u128;
        let mut token = vec![chars[0]; length as usize];
        for slot in token.iter_mut().rev() {
            *slot = chars[(index % radix) as usize];
            index /= radix;
        }
        token.into_iter().collect()
    }

    /// Issues every token of the space, checking each appears once, is issued
    /// and decodes back to its index; returns them in issue order.
    fn issue_whole_space(alphabet: &str, length: u32) -> Vec<String> {
        let mut keyspace = Keyspace::new(codec_for(alphabet, length));
        let capacity = keyspace.info().capacity;
        let mut seen = HashSet::new();
        let mut tokens = Vec::new();
        for index in 0..capacity {
            let issued = keyspace.issue().unwrap();
            assert_eq!(issued.index, index);
            assert_eq!(issued.remaining, capacity - index - 1);
            assert_eq!(issued.token.chars().count(), length as usize);
            assert!(issued.token.chars().all(|c| alphabet.contains(c)));
            assert!(
                seen.insert(issued.token.clone()),
                "{} repeated",
                issued.token
            );
            tokens.push(issued.token);
        }
        assert_eq!(keyspace.issue(), Err(KeyspaceError::Exhausted));
        for (index, token) in tokens.iter().enumerate() {
            assert_eq!(
                keyspace.status(token),
                Ok(TokenStatus {
                    token: token.clone(),
                    activated_at: None
                })
            );
            assert_eq!(keyspace.codec().decode(token), Ok(index as u128));
        }
        assert_eq!(
            keyspace.info(),
            KeyspaceInfo {
                capacity,
                issued: capacity,
                activated: 0,
                remaining: 0
            }
        );
        tokens
    }

    fn assert_not_in_counting_order(alphabet: &str, length: u32, tokens: &[String]) {
        let counting: Vec<String> = (0..tokens.len() as u128)
            .map(|i| counting_token(alphabet, length, i))
            .collect();
        assert_ne!(tokens, counting);
    }

    #[test]
    fn whole_2_pow_2_space_issues_each_token_once_out_of_order_then_is_exhausted() {
        let tokens = issue_whole_space("ab", 2);
        assert_eq!(tokens.len(), 4);
        assert_not_in_counting_order("ab", 2, &tokens);
    }

    #[test]
    fn whole_10_pow_3_space_issues_each_token_once_out_of_order_then_is_exhausted() {
        let tokens = issue_whole_space("0123456789", 3);
        assert_eq!(tokens.len(), 1000);
        assert_not_in_counting_order("0123456789", 3, &tokens);
    }

    #[test]
    fn whole_26_pow_3_space_issues_each_token_once_out_of_order_then_is_exhausted() {
        let alphabet = "abcdefghijklmnopqrstuvwxyz";
        let tokens = issue_whole_space(alphabet, 3);
        assert_eq!(tokens.len(), 17_576);
        assert_not_in_counting_order(alphabet, 3, &tokens);
    }

    #[test]
    fn spaces_of_two_and_three_tokens_issue_each_once() {
        let mut two = issue_whole_space("ab", 1);
        two.sort();
        assert_eq!(two, ["a", "b"]);
        let mut three = issue_whole_space("xyz", 1);
        three.sort();
        assert_eq!(three, ["x", "y", "z"]);
    }

    #[test]
    fn every_alphabet_size_and_length_gives_a_bijection() {
        for radix in [
            2, 3, 4, 5, 7, 10, 16, 26, 52, 64, 100, 256, 999, 1000, 65_536,
        ] {
            let alphabet = distinct_chars(radix);
            for length in 1..=127 {
                let Ok(spec) = KeyspaceSpec::new(&alphabet, length) else {
                    break;
                };
                let capacity = spec.capacity();
                let codec = TokenCodec::new(spec, secret(3));
                if capacity <= 4096 {
                    let all: HashSet<String> = (0..capacity).map(|i| codec.encode(i)).collect();
                    assert_eq!(all.len() as u128, capacity, "{radix}^{length}");
                }
                for index in [0, 1, capacity / 3, capacity / 2, capacity - 2, capacity - 1] {
                    let token = codec.encode(index);
                    assert_eq!(token.chars().count(), length as usize);
                    assert_eq!(
                        codec.decode(&token),
                        Ok(index),
                        "{radix}^{length} at {index}"
                    );
                }
            }
        }
    }

    #[test]
    fn spaces_on_both_sides_of_the_ff1_minimum_roundtrip() {
        // 999^2 = 998_001 and 2^19 take the Feistel path; 10^6 and 2^20 take FF1.
        for (alphabet, length, path) in [
            (distinct_chars(999), 2, "feistel"),
            ("01".to_owned(), 19, "feistel"),
            ("0123456789".to_owned(), 6, "ff1"),
            ("01".to_owned(), 20, "ff1"),
        ] {
            let codec = codec_for(&alphabet, length);
            assert!(format!("{codec:?}").contains(path), "{codec:?}");
            let capacity = codec.spec().capacity();
            let mut seen = HashSet::new();
            for index in (0..capacity).step_by(997).chain([capacity - 1]) {
                let token = codec.encode(index);
                assert!(seen.insert(token.clone()));
                assert_eq!(codec.decode(&token), Ok(index));
            }
        }
    }

    proptest! {
        #[test]
        fn ff1_space_tokens_decode_to_their_index(index in 0..52u128.pow(4)) {
            let codec = codec_for(SEED_ALPHABET, 4);
            let token = codec.encode(index);
            prop_assert_eq!(token.chars().count(), 4);
            prop_assert_eq!(codec.decode(&token), Ok(index));
        }

        #[test]
        fn feistel_space_tokens_decode_to_their_index(index in 0..998_001u128) {
            let codec = codec_for(&distinct_chars(999), 2);
            prop_assert_eq!(codec.decode(&codec.encode(index)), Ok(index));
        }

        #[test]
        fn a_2_pow_124_space_tokens_decode_to_their_index(index in 0..(1u128 << 124)) {
            let codec = codec_for(HEX, 31);
            prop_assert_eq!(codec.decode(&codec.encode(index)), Ok(index));
        }

        #[test]
        fn any_text_decodes_to_its_token_or_is_invalid(text in "\\PC{0,6}|[qwertyQWERTY]{4}") {
            let codec = codec_for(SEED_ALPHABET, 4);
            match codec.decode(&text) {
                Ok(index) => {
                    prop_assert!(index < codec.spec().capacity());
                    prop_assert_eq!(codec.encode(index), text);
                }
                Err(e) => {
                    prop_assert_eq!(e, KeyspaceError::InvalidToken);
                    let well_formed = text.chars().count() == 4
                        && text.chars().all(|c| SEED_ALPHABET.contains(c));
                    prop_assert!(!well_formed, "{:?} was refused", text);
                }
            }
        }
    }

    #[test]
    fn restored_ff1_keyspace_continues_issuing_without_repeats() {
        let codec = codec_for(SEED_ALPHABET, 4);
        let mut original = Keyspace::new(codec.clone());
        let first: Vec<String> = (0..1000).map(|_| original.issue().unwrap().token).collect();
        original.activate(&first[3], at(10)).unwrap();
        original.activate(&first[999], at(20)).unwrap();

        let mut restored = Keyspace::restore(
            codec,
            1000,
            [(first[3].clone(), at(10)), (first[999].clone(), at(20))],
        )
        .unwrap();
        assert_eq!(restored.info(), original.info());
        assert_eq!(
            restored.status(&first[3]).unwrap().activated_at,
            Some(at(10))
        );
        assert_eq!(restored.status(&first[4]).unwrap().activated_at, None);
        assert_eq!(
            restored.activate(&first[999], at(30)),
            Err(KeyspaceError::AlreadyActivated)
        );

        let mut seen: HashSet<String> = first.into_iter().collect();
        for _ in 0..1000 {
            let next = restored.issue().unwrap();
            assert_eq!(next, original.issue().unwrap());
            assert!(seen.insert(next.token));
        }
    }

    #[test]
    fn a_space_that_is_99_99_percent_used_issues_its_last_tokens_directly() {
        let codec = codec_for(SEED_ALPHABET, 4);
        let capacity = codec.spec().capacity();
        let mut keyspace = Keyspace::restore(codec, capacity - 10, []).unwrap();
        for index in capacity - 10..capacity {
            let issued = keyspace.issue().unwrap();
            assert_eq!(issued.index, index);
            assert_eq!(keyspace.codec().decode(&issued.token), Ok(index));
        }
        assert_eq!(keyspace.issue(), Err(KeyspaceError::Exhausted));
        assert_eq!(keyspace.info().remaining, 0);
    }

    #[test]
    fn different_secrets_give_different_tokens() {
        let one = codec_with(SEED_ALPHABET, 4, secret(1));
        let two = codec_with(SEED_ALPHABET, 4, secret(2));
        let same = (0..100).filter(|&i| one.encode(i) == two.encode(i)).count();
        assert!(same <= 1, "{same} of 100 tokens coincide");

        let small_one: Vec<String> = (0..100)
            .map(|i| codec_with("0123456789", 3, secret(1)).encode(i))
            .collect();
        let small_two: Vec<String> = (0..100)
            .map(|i| codec_with("0123456789", 3, secret(2)).encode(i))
            .collect();
        assert_ne!(small_one, small_two);
    }

    #[test]
    fn a_space_just_below_2_pow_128_works_to_its_last_token() {
        let codec = codec_for(HEX, 31);
        let capacity = codec.spec().capacity();
        assert_eq!(capacity, 1 << 124);
        let mut keyspace = Keyspace::restore(codec, capacity - 2, []).unwrap();
        let last_but_one = keyspace.issue().unwrap();
        let last = keyspace.issue().unwrap();
        assert_eq!((last_but_one.remaining, last.remaining), (1, 0));
        assert_ne!(last_but_one.token, last.token);
        assert_eq!(keyspace.codec().decode(&last.token), Ok(capacity - 1));
        assert_eq!(keyspace.issue(), Err(KeyspaceError::Exhausted));
        keyspace.activate(&last.token, at(1)).unwrap();
        assert_eq!(keyspace.info().activated, 1);

        let binary = codec_with("01", 127, secret(9));
        assert_eq!(binary.spec().capacity(), 1 << 127);
        assert_eq!(
            binary.decode(&binary.encode(u128::MAX >> 1)),
            Ok(u128::MAX >> 1)
        );

        let wide = codec_for(&distinct_chars(65_536), 7);
        assert_eq!(wide.spec().capacity(), 1 << 112);
        assert_eq!(
            wide.decode(&wide.encode((1 << 112) - 1)),
            Ok((1 << 112) - 1)
        );

        // 3^80 ~ 1.5e38 fits, 3^81 ~ 4.4e38 does not.
        assert_eq!(
            KeyspaceSpec::new("abc", 80).unwrap().capacity(),
            3u128.pow(80)
        );
        assert!(KeyspaceSpec::new("abc", 81).is_err());
    }

    #[test]
    fn spaces_of_2_pow_128_tokens_or_more_are_rejected() {
        for (alphabet, length) in [
            ("01".to_owned(), 128),
            (distinct_chars(256), 16),
            (distinct_chars(65_536), 8),
            ("01".to_owned(), u32::MAX),
        ] {
            assert!(
                matches!(
                    KeyspaceSpec::new(&alphabet, length),
                    Err(KeyspaceError::InvalidKeyspace(_))
                ),
                "{} chars, length {length}",
                alphabet.chars().count()
            );
        }
    }

    #[test]
    fn cyrillic_tokens_use_only_cyrillic_characters() {
        assert_eq!(Alphabet::parse(CYRILLIC).unwrap().len(), 33);
        // 33^4 = 1_185_921 takes FF1; 33^3 = 35_937 takes the Feistel network.
        for length in [4, 3] {
            let mut keyspace = Keyspace::new(codec_for(CYRILLIC, length));
            let mut seen = HashSet::new();
            for index in 0..2000 {
                let issued = keyspace.issue().unwrap();
                assert_eq!(issued.token.chars().count(), length as usize);
                assert!(
                    issued.token.chars().all(|c| CYRILLIC.contains(c)),
                    "{}",
                    issued.token
                );
                assert_eq!(keyspace.codec().decode(&issued.token), Ok(index));
                assert!(seen.insert(issued.token));
            }
        }
        let keyspace = Keyspace::new(codec_for(CYRILLIC, 4));
        // Four Cyrillic characters are eight bytes: length counts characters.
        assert_eq!(keyspace.status("абвг"), Err(KeyspaceError::NotIssued));
        assert_eq!(keyspace.status("абвгде"), Err(KeyspaceError::InvalidToken));
        assert_eq!(keyspace.status("абвz"), Err(KeyspaceError::InvalidToken));
    }

    #[test]
    fn activation_happens_once_and_only_for_issued_tokens() {
        let mut keyspace = Keyspace::new(codec_for("abcdefghijklmnopqrstuvwxyz", 3));
        let first = keyspace.issue().unwrap().token;
        let second = keyspace.issue().unwrap().token;
        let unissued = keyspace.codec().encode(2);

        assert_eq!(keyspace.status(&unissued), Err(KeyspaceError::NotIssued));
        assert_eq!(
            keyspace.activate(&unissued, at(1)),
            Err(KeyspaceError::NotIssued)
        );
        for bad in ["", "ab", "abcd", "ab1", "abC", "ab/"] {
            assert_eq!(
                keyspace.status(bad),
                Err(KeyspaceError::InvalidToken),
                "{bad}"
            );
            assert_eq!(
                keyspace.activate(bad, at(1)),
                Err(KeyspaceError::InvalidToken),
                "{bad}"
            );
        }

        let activated = TokenStatus {
            token: first.clone(),
            activated_at: Some(at(5)),
        };
        assert_eq!(keyspace.activate(&first, at(5)), Ok(activated.clone()));
        assert_eq!(
            keyspace.activate(&first, at(6)),
            Err(KeyspaceError::AlreadyActivated)
        );
        assert_eq!(keyspace.status(&first), Ok(activated));
        assert_eq!(keyspace.status(&second).unwrap().activated_at, None);
        assert_eq!(
            keyspace.info(),
            KeyspaceInfo {
                capacity: 17_576,
                issued: 2,
                activated: 1,
                remaining: 17_574
            }
        );
    }

    #[test]
    fn restore_rejects_state_that_does_not_fit_the_codec() {
        let codec = codec_for("abcdefghijklmnopqrstuvwxyz", 3);
        let issued = codec.encode(0);
        let unissued = codec.encode(1);
        let cases: [(u128, Vec<(String, Timestamp)>); 4] = [
            (17_577, vec![]),
            (1, vec![(unissued, at(1))]),
            (1, vec![("ab".to_owned(), at(1))]),
            (1, vec![(issued.clone(), at(1)), (issued, at(2))]),
        ];
        for (count, activations) in cases {
            assert!(matches!(
                Keyspace::restore(codec.clone(), count, activations),
                Err(KeyspaceError::InvalidKeyspace(_))
            ));
        }
        assert_eq!(
            Keyspace::restore(codec, 17_576, [])
                .unwrap()
                .info()
                .remaining,
            0
        );
    }

    #[test]
    fn a_too_short_alphabet_is_counted_in_good_grammar() {
        let message = |s: &str| match Alphabet::parse(s) {
            Err(KeyspaceError::InvalidKeyspace(why)) => why,
            other => panic!("{s:?} gave {:?}", other.map(|a| a.len())),
        };
        assert_eq!(
            message("a"),
            "the alphabet has 1 character; at least 2 are needed"
        );
        assert_eq!(
            message(""),
            "the alphabet has 0 characters; at least 2 are needed"
        );
    }

    #[test]
    fn alphabets_reject_repeats_whitespace_slashes_controls_and_single_chars() {
        for bad in [
            "",
            "a",
            "aba",
            "ab c",
            "ab\t",
            "ab\u{a0}",
            "ab\u{3000}",
            "ab/",
            "ab\u{7}",
            "ab\u{85}",
            "ab\u{7f}",
        ] {
            assert!(
                matches!(Alphabet::parse(bad), Err(KeyspaceError::InvalidKeyspace(_))),
                "{bad:?}"
            );
        }
        assert!(Alphabet::parse(&distinct_chars(65_537)).is_err());
        assert_eq!(
            Alphabet::parse(&distinct_chars(65_536)).unwrap().len(),
            65_536
        );
        assert_eq!(Alphabet::parse("ab").unwrap().as_str(), "ab");
        assert!(matches!(
            KeyspaceSpec::new("ab", 0),
            Err(KeyspaceError::InvalidKeyspace(_))
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let codec = codec_with(SEED_ALPHABET, 4, Secret::from_bytes([0xab; 32]));
        let printed = format!("{codec:?} {:?}", codec.secret());
        assert!(printed.contains("Secret(..)"), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
        assert!(!printed.to_lowercase().contains("abab"), "{printed}");
    }

    #[test]
    fn generated_secrets_are_fresh() {
        let one = Secret::generate();
        assert_ne!(one, Secret::generate());
        assert_ne!(one.as_bytes(), &[0; 32]);
        assert_eq!(Secret::from_bytes(*one.as_bytes()), one);
    }

    #[test]
    fn codecs_and_keyspaces_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<TokenCodec>();
        shareable::<Keyspace>();
    }

    /// Where a model test takes a token from.
    #[derive(Clone, Debug)]
    enum Pick {
        Issued(Index),
        Text(String),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Issue,
        Status(Pick),
        Activate(Pick, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let pick = prop_oneof![
            any::<Index>().prop_map(Pick::Issued),
            "[abc]{2}".prop_map(Pick::Text),
            "[abcd/]{0,3}".prop_map(Pick::Text),
        ];
        prop_oneof![
            3 => Just(Op::Issue),
            1 => pick.clone().prop_map(Op::Status),
            2 => (pick, 0..1_000u64).prop_map(|(p, t)| Op::Activate(p, t)),
        ]
    }

    /// The obvious implementation: remember every issued token.
    #[derive(Default)]
    struct Model {
        issued: Vec<String>,
        activations: HashMap<String, Timestamp>,
    }

    impl Model {
        const CAPACITY: u128 = 9;

        fn token(&self, pick: &Pick) -> String {
            match pick {
                Pick::Issued(i) if !self.issued.is_empty() => i.get(&self.issued).clone(),
                Pick::Issued(_) => "aa".to_owned(),
                Pick::Text(t) => t.clone(),
            }
        }

        fn status(&self, token: &str) -> Result<TokenStatus, KeyspaceError> {
            if token.chars().count() != 2 || !token.chars().all(|c| "abc".contains(c)) {
                Err(KeyspaceError::InvalidToken)
            } else if !self.issued.iter().any(|t| t == token) {
                Err(KeyspaceError::NotIssued)
            } else {
                Ok(TokenStatus {
                    token: token.to_owned(),
                    activated_at: self.activations.get(token).copied(),
                })
            }
        }

        fn info(&self) -> KeyspaceInfo {
            let issued = self.issued.len() as u128;
            KeyspaceInfo {
                capacity: Self::CAPACITY,
                issued,
                activated: self.activations.len() as u128,
                remaining: Self::CAPACITY - issued,
            }
        }
    }

    proptest! {
        #[test]
        fn keyspace_behaves_like_a_set_of_issued_tokens(ops in prop::collection::vec(op(), 0..40)) {
            let codec = codec_for("abc", 2);
            let mut keyspace = Keyspace::new(codec.clone());
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Issue => match keyspace.issue() {
                        Ok(issued) => {
                            prop_assert_eq!(issued.index, model.issued.len() as u128);
                            prop_assert!(model.status(&issued.token) == Err(KeyspaceError::NotIssued));
                            model.issued.push(issued.token);
                            prop_assert_eq!(issued.remaining, model.info().remaining);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, KeyspaceError::Exhausted);
                            prop_assert_eq!(model.info().remaining, 0);
                        }
                    },
                    Op::Status(pick) => {
                        let token = model.token(&pick);
                        prop_assert_eq!(keyspace.status(&token), model.status(&token));
                    }
                    Op::Activate(pick, ms) => {
                        let token = model.token(&pick);
                        let expected = match model.status(&token) {
                            Ok(TokenStatus { activated_at: Some(_), .. }) => {
                                Err(KeyspaceError::AlreadyActivated)
                            }
                            Ok(_) => {
                                model.activations.insert(token.clone(), at(ms));
                                model.status(&token)
                            }
                            Err(e) => Err(e),
                        };
                        prop_assert_eq!(keyspace.activate(&token, at(ms)), expected);
                    }
                }
                prop_assert_eq!(keyspace.info(), model.info());
            }

            let restored = Keyspace::restore(
                codec,
                model.issued.len() as u128,
                model.activations.clone(),
            )
            .unwrap();
            prop_assert_eq!(restored.info(), model.info());
            for index in 0..Model::CAPACITY {
                let token = counting_token("abc", 2, index);
                prop_assert_eq!(restored.status(&token), model.status(&token));
            }
        }
    }
}
