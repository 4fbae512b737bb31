//! The check character of a readable code: one more character of the
//! keyspace's alphabet, so a mistyped code is refused before any lookup.
//!
//! Why not plain Luhn mod N: its weights make every single substitution
//! show, but for an even alphabet size N the swap of the first and the
//! last character of the alphabet (`0` and `9` in decimal) leaves the sum
//! unchanged, and a swap of neighbours is the other typo people make. No
//! weighted sum mod N can catch every swap when N is even (a cyclic group
//! of even order has no complete mapping). Damm's algorithm can: it runs
//! the characters through a *weakly totally anti-symmetric quasigroup* of
//! order N (a Latin square, so each single substitution changes the
//! result, where `(c·x)·y = (c·y)·x` only if `x = y`, so each swap of
//! two distinct neighbours does too). Such a quasigroup is built here for
//! every N that is odd or a multiple of 4, as a product of two:
//!
//! - over `Z_m`, m odd: `x·y = 2x + y mod m` (2 and 2 − 1 are units mod m);
//! - over the 2^k polynomials of degree < k (k ≥ 2) mod a polynomial with
//!   a constant term and an odd number of terms: `x·y = t·x ⊕ y` (t and
//!   t ⊕ 1 are then units).
//!
//! N = 10 uses Damm's published decimal quasigroup. The other N that are 2
//! mod 4 (26 Latin letters, 62 letters and digits, …) keep Luhn mod N: it
//! catches every single substitution and every swap of neighbours except
//! the first and last characters of the alphabet, [`Guarantee::Luhn`].
//! Every guarantee is checked exhaustively on small spaces by the tests.

/// What the check character catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Every single-character substitution and every swap of two distinct
    /// neighbouring characters (the check character included).
    Damm,
    /// Every single-character substitution, and every swap of two distinct
    /// neighbours but the first and last characters of the alphabet.
    Luhn,
}

/// The check digit scheme for an alphabet of `n` characters; characters
/// are given as their positions `0..n` in the alphabet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckScheme {
    n: u32,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// `Z_odd × GF(2)[t]/poly`, positions written `x = hi * odd + lo`.
    Product {
        odd: u32,
        bits: u32,
        poly: u32,
    },
    Decimal,
    Luhn,
}

/// A polynomial for each k = 2..=16 with a constant term and an odd
/// number of terms, so that multiplying by t and by t + 1 is invertible
/// (each is irreducible too, which the tests do not rely on).
const POLYS: [u32; 15] = [
    0b111,
    0b1011,
    0b1_0011,
    0b10_0101,
    0b100_0011,
    0b1000_0011,
    0x11B,
    0x211,
    0x409,
    0x805,
    0x1053,
    0x201B,
    0x4443,
    0x8003,
    0x1_002D,
];

/// Damm's weakly totally anti-symmetric quasigroup of order 10.
const DECIMAL: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

impl CheckScheme {
    /// The scheme for an alphabet of `n` characters (2 to 65,536). O(1).
    pub fn new(n: usize) -> Option<Self> {
        let n = u32::try_from(n).ok().filter(|n| (2..=65_536).contains(n))?;
        let bits = n.trailing_zeros();
        let kind = match (n, bits) {
            (10, _) => Kind::Decimal,
            (_, 1) => Kind::Luhn,
            _ => Kind::Product {
                odd: n >> bits,
                bits,
                poly: if bits >= 2 {
                    POLYS[bits as usize - 2]
                } else {
                    0
                },
            },
        };
        Some(Self { n, kind })
    }

    /// What this scheme catches. O(1).
    pub fn guarantee(&self) -> Guarantee {
        match self.kind {
            Kind::Luhn => Guarantee::Luhn,
            Kind::Product { .. } | Kind::Decimal => Guarantee::Damm,
        }
    }

    /// The check character for `code` (positions in the alphabet). O(len).
    pub fn check(&self, code: &[u32]) -> u32 {
        match self.kind {
            Kind::Luhn => self.luhn_check(code),
            _ => {
                let interim = code.iter().fold(0, |acc, &c| self.op(acc, c));
                self.inverse(interim)
            }
        }
    }

    /// Whether `code`'s last character is its check character. O(len).
    pub fn verify(&self, code_and_check: &[u32]) -> bool {
        match code_and_check.split_last() {
            Some((&last, code)) => last < self.n && self.check(code) == last,
            None => false,
        }
    }

    /// The quasigroup operation. O(k) for the polynomial part.
    fn op(&self, x: u32, y: u32) -> u32 {
        match self.kind {
            Kind::Decimal => u32::from(DECIMAL[x as usize][y as usize]),
            Kind::Product { odd, bits, poly } => {
                let (xh, xl) = (x / odd, x % odd);
                let (yh, yl) = (y / odd, y % odd);
                let lo = (2 * u64::from(xl) + u64::from(yl)) % u64::from(odd);
                let hi = if bits == 0 {
                    0
                } else {
                    times_t(xh, bits, poly) ^ yh
                };
                hi * odd + lo as u32
            }
            Kind::Luhn => unreachable!("Luhn is not a quasigroup scheme"),
        }
    }

    /// The d with `interim · d = 0`, the check character. O(k) or O(n)
    /// for the decimal table.
    fn inverse(&self, interim: u32) -> u32 {
        match self.kind {
            Kind::Decimal => DECIMAL[interim as usize]
                .iter()
                .position(|&v| v == 0)
                .expect("each row of a Latin square holds 0") as u32,
            Kind::Product { odd, bits, poly } => {
                let (h, l) = (interim / odd, interim % odd);
                // 2l + d ≡ 0 (mod odd); t·h ⊕ d = 0.
                let lo = (u64::from(odd) - (2 * u64::from(l)) % u64::from(odd)) % u64::from(odd);
                let hi = if bits == 0 { 0 } else { times_t(h, bits, poly) };
                hi * odd + lo as u32
            }
            Kind::Luhn => unreachable!("Luhn has no quasigroup"),
        }
    }

    /// Luhn mod N: from the right, every second character (starting with
    /// the one next to the check) doubled, its two base-N digits summed.
    fn luhn_check(&self, code: &[u32]) -> u32 {
        let n = u64::from(self.n);
        let sum: u64 = code
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &c)| {
                let c = u64::from(c);
                if i % 2 == 0 {
                    let d = 2 * c;
                    d / n + d % n
                } else {
                    c
                }
            })
            .sum();
        ((n - sum % n) % n) as u32
    }
}

/// `x · t` in GF(2)[t] mod `poly` (degree `bits`). O(1).
fn times_t(x: u32, bits: u32, poly: u32) -> u32 {
    let shifted = x << 1;
    if shifted >> bits & 1 == 1 {
        shifted ^ poly
    } else {
        shifted
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every code of `len` characters over `0..n`, as an iterator.
    fn codes(n: u32, len: usize) -> impl Iterator<Item = Vec<u32>> {
        let total = u64::from(n).pow(len as u32);
        (0..total).map(move |mut i| {
            let mut code = vec![0; len];
            for c in code.iter_mut().rev() {
                *c = (i % u64::from(n)) as u32;
                i /= u64::from(n);
            }
            code
        })
    }

    /// Whether `scheme` lets the swap of `a` and `b` through, by its
    /// guarantee.
    fn allowed_swap(scheme: &CheckScheme, a: u32, b: u32) -> bool {
        scheme.guarantee() == Guarantee::Luhn && a.min(b) == 0 && a.max(b) == scheme.n - 1
    }

    /// Checks every code of `len` characters: it verifies with its check,
    /// every single substitution anywhere is refused, and every swap of
    /// distinct neighbours is refused unless the guarantee allows it.
    fn exhaustively(n: u32, len: usize) {
        let scheme = CheckScheme::new(n as usize).expect("a valid size");
        for code in codes(n, len) {
            let mut full = code.clone();
            full.push(scheme.check(&code));
            assert!(scheme.verify(&full), "n={n} {full:?}");
            for i in 0..full.len() {
                for other in 0..n {
                    if other != full[i] {
                        let mut typo = full.clone();
                        typo[i] = other;
                        assert!(
                            !scheme.verify(&typo),
                            "n={n} substitution {full:?} -> {typo:?}"
                        );
                    }
                }
                if i + 1 < full.len() && full[i] != full[i + 1] {
                    let mut typo = full.clone();
                    typo.swap(i, i + 1);
                    let caught = !scheme.verify(&typo);
                    assert!(
                        caught || allowed_swap(&scheme, full[i], full[i + 1]),
                        "n={n} swap {full:?} -> {typo:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_substitution_and_neighbour_swap_is_caught_on_small_spaces() {
        // Odd sizes, powers of two, their products, 10, and Luhn's 2 mod 4.
        for n in 2..=40 {
            let len = if n <= 12 { 3 } else { 2 };
            exhaustively(n, len);
        }
        for n in [56, 64] {
            exhaustively(n, 2);
        }
    }

    #[test]
    fn the_quasigroups_are_latin_squares_and_weakly_totally_anti_symmetric() {
        for n in (3..=72).filter(|n| n % 4 != 2 || *n == 10) {
            let s = CheckScheme::new(n as usize).expect("a valid size");
            assert_eq!(s.guarantee(), Guarantee::Damm, "n={n}");
            for x in 0..n {
                let row: std::collections::HashSet<u32> = (0..n).map(|y| s.op(x, y)).collect();
                let col: std::collections::HashSet<u32> = (0..n).map(|y| s.op(y, x)).collect();
                assert_eq!(
                    (row.len(), col.len()),
                    (n as usize, n as usize),
                    "n={n} x={x}"
                );
                assert_eq!(s.op(x, s.inverse(x)), 0, "n={n} x={x}");
                for c in 0..n {
                    for y in 0..n {
                        if x != y {
                            assert_ne!(s.op(s.op(c, x), y), s.op(s.op(c, y), x), "n={n}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_presets_get_the_full_guarantee_and_luhn_sizes_say_so() {
        for (n, want) in [
            (10, Guarantee::Damm),
            (32, Guarantee::Damm),
            (56, Guarantee::Damm),
            (26, Guarantee::Luhn),
            (62, Guarantee::Luhn),
            (65_536, Guarantee::Damm),
        ] {
            assert_eq!(
                CheckScheme::new(n).expect("a size").guarantee(),
                want,
                "n={n}"
            );
        }
        assert_eq!(CheckScheme::new(1), None);
        assert_eq!(CheckScheme::new(65_537), None);
        let s = CheckScheme::new(10).expect("decimal");
        assert!(!s.verify(&[]), "an empty code has no check character");
        assert!(
            !s.verify(&[1, 2, 10]),
            "a check character outside the alphabet"
        );
    }

    proptest! {
        #[test]
        fn large_alphabets_catch_every_substitution_and_swap(
            n in prop::sample::select(vec![56u32, 64, 100, 256, 1000, 4096, 65_536, 26, 62, 1002]),
            seed in prop::collection::vec(any::<u32>(), 4..24),
            pos in any::<prop::sample::Index>(),
            delta in 1u32..65_536,
        ) {
            let scheme = CheckScheme::new(n as usize).expect("a size");
            let code: Vec<u32> = seed.iter().map(|c| c % n).collect();
            let mut full = code.clone();
            full.push(scheme.check(&code));
            prop_assert!(scheme.verify(&full));
            let i = pos.index(full.len());
            let mut typo = full.clone();
            typo[i] = (typo[i] + delta % (n - 1) + 1) % n;
            prop_assert!(!scheme.verify(&typo), "substitution at {}", i);
            if i + 1 < full.len() && full[i] != full[i + 1] && !allowed_swap(&scheme, full[i], full[i + 1]) {
                let mut swapped = full.clone();
                swapped.swap(i, i + 1);
                prop_assert!(!scheme.verify(&swapped), "swap at {}", i);
            }
        }
    }
}
