//! Fuzzing, bounded so it runs in every `cargo test`:
//!
//! - an HTTP fuzz: a few hundred random requests (methods, junk paths with
//!   `%00`, `%FF`, `..`, unicode and very long parts, random bodies) sent
//!   over raw TCP, so nothing normalises them on the way; never a 5xx,
//!   every error body JSON, and the server still serves afterwards;
//! - proptest targets: `Name::parse`, `TokenCodec::decode` in several
//!   alphabets, and arbitrary bytes and JSON values posted through
//!   `keyward::http::router` with `tower::ServiceExt::oneshot`.
//!
//! Knobs (all optional): `KEYWARD_FUZZ_SEED` and `KEYWARD_FUZZ_REQUESTS`
//! for the HTTP fuzz; `PROPTEST_CASES` for the proptest targets;
//! `KEYWARD_FUZZ_SECONDS`, the time budget of each target (cases past it
//! are skipped, not failed); `KEYWARD_FUZZ_REPORT=1` prints one
//! `keyward-fuzz:` line per target with the cases executed and the outcome
//! (`scripts/fuzz` sets them all).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::http::Request;
use keyward::clock::ManualClock;
use keyward::config::{Config, DEFAULT_TOKEN_ALPHABET};
use keyward::core::{KeyspaceError, KeyspaceSpec, Name, Secret, Timestamp, TokenCodec, Ttl};
use keyward::http::AppState;
use keyward::store::Store;
use keyward::store::local::{LocalSettings, LocalStore};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tower::ServiceExt;

use keyward_testkit::app::{T0_MS, spawn_app};

// ---- knobs and reporting ----

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn reporting() -> bool {
    std::env::var("KEYWARD_FUZZ_REPORT").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Each target's time budget: cases past it are skipped, so a long run
/// ends on time with its report instead of being killed.
fn budget() -> Duration {
    Duration::from_secs(env_u64("KEYWARD_FUZZ_SECONDS").unwrap_or(120))
}

/// Runs `test` on values of `strategy` for `PROPTEST_CASES` cases (256 by
/// default) within [`budget`], then reports and fails on a finding with
/// proptest's shrunk input.
fn fuzz_target<S>(target: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let config = ProptestConfig {
        // The shrunk input is printed; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let budget = budget();
    let started = Instant::now();
    let executed = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let result = runner.run(&strategy, |value| {
        if started.elapsed() > budget {
            skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        executed.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    let outcome = match &result {
        Ok(()) => "nothing found".to_owned(),
        Err(e) => format!("FOUND: {e}"),
    };
    if reporting() {
        println!(
            "keyward-fuzz: target={target} executed={} skipped={} cases={cases} seconds={:.1} result={outcome}",
            executed.load(Ordering::Relaxed),
            skipped.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64(),
        );
    }
    if let Err(e) = result {
        panic!("fuzz target {target}: {e}");
    }
}

// ---- names ----

fn name_rule(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[test]
fn fuzz_name_parse_never_panics_and_accepts_exactly_the_name_rule() {
    let strategy = prop_oneof![
        any::<String>(),
        "\\PC{0,80}",
        "[A-Za-z0-9._-]{0,70}",
        "[A-Za-z0-9._/ %é\\-\\x00\\x7f]{0,70}",
    ];
    fuzz_target("name_parse", strategy, |s| {
        match Name::parse(&s) {
            Ok(name) => {
                prop_assert!(name_rule(&s), "accepted {s:?}");
                prop_assert_eq!(name.as_str(), s.as_str());
                prop_assert_eq!(name.to_string(), s);
            }
            Err(_) => prop_assert!(!name_rule(&s), "refused {s:?}"),
        }
        Ok(())
    });
}

// ---- tokens ----

/// A codec and what it must accept: exactly `length` characters, each in
/// `alphabet`.
struct CodecCase {
    label: &'static str,
    codec: TokenCodec,
    chars: Vec<char>,
    set: HashSet<char>,
    length: usize,
}

/// Alphabets of every kind: the default ASCII one, Cyrillic, two
/// characters, emoji, and 20 000 CJK characters; each at a length that
/// takes FF1 (10^6 tokens or more) and one that takes the small-space
/// permutation.
static CODECS: LazyLock<Vec<CodecCase>> = LazyLock::new(|| {
    let cjk: String = ('\u{4E00}'..).take(20_000).collect();
    let specs: Vec<(&'static str, String, u32)> = vec![
        ("default-4", DEFAULT_TOKEN_ALPHABET.to_owned(), 4),
        ("default-3", DEFAULT_TOKEN_ALPHABET.to_owned(), 3),
        (
            "cyrillic-4",
            "абвгдеёжзийклмнопрстуфхцчшщъыьэюя".to_owned(),
            4,
        ),
        (
            "cyrillic-2",
            "абвгдеёжзийклмнопрстуфхцчшщъыьэюя".to_owned(),
            2,
        ),
        ("binary-1", "01".to_owned(), 1),
        ("binary-24", "01".to_owned(), 24),
        ("binary-127", "01".to_owned(), 127),
        ("emoji-3", "😀😁😂🤣😃😄😅😆".to_owned(), 3),
        ("emoji-7", "😀😁😂🤣😃😄😅😆".to_owned(), 7),
        ("cjk-2", cjk.clone(), 2),
        ("cjk-1", cjk, 1),
    ];
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (label, alphabet, length))| {
            let spec = KeyspaceSpec::new(&alphabet, length).expect("a valid test keyspace");
            let secret = Secret::from_bytes([u8::try_from(i).expect("few codecs") + 1; 32]);
            let chars: Vec<char> = alphabet.chars().collect();
            CodecCase {
                label,
                codec: TokenCodec::new(spec, secret),
                set: chars.iter().copied().collect(),
                chars,
                length: length as usize,
            }
        })
        .collect()
});

/// A codec's index and a candidate token: well formed, of a near length,
/// alphabet characters mixed with any, or any string at all.
fn token_case() -> impl Strategy<Value = (usize, String, u128)> {
    (0..CODECS.len()).prop_flat_map(|i| {
        let case = &CODECS[i];
        let chars: &'static [char] = &case.chars;
        let n = case.length;
        let token = prop_oneof![
            vec(select(chars), n..=n).prop_map(|cs| cs.into_iter().collect::<String>()),
            vec(select(chars), 0..=n + 2).prop_map(|cs| cs.into_iter().collect::<String>()),
            vec(prop_oneof![select(chars), any::<char>()], 0..=n + 2)
                .prop_map(|cs| cs.into_iter().collect::<String>()),
            any::<String>(),
        ];
        (Just(i), token, any::<u128>())
    })
}

#[test]
fn fuzz_token_decode_never_panics_and_round_trips_in_every_alphabet() {
    LazyLock::force(&CODECS);
    fuzz_target("token_decode", token_case(), |(i, token, index)| {
        let case = &CODECS[i];
        let capacity = case.codec.spec().capacity();
        let well_formed =
            token.chars().count() == case.length && token.chars().all(|c| case.set.contains(&c));
        match case.codec.decode(&token) {
            Ok(decoded) => {
                prop_assert!(well_formed, "{}: decoded {token:?}", case.label);
                prop_assert!(
                    decoded < capacity,
                    "{}: {decoded} >= {capacity}",
                    case.label
                );
                prop_assert_eq!(&case.codec.encode(decoded), &token, "{}", case.label);
            }
            Err(e) => {
                prop_assert!(!well_formed, "{}: refused {token:?}: {e}", case.label);
                prop_assert_eq!(e, KeyspaceError::InvalidToken);
            }
        }
        // And the other way: every index's token decodes back to it.
        let index = index % capacity;
        let encoded = case.codec.encode(index);
        prop_assert_eq!(encoded.chars().count(), case.length, "{}", case.label);
        prop_assert_eq!(case.codec.decode(&encoded), Ok(index), "{}", case.label);
        Ok(())
    });
}

// ---- bodies through the router ----

/// Every field name the contract's bodies use: random values under them
/// reach past the JSON parser into the handlers.
const FIELDS: &[&str] = &[
    "count",
    "lease_id",
    "lease_ttl_ms",
    "keepalive_ttl_ms",
    "key_length",
    "alphabet",
    "length",
];

/// Integers at the edges of the contract's ranges.
const EDGE_INTEGERS: &[u64] = &[
    0,
    1,
    2,
    7,
    8,
    9,
    127,
    128,
    129,
    10_000,
    10_001,
    Ttl::MAX_MILLIS,
    Ttl::MAX_MILLIS + 1,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    u64::MAX,
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(EDGE_INTEGERS).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::from),
        // Alphabet-like text: distinct or repeated characters, some refused.
        "[ab01абв😀字 /\\t\\x00-]{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(json_key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![select(FIELDS).prop_map(str::to_owned), "\\PC{0,8}",]
}

/// Mostly objects keyed by the contract's fields, sometimes anything.
fn json_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => btree_map(select(FIELDS).prop_map(str::to_owned), json_value(), 0..4)
            .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ]
}

fn byte_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..512),
        "[\\[\\]{}\":,0-9a-z .eE+\\-\\\\]{0,64}".prop_map(String::into_bytes),
        // Valid JSON, then cut short or given trailing junk.
        (
            json_body(),
            any::<prop::sample::Index>(),
            vec(any::<u8>(), 0..4)
        )
            .prop_map(|(v, cut, junk)| {
                let mut bytes = v.to_string().into_bytes();
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes.extend(junk);
                bytes
            }),
    ]
}

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("application/json; charset=utf-16"),
];

/// Where the fuzzed bodies go: `{leased}` and `{free}` are keys of pool
/// `p` set up before each case.
const BODY_ROUTES: &[(&str, &str)] = &[
    ("PUT", "/v1/pools/p"),
    ("PUT", "/v1/pools/fresh"),
    ("POST", "/v1/pools/p/keys"),
    ("POST", "/v1/pools/p/keys/{leased}/release"),
    ("POST", "/v1/pools/p/keys/{leased}/keepalive"),
    ("POST", "/v1/pools/p/keys/{free}/release"),
    ("POST", "/v1/pools/p/keys/{free}/keepalive"),
    ("POST", "/v1/pools/p/lease"),
    ("PUT", "/v1/keyspaces/k"),
    ("PUT", "/v1/keyspaces/default"),
    ("POST", "/v1/keyspaces/default/tokens"),
    ("POST", "/api/get_token"),
    ("POST", "/api/v1/random_api_key/"),
    ("PUT", "/api/v1/random_api_key/?api_key={leased}"),
];

/// A fresh in-RAM server behind its router, with pool `p` holding one
/// leased and one free key; returns the router and the two keys.
async fn fresh_router() -> (axum::Router, String, String) {
    let config = Config::default();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0_MS)));
    let store = Arc::new(LocalStore::new(
        LocalSettings {
            pool_defaults: config.pool_defaults,
            default_keyspace: config.default_keyspace,
            limits: config.limits,
        },
        clock,
    ));
    let pool = Name::parse("p").expect("a valid name");
    store
        .generate_keys(&pool, 2)
        .await
        .expect("the memory store generates");
    let leased = store
        .lease_key(&pool)
        .await
        .expect("a free key to lease")
        .key;
    let free = store
        .generate_keys(&pool, 1)
        .await
        .expect("the memory store generates")
        .remove(0)
        .key;
    let router = keyward::http::router(AppState::new(
        store,
        None,
        std::sync::Arc::new(keyward::http::idempotency::Idempotency::new(
            keyward::core::Ttl::from_millis(60_000).expect("a valid TTL"),
        )),
    ));
    (router, leased, free)
}

/// Sends `body` to route `route` of a fresh server; fails the case on a
/// 5xx, or a non-2xx whose body is not JSON.
fn post_body(
    rt: &tokio::runtime::Runtime,
    route: usize,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> Result<(), TestCaseError> {
    let (method, template) = BODY_ROUTES[route];
    rt.block_on(async {
        let (router, leased, free) = fresh_router().await;
        let uri = template
            .replace("{leased}", &leased)
            .replace("{free}", &free);
        let mut req = Request::builder().method(method).uri(&uri);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(Body::from(body))
            .map_err(|e| TestCaseError::fail(format!("request: {e}")))?;
        let resp = router
            .oneshot(req)
            .await
            .map_err(|e| TestCaseError::fail(format!("router: {e}")))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| TestCaseError::fail(format!("response body: {e}")))?;
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(
            !status.is_server_error(),
            "{method} {uri} -> {status} {text}"
        );
        if !status.is_success() {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            prop_assert!(
                ct.starts_with("application/json"),
                "{method} {uri} -> {status} with Content-Type {ct:?}"
            );
            let value: Result<Value, _> = serde_json::from_slice(&bytes);
            prop_assert!(
                value.is_ok(),
                "{method} {uri} -> {status}, not JSON: {text}"
            );
            if uri.starts_with("/v1/") {
                let value = value.unwrap_or_default();
                prop_assert!(
                    value["error"]["code"].is_string(),
                    "{method} {uri} -> {status} without error.code: {text}"
                );
            }
        }
        Ok(())
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn fuzz_arbitrary_bytes_posted_as_bodies_never_cause_a_5xx() {
    let rt = runtime();
    let strategy = (0..BODY_ROUTES.len(), byte_body(), select(CONTENT_TYPES));
    fuzz_target("body_bytes", strategy, |(route, body, ct)| {
        post_body(&rt, route, body, ct)
    });
}

#[test]
fn fuzz_arbitrary_json_values_posted_as_bodies_never_cause_a_5xx() {
    let rt = runtime();
    let strategy = (0..BODY_ROUTES.len(), json_body(), select(CONTENT_TYPES));
    fuzz_target("body_json", strategy, |(route, body, ct)| {
        post_body(&rt, route, body.to_string().into_bytes(), ct)
    });
}

// ---- random HTTP requests over raw TCP ----

/// The longest request target sent: far above the 256-byte part limit,
/// well below what the HTTP parser itself refuses without a JSON body.
const MAX_TARGET: usize = 12_000;

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];

/// Real route shapes, with their methods; the fuzz fills, cuts and extends
/// them.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/pools/{pool}", &["GET", "PUT"]),
    ("/v1/pools/{pool}/keys", &["POST"]),
    ("/v1/pools/{pool}/lease", &["POST"]),
    ("/v1/pools/{pool}/keys/{key}", &["GET", "DELETE"]),
    ("/v1/pools/{pool}/keys/{key}/release", &["POST"]),
    ("/v1/pools/{pool}/keys/{key}/keepalive", &["POST"]),
    ("/v1/keyspaces/{ks}", &["GET", "PUT"]),
    ("/v1/keyspaces/{ks}/tokens", &["POST"]),
    ("/v1/keyspaces/{ks}/tokens/{token}", &["GET"]),
    ("/v1/keyspaces/{ks}/tokens/{token}/activate", &["POST"]),
    ("/api/get_token", &["POST"]),
    ("/api/activate_token/{token}", &["PUT"]),
    ("/api/get_token_status/{token}", &["GET"]),
    ("/api/get_number_token", &["GET"]),
    ("/api/v1/random_api_key", &["GET", "POST", "PUT", "DELETE"]),
    ("/api/v1/start_scheduler", &["GET"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/metrics", &["GET"]),
    ("/", &["GET"]),
    ("/v1", &["GET"]),
    ("/api/v1", &["GET"]),
];

/// Names that exist or that the fuzz creates.
const GOOD_NAMES: &[&str] = &["default", "fz", "fzk", "p", "new-pool.1"];

/// Unicode that tends to break things: accents, Cyrillic, emoji, RTL
/// override, BOM, NUL, DEL, astral letters, combining marks.
const UNICODE_JUNK: &[&str] = &[
    "é",
    "ключ",
    "😀",
    "\u{202E}abc",
    "\u{FEFF}",
    "\u{0}",
    "\u{7F}",
    "𝔘𝔫𝔦",
    "e\u{301}",
    "字字字",
    "Ключ не выдан",
];

const FIXED_JUNK: &[&str] = &[
    "",
    ".",
    "..",
    "%00",
    "%FF",
    "%ff%fe",
    "%2e%2e",
    "%2E",
    "%2f",
    "%2F..%2F",
    "%5C",
    "%",
    "%Z",
    "%zz",
    "%%",
    "%u0041",
    "~",
    "*",
    "-1",
    "0",
    "99999999999999999999999999999999",
    "null",
    "{pool}",
    ":pool",
];

/// Percent-encodes every byte outside the unreserved set.
fn pct(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One fuzzed request.
#[derive(Debug)]
struct FuzzRequest {
    method: String,
    target: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl FuzzRequest {
    /// The request, short enough to print.
    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        format!(
            "{} {} (content-type {:?}, {} body bytes: {:?}{})",
            self.method,
            &self.target[..floor_char(&self.target, 400)],
            self.content_type,
            self.body.len(),
            body,
            if self.body.len() > 300 { "…" } else { "" }
        )
    }
}

fn floor_char(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Builds random requests; learns keys and tokens from the answers so
/// later requests can name real ones.
struct Fuzzer {
    rng: StdRng,
    keys: Vec<String>,
    tokens: Vec<String>,
}

impl Fuzzer {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn valid_name(&mut self) -> String {
        const CHARS: &[u8] = b"ABCXYZabcxyz0189._-";
        let len = self.rng.random_range(1..=64);
        (0..len).map(|_| char::from(*self.pick(CHARS))).collect()
    }

    fn junk_segment(&mut self) -> String {
        match self.rng.random_range(0..9) {
            0 => (*self.pick(FIXED_JUNK)).to_owned(),
            1 => {
                let len = self.rng.random_range(1..40);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                pct(&bytes)
            }
            2 => pct(self.pick(UNICODE_JUNK).as_bytes()),
            3 => {
                // Long parts: around the 256-byte limit, or up to 1000 bytes.
                let len = if self.chance(0.5) {
                    self.rng.random_range(250..=262)
                } else {
                    self.rng.random_range(1..=1000)
                };
                let c = *self.pick(&['a', 'Z', '9', '.', '-']);
                std::iter::repeat_n(c, len).collect()
            }
            4 => {
                let len = self.rng.random_range(1..=333);
                pct(&vec![0xFF; len])
            }
            5 => {
                const SPECIAL: &[u8] = b"!$&'()*+,;=:@~.";
                let len = self.rng.random_range(1..12);
                (0..len).map(|_| char::from(*self.pick(SPECIAL))).collect()
            }
            6 => self.valid_name(),
            7 => {
                let name = self.valid_name();
                format!("{name}{}", self.pick(FIXED_JUNK))
            }
            _ => {
                let s: String = (0..self.rng.random_range(1..6))
                    .map(|_| *self.pick(UNICODE_JUNK))
                    .collect();
                pct(s.as_bytes())
            }
        }
    }

    fn name_segment(&mut self) -> String {
        if self.chance(0.6) {
            (*self.pick(GOOD_NAMES)).to_owned()
        } else {
            self.junk_segment()
        }
    }

    fn key_segment(&mut self, known: bool) -> String {
        if known && !self.keys.is_empty() && self.chance(0.5) {
            let i = self.rng.random_range(0..self.keys.len());
            return pct(self.keys[i].as_bytes());
        }
        if !self.tokens.is_empty() && self.chance(0.3) {
            let i = self.rng.random_range(0..self.tokens.len());
            return pct(self.tokens[i].as_bytes());
        }
        self.junk_segment()
    }

    fn path(&mut self) -> (String, &'static [&'static str]) {
        let (template, methods) = *self.pick(ROUTES);
        let mut parts: Vec<String> = template
            .split('/')
            .skip(1)
            .map(|part| match part {
                "{pool}" | "{ks}" => self.name_segment(),
                "{key}" => self.key_segment(true),
                "{token}" => self.key_segment(false),
                literal => literal.to_owned(),
            })
            .collect();
        if self.chance(0.15) && parts.len() > 1 {
            let keep = self.rng.random_range(1..parts.len());
            parts.truncate(keep);
        }
        if self.chance(0.15) {
            let i = self.rng.random_range(0..parts.len());
            parts[i] = self.junk_segment();
        }
        if self.chance(0.3) {
            let extra = if self.chance(0.2) {
                self.rng.random_range(10..=80)
            } else {
                self.rng.random_range(1..=3)
            };
            for _ in 0..extra {
                let seg = self.junk_segment();
                parts.push(seg);
            }
        }
        let mut path = format!("/{}", parts.join("/"));
        if self.chance(0.1) {
            path.push('/');
        }
        if self.chance(0.05) {
            path = path.replacen('/', "//", 1);
        }
        if self.chance(0.25) {
            let value = if self.chance(0.5) {
                self.key_segment(true)
            } else {
                self.junk_segment()
            };
            let name = if self.chance(0.8) { "api_key" } else { "%00" };
            path.push_str(&format!("?{name}={value}"));
            if self.chance(0.2) {
                path.push_str(&format!("&api_key={}", self.junk_segment()));
            }
        }
        if path.len() > MAX_TARGET {
            path.truncate(MAX_TARGET);
            // Never end in a cut `%X`.
            while path.ends_with('%') || path[..path.len() - 1].ends_with('%') {
                path.pop();
            }
        }
        (path, methods)
    }

    fn json_value(&mut self, depth: u32) -> Value {
        let leaf = depth >= 4 || self.chance(0.5);
        if leaf {
            match self.rng.random_range(0..8) {
                0 => Value::Null,
                1 => Value::Bool(self.rng.random()),
                2 => json!(self.rng.random::<i64>()),
                3 => json!(*self.pick(EDGE_INTEGERS)),
                4 => json!(self.rng.random_range(0..30u64)),
                5 => serde_json::Number::from_f64(self.rng.random::<f64>() * 1e6)
                    .map_or(Value::Null, Value::Number),
                6 => json!(self.alphabet()),
                _ => json!(self.junk_segment()),
            }
        } else if self.chance(0.5) {
            let n = self.rng.random_range(0..5);
            Value::Array((0..n).map(|_| self.json_value(depth + 1)).collect())
        } else {
            let n = self.rng.random_range(0..5);
            let mut map = serde_json::Map::new();
            for _ in 0..n {
                let key = if self.chance(0.7) {
                    (*self.pick(FIELDS)).to_owned()
                } else {
                    self.junk_segment()
                };
                let value = self.json_value(depth + 1);
                map.insert(key, value);
            }
            Value::Object(map)
        }
    }

    /// An alphabet candidate: mostly valid, sometimes with repeats,
    /// whitespace, control characters or `/`.
    fn alphabet(&mut self) -> String {
        const POOL: &[char] = &[
            'a', 'b', 'c', '0', '1', 'а', 'б', 'в', '😀', '😁', '字', 'é', 'Z', ' ', '/', '\t',
            '\0', '\u{7f}', '\u{202E}',
        ];
        let n = self.rng.random_range(0..12);
        (0..n).map(|_| *self.pick(POOL)).collect()
    }

    /// A body the contract knows, with values that change state.
    fn useful_body(&mut self) -> Value {
        match self.rng.random_range(0..5) {
            0 => json!({"count": self.rng.random_range(1..=50u64)}),
            1 => json!({"alphabet": self.alphabet(), "length": self.rng.random_range(0..=12u32)}),
            2 => json!({
                "lease_ttl_ms": self.rng.random_range(1..=120_000u64),
                "keepalive_ttl_ms": self.rng.random_range(1..=600_000u64),
                "key_length": self.rng.random_range(6..=130u64),
            }),
            3 => json!({"lease_id": self.rng.random_range(0..20u64)}),
            _ => json!({}),
        }
    }

    fn body(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..11) {
            0 | 1 => Vec::new(),
            2 => {
                let len = self.rng.random_range(1..2000);
                (0..len).map(|_| self.rng.random()).collect()
            }
            3 | 4 => self.json_value(0).to_string().into_bytes(),
            5 => {
                // Deep nesting, mostly under the 64 KiB limit.
                let (open, close) = if self.chance(0.5) {
                    ("[", "]")
                } else {
                    ("{\"count\":", "}")
                };
                let depth = self.rng.random_range(1..=60_000 / (open.len() + 1));
                let mut s = open.repeat(depth);
                s.push('1');
                s.push_str(&close.repeat(depth));
                s.into_bytes()
            }
            6 => {
                let field = *self.pick(FIELDS);
                let number = match self.rng.random_range(0..5) {
                    0 => "1".repeat(self.rng.random_range(20..=600)),
                    1 => "1e400".to_owned(),
                    2 => "-0".to_owned(),
                    3 => "1.7976931348623157e309".to_owned(),
                    _ => "-99999999999999999999999".to_owned(),
                };
                format!("{{\"{field}\": {number}}}").into_bytes()
            }
            7 => {
                // 70 KiB: over the 64 KiB limit.
                if self.chance(0.5) {
                    json!({"pad": "x".repeat(70 * 1024)})
                        .to_string()
                        .into_bytes()
                } else {
                    vec![b'7'; 70 * 1024]
                }
            }
            8 => {
                let mut bytes = self.useful_body().to_string().into_bytes();
                match self.rng.random_range(0..4) {
                    0 => bytes.truncate(self.rng.random_range(0..=bytes.len())),
                    1 => bytes.splice(0..0, [0xEF, 0xBB, 0xBF]).for_each(drop),
                    2 => bytes.push(0),
                    _ => {
                        let i = self.rng.random_range(0..bytes.len());
                        bytes[i] = 0xFF;
                    }
                }
                bytes
            }
            _ => self.useful_body().to_string().into_bytes(),
        }
    }

    fn request(&mut self) -> FuzzRequest {
        let (target, methods) = self.path();
        let method = if self.chance(0.5) {
            (*self.pick(methods)).to_owned()
        } else {
            (*self.pick(METHODS)).to_owned()
        };
        let content_type = match self.rng.random_range(0..10) {
            0..=5 => Some("application/json".to_owned()),
            6 | 7 => None,
            8 => Some("text/plain".to_owned()),
            _ => Some("application/json; charset=latin1".to_owned()),
        };
        FuzzRequest {
            method,
            target,
            content_type,
            body: self.body(),
        }
    }

    /// Remembers keys and tokens named in an answer (at most 64 of each).
    fn learn(&mut self, body: &Value) {
        let mut keys = Vec::new();
        for field in ["key", "api_key"] {
            if let Some(k) = body[field].as_str() {
                keys.push(k.to_owned());
            }
        }
        if let Some(list) = body["keys"].as_array() {
            keys.extend(
                list.iter()
                    .filter_map(|k| k["key"].as_str())
                    .map(str::to_owned),
            );
        }
        for key in keys.into_iter().take(4) {
            if self.keys.len() < 64 {
                self.keys.push(key);
            }
        }
        for field in ["token", "key:"] {
            if let Some(t) = body[field].as_str()
                && self.tokens.len() < 64
            {
                self.tokens.push(t.to_owned());
            }
        }
    }
}

/// An answer read off the wire.
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `req` on a fresh connection (`Connection: close`) exactly as
/// generated, and reads the whole answer (at most 10 s, 64 MiB). Plain
/// blocking sockets: nothing between the test and the server rewrites the
/// request line.
fn send_raw(addr: SocketAddr, req: &FuzzRequest) -> Result<RawReply> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        req.target,
        req.body.len()
    );
    if let Some(ct) = &req.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&req.body);
    // The server may answer (413) and close before reading it all: a
    // failed write is fine as long as an answer arrives.
    let _ = stream.write_all(&bytes);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no complete answer within 10 s");
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 << 20 {
                    bail!("an answer over 64 MiB");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if buf.is_empty() => return Err(e.into()),
            // A reset after the answer: parse what arrived.
            Err(_) => break,
        }
    }
    parse_reply(&buf, req.method == "HEAD")
}

fn parse_reply(buf: &[u8], head_only: bool) -> Result<RawReply> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| {
            format!(
                "no complete header in {} bytes: {:?}",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            )
        })?;
    let head = std::str::from_utf8(&buf[..end]).context("the header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let mut reply = RawReply {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return Ok(reply);
    }
    if reply
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        reply.body = dechunk(rest)?;
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        if rest.len() < len {
            bail!("a body of {} bytes where {len} were announced", rest.len());
        }
        reply.body = rest[..len].to_vec();
    } else {
        reply.body = rest.to_vec();
    }
    Ok(reply)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a cut chunk header")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            bail!("a cut chunk");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_http_random_requests_never_get_a_5xx_and_the_server_survives() -> Result<()> {
    let seed = env_u64("KEYWARD_FUZZ_SEED").unwrap_or_else(rand::random);
    let requests = env_u64("KEYWARD_FUZZ_REQUESTS").unwrap_or(400);
    // Printed so a failure can be replayed with KEYWARD_FUZZ_SEED.
    println!("http fuzz: seed {seed}, {requests} requests (KEYWARD_FUZZ_SEED={seed} replays)");
    let app = spawn_app().await;

    // Real keys and tokens for the fuzz to name.
    let mut fuzzer = Fuzzer {
        rng: StdRng::seed_from_u64(seed),
        keys: Vec::new(),
        tokens: Vec::new(),
    };
    fuzzer.keys.extend(app.new_keys("default", 4).await?);
    fuzzer.keys.extend(app.new_keys("fz", 4).await?);
    for _ in 0..3 {
        let token = app.issue_token("default").await?.str("token");
        fuzzer.tokens.push(token);
    }
    app.put_keyspace("fzk", "ab", 3).await?.expect(201);

    let budget = budget();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut findings: Vec<String> = Vec::new();
    for _ in 0..requests {
        if started.elapsed() > budget {
            println!("http fuzz: time budget of {budget:?} spent after {sent} requests");
            break;
        }
        // Sometimes let time pass, so leases and keys expire under the fuzz.
        if fuzzer.chance(0.1) {
            let ms = fuzzer.rng.random_range(0..400_000);
            app.advance_ms(ms);
        }
        let req = fuzzer.request();
        sent += 1;
        let addr = app.addr;
        let (req, result) = tokio::task::spawn_blocking(move || {
            let result = send_raw(addr, &req);
            (req, result)
        })
        .await?;
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                findings.push(format!("{}: no valid answer: {e:#}", req.describe()));
                continue;
            }
        };
        let json: Option<Value> = serde_json::from_slice(&reply.body).ok();
        let code = json
            .as_ref()
            .and_then(|j| j["error"]["code"].as_str())
            .unwrap_or("");
        *by_status
            .entry(format!("{} {code}", reply.status).trim_end().to_owned())
            .or_default() += 1;
        let text = String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
        if reply.status >= 500 {
            findings.push(format!("{} -> {} {text}", req.describe(), reply.status));
        }
        if !(200..300).contains(&reply.status) && req.method != "HEAD" {
            let ct = reply.header("content-type").unwrap_or("");
            if !ct.starts_with("application/json") || json.is_none() {
                findings.push(format!(
                    "{} -> {} with Content-Type {ct:?}, body not JSON: {text:?}",
                    req.describe(),
                    reply.status
                ));
            }
        }
        if reply.header("x-request-id").is_none_or(str::is_empty) {
            findings.push(format!(
                "{} -> {} without x-request-id",
                req.describe(),
                reply.status
            ));
        }
        if let Some(json) = json {
            fuzzer.learn(&json);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("http fuzz: {sent} requests in {seconds:.1} s, statuses {by_status:?}");

    // Still alive and still working.
    app.healthz().await?.expect(200);
    app.readyz().await?.expect(200);
    let keys = app.new_keys("after-fuzz", 3).await?;
    let leased = app.lease("after-fuzz").await?;
    assert!(
        keys.contains(&leased.str("key")),
        "the lease returns one of the new keys: {}",
        leased.text
    );
    app.compat_get_token().await?.expect(200);

    if reporting() {
        println!(
            "keyward-fuzz: target=http executed={sent} skipped={} cases={requests} seconds={seconds:.1} result={}",
            requests - sent,
            if findings.is_empty() {
                "nothing found".to_owned()
            } else {
                format!("FOUND: {} findings (seed {seed})", findings.len())
            }
        );
    }
    assert!(
        findings.is_empty(),
        "http fuzz with seed {seed} (replay with KEYWARD_FUZZ_SEED={seed}): {} findings:\n{}",
        findings.len(),
        findings
            .iter()
            .take(20)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
