//! The characters a keyspace writes tokens with ([`Alphabet`]) and the
//! shape of a space ([`KeyspaceSpec`]): parsed once, so a value of either
//! type is always valid. Turning indexes into tokens is the codec's job.

use std::fmt;

use super::format::{Format, Preset};
use super::{KeyspaceError, invalid};

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

    pub(super) fn char_of(&self, digit: u16) -> char {
        self.chars[usize::from(digit)]
    }

    /// O(log n).
    pub(super) fn digit_of(&self, c: char) -> Option<u16> {
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
    /// The preset the alphabet was named by, if any (it says how typed
    /// characters are read).
    preset: Option<Preset>,
    /// How tokens are shown and read; `None`: as bare characters. Boxed:
    /// most keyspaces have none.
    format: Option<Box<Format>>,
}

impl KeyspaceSpec {
    /// Parses the alphabet and checks `length >= 1` and
    /// `alphabet.len()^length < 2^128`. O(n log n) in the alphabet's length.
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
            preset: None,
            format: None,
        })
    }

    /// As [`KeyspaceSpec::new`], where `alphabet` may also name a
    /// [`Preset`] (`digits`, `crockford`, `unambiguous`). O(n log n).
    pub fn named(alphabet: &str, length: u32) -> Result<Self, KeyspaceError> {
        match Preset::named(alphabet) {
            Some(preset) => Ok(Self {
                preset: Some(preset),
                ..Self::new(preset.alphabet(), length)?
            }),
            None => Self::new(alphabet, length),
        }
    }

    /// This spec with tokens shown and read in `format`. O(1).
    pub fn with_format(self, format: Format) -> Self {
        Self {
            format: Some(Box::new(format)),
            ..self
        }
    }

    /// The preset the alphabet was named by. O(1).
    pub fn preset(&self) -> Option<Preset> {
        self.preset
    }

    /// How tokens are shown and read, if not bare. O(1).
    pub fn format(&self) -> Option<&Format> {
        self.format.as_deref()
    }

    /// The display form of a bare token. O(length).
    pub fn display(&self, bare: String) -> String {
        match &self.format {
            Some(format) => format.display(&self.alphabet, &bare),
            None => bare,
        }
    }

    /// The bare token a person typed as `input` (see [`Format::parse`];
    /// without a format, a preset's reading of look-alikes and case still
    /// applies). O(length).
    pub fn bare(&self, input: &str) -> Result<String, KeyspaceError> {
        match (&self.format, self.preset) {
            (Some(format), preset) => {
                format.parse(&self.alphabet, preset, self.length as usize, input)
            }
            (None, Some(preset)) => {
                Format::plain().parse(&self.alphabet, Some(preset), self.length as usize, input)
            }
            (None, None) => Ok(input.to_owned()),
        }
    }

    /// The preset and format as one JSON object, for storage; `None` for a
    /// spec with neither (as every keyspace before them). O(1).
    pub fn shape_text(&self) -> Option<String> {
        if self.preset.is_none() && self.format.is_none() {
            return None;
        }
        let mut shape = serde_json::Map::new();
        if let Some(p) = self.preset {
            shape.insert("preset".into(), p.name().into());
        }
        if let Some(f) = &self.format {
            let (group, separator, prefix) = f.parts();
            shape.insert("group".into(), group.into());
            shape.insert("separator".into(), separator.into());
            shape.insert("prefix".into(), prefix.into());
            shape.insert("check".into(), f.check().into());
        }
        Some(serde_json::Value::Object(shape).to_string())
    }

    /// `self` with the preset and format of [`KeyspaceSpec::shape_text`]'s
    /// `text`. O(1).
    pub fn with_shape_text(self, text: &str) -> Result<Self, KeyspaceError> {
        let bad = || invalid(format!("stored keyspace shape {text:?}"));
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
        let preset = match v.get("preset") {
            None => None,
            Some(p) => Some(p.as_str().and_then(Preset::named).ok_or_else(bad)?),
        };
        let spec = Self { preset, ..self };
        if v.get("check").is_none() {
            return Ok(spec);
        }
        let group = match v.get("group") {
            Some(serde_json::Value::Null) | None => None,
            Some(g) => Some(g.as_u64().ok_or_else(bad)? as usize),
        };
        let format = Format::new(
            &spec.alphabet,
            group,
            v.get("separator").and_then(|s| s.as_str()),
            v.get("prefix").and_then(|s| s.as_str()),
            v.get("check")
                .and_then(serde_json::Value::as_bool)
                .ok_or_else(bad)?,
        )?;
        Ok(spec.with_format(format))
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
