//! Unit tests of alphabets, codecs and keyspaces, and a property test of
//! [`Keyspace`] against a model that remembers every issued token.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// The default keyspace's alphabet: the 52 Latin letters in keyboard order.
const DEFAULT_ALPHABET: &str = "qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM";
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
            Ok(TokenStatus::issued(token.clone(), None))
        );
        assert_eq!(keyspace.codec().decode(token), Ok(index as u128));
    }
    assert_eq!(
        keyspace.info(),
        KeyspaceInfo {
            capacity,
            issued: capacity,
            activated: 0,
            revoked: 0,
            remaining: 0,
            max_activations: MaxActivations::DEFAULT,
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
        let codec = codec_for(DEFAULT_ALPHABET, 4);
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
        let codec = codec_for(DEFAULT_ALPHABET, 4);
        match codec.decode(&text) {
            Ok(index) => {
                prop_assert!(index < codec.spec().capacity());
                prop_assert_eq!(codec.encode(index), text);
            }
            Err(e) => {
                prop_assert_eq!(e, KeyspaceError::InvalidToken);
                let well_formed = text.chars().count() == 4
                    && text.chars().all(|c| DEFAULT_ALPHABET.contains(c));
                prop_assert!(!well_formed, "{:?} was refused", text);
            }
        }
    }
}

#[test]
fn restored_ff1_keyspace_continues_issuing_without_repeats() {
    let codec = codec_for(DEFAULT_ALPHABET, 4);
    let mut original = Keyspace::new(codec.clone());
    let first: Vec<String> = (0..1000).map(|_| original.issue().unwrap().token).collect();
    original.activate(&first[3], None, at(10)).unwrap();
    original.activate(&first[999], None, at(20)).unwrap();

    let mut restored = Keyspace::restore(
        codec,
        1000,
        MaxActivations::DEFAULT,
        [],
        [
            (first[3].clone(), slot(None, 10)),
            (first[999].clone(), slot(None, 20)),
        ],
    )
    .unwrap();
    assert_eq!(restored.info(), original.info());
    assert_eq!(
        restored.status(&first[3]).unwrap().activated_at(),
        Some(at(10))
    );
    assert_eq!(restored.status(&first[4]).unwrap().activated_at(), None);
    assert_eq!(
        restored.activate(&first[999], None, at(30)),
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
    let codec = codec_for(DEFAULT_ALPHABET, 4);
    let capacity = codec.spec().capacity();
    let mut keyspace =
        Keyspace::restore(codec, capacity - 10, MaxActivations::DEFAULT, [], []).unwrap();
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
    let one = codec_with(DEFAULT_ALPHABET, 4, secret(1));
    let two = codec_with(DEFAULT_ALPHABET, 4, secret(2));
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
    let mut keyspace =
        Keyspace::restore(codec, capacity - 2, MaxActivations::DEFAULT, [], []).unwrap();
    let last_but_one = keyspace.issue().unwrap();
    let last = keyspace.issue().unwrap();
    assert_eq!((last_but_one.remaining, last.remaining), (1, 0));
    assert_ne!(last_but_one.token, last.token);
    assert_eq!(keyspace.codec().decode(&last.token), Ok(capacity - 1));
    assert_eq!(keyspace.issue(), Err(KeyspaceError::Exhausted));
    keyspace.activate(&last.token, None, at(1)).unwrap();
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
        keyspace.activate(&unissued, None, at(1)),
        Err(KeyspaceError::NotIssued)
    );
    for bad in ["", "ab", "abcd", "ab1", "abC", "ab/"] {
        assert_eq!(
            keyspace.status(bad),
            Err(KeyspaceError::InvalidToken),
            "{bad}"
        );
        assert_eq!(
            keyspace.activate(bad, None, at(1)),
            Err(KeyspaceError::InvalidToken),
            "{bad}"
        );
    }

    let activated = TokenStatus {
        token: first.clone(),
        marks: slot(None, 5),
        batch: None,
    };
    assert_eq!(
        keyspace.activate(&first, None, at(5)),
        Ok(activated.clone())
    );
    assert_eq!(
        keyspace.activate(&first, None, at(6)),
        Err(KeyspaceError::AlreadyActivated)
    );
    assert_eq!(keyspace.status(&first), Ok(activated));
    assert_eq!(keyspace.status(&second).unwrap().activated_at(), None);
    assert_eq!(
        keyspace.info(),
        KeyspaceInfo {
            capacity: 17_576,
            issued: 2,
            activated: 1,
            revoked: 0,
            remaining: 17_574,
            max_activations: MaxActivations::DEFAULT,
        }
    );
}

#[test]
fn restore_rejects_state_that_does_not_fit_the_codec() {
    let codec = codec_for("abcdefghijklmnopqrstuvwxyz", 3);
    let issued = codec.encode(0);
    let unissued = codec.encode(1);
    let cases: [(u128, Vec<(String, Marks)>); 4] = [
        (17_577, vec![]),
        (1, vec![(unissued, slot(None, 1))]),
        (1, vec![("ab".to_owned(), slot(None, 1))]),
        (
            1,
            vec![(issued.clone(), slot(None, 1)), (issued, slot(None, 2))],
        ),
    ];
    let max = MaxActivations::DEFAULT;
    for (count, marks) in cases {
        assert!(matches!(
            Keyspace::restore(codec.clone(), count, max, [], marks),
            Err(KeyspaceError::InvalidKeyspace(_))
        ));
    }
    let b = |first, end| BatchRange {
        first,
        end,
        name: Name::parse("b").unwrap(),
    };
    for ranges in [vec![b(0, 3)], vec![b(0, 1), b(0, 1)], vec![b(1, 1)]] {
        assert!(matches!(
            Keyspace::restore(codec.clone(), 2, max, ranges, []),
            Err(KeyspaceError::InvalidKeyspace(_))
        ));
    }
    assert_eq!(
        Keyspace::restore(codec, 17_576, max, [], [])
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
    let codec = codec_with(DEFAULT_ALPHABET, 4, Secret::from_bytes([0xab; 32]));
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
    Issue(Option<u8>),
    IssueMany(u8, Option<u8>),
    Status(Pick),
    Activate(Pick, Option<u8>, u64),
    Deactivate(Pick, u8),
    Revoke(Pick, u64),
    SetMax(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let pick = prop_oneof![
        4 => any::<Index>().prop_map(Pick::Issued),
        1 => "[abc]{2}".prop_map(Pick::Text),
        1 => "[abcd/]{0,3}".prop_map(Pick::Text),
    ];
    let batch = prop::option::of(0..2u8);
    let fingerprint = prop::option::of(0..3u8);
    prop_oneof![
        3 => batch.clone().prop_map(Op::Issue),
        1 => (1..4u8, batch).prop_map(|(n, b)| Op::IssueMany(n, b)),
        1 => pick.clone().prop_map(Op::Status),
        4 => (pick.clone(), fingerprint, 0..1_000u64).prop_map(|(p, f, t)| Op::Activate(p, f, t)),
        2 => (pick.clone(), 0..3u8).prop_map(|(p, f)| Op::Deactivate(p, f)),
        1 => (pick, 0..1_000u64).prop_map(|(p, t)| Op::Revoke(p, t)),
        1 => (1..4u64).prop_map(Op::SetMax),
    ]
}

fn fingerprint(n: u8) -> Fingerprint {
    Fingerprint::parse(&format!("machine {n}")).unwrap()
}

fn batch_name(n: u8) -> Name {
    Name::parse(&format!("batch-{n}")).unwrap()
}

/// Marks of one activation at `ms`.
fn slot(fingerprint: Option<Fingerprint>, ms: u64) -> Marks {
    Marks {
        activations: vec![Activation {
            fingerprint,
            at: at(ms),
        }],
        revoked: None,
    }
}

/// The obvious implementation: remember every issued token, its batch and
/// its marks, and count by looking at all of them.
#[derive(Default)]
struct Model {
    issued: Vec<(String, Option<Name>)>,
    marks: HashMap<String, Marks>,
    max: u16,
}

impl Model {
    const CAPACITY: u128 = 9;

    fn token(&self, pick: &Pick) -> String {
        match pick {
            Pick::Issued(i) if !self.issued.is_empty() => i.get(&self.issued).0.clone(),
            Pick::Issued(_) => "aa".to_owned(),
            Pick::Text(t) => t.clone(),
        }
    }

    fn status(&self, token: &str) -> Result<TokenStatus, KeyspaceError> {
        if token.chars().count() != 2 || !token.chars().all(|c| "abc".contains(c)) {
            return Err(KeyspaceError::InvalidToken);
        }
        let (_, batch) = self
            .issued
            .iter()
            .find(|(t, _)| t == token)
            .ok_or(KeyspaceError::NotIssued)?;
        Ok(TokenStatus {
            token: token.to_owned(),
            marks: self.marks.get(token).cloned().unwrap_or_default(),
            batch: batch.clone(),
        })
    }

    /// Applies `change` to the marks of an issued token, as the rules say.
    fn change(
        &mut self,
        token: &str,
        change: impl FnOnce(&mut Marks, u16) -> Result<(), KeyspaceError>,
    ) -> Result<TokenStatus, KeyspaceError> {
        let mut marks = self.status(token)?.marks;
        change(&mut marks, self.max)?;
        if marks.is_empty() {
            self.marks.remove(token);
        } else {
            self.marks.insert(token.to_owned(), marks);
        }
        self.status(token)
    }

    fn batch(&self, name: &Name) -> Option<BatchInfo> {
        let tokens: Vec<&String> = self
            .issued
            .iter()
            .filter(|(_, b)| b.as_ref() == Some(name))
            .map(|(t, _)| t)
            .collect();
        let marks = |t: &&String| self.marks.get(*t).cloned().unwrap_or_default();
        (!tokens.is_empty()).then(|| BatchInfo {
            name: name.clone(),
            issued: tokens.len() as u128,
            activated: tokens
                .iter()
                .filter(|t| !marks(t).activations.is_empty())
                .count() as u128,
            revoked: tokens.iter().filter(|t| marks(t).revoked.is_some()).count() as u128,
        })
    }

    fn info(&self) -> KeyspaceInfo {
        let issued = self.issued.len() as u128;
        KeyspaceInfo {
            capacity: Self::CAPACITY,
            issued,
            activated: self
                .marks
                .values()
                .filter(|m| !m.activations.is_empty())
                .count() as u128,
            revoked: self.marks.values().filter(|m| m.revoked.is_some()).count() as u128,
            remaining: Self::CAPACITY - issued,
            max_activations: MaxActivations::new(u64::from(self.max)).unwrap(),
        }
    }
}

proptest! {
    #[test]
    fn keyspace_behaves_like_a_list_of_issued_tokens_with_their_marks(
        ops in prop::collection::vec(op(), 0..60)
    ) {
        let codec = codec_for("abc", 2);
        let mut keyspace = Keyspace::new(codec.clone());
        let mut model = Model { max: 1, ..Model::default() };
        let mut ranges: Vec<BatchRange> = Vec::new();
        for op in ops {
            match op {
                Op::Issue(b) | Op::IssueMany(_, b) => {
                    let count = match op {
                        Op::IssueMany(n, _) => u128::from(n),
                        _ => 1,
                    };
                    let batch = b.map(batch_name);
                    let result = match op {
                        Op::Issue(_) => keyspace.issue_in(batch.as_ref()).map(|i| (i.index, vec![i.token])),
                        _ => keyspace.issue_many_in(count, batch.as_ref()).map(|i| (i.first, i.tokens)),
                    };
                    match result {
                        Ok((first, tokens)) => {
                            prop_assert_eq!(first, model.issued.len() as u128);
                            for token in tokens {
                                prop_assert!(model.status(&token) == Err(KeyspaceError::NotIssued));
                                model.issued.push((token, batch.clone()));
                            }
                            if let Some(range) = keyspace.range_of(first) {
                                ranges.retain(|r| r.first != range.first);
                                ranges.push(range);
                            }
                        }
                        Err(e) => {
                            prop_assert_eq!(e, KeyspaceError::Exhausted);
                            prop_assert!(model.info().remaining < count);
                        }
                    }
                }
                Op::Status(pick) => {
                    let token = model.token(&pick);
                    prop_assert_eq!(keyspace.status(&token), model.status(&token));
                }
                Op::Activate(pick, f, ms) => {
                    let token = model.token(&pick);
                    let f = f.map(fingerprint);
                    let expected = model.change(&token, |m, max| {
                        if m.revoked.is_some() {
                            return Err(KeyspaceError::Revoked);
                        }
                        if f.is_some() && m.activations.iter().any(|a| a.fingerprint == f) {
                            return Ok(());
                        }
                        if m.activations.len() >= usize::from(max) {
                            return Err(KeyspaceError::AlreadyActivated);
                        }
                        m.activations.push(Activation { fingerprint: f.clone(), at: at(ms) });
                        Ok(())
                    });
                    prop_assert_eq!(keyspace.activate(&token, f.as_ref(), at(ms)), expected);
                }
                Op::Deactivate(pick, f) => {
                    let token = model.token(&pick);
                    let f = fingerprint(f);
                    let expected = model.change(&token, |m, _| {
                        let before = m.activations.len();
                        m.activations.retain(|a| a.fingerprint.as_ref() != Some(&f));
                        if m.activations.len() == before {
                            return Err(KeyspaceError::ActivationNotFound);
                        }
                        Ok(())
                    });
                    prop_assert_eq!(keyspace.deactivate(&token, &f), expected);
                }
                Op::Revoke(pick, ms) => {
                    let token = model.token(&pick);
                    let reason = Reason::parse("refunded").unwrap();
                    let expected = model.change(&token, |m, _| {
                        m.revoked.get_or_insert(Revocation { at: at(ms), reason: Some(reason.clone()) });
                        Ok(())
                    });
                    prop_assert_eq!(keyspace.revoke(&token, Some(reason), at(ms)), expected);
                }
                Op::SetMax(n) => {
                    model.max = n as u16;
                    keyspace.set_max_activations(MaxActivations::new(n).unwrap());
                }
            }
            prop_assert_eq!(keyspace.info(), model.info());
            for b in 0..2 {
                prop_assert_eq!(keyspace.batch(&batch_name(b)).ok(), model.batch(&batch_name(b)));
            }
        }

        // What a store keeps (the counter, the ranges as last written,
        // the marks) restores the same keyspace.
        ranges.sort_by_key(|r| r.first);
        let restored = Keyspace::restore(
            codec,
            model.issued.len() as u128,
            keyspace.max_activations(),
            ranges,
            model.marks.clone(),
        )
        .unwrap();
        prop_assert_eq!(restored.info(), model.info());
        for index in 0..Model::CAPACITY {
            let token = counting_token("abc", 2, index);
            prop_assert_eq!(restored.status(&token), model.status(&token));
        }
        for b in 0..2 {
            prop_assert_eq!(restored.batch(&batch_name(b)).ok(), model.batch(&batch_name(b)));
        }
    }
}

#[test]
fn a_fingerprint_keeps_its_slot_and_freeing_the_last_makes_the_token_issued_again() {
    let mut keyspace = Keyspace::new(codec_for("0123456789", 6));
    keyspace.set_max_activations(MaxActivations::new(2).unwrap());
    let token = keyspace.issue().unwrap().token;
    let (laptop, desktop, phone) = (fingerprint(0), fingerprint(1), fingerprint(2));
    keyspace.activate(&token, Some(&laptop), at(1)).unwrap();
    let again = keyspace.activate(&token, Some(&laptop), at(2)).unwrap();
    assert_eq!(
        again.marks,
        slot(Some(laptop.clone()), 1),
        "the same slot, unchanged"
    );
    keyspace.activate(&token, Some(&desktop), at(3)).unwrap();
    assert_eq!(
        keyspace.activate(&token, Some(&phone), at(4)),
        Err(KeyspaceError::AlreadyActivated)
    );
    // Lowering the limit keeps both slots but takes no new one.
    keyspace.set_max_activations(MaxActivations::DEFAULT);
    keyspace.deactivate(&token, &laptop).unwrap();
    assert_eq!(
        keyspace.activate(&token, Some(&phone), at(5)),
        Err(KeyspaceError::AlreadyActivated)
    );
    assert_eq!(keyspace.status(&token).unwrap().activated_at(), Some(at(3)));
    assert_eq!(
        keyspace.deactivate(&token, &laptop),
        Err(KeyspaceError::ActivationNotFound)
    );
    let freed = keyspace.deactivate(&token, &desktop).unwrap();
    assert_eq!(freed.marks.state(), TokenState::Issued);
    assert_eq!(freed.activated_at(), None);
    assert_eq!(keyspace.info().activated, 0);
}

#[test]
fn a_revoked_token_keeps_its_activations_and_takes_no_new_one() {
    let mut keyspace = Keyspace::new(codec_for("0123456789", 6));
    let batch = batch_name(0);
    let token = keyspace.issue_in(Some(&batch)).unwrap().token;
    keyspace.activate(&token, None, at(1)).unwrap();
    let why = Reason::parse("chargeback").unwrap();
    let revoked = keyspace.revoke(&token, Some(why.clone()), at(2)).unwrap();
    assert_eq!(revoked.marks.state(), TokenState::Revoked);
    assert_eq!(revoked.marks.activations.len(), 1);
    let again = keyspace.revoke(&token, None, at(3)).unwrap();
    assert_eq!(
        again.marks.revoked,
        Some(Revocation {
            at: at(2),
            reason: Some(why)
        })
    );
    assert_eq!(
        keyspace.activate(&token, Some(&fingerprint(0)), at(4)),
        Err(KeyspaceError::Revoked)
    );
    let info = keyspace.batch(&batch).unwrap();
    assert_eq!((info.issued, info.activated, info.revoked), (1, 1, 1));
    assert_eq!((keyspace.info().activated, keyspace.info().revoked), (1, 1));
}

#[test]
fn batch_ranges_join_while_one_batch_issues_in_a_row() {
    let mut keyspace = Keyspace::new(codec_for("0123456789", 6));
    let (a, b) = (batch_name(0), batch_name(1));
    keyspace.issue_many_in(3, Some(&a)).unwrap();
    keyspace.issue_in(Some(&a)).unwrap();
    let range = |ks: &Keyspace, i| ks.range_of(i).map(|r| (r.first, r.end, r.name));
    assert_eq!(range(&keyspace, 3), Some((0, 4, a.clone())));
    keyspace.issue().unwrap();
    keyspace.issue_in(Some(&a)).unwrap();
    keyspace.issue_many_in(2, Some(&b)).unwrap();
    assert_eq!(range(&keyspace, 4), None, "issued without a batch");
    assert_eq!(
        range(&keyspace, 5),
        Some((5, 6, a.clone())),
        "a gap opens a range"
    );
    assert_eq!(range(&keyspace, 7), Some((6, 8, b.clone())));
    assert_eq!(keyspace.batch(&a).unwrap().issued, 5);
    assert_eq!(
        keyspace.batch(&batch_name(9)),
        Err(KeyspaceError::BatchNotFound)
    );
}
