//! What each workload sends and how it reacts to the answers.
//!
//! A [`Script`] is one worker's state machine: [`Script::next`] picks the
//! next request from what came back before (a leased key must be released
//! next), [`Script::on_response`] reads only what it needs from a body (the
//! leased key, an issued token). URIs that do not depend on a response are
//! built once, in [`Fixtures`], and cloned (a reference count) per request.

use std::borrow::Cow;
use std::sync::Arc;

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
        }
    }

    /// What one operation of this workload is.
    pub fn operation(self) -> &'static str {
        match self {
            Self::LeaseRelease => "lease+release",
            Self::Mixed => "one of lease+release, status, keepalive, issue",
            other => other.as_str(),
        }
    }

    /// Whether the run needs the pool to exist with free keys.
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
            fresh,
        }
    }

    /// The next request to send.
    pub(crate) fn next(&mut self) -> (Kind, Uri) {
        if let Some(release) = &self.held {
            return (Kind::Release, release.clone());
        }
        let fx = &self.fx;
        match self.workload {
            Workload::Healthz => (Kind::Healthz, fx.healthz()),
            Workload::LeaseRelease => (Kind::Lease, fx.lease.clone()),
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

    /// A request of `kind` got no answer: whatever it was part of is over.
    pub(crate) fn on_transport_error(&mut self, kind: Kind) {
        if kind == Kind::Release {
            self.held = None;
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
        let (kind, uri) = s.next();
        assert_eq!((kind, uri.path()), (Kind::Lease, "/v1/pools/bench/lease"));
        let done = s
            .on_response(Kind::Lease, true, br#"{"key":"AbC123","state":"leased"}"#)
            .expect("a key object");
        assert!(!done);
        let (kind, uri) = s.next();
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
        let (kind, uri) = s.next();
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
        let (kind, uri) = s.next();
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
            let (kind, _) = s.next();
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

    #[test]
    fn path_segments_are_percent_encoded() {
        let mut p = String::new();
        push_segment(&mut p, "aZ9-._~ é/%");
        assert_eq!(p, "aZ9-._~%20%C3%A9%2F%25");
    }
}
