//! Idempotency records: what a request carrying an `Idempotency-Key` did,
//! kept so that its retry gets the same answer and changes nothing.
//!
//! A record is written by the store in the same atomic step as the change
//! it describes (the same lock hold and journal batch on the local stores,
//! the same script on Redis), so a change that happened always has its
//! record and a record always has its change: a client that saw a timeout
//! or a 503 ("outcome unknown") retries with the same key and gets exactly
//! one effect. Only successes are recorded; a refused request changed
//! nothing, so running it again is safe.
//!
//! Keys are scoped to the pool or keyspace the request names ([`Scope`]):
//! that is where Redis keeps the record, in the same cluster slot as the
//! data it changes. The request itself is compared by a SHA-256 [`Digest`]
//! of its method, path and body, never stored whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{Effect, StoreError};
use crate::core::{Name, Timestamp, Ttl};

/// Longest `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 255;

/// An `Idempotency-Key`: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
/// Cheap to clone: the map of records and its expiry index share it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdemKey(std::sync::Arc<str>);

/// Why a header value is not an [`IdemKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdemKey;

impl IdemKey {
    /// `bytes` as a key, if it is 1 to 255 visible ASCII characters. O(len).
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidIdemKey> {
        let ok = (1..=MAX_KEY_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic);
        if !ok {
            return Err(InvalidIdemKey);
        }
        std::str::from_utf8(bytes)
            .map(|s| Self(s.into()))
            .map_err(|_| InvalidIdemKey)
    }

    /// The key as sent. O(1).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// So a map keyed by [`IdemKey`] is read with a `&str`.
impl std::borrow::Borrow<str> for IdemKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Clients may put anything in a key, so logs show only its length.
impl fmt::Debug for IdemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdemKey(<{} chars>)", self.0.len())
    }
}

/// SHA-256 of a request's method, path (with query) and body: what a
/// retry must match for its key to replay.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of one request. Each part is length-prefixed, so no two
    /// different requests share their input. O(body).
    pub fn of(method: &str, target: &str, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        for part in [method.as_bytes(), target.as_bytes(), body] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Self(h.finalize().into())
    }

    /// The 64 lower-case hex digits (how Redis keeps it). O(1).
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// The 32 bytes (how SQLite keeps it). O(1).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest from its 32 bytes, if they are 32. O(1).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}…)", &self.to_hex()[..12])
    }
}

/// A successful answer as it went out: its status and JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The body, shared by every replay (empty for 204).
    pub body: Bytes,
}

/// Renders a change's effect into the answer a request gets: the HTTP
/// layer's one renderer, handed down so a store can record the answer in
/// the same step as the change.
pub type Render = fn(&Effect) -> Recorded;

/// What an idempotency key is scoped to: the pool or keyspace the request
/// names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A pool and its keys.
    Pool(Name),
    /// A keyspace and its tokens.
    Keyspace(Name),
}

impl Scope {
    /// `p:NAME` or `ks:NAME`: the scope as one column value. O(1).
    pub fn text(&self) -> String {
        match self {
            Self::Pool(n) => format!("p:{n}"),
            Self::Keyspace(n) => format!("ks:{n}"),
        }
    }

    /// The scope from [`Scope::text`]. O(1).
    pub fn from_text(text: &str) -> Option<Self> {
        if let Some(name) = text.strip_prefix("p:") {
            return Name::parse(name).ok().map(Self::Pool);
        }
        let name = text.strip_prefix("ks:")?;
        Name::parse(name).ok().map(Self::Keyspace)
    }
}

/// An idempotent request as the store sees it: its key, the digest a
/// retry must match, how long the record lives, and how to render the
/// answer to record.
#[derive(Clone, Debug)]
pub struct Idem {
    /// The `Idempotency-Key`.
    pub key: IdemKey,
    /// The request's digest.
    pub digest: Digest,
    /// How long the record is kept (`--idempotency-ttl`).
    pub ttl: Ttl,
    /// The answer for an effect.
    pub render: Render,
}

/// A recorded answer, rendered at most once: by the request that made
/// the change, after it let go of the store's lock (rendering is the
/// costly part of a record, and need not hold up other requests), or by
/// whoever needs it first (a replay, the journal writer).
pub(crate) struct Answer {
    recorded: OnceLock<Recorded>,
    /// What to render it from, until it is rendered: boxed, so a kept
    /// record does not carry an effect's room once rendered (~250 bytes
    /// of each record, which the memory store keeps by the million).
    pending: Mutex<Option<Box<(Effect, Render)>>>,
    /// Where the rendered size is counted (the records' byte total).
    bytes: Option<Arc<AtomicU64>>,
}

impl Answer {
    /// An answer already rendered (read back from the database).
    pub(crate) fn ready(recorded: Recorded) -> Arc<Self> {
        Arc::new(Self {
            recorded: OnceLock::from(recorded),
            pending: Mutex::new(None),
            bytes: None,
        })
    }

    /// The answer, rendered now if it was not yet. O(answer).
    pub(crate) fn get(&self) -> &Recorded {
        self.recorded.get_or_init(|| {
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let recorded = match pending.as_deref() {
                Some((effect, render)) => render(effect),
                // `get_or_init` runs this once; only a panic in `render`
                // could leave nothing, and then an empty 500 is honest.
                None => Recorded {
                    status: 500,
                    body: Bytes::new(),
                },
            };
            if let Some(bytes) = &self.bytes {
                bytes.fetch_add(recorded.body.len() as u64, Ordering::Relaxed);
            }
            recorded
        })
    }

    /// The body's size once rendered, else 0. O(1).
    fn size(&self) -> u64 {
        self.recorded.get().map_or(0, |r| r.body.len() as u64)
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("rendered", &self.recorded.get().is_some())
            .finish()
    }
}

/// One stored record.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Its number, in the order records were made: its row id in SQLite,
    /// so rows are appended at the end of the table and found by number.
    pub(crate) id: u64,
    pub(crate) digest: Digest,
    pub(crate) answer: Arc<Answer>,
    pub(crate) expires_at: Timestamp,
}

/// The records of the local stores, with their expiry in an ordered
/// index: lookups, writes and expiry are O(log r) each for r records, and
/// an expired record is never answered even before the reaper pops it.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// By scope, then key: a lookup borrows both, cloning nothing. The
    /// keys of a scope are ordered, not hashed: a hash table that grows
    /// rehashes every record in the one insert that crosses its capacity
    /// (5 % of the memory store's CPU under idempotent load, all of it
    /// under the store's lock), and a B-tree never does.
    map: HashMap<Scope, BTreeMap<IdemKey, Entry>>,
    due: BTreeSet<(Timestamp, Scope, IdemKey)>,
    count: u64,
    /// Bytes of the rendered answers kept (counted as each is rendered).
    bytes: Arc<AtomicU64>,
    /// The number the next record gets.
    next_id: u64,
}

impl Records {
    /// The recorded answer for `idem` in `scope`, if a live record has
    /// that key: `Ok(Some)` when the request matches it, `Err` when the key
    /// was used for another request. O(log r) (plus the rendering of an
    /// answer its own request has not rendered yet).
    pub(crate) fn lookup(
        &self,
        scope: &Scope,
        idem: &Idem,
        now: Timestamp,
    ) -> Result<Option<Recorded>, StoreError> {
        match self.map.get(scope).and_then(|m| m.get(idem.key.as_str())) {
            Some(e) if e.expires_at > now => {
                if e.digest == idem.digest {
                    Ok(Some(e.answer.get().clone()))
                } else {
                    Err(StoreError::IdempotencyKeyReused)
                }
            }
            _ => Ok(None),
        }
    }

    /// A number for a new record: above every number given or loaded.
    /// O(1).
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// An answer to render from `effect` when first needed, counted in
    /// these records' bytes. O(1).
    pub(crate) fn pending(&self, effect: Effect, render: Render) -> Arc<Answer> {
        Arc::new(Answer {
            recorded: OnceLock::new(),
            pending: Mutex::new(Some(Box::new((effect, render)))),
            bytes: Some(Arc::clone(&self.bytes)),
        })
    }

    /// Keeps `entry` under `key`, replacing an expired one (whose number
    /// is returned, to delete its row). O(log r).
    pub(crate) fn insert(&mut self, scope: Scope, key: IdemKey, entry: Entry) -> Option<u64> {
        self.next_id = self.next_id.max(entry.id);
        let at = entry.expires_at;
        self.bytes.fetch_add(entry.answer.size(), Ordering::Relaxed);
        self.count += 1;
        let keys = self.map.entry(scope.clone()).or_default();
        let replaced = keys.insert(key.clone(), entry).map(|old| {
            self.count -= 1;
            let size = old.answer.get().body.len() as u64;
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.due
                .remove(&(old.expires_at, scope.clone(), key.clone()));
            old.id
        });
        self.due.insert((at, scope, key));
        replaced
    }

    /// Forgets a record (its change was undone); returns its number.
    /// O(log r).
    pub(crate) fn remove(&mut self, scope: &Scope, key: &IdemKey) -> Option<u64> {
        let old = self.take(scope, key)?;
        self.due
            .remove(&(old.expires_at, scope.clone(), key.clone()));
        Some(old.id)
    }

    /// Takes a record out of the map (not the due index), dropping its
    /// scope's map once empty. O(log r).
    fn take(&mut self, scope: &Scope, key: &IdemKey) -> Option<Entry> {
        let keys = self.map.get_mut(scope)?;
        let old = keys.remove(key.as_str())?;
        if keys.is_empty() {
            self.map.remove(scope);
        }
        self.count -= 1;
        // Rendered now if it was not yet, so its size is counted in and
        // out exactly once.
        let size = old.answer.get().body.len() as u64;
        self.bytes.fetch_sub(size, Ordering::Relaxed);
        Some(old)
    }

    /// Takes out at most `max` records expired at `now`, oldest first;
    /// returns their numbers. O(m log r) for m records.
    pub(crate) fn pop_expired(&mut self, now: Timestamp, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.due.first() {
                Some((at, _, _)) if *at <= now => {}
                _ => break,
            }
            let Some((_, scope, key)) = self.due.pop_first() else {
                break;
            };
            if let Some(old) = self.take(&scope, &key) {
                out.push(old.id);
            }
        }
        out
    }

    /// How many records are kept. O(1).
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// Bytes of recorded bodies kept. O(1).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(_: &Effect) -> Recorded {
        Recorded {
            status: 204,
            body: Bytes::new(),
        }
    }

    fn idem(key: &str, body: &[u8]) -> Idem {
        Idem {
            key: IdemKey::parse(key.as_bytes()).expect("a valid key"),
            digest: Digest::of("POST", "/v1/pools/p/lease", body),
            ttl: Ttl::from_millis(1000).expect("a valid ttl"),
            render,
        }
    }

    fn entry(idem: &Idem, body: &str, expires_at: u64) -> Entry {
        Entry {
            id: expires_at,
            digest: idem.digest,
            answer: Answer::ready(Recorded {
                status: 200,
                body: Bytes::from(body.to_owned()),
            }),
            expires_at: Timestamp::from_millis(expires_at),
        }
    }

    fn pool() -> Scope {
        Scope::Pool(Name::parse("p").expect("a valid name"))
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(IdemKey::parse(b"a").is_ok());
        assert!(IdemKey::parse(&[b'x'; 255]).is_ok());
        for bad in [
            &b""[..],
            &[b'x'; 256],
            b"a b",
            b"tab\t",
            "é".as_bytes(),
            b"\x7f",
        ] {
            assert_eq!(IdemKey::parse(bad), Err(InvalidIdemKey), "{bad:?}");
        }
    }

    #[test]
    fn a_key_never_shows_in_debug_output() {
        let key = IdemKey::parse(b"secret-ish").expect("a valid key");
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn digests_differ_by_method_path_and_body_and_round_trip_as_hex() {
        let a = Digest::of("POST", "/v1/x", b"{}");
        assert_ne!(a, Digest::of("PUT", "/v1/x", b"{}"));
        assert_ne!(a, Digest::of("POST", "/v1/y", b"{}"));
        assert_ne!(a, Digest::of("POST", "/v1/x", b"{ }"));
        // Length prefixes: moving a byte from the path to the body differs.
        assert_ne!(
            Digest::of("POST", "/v1/x", b"a"),
            Digest::of("POST", "/v1/xa", b"")
        );
        assert_eq!(Digest::from_bytes(a.as_bytes()), Some(a));
        assert_eq!(Digest::from_bytes(&[0; 31]), None);
        let slow: String = a.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a.to_hex(), slow);
    }

    #[test]
    fn scopes_round_trip_as_text() {
        let ks = Scope::Keyspace(Name::parse("codes").expect("a valid name"));
        assert_eq!(Scope::from_text(&ks.text()), Some(ks));
        assert_eq!(Scope::from_text(&pool().text()), Some(pool()));
        assert_eq!(Scope::from_text("x:y"), None);
    }

    #[test]
    fn a_record_replays_for_its_request_and_refuses_another() {
        let mut records = Records::default();
        let first = idem("k", b"{}");
        records.insert(pool(), first.key.clone(), entry(&first, "body", 100));
        let now = Timestamp::from_millis(50);
        let replay = records.lookup(&pool(), &first, now).expect("same request");
        assert_eq!(replay.map(|r| r.body), Some(Bytes::from("body")));
        let other = idem("k", b"{\"wait_ms\":1}");
        assert!(matches!(
            records.lookup(&pool(), &other, now),
            Err(StoreError::IdempotencyKeyReused)
        ));
        let elsewhere = Scope::Pool(Name::parse("q").expect("a valid name"));
        assert!(matches!(records.lookup(&elsewhere, &other, now), Ok(None)));
    }

    #[test]
    fn expired_records_are_never_answered_and_pop_in_deadline_order_in_bounded_steps() {
        let mut records = Records::default();
        for (i, at) in [30, 10, 20, 40].into_iter().enumerate() {
            let r = idem(&format!("k{i}"), b"");
            records.insert(pool(), r.key.clone(), entry(&r, "xy", at));
        }
        assert_eq!((records.len(), records.bytes()), (4, 8));
        let late = Timestamp::from_millis(35);
        assert!(matches!(
            records.lookup(&pool(), &idem("k0", b""), late),
            Ok(None)
        ));
        // The tests number each record by its expiry.
        assert_eq!(records.pop_expired(late, 2), [10, 20]);
        assert_eq!(records.pop_expired(late, 10), [30]);
        assert_eq!((records.len(), records.bytes()), (1, 2));
        assert_eq!(records.remove(&pool(), &idem("k3", b"").key), Some(40));
        assert_eq!((records.len(), records.bytes()), (0, 0));
        assert_eq!(records.next_id(), 41, "numbers go on above every one seen");
    }

    #[test]
    fn a_pending_answer_is_rendered_once_and_counted_when_it_is() {
        use std::sync::atomic::AtomicUsize;
        static RENDERS: AtomicUsize = AtomicUsize::new(0);
        fn counting(_: &Effect) -> Recorded {
            RENDERS.fetch_add(1, Ordering::Relaxed);
            Recorded {
                status: 204,
                body: Bytes::from_static(b"abc"),
            }
        }
        let mut records = Records::default();
        let answer = records.pending(Effect::Deleted, counting);
        let r = idem("k", b"");
        let entry = Entry {
            id: records.next_id(),
            digest: r.digest,
            answer: Arc::clone(&answer),
            expires_at: Timestamp::from_millis(100),
        };
        records.insert(pool(), r.key.clone(), entry);
        assert_eq!(records.bytes(), 0, "not rendered yet");
        let now = Timestamp::from_millis(1);
        let replay = records.lookup(&pool(), &r, now).expect("a match");
        assert_eq!(replay.map(|r| r.status), Some(204));
        assert_eq!(answer.get().body, Bytes::from_static(b"abc"));
        assert_eq!(RENDERS.load(Ordering::Relaxed), 1, "rendered once");
        assert_eq!(records.bytes(), 3);
        assert!(records.remove(&pool(), &r.key).is_some());
        assert_eq!(records.bytes(), 0);
    }
}
