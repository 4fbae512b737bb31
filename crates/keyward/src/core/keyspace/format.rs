//! Readable codes: alphabet presets, and the display and input forms of a
//! token (`prefix`, groups joined by a separator, a check character).
//!
//! A token is stored and permuted bare (the alphabet's characters only);
//! [`Format::display`] dresses it for people and [`Format::parse`] undresses
//! what a person typed: the prefix and separators are optional, case does
//! not matter when the alphabet has one case, Crockford's `I`/`L` read as
//! `1` and `O` as `0`, and a wrong check character is refused before any
//! lookup.

use super::check::CheckScheme;
use super::{Alphabet, KeyspaceError, invalid};

/// An alphabet a keyspace may name instead of listing its characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// `0-9`.
    Digits,
    /// `0123456789ABCDEFGHJKMNPQRSTVWXYZ`: no I, L, O, U; input
    /// upper-cased, `I`/`L` read as `1`, `O` as `0`.
    Crockford,
    /// `A-Z a-z 2-9` without `I l O o` (and without 0 and 1).
    Unambiguous,
}

impl Preset {
    /// The preset of that name. O(1).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "digits" => Some(Self::Digits),
            "crockford" => Some(Self::Crockford),
            "unambiguous" => Some(Self::Unambiguous),
            _ => None,
        }
    }

    /// Its characters, in order. O(1).
    pub fn alphabet(self) -> &'static str {
        match self {
            Self::Digits => "0123456789",
            Self::Crockford => "0123456789ABCDEFGHJKMNPQRSTVWXYZ",
            Self::Unambiguous => "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789",
        }
    }

    /// Its name. O(1).
    pub fn name(self) -> &'static str {
        match self {
            Self::Digits => "digits",
            Self::Crockford => "crockford",
            Self::Unambiguous => "unambiguous",
        }
    }

    /// What a typed character stands for: Crockford reads `I`/`L` as `1`
    /// and `O` as `0`. O(1).
    fn read(self, c: char) -> char {
        match (self, c.to_ascii_uppercase()) {
            (Self::Crockford, 'I' | 'L') => '1',
            (Self::Crockford, 'O') => '0',
            _ => c,
        }
    }
}

/// Most characters in a group, a separator or a prefix.
pub const MAX_PART: usize = 16;

/// How a keyspace's tokens are shown and read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    group: Option<usize>,
    separator: String,
    prefix: String,
    check: bool,
}

impl Format {
    /// A format for `alphabet`: groups of `group` characters (1 to
    /// [`MAX_PART`]) joined by `separator` (default `-`, 1 to
    /// [`MAX_PART`] characters), after `prefix` (up to [`MAX_PART`]
    /// characters), and a check character if `check`. The separator may
    /// hold no character of the alphabet (dropping it must not drop part of
    /// the code), neither may hold whitespace. O(alphabet).
    pub fn new(
        alphabet: &Alphabet,
        group: Option<usize>,
        separator: Option<&str>,
        prefix: Option<&str>,
        check: bool,
    ) -> Result<Self, KeyspaceError> {
        if let Some(g) = group
            && !(1..=MAX_PART).contains(&g)
        {
            return Err(invalid(format!(
                "format.group must be from 1 to {MAX_PART}"
            )));
        }
        let separator = separator.unwrap_or("-");
        let prefix = prefix.unwrap_or("");
        for (what, text, min) in [("separator", separator, 1), ("prefix", prefix, 0)] {
            let n = text.chars().count();
            if n < min || n > MAX_PART {
                return Err(invalid(format!(
                    "format.{what} must be {min} to {MAX_PART} characters"
                )));
            }
            let code_like = |c: char| what == "separator" && folded_digit(alphabet, c).is_some();
            if let Some(c) = text
                .chars()
                .find(|&c| c.is_whitespace() || c.is_control() || code_like(c))
            {
                return Err(invalid(format!(
                    "format.{what} may not hold {c:?}: it is whitespace or reads as a character of the alphabet"
                )));
            }
        }
        if check && CheckScheme::new(alphabet.len()).is_none() {
            return Err(invalid("the alphabet is too large for a check character"));
        }
        Ok(Self {
            group,
            separator: separator.to_owned(),
            prefix: prefix.to_owned(),
            check,
        })
    }

    /// Tokens as bare characters, read with case folding: what a preset
    /// without a format reads input with. O(1).
    pub(super) fn plain() -> Self {
        Self {
            group: None,
            separator: "-".to_owned(),
            prefix: String::new(),
            check: false,
        }
    }

    /// Whether tokens carry a check character. O(1).
    pub fn check(&self) -> bool {
        self.check
    }

    /// The group size, separator and prefix. O(1).
    pub fn parts(&self) -> (Option<usize>, &str, &str) {
        (self.group, &self.separator, &self.prefix)
    }

    /// The display form of the bare token `bare` (characters of
    /// `alphabet`): the prefix, the characters in groups joined by the
    /// separator, then the check character at the very end (appended to
    /// the last group, so the groups stay those of the code). O(len).
    pub fn display(&self, alphabet: &Alphabet, bare: &str) -> String {
        let mut out = self.prefix.clone();
        for (i, c) in bare.chars().enumerate() {
            if let Some(g) = self.group
                && i > 0
                && i % g == 0
            {
                out.push_str(&self.separator);
            }
            out.push(c);
        }
        if let Some(scheme) = self
            .check
            .then(|| CheckScheme::new(alphabet.len()))
            .flatten()
        {
            let digits: Vec<u32> = bare
                .chars()
                .filter_map(|c| alphabet.digit_of(c).map(u32::from))
                .collect();
            out.push(alphabet.char_of(scheme.check(&digits) as u16));
        }
        out
    }

    /// The bare token of `length` characters a person typed as `input`:
    /// the prefix (any case; optional, and kept as code when what follows
    /// it would be too short) and separators dropped, characters read as
    /// `alphabet` has them (case folded when it has one case, Crockford's
    /// look-alikes), the check character verified and dropped.
    /// [`KeyspaceError::InvalidToken`] for the wrong length or a character
    /// outside the alphabet, [`KeyspaceError::CheckMismatch`] for a wrong
    /// check character. O(len).
    pub fn parse(
        &self,
        alphabet: &Alphabet,
        preset: Option<Preset>,
        length: usize,
        input: &str,
    ) -> Result<String, KeyspaceError> {
        let want = length + usize::from(self.check);
        let read = |text: &str| -> Option<Vec<u32>> {
            let digits: Option<Vec<u32>> = text
                .chars()
                .map(|c| folded_digit(alphabet, preset.map_or(c, |p| p.read(c))).map(u32::from))
                .collect();
            digits.filter(|d| d.len() == want)
        };
        // Separators go first, from the prefix too (it may hold one).
        let input = input.replace(self.separator.as_str(), "");
        let prefix = self.prefix.replace(self.separator.as_str(), "");
        let stripped = strip_prefix_folded(&input, &prefix).and_then(read);
        let mut digits = stripped
            .or_else(|| read(&input))
            .ok_or(KeyspaceError::InvalidToken)?;
        if self.check {
            let scheme = CheckScheme::new(alphabet.len()).ok_or(KeyspaceError::InvalidToken)?;
            if !scheme.verify(&digits) {
                return Err(KeyspaceError::CheckMismatch);
            }
            digits.pop();
        }
        Ok(digits.iter().map(|&d| alphabet.char_of(d as u16)).collect())
    }
}

/// The digit of `c` in `alphabet`, case folded when the alphabet has only
/// one case of that letter. O(log n).
fn folded_digit(alphabet: &Alphabet, c: char) -> Option<u16> {
    alphabet.digit_of(c).or_else(|| {
        let other = if c.is_lowercase() {
            c.to_uppercase().next()?
        } else {
            c.to_lowercase().next()?
        };
        (other != c).then(|| alphabet.digit_of(other)).flatten()
    })
}

/// `input` without `prefix`, compared without case. O(len).
fn strip_prefix_folded<'a>(input: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(input);
    }
    let mut it = input.char_indices();
    for p in prefix.chars() {
        let (_, c) = it.next()?;
        if !c.to_lowercase().eq(p.to_lowercase()) {
            return None;
        }
    }
    Some(it.next().map_or("", |(i, _)| &input[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alphabet(p: Preset) -> Alphabet {
        Alphabet::parse(p.alphabet()).expect("a preset is a valid alphabet")
    }

    #[test]
    fn presets_have_the_documented_characters_and_no_look_alikes() {
        assert_eq!(alphabet(Preset::Digits).len(), 10);
        assert_eq!(alphabet(Preset::Crockford).len(), 32);
        let u = Preset::Unambiguous.alphabet();
        assert_eq!(u.chars().count(), 56);
        for c in ['I', 'l', 'O', 'o', '0', '1'] {
            assert!(!u.contains(c), "{c}");
        }
        assert_eq!(Preset::named("crockford"), Some(Preset::Crockford));
        assert_eq!(Preset::named("Crockford"), None);
    }

    #[test]
    fn a_code_is_shown_grouped_with_its_check_and_read_back_in_any_form() {
        let a = alphabet(Preset::Crockford);
        let f = Format::new(&a, Some(4), None, Some("SHOP-"), true).expect("valid");
        let shown = f.display(&a, "ABCD1234");
        assert!(shown.starts_with("SHOP-ABCD-1234"), "{shown}");
        assert_eq!(shown.chars().count(), "SHOP-ABCD-1234".len() + 1);
        let p = Some(Preset::Crockford);
        for typed in [
            shown.clone(),
            shown.to_lowercase(),
            shown.replace("SHOP-", ""),
            shown.replace('-', ""),
            shown.replace('1', "l").replace("SHOP", "shop"),
        ] {
            assert_eq!(
                f.parse(&a, p, 8, &typed),
                Ok("ABCD1234".to_owned()),
                "{typed}"
            );
        }
        // A code that itself starts like the prefix, typed without it.
        let f = Format::new(&a, None, None, Some("AB"), false).expect("valid");
        assert_eq!(f.parse(&a, p, 4, "ABCD"), Ok("ABCD".to_owned()));
        assert_eq!(f.parse(&a, p, 4, "ABABCD"), Ok("ABCD".to_owned()));
        assert_eq!(f.parse(&a, p, 4, "ABC"), Err(KeyspaceError::InvalidToken));
    }

    #[test]
    fn a_wrong_check_character_is_refused_and_a_foreign_character_is_invalid() {
        let a = alphabet(Preset::Digits);
        let f = Format::new(&a, None, None, None, true).expect("valid");
        let shown = f.display(&a, "123456");
        let mut typo: Vec<char> = shown.chars().collect();
        typo.swap(1, 2);
        let typo: String = typo.into_iter().collect();
        assert_eq!(
            f.parse(&a, None, 6, &typo),
            Err(KeyspaceError::CheckMismatch)
        );
        assert_eq!(
            KeyspaceError::CheckMismatch.to_string(),
            "check character does not match"
        );
        assert_eq!(
            f.parse(&a, None, 6, "12x4567"),
            Err(KeyspaceError::InvalidToken)
        );
    }

    #[test]
    fn case_is_folded_only_when_the_alphabet_has_one_case() {
        let mixed = alphabet(Preset::Unambiguous);
        let f = Format::new(&mixed, None, None, None, false).expect("valid");
        assert_eq!(f.parse(&mixed, None, 2, "Ab"), Ok("Ab".to_owned()));
        assert_eq!(
            f.parse(&mixed, None, 2, "aB"),
            Ok("aB".to_owned()),
            "both cases are letters"
        );
        let upper = Alphabet::parse("ABCDEFGH").expect("valid");
        let f = Format::new(&upper, None, None, None, false).expect("valid");
        assert_eq!(f.parse(&upper, None, 3, "abc"), Ok("ABC".to_owned()));
    }

    #[test]
    fn separators_and_prefixes_that_could_be_read_as_code_are_refused() {
        let a = alphabet(Preset::Crockford);
        assert!(Format::new(&a, Some(4), Some("A"), None, false).is_err());
        assert!(
            Format::new(&a, Some(4), Some("a"), None, false).is_err(),
            "case folds"
        );
        assert!(Format::new(&a, Some(4), Some(" "), None, false).is_err());
        assert!(Format::new(&a, Some(4), None, Some("K\t"), false).is_err());
        assert!(Format::new(&a, Some(0), None, None, false).is_err());
        assert!(Format::new(&a, Some(17), None, None, false).is_err());
        assert!(Format::new(&a, Some(4), Some("."), Some("#"), true).is_ok());
    }
}
