//! Pool-key text: the one alphabet keys are drawn from and the sampler that
//! draws them, shared by every store that generates keys.
//!
//! It owns only the characters; uniqueness among live keys is the pool's
//! (or the backend's) job, and so is choosing the length.

use std::convert::Infallible;

use rand::{CryptoRng, TryCryptoRng, TryRng};

/// Every character a pool key may contain: `A-Za-z0-9`, 62 in all.
pub const KEY_ALPHABET: &[u8; 62] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Bytes at or above this are rejected: 248 = 4 * 62 is the largest
/// multiple of 62 a byte can hold, so `b % 62` of an accepted byte is
/// uniform (no modulo bias).
const ACCEPT_BELOW: u8 = 248;

/// A key of `len` characters, each uniform and independent over
/// [`KEY_ALPHABET`], drawn from `rng`. O(len) expected: about
/// `len * 256 / 248` random bytes.
pub fn random_key<R: CryptoRng + ?Sized>(rng: &mut R, len: usize) -> String {
    random_chars(rng).take(len).collect()
}

/// An endless stream of characters, each uniform and independent over
/// [`KEY_ALPHABET`], drawn from `rng`; for callers that collect a key into
/// their own string type. O(1) expected per character.
pub fn random_chars<R: CryptoRng + ?Sized>(rng: &mut R) -> impl Iterator<Item = char> + '_ {
    let mut word = 0u64;
    let mut left = 0u8;
    std::iter::from_fn(move || {
        loop {
            // One u64 is eight candidate bytes: one RNG call per ~8 chars.
            if left == 0 {
                word = rng.next_u64();
                left = 8;
            }
            let b = word as u8;
            word >>= 8;
            left -= 1;
            if b < ACCEPT_BELOW {
                return Some(char::from(KEY_ALPHABET[usize::from(b % 62)]));
            }
        }
    })
}

/// The OS CSPRNG, read in blocks to spare a system call per key.
///
/// It holds no seed of its own, only bytes the OS returned and not yet
/// handed out, so it is as unpredictable as the OS source; build one per
/// batch of keys and drop it after. Each refill is one `getrandom` call of
/// [`OsRandom::BLOCK`] bytes; every other draw is O(1) from memory.
pub struct OsRandom {
    buf: [u8; Self::BLOCK],
    pos: usize,
}

impl OsRandom {
    /// Bytes fetched per refill: about 48 keys of 20 characters.
    pub const BLOCK: usize = 1024;

    fn refill(&mut self) {
        rand::rngs::SysRng
            .try_fill_bytes(&mut self.buf)
            .expect("the OS random source does not fail on supported systems");
        self.pos = 0;
    }
}

impl Default for OsRandom {
    /// Empty: the first draw fetches the first block.
    fn default() -> Self {
        Self {
            buf: [0; Self::BLOCK],
            pos: Self::BLOCK,
        }
    }
}

impl std::fmt::Debug for OsRandom {
    // Buffered bytes are future output: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsRandom").finish_non_exhaustive()
    }
}

impl TryRng for OsRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        // The sampler's only call: a direct read while 8 bytes are left.
        if let Some(bytes) = self.buf.get(self.pos..self.pos + 8) {
            let word = u64::from_le_bytes(bytes.try_into().expect("the range is 8 bytes"));
            self.pos += 8;
            return Ok(word);
        }
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, mut dst: &mut [u8]) -> Result<(), Infallible> {
        while !dst.is_empty() {
            if self.pos == Self::BLOCK {
                self.refill();
            }
            let n = dst.len().min(Self::BLOCK - self.pos);
            dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            dst = &mut dst[n..];
        }
        Ok(())
    }
}

impl TryCryptoRng for OsRandom {}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn alphabet_is_exactly_a_z_a_z_0_9_without_repeats() {
        let expected: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(b'0'..=b'9')
            .collect();
        assert_eq!(KEY_ALPHABET.as_slice(), expected.as_slice());
        assert_eq!(KEY_ALPHABET.iter().collect::<HashSet<_>>().len(), 62);
    }

    #[test]
    fn random_key_has_the_requested_length_and_only_alphabet_characters() {
        let mut rng = StdRng::seed_from_u64(1);
        for len in [0, 1, 7, 8, 20, 128] {
            let key = random_key(&mut rng, len);
            assert_eq!(key.len(), len);
            assert!(key.bytes().all(|b| KEY_ALPHABET.contains(&b)), "{key}");
        }
    }

    #[test]
    fn random_key_draws_every_character_about_equally_often() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut counts = [0u32; 62];
        for _ in 0..2_000 {
            for b in random_key(&mut rng, 62).bytes() {
                let i = KEY_ALPHABET.iter().position(|&c| c == b).unwrap();
                counts[i] += 1;
            }
        }
        // 124,000 draws: expected 2,000 per character, sd ~44. Modulo bias
        // (no rejection) would put the first 8 characters 25% above the rest.
        for (i, &n) in counts.iter().enumerate() {
            assert!((1_800..=2_200).contains(&n), "char {i}: {n}");
        }
        let low: u32 = counts[..8].iter().sum();
        let high: u32 = counts[54..].iter().sum();
        assert!(low.abs_diff(high) < 1_000, "first 8 {low}, last 8 {high}");
    }

    #[test]
    fn os_random_keys_differ_across_block_refills() {
        let mut rng = OsRandom::default();
        // 10,000 keys of 20 characters use ~200 blocks: refills must not
        // repeat bytes (a stuck buffer would repeat keys).
        let keys: HashSet<String> = (0..10_000).map(|_| random_key(&mut rng, 20)).collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn os_random_fills_requests_larger_than_a_block() {
        let mut rng = OsRandom::default();
        let mut big = vec![0u8; OsRandom::BLOCK * 3 + 5];
        rng.fill_bytes(&mut big);
        // 3 KiB of zeros from a working source has probability 2^-24600.
        assert!(big.iter().filter(|&&b| b != 0).count() > big.len() / 2);
    }
}
