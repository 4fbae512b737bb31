//! What each workload sends and how it reacts to the answers.
//!
//! A [`Script`] is one worker's state machine: [`Script::next`] picks the
//! next request from what came back before (a leased key must be released
//! next), [`Script::on_response`] reads only what it needs from a body (the
//! leased key, an issued token). URIs that do not depend on a response are
//! built once, in [`Fixtures`], and cloned (a reference count) per request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri};
use serde::{Deserialize, Serialize};

use crate::Name;

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `GET /healthz`: the HTTP stack alone, the ceiling of every other workload.
    Healthz,
    /// `POST …/lease`, then `POST …/keys/{key}/release` of that key.
    LeaseRelease,
    /// `POST /v1/keyspaces/{ks}/tokens`.
    Issue,
    /// `GET /v1/keyspaces/{ks}/tokens/{token}` of prepared tokens, round robin.
    Status,
    /// `POST …/tokens/{token}/activate` of fresh tokens (issued first, untimed
    /// while the prepared ones last, then one timed issue per activation).
    Activate,
    /// `POST /v1/pools/{pool}/keys/{key}/keepalive` of prepared keys, round robin.
    Keepalive,
    /// 50 % lease+release, 20 % status, 20 % keepalive, 10 % issue (by operation).
    Mixed,
    /// More waiters than keys: each leases with `wait_ms`, holds the key
    /// for `--hold`, releases it; times the hand-over from a release to
    /// the waiter that gets the key.
    Wait,
}

impl Workload {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthz => "healthz",
            Self::LeaseRelease => "lease-release",
            Self::Issue => "issue",
            Self::Status => "status",
            Self::Activate => "activate",
            Self::Keepalive => "keepalive",
            Self::Mixed => "mixed",
            Self::Wait => "wait",
        }
    }

    /// What one operation of this workload is.
    pub fn operation(self) -> &'static str {
        match self {
            Self::LeaseRelease => "lease+release",
            Self::Mixed => "one of lease+release, status, keepalive, issue",
            Self::Wait => "waiting lease+hold+release",
            other => other.as_str(),
        }
    }

    /// Whether the run needs the pool to exist with free keys (`wait`
    /// prepares a fresh pool of its own instead).
    pub(crate) fn uses_pool(self) -> bool {
        matches!(self, Self::LeaseRelease | Self::Keepalive | Self::Mixed)
    }

    /// Whether the run needs the names of its keys (so it generates fresh
    /// ones rather than topping the pool up).
    pub(crate) fn needs_key_names(self) -> bool {
        matches!(self, Self::Keepalive | Self::Mixed)
    }

    /// Whether the run needs the keyspace to exist.
    pub(crate) fn uses_keyspace(self) -> bool {
        matches!(
            self,
            Self::Issue | Self::Status | Self::Activate | Self::Mixed
        )
    }

    /// Whether the run needs issued tokens to ask the status of.
    pub(crate) fn needs_status_tokens(self) -> bool {
        matches!(self, Self::Status | Self::Mixed)
    }
}

/// One kind of HTTP request the load generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `GET /healthz`
    Healthz,
    /// `POST /v1/pools/{pool}/lease`
    Lease,
    /// `POST /v1/pools/{pool}/keys/{key}/release`
    Release,
    /// `POST /v1/keyspaces/{ks}/tokens`
    Issue,
    /// `GET /v1/keyspaces/{ks}/tokens/{token}`
    Status,
    /// `POST /v1/keyspaces/{ks}/tokens/{token}/activate`
    Activate,
    /// `POST /v1/pools/{pool}/keys/{key}/keepalive`
    Keepalive,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 7] = [
        Kind::Healthz,
        Kind::Lease,
        Kind::Release,
        Kind::Issue,
        Kind::Status,
        Kind::Activate,
        Kind::Keepalive,
    ];

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthz => "healthz",
            Self::Lease => "lease",
            Self::Release => "release",
            Self::Issue => "issue",
            Self::Status => "status",
            Self::Activate => "activate",
            Self::Keepalive => "keepalive",
        }
    }

    /// Its position in [`Kind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The HTTP method.
    pub(crate) fn method(self) -> Method {
        match self {
            Self::Healthz | Self::Status => Method::GET,
            _ => Method::POST,
        }
    }

    /// The status of success; any other is counted as an error.
    pub(crate) fn expected(self) -> StatusCode {
        match self {
            Self::Issue => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }
}

/// The mixed workload's operations, in the order each worker cycles
/// through them (workers start at different offsets): 5 lease+release,
/// 2 status, 2 keepalive, 1 issue in every 10.
const MIX: [MixOp; 10] = [
    MixOp::LeaseRelease,
    MixOp::Status,
    MixOp::LeaseRelease,
    MixOp::Keepalive,
    MixOp::LeaseRelease,
    MixOp::Issue,
    MixOp::LeaseRelease,
    MixOp::Status,
    MixOp::LeaseRelease,
    MixOp::Keepalive,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MixOp {
    LeaseRelease,
    Status,
    Keepalive,
    Issue,
}

/// A 2xx body lacked what the workload needed from it.
#[derive(Debug, thiserror::Error)]
#[error("unexpected response body: {0}")]
pub(crate) struct BadBody(String);

/// Request URIs shared by all workers, built once before the timed part.
///
/// Invariant (kept by preparation): `keepalive` is non-empty when the
/// workload uses keep-alives and `status` is non-empty when it asks
/// token status.
#[derive(Debug)]
pub(crate) struct Fixtures {
    healthz: Uri,
    lease: Uri,
    issue: Uri,
    /// `/v1/pools/{pool}/keys/`
    keys_prefix: String,
    /// `/v1/keyspaces/{ks}/tokens/`
    tokens_prefix: String,
    /// Keep-alive URIs of prepared keys.
    pub(crate) keepalive: Vec<Uri>,
    /// Status URIs of prepared tokens.
    pub(crate) status: Vec<Uri>,
    /// Body of every lease: empty, or `{"wait_ms":N}` for `wait`.
    pub(crate) lease_body: Bytes,
    /// `wait`: how long a worker holds a leased key before releasing it.
    pub(crate) hold: Duration,
    /// `wait`: when each key's release was sent (empty otherwise).
    pub(crate) board: Board,
}

impl Fixtures {
    /// The fixed URIs for `pool` and `keyspace`; no keys or tokens yet.
    pub(crate) fn new(pool: &Name, keyspace: &Name) -> Self {
        // Names are [A-Za-z0-9._-]: nothing to escape, always a valid path.
        let keys_prefix = format!("/v1/pools/{pool}/keys/");
        let tokens_prefix = format!("/v1/keyspaces/{keyspace}/tokens/");
        let uri = |s: String| Uri::try_from(s).expect("a path of checked names is a valid URI");
        Self {
            healthz: Uri::from_static("/healthz"),
            lease: uri(format!("/v1/pools/{pool}/lease")),
            issue: uri(format!("/v1/keyspaces/{keyspace}/tokens")),
            keys_prefix,
            tokens_prefix,
            keepalive: Vec::new(),
            status: Vec::new(),
            lease_body: Bytes::new(),
            hold: Duration::ZERO,
            board: Board::new(Vec::new()),
        }
    }

    /// `GET /healthz`.
    pub(crate) fn healthz(&self) -> Uri {
        self.healthz.clone()
    }

    /// `/v1/pools/{pool}/keys/{key}/{action}`.
    pub(crate) fn key_uri(&self, key: &str, action: &str) -> Result<Uri, BadBody> {
        build(&self.keys_prefix, key, action)
    }

    /// `/v1/keyspaces/{ks}/tokens/{token}` plus `/{action}` unless empty.
    pub(crate) fn token_uri(&self, token: &str, action: &str) -> Result<Uri, BadBody> {
        build(&self.tokens_prefix, token, action)
    }

    /// `/v1/keyspaces/{ks}/tokens`.
    pub(crate) fn issue(&self) -> Uri {
        self.issue.clone()
    }
}

fn build(prefix: &str, segment: &str, action: &str) -> Result<Uri, BadBody> {
    let mut path = String::with_capacity(prefix.len() + segment.len() * 3 + action.len() + 1);
    path.push_str(prefix);
    push_segment(&mut path, segment);
    if !action.is_empty() {
        path.push('/');
        path.push_str(action);
    }
    Uri::try_from(path).map_err(|e| BadBody(format!("{segment:?} makes no valid URI: {e}")))
}

/// Appends `s` percent-encoded as one path segment (RFC 3986 unreserved
/// characters stay as they are). Keys are alphanumeric, but a keyspace
/// made elsewhere may have any alphabet.
pub(crate) fn push_segment(path: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(b));
        } else {
            path.push('%');
            path.push(char::from(HEX[usize::from(b >> 4)]));
            path.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[derive(Deserialize)]
struct KeyField<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
}

#[derive(Deserialize)]
struct TokenField<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
}

/// Per key of a `wait` run, the instant its last release was sent, until
/// the next lease of that key takes it: the start of a hand-over. Shared
/// by all workers; one atomic per key, so marking and taking never lock.
#[derive(Debug)]
pub(crate) struct Board {
    /// Stamps count from here.
    base: Instant,
    /// Key → slot; built before the clock starts, read-only after.
    slots: HashMap<String, usize>,
    /// Per slot: nanoseconds after `base` plus one at which the key's
    /// release was sent; 0: no release waiting to be matched.
    released: Vec<AtomicU64>,
}

impl Board {
    /// A board for `keys` (duplicates share a slot).
    pub(crate) fn new(keys: Vec<String>) -> Self {
        let mut slots = HashMap::with_capacity(keys.len());
        for key in keys {
            let next = slots.len();
            slots.entry(key).or_insert(next);
        }
        Self {
            base: Instant::now(),
            released: (0..slots.len()).map(|_| AtomicU64::new(0)).collect(),
            slots,
        }
    }

    /// The slot of `key`, if it is one of the board's.
    pub(crate) fn slot(&self, key: &str) -> Option<usize> {
        self.slots.get(key).copied()
    }

    /// Notes that the release of `slot`'s key was sent `at`; returns the
    /// stamp, for [`Board::unmark`].
    pub(crate) fn mark(&self, slot: usize, at: Instant) -> u64 {
        let nanos = u64::try_from(at.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX - 1);
        let stamp = nanos + 1;
        self.released[slot].store(stamp, Ordering::Release);
        stamp
    }

    /// Forgets the mark `stamp` of `slot` (its release failed, so no
    /// hand-over starts there), unless a newer one replaced it.
    pub(crate) fn unmark(&self, slot: usize, stamp: u64) {
        let _ = self.released[slot].compare_exchange(stamp, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// When the release that freed `slot`'s key was sent, if one is
    /// pending; clears it, so each release starts one hand-over at most.
    pub(crate) fn take(&self, slot: usize) -> Option<Instant> {
        match self.released[slot].swap(0, Ordering::AcqRel) {
            0 => None,
            stamp => Some(self.base + Duration::from_nanos(stamp - 1)),
        }
    }
}

/// One hand-over: a waiting lease got a key whose release was sent before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandOver {
    /// From sending the release to receiving the lease's answer.
    pub(crate) latency: Duration,
    /// The lease was sent after the release, so the key may have been
    /// free (not waited for) when the lease arrived.
    pub(crate) lease_after_release: bool,
}

#[derive(Deserialize)]
struct LeasedKey<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default)]
    lease_id: Option<u64>,
}

/// The `key` and `lease_id` of a leased key object.
pub(crate) fn parse_lease(body: &[u8]) -> Result<(Cow<'_, str>, Option<u64>), BadBody> {
    serde_json::from_slice::<LeasedKey<'_>>(body)
        .map(|f| (f.key, f.lease_id))
        .map_err(|e| BadBody(format!("no \"key\": {e}")))
}

/// The `key` of a key object.
pub(crate) fn parse_key(body: &[u8]) -> Result<Cow<'_, str>, BadBody> {
    serde_json::from_slice::<KeyField<'_>>(body)
        .map(|f| f.key)
        .map_err(|e| BadBody(format!("no \"key\": {e}")))
}

/// The `token` of an issued-token object.
pub(crate) fn parse_token(body: &[u8]) -> Result<Cow<'_, str>, BadBody> {
    serde_json::from_slice::<TokenField<'_>>(body)
        .map(|f| f.token)
        .map_err(|e| BadBody(format!("no \"token\": {e}")))
}

/// One worker's state machine.
pub(crate) struct Script {
    workload: Workload,
    fx: Arc<Fixtures>,
    /// Round-robin position in the prepared keys or tokens.
    cursor: usize,
    /// Position in [`MIX`].
    step: usize,
    /// The release URI of the key this worker leased and must release next.
    held: Option<Uri>,
    /// The body of that release: `{"lease_id":N}` for `wait`, else empty.
    held_body: Bytes,
    /// `wait`: the held key's slot on the board.
    held_slot: Option<usize>,
    /// `wait`: the slot and stamp of the release in flight.
    releasing: Option<(usize, u64)>,
    /// `wait`: when the lease in flight was sent.
    lease_sent: Option<Instant>,
    /// `wait`: the slot of the key the last lease answer carried, until
    /// [`Script::take_hand_over`].
    got: Option<usize>,
    /// `wait`: hold the key this long before the next request.
    pause: Option<Duration>,
    /// Activate URIs of tokens nobody activated yet (this worker's share).
    fresh: Vec<Uri>,
}

impl Script {
    /// Worker `index` of `workers`: its round robin and its place in the
    /// mix start at its own offset, so workers do not move in lockstep.
    /// `fresh` are the activate URIs this worker may use.
    pub(crate) fn new(
        workload: Workload,
        fx: Arc<Fixtures>,
        index: usize,
        workers: usize,
        fresh: Vec<Uri>,
    ) -> Self {
        let spread = fx.status.len().max(fx.keepalive.len());
        Self {
            workload,
            cursor: spread * index / workers.max(1),
            step: index,
            fx,
            held: None,
            held_body: Bytes::new(),
            held_slot: None,
            releasing: None,
            lease_sent: None,
            got: None,
            pause: None,
            fresh,
        }
    }

    /// The next request to send and its body.
    pub(crate) fn next(&mut self) -> (Kind, Uri, Bytes) {
        if let Some(release) = &self.held {
            return (Kind::Release, release.clone(), self.held_body.clone());
        }
        let (kind, uri) = self.next_without_body();
        let body = if kind == Kind::Lease {
            self.fx.lease_body.clone()
        } else {
            Bytes::new()
        };
        (kind, uri, body)
    }

    fn next_without_body(&mut self) -> (Kind, Uri) {
        let fx = &self.fx;
        match self.workload {
            Workload::Healthz => (Kind::Healthz, fx.healthz()),
            Workload::LeaseRelease | Workload::Wait => (Kind::Lease, fx.lease.clone()),
            Workload::Issue => (Kind::Issue, fx.issue()),
            Workload::Status => (Kind::Status, self.round_robin(Kind::Status)),
            Workload::Keepalive => (Kind::Keepalive, self.round_robin(Kind::Keepalive)),
            Workload::Activate => match self.fresh.pop() {
                Some(uri) => (Kind::Activate, uri),
                None => (Kind::Issue, fx.issue()),
            },
            Workload::Mixed => match MIX[self.step % MIX.len()] {
                MixOp::LeaseRelease => (Kind::Lease, fx.lease.clone()),
                MixOp::Status => (Kind::Status, self.round_robin(Kind::Status)),
                MixOp::Keepalive => (Kind::Keepalive, self.round_robin(Kind::Keepalive)),
                MixOp::Issue => (Kind::Issue, fx.issue()),
            },
        }
    }

    fn round_robin(&mut self, kind: Kind) -> Uri {
        let list = match kind {
            Kind::Status => &self.fx.status,
            _ => &self.fx.keepalive,
        };
        let uri = list[self.cursor % list.len()].clone();
        self.cursor = self.cursor.wrapping_add(1);
        uri
    }

    /// How long to wait before the next request (`wait`: the hold after a
    /// lease); asked once per lease.
    pub(crate) fn take_pause(&mut self) -> Option<Duration> {
        self.pause.take()
    }

    /// A request of `kind` is being sent `at`. For `wait`, a release marks
    /// its key on the board: the hand-over starts now.
    pub(crate) fn on_send(&mut self, kind: Kind, at: Instant) {
        if self.workload != Workload::Wait {
            return;
        }
        match kind {
            Kind::Lease => self.lease_sent = Some(at),
            Kind::Release => {
                self.releasing = self
                    .held_slot
                    .take()
                    .map(|slot| (slot, self.fx.board.mark(slot, at)));
            }
            _ => {}
        }
    }

    /// `wait`: the hand-over the last lease answer (received `replied`)
    /// completed, if its key's release was marked.
    pub(crate) fn take_hand_over(&mut self, replied: Instant) -> Option<HandOver> {
        let slot = self.got.take()?;
        let released = self.fx.board.take(slot)?;
        Some(HandOver {
            latency: replied.saturating_duration_since(released),
            lease_after_release: self.lease_sent.is_some_and(|sent| sent > released),
        })
    }

    /// Takes in the answer to a request of `kind` (`ok`: it had the
    /// expected status). Returns whether an operation just completed.
    pub(crate) fn on_response(
        &mut self,
        kind: Kind,
        ok: bool,
        body: &[u8],
    ) -> Result<bool, BadBody> {
        match kind {
            Kind::Lease => {
                if !ok {
                    // No key held: this operation is over (the mix moves on).
                    self.step += 1;
                    return Ok(false);
                }
                if self.workload == Workload::Wait {
                    return self.on_wait_lease(body);
                }
                match parse_key(body).and_then(|key| self.fx.key_uri(&key, "release")) {
                    Ok(release) => {
                        self.held = Some(release);
                        Ok(false)
                    }
                    Err(e) => {
                        self.step += 1;
                        Err(e)
                    }
                }
            }
            Kind::Release => {
                self.held = None;
                if let Some((slot, stamp)) = self.releasing.take()
                    && !ok
                {
                    // Refused: the key was not freed by this release.
                    self.fx.board.unmark(slot, stamp);
                }
                self.step += 1;
                Ok(ok)
            }
            Kind::Issue if self.workload == Workload::Activate => {
                if ok {
                    let token = parse_token(body)?;
                    self.fresh.push(self.fx.token_uri(&token, "activate")?);
                }
                Ok(false)
            }
            _ => {
                self.step += 1;
                Ok(ok)
            }
        }
    }

    /// A successful `wait` lease: hold the key, then release it under its
    /// lease id.
    fn on_wait_lease(&mut self, body: &[u8]) -> Result<bool, BadBody> {
        let (key, lease_id) = parse_lease(body)?;
        let release = self.fx.key_uri(&key, "release")?;
        let slot = self.fx.board.slot(&key);
        self.got = slot;
        self.held_slot = slot;
        self.held = Some(release);
        self.held_body = match lease_id {
            Some(id) => Bytes::from(format!(r#"{{"lease_id":{id}}}"#)),
            None => Bytes::new(),
        };
        self.pause = Some(self.fx.hold).filter(|d| !d.is_zero());
        Ok(false)
    }

    /// A request of `kind` got no answer: whatever it was part of is over.
    pub(crate) fn on_transport_error(&mut self, kind: Kind) {
        if kind == Kind::Release {
            self.held = None;
            // Whether the server freed the key is unknown: no hand-over
            // is timed from this release.
            if let Some((slot, stamp)) = self.releasing.take() {
                self.fx.board.unmark(slot, stamp);
            }
        }
        self.step += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> Arc<Fixtures> {
        let name = Name::parse("bench").expect("valid name");
        let mut fx = Fixtures::new(&name, &name);
        fx.keepalive = vec![fx.key_uri("k1", "keepalive").expect("valid")];
        fx.status = vec![fx.token_uri("t1", "").expect("valid")];
        Arc::new(fx)
    }

    #[test]
    fn lease_is_followed_by_the_release_of_the_leased_key() {
        let mut s = Script::new(Workload::LeaseRelease, fixtures(), 0, 1, Vec::new());
        let (kind, uri, _) = s.next();
        assert_eq!((kind, uri.path()), (Kind::Lease, "/v1/pools/bench/lease"));
        let done = s
            .on_response(Kind::Lease, true, br#"{"key":"AbC123","state":"leased"}"#)
            .expect("a key object");
        assert!(!done);
        let (kind, uri, _) = s.next();
        assert_eq!(
            (kind, uri.path()),
            (Kind::Release, "/v1/pools/bench/keys/AbC123/release")
        );
        assert!(
            s.on_response(Kind::Release, true, b"{}")
                .expect("no body needed")
        );
        assert_eq!(s.next().0, Kind::Lease);
    }

    #[test]
    fn a_failed_lease_is_retried_and_completes_nothing() {
        let mut s = Script::new(Workload::LeaseRelease, fixtures(), 0, 1, Vec::new());
        s.next();
        assert!(
            !s.on_response(Kind::Lease, false, b"{}")
                .expect("not parsed")
        );
        assert_eq!(s.next().0, Kind::Lease);
    }

    #[test]
    fn activate_issues_a_token_once_the_prepared_ones_run_out() {
        let fx = fixtures();
        let prepared = vec![fx.token_uri("zz", "activate").expect("valid")];
        let mut s = Script::new(Workload::Activate, fx, 0, 1, prepared);
        let (kind, uri, _) = s.next();
        assert_eq!(
            (kind, uri.path()),
            (Kind::Activate, "/v1/keyspaces/bench/tokens/zz/activate")
        );
        assert!(s.on_response(Kind::Activate, true, b"{}").expect("ok"));
        assert_eq!(s.next().0, Kind::Issue);
        assert!(
            !s.on_response(Kind::Issue, true, br#"{"token":"qQ","remaining":9}"#)
                .expect("a token")
        );
        let (kind, uri, _) = s.next();
        assert_eq!(
            (kind, uri.path()),
            (Kind::Activate, "/v1/keyspaces/bench/tokens/qQ/activate")
        );
    }

    #[test]
    fn mixed_runs_five_lease_releases_two_status_two_keepalives_and_one_issue_per_ten() {
        let mut s = Script::new(Workload::Mixed, fixtures(), 3, 4, Vec::new());
        let mut ops = std::collections::HashMap::new();
        // Ten operations take 5 × 2 + 5 × 1 = 15 requests; any ten
        // consecutive slots of the mix hold the same operations.
        for _ in 0..150 {
            let (kind, _, _) = s.next();
            let body: &[u8] = if kind == Kind::Lease {
                br#"{"key":"k"}"#
            } else {
                b"{}"
            };
            if s.on_response(kind, true, body).expect("well-formed") {
                *ops.entry(kind.as_str()).or_insert(0) += 1;
            }
        }
        assert_eq!(ops["release"], 50);
        assert_eq!(ops["status"], 20);
        assert_eq!(ops["keepalive"], 20);
        assert_eq!(ops["issue"], 10);
    }

    #[test]
    fn a_lease_answer_without_a_key_is_a_bad_body() {
        let mut s = Script::new(Workload::LeaseRelease, fixtures(), 0, 1, Vec::new());
        s.next();
        assert!(s.on_response(Kind::Lease, true, b"{}").is_err());
        assert_eq!(s.next().0, Kind::Lease);
    }

    /// Fixtures of a `wait` run on keys `k1`, `k2`, holding for 1 ms.
    fn wait_fixtures() -> Arc<Fixtures> {
        let name = Name::parse("bench").expect("valid name");
        let mut fx = Fixtures::new(&name, &name);
        fx.board = Board::new(vec!["k1".into(), "k2".into()]);
        fx.lease_body = Bytes::from_static(br#"{"wait_ms":5000}"#);
        fx.hold = Duration::from_millis(1);
        Arc::new(fx)
    }

    /// `s` sends a lease at `sent` and gets `key` under lease id 7.
    fn lease(s: &mut Script, key: &str, sent: Instant) {
        let (kind, _, _) = s.next();
        assert_eq!(kind, Kind::Lease);
        s.on_send(Kind::Lease, sent);
        let body = format!(r#"{{"key":"{key}","lease_id":7,"state":"leased"}}"#);
        assert!(
            !s.on_response(Kind::Lease, true, body.as_bytes())
                .expect("a key object")
        );
    }

    #[test]
    fn lease_release_sends_no_bodies() {
        let mut s = Script::new(Workload::LeaseRelease, fixtures(), 0, 1, Vec::new());
        assert!(s.next().2.is_empty());
        s.on_response(Kind::Lease, true, br#"{"key":"k","lease_id":3}"#)
            .expect("a key object");
        let (kind, _, body) = s.next();
        assert_eq!((kind, body.is_empty()), (Kind::Release, true));
        assert_eq!(s.take_pause(), None);
    }

    #[test]
    fn wait_leases_with_wait_ms_holds_then_releases_under_the_lease_id() {
        let mut s = Script::new(Workload::Wait, wait_fixtures(), 0, 1, Vec::new());
        let (kind, uri, body) = s.next();
        assert_eq!((kind, uri.path()), (Kind::Lease, "/v1/pools/bench/lease"));
        assert_eq!(&body[..], br#"{"wait_ms":5000}"#);
        lease(&mut s, "k2", Instant::now());
        assert_eq!(s.take_hand_over(Instant::now()), None, "no release yet");
        assert_eq!(s.take_pause(), Some(Duration::from_millis(1)));
        assert_eq!(s.take_pause(), None, "one hold per lease");
        let (kind, uri, body) = s.next();
        assert_eq!(
            (kind, uri.path()),
            (Kind::Release, "/v1/pools/bench/keys/k2/release")
        );
        assert_eq!(&body[..], br#"{"lease_id":7}"#);
        s.on_send(Kind::Release, Instant::now());
        assert!(s.on_response(Kind::Release, true, b"{}").expect("ok"));
        assert_eq!(s.next().0, Kind::Lease);
    }

    #[test]
    fn a_hand_over_runs_from_sending_the_release_to_the_next_lease_answer_of_that_key() {
        let fx = wait_fixtures();
        let (mut a, mut b) = (
            Script::new(Workload::Wait, fx.clone(), 0, 2, Vec::new()),
            Script::new(Workload::Wait, fx.clone(), 1, 2, Vec::new()),
        );
        let t0 = Instant::now();
        lease(&mut a, "k1", t0);
        a.next();
        // b is waiting when a's release leaves.
        b.on_send(Kind::Lease, t0 + Duration::from_millis(1));
        a.on_send(Kind::Release, t0 + Duration::from_millis(2));
        assert!(
            !b.on_response(Kind::Lease, true, br#"{"key":"k1","lease_id":8}"#)
                .expect("a key object")
        );
        assert_eq!(
            b.take_hand_over(t0 + Duration::from_millis(5)),
            Some(HandOver {
                latency: Duration::from_millis(3),
                lease_after_release: false,
            })
        );
        assert_eq!(b.take_hand_over(t0 + Duration::from_millis(6)), None);
        // The release started one hand-over: a later lease of k1 without
        // another release times nothing.
        let mut c = Script::new(Workload::Wait, fx, 0, 1, Vec::new());
        lease(&mut c, "k1", t0 + Duration::from_millis(7));
        assert_eq!(c.take_hand_over(t0 + Duration::from_millis(8)), None);
    }

    #[test]
    fn a_lease_sent_after_the_release_is_flagged() {
        let fx = wait_fixtures();
        let mut a = Script::new(Workload::Wait, fx.clone(), 0, 2, Vec::new());
        let mut b = Script::new(Workload::Wait, fx, 1, 2, Vec::new());
        let t0 = Instant::now();
        lease(&mut a, "k1", t0);
        a.next();
        a.on_send(Kind::Release, t0 + Duration::from_millis(1));
        lease(&mut b, "k1", t0 + Duration::from_millis(2));
        assert_eq!(
            b.take_hand_over(t0 + Duration::from_millis(4)),
            Some(HandOver {
                latency: Duration::from_millis(3),
                lease_after_release: true,
            })
        );
    }

    #[test]
    fn a_refused_or_lost_release_starts_no_hand_over() {
        let fx = wait_fixtures();
        let t0 = Instant::now();
        let mut a = Script::new(Workload::Wait, fx.clone(), 0, 1, Vec::new());
        lease(&mut a, "k1", t0);
        a.next();
        a.on_send(Kind::Release, t0);
        assert!(!a.on_response(Kind::Release, false, b"{}").expect("ok"));
        lease(&mut a, "k2", t0);
        a.next();
        a.on_send(Kind::Release, t0);
        a.on_transport_error(Kind::Release);
        for key in ["k1", "k2"] {
            let slot = fx.board.slot(key).expect("on the board");
            assert_eq!(fx.board.take(slot), None, "{key} still marked");
        }
    }

    #[test]
    fn the_board_ignores_unknown_keys_and_keeps_a_newer_mark_on_unmark() {
        let board = Board::new(vec!["k1".into(), "k1".into(), "k2".into()]);
        assert_eq!(board.slot("k1"), Some(0));
        assert_eq!(board.slot("k2"), Some(1));
        assert_eq!(board.slot("k3"), None);
        let t = Instant::now() + Duration::from_millis(10);
        let old = board.mark(0, t);
        let newer = t + Duration::from_millis(1);
        board.mark(0, newer);
        board.unmark(0, old);
        assert_eq!(board.take(0), Some(newer));
        assert_eq!(board.take(0), None);
        let stamp = board.mark(1, t);
        board.unmark(1, stamp);
        assert_eq!(board.take(1), None);
    }

    #[test]
    fn a_lease_answer_carries_its_lease_id_when_there_is_one() {
        let (key, id) = parse_lease(br#"{"key":"Ab1","lease_id":42}"#).expect("a key");
        assert_eq!((&*key, id), ("Ab1", Some(42)));
        let (key, id) = parse_lease(br#"{"key":"Ab1","lease_id":null}"#).expect("a key");
        assert_eq!((&*key, id), ("Ab1", None));
        assert!(parse_lease(br#"{"lease_id":1}"#).is_err());
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let mut p = String::new();
        push_segment(&mut p, "aZ9-._~ é/%");
        assert_eq!(p, "aZ9-._~%20%C3%A9%2F%25");
    }
}
