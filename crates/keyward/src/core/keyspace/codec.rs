//! The keyed bijection between issue indexes and tokens ([`TokenCodec`]),
//! and its key ([`Secret`]).
//!
//! Spaces of 10^6 tokens or more use NIST FF1 (SP 800-38G, the `fpe` crate).
//! FF1 refuses smaller domains, and cycle-walking FF1 on 10^6 values down to a
//! space of ten would cost ~10^5 encryptions per token, so smaller spaces use a
//! keyed Feistel network over the next even power of two with cycle-walking,
//! which takes fewer than four passes on average. Which tokens were issued
//! is the keyspace's business, not the codec's.

use std::fmt;
use std::sync::Arc;

use aes::Aes256Enc;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use fpe::ff1::{FF1, FlexibleNumeralString};
use rand::TryRng;
use rand::rngs::SysRng;

use super::KeyspaceError;
use super::alphabet::KeyspaceSpec;

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
        let permutation = if spec.capacity() >= FF1_MIN_CAPACITY {
            let radix = u32::try_from(spec.alphabet().len())
                .expect("an alphabet has at most 2^16 characters");
            // radix^length >= 10^6 is exactly FF1's minimum length for this
            // radix, and alphabets hold 2..=2^16 characters, FF1's radix range.
            let ff1 = FF1::<Aes256Enc>::new(&secret.0, radix)
                .expect("alphabet sizes are within FF1's radix range 2..=2^16");
            Permutation::Ff1(Arc::new(ff1))
        } else {
            let capacity = u32::try_from(spec.capacity()).expect("capacity is below 10^6 here");
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

    /// The display form of the token issued as number `index` (the bare
    /// token when the keyspace has no format). O(length).
    pub fn show(&self, index: u128) -> String {
        self.spec.display(self.encode(index))
    }

    /// The index of the token a person typed as `input`, and its display
    /// form. [`KeyspaceError::CheckMismatch`] for a wrong check character.
    /// O(length).
    pub fn read_input(&self, input: &str) -> Result<(u128, String), KeyspaceError> {
        let bare = self.spec.bare(input)?;
        let index = self.decode(&bare)?;
        Ok((index, self.spec.display(bare)))
    }

    /// The bare token issued as number `index`. O(length): one FF1 encryption, or
    /// fewer than 4 Feistel passes on average; independent of how many tokens
    /// were issued.
    ///
    /// # Panics
    ///
    /// If `index >= capacity`: such an index has no token, and issuing it
    /// would repeat one.
    pub fn encode(&self, index: u128) -> String {
        assert!(
            index < self.spec.capacity(),
            "token index {index} is outside the keyspace of {} tokens",
            self.spec.capacity()
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
        u128::try_from(self.spec.alphabet().len()).expect("an alphabet has at most 2^16 characters")
    }

    /// `value` as `length` digits, most significant first.
    fn digits_of(&self, mut value: u128) -> Vec<u16> {
        let radix = self.radix();
        let mut digits = vec![0; self.spec.length() as usize];
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
            .map(|&digit| self.spec.alphabet().char_of(digit))
            .collect()
    }

    fn read(&self, token: &str) -> Result<Vec<u16>, KeyspaceError> {
        let length = self.spec.length() as usize;
        let mut digits = Vec::with_capacity(length);
        for c in token.chars() {
            // Stop at the first excess character so an oversized token costs
            // no more than a valid one.
            if digits.len() == length {
                return Err(KeyspaceError::InvalidToken);
            }
            digits.push(
                self.spec
                    .alphabet()
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
