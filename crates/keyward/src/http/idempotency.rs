//! `Idempotency-Key` at the edge: the header checked, the request
//! digested, a duplicate still running refused, and every change answered
//! through one renderer, so a replay is byte for byte the first answer.
//!
//! The store does the rest ([`crate::store::Store::apply`]): it records
//! the rendered answer in the same atomic step as the change, replays it,
//! and refuses a key reused for another request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::metrics::Metrics;
use super::{ApiError, AppState};
use crate::core::Ttl;
use crate::store::{Applied, Change, Digest, Idem, IdemKey, Recorded};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The answer header on a replay: `Idempotent-Replayed: true`.
pub const REPLAYED: &str = "idempotent-replayed";

/// The idempotency settings of a server, and the keys of the requests
/// running in this process (to answer a duplicate 409 while its first
/// runs).
#[derive(Debug)]
pub struct Idempotency {
    ttl: Ttl,
    running: Mutex<HashMap<(String, IdemKey), Digest>>,
}

impl Idempotency {
    /// Records kept for `ttl` (`--idempotency-ttl`).
    pub fn new(ttl: Ttl) -> Self {
        Self {
            ttl,
            running: Mutex::default(),
        }
    }

    /// Marks `key` running in `scope` until the guard drops; a duplicate
    /// of a running request is 409 `idempotency_in_flight`, another
    /// request with its key 422 `idempotency_key_reused`. O(1).
    fn start(
        self: &Arc<Self>,
        scope: String,
        key: IdemKey,
        digest: Digest,
    ) -> Result<Running, ApiError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = (scope, key);
        if let Some(first) = running.get(&slot) {
            return Err(if *first == digest {
                ApiError::IdempotencyInFlight
            } else {
                ApiError::IdempotencyKeyReused
            });
        }
        running.insert(slot.clone(), digest);
        Ok(Running {
            gate: Arc::clone(self),
            slot,
        })
    }
}

/// A request marked running; unmarked when dropped (answered, or its
/// client went away).
struct Running {
    gate: Arc<Idempotency>,
    slot: (String, IdemKey),
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self
            .gate
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        running.remove(&self.slot);
    }
}

/// The scope part of a `/v1` path, `pools/NAME` or `keyspaces/NAME`: what
/// a key is scoped to. O(path).
fn scope_of(path: &str) -> String {
    let rest = path.trim_start_matches("/v1/");
    let end = rest
        .match_indices('/')
        .nth(1)
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].to_owned()
}

/// Runs a request whose body `bytes` was read whole (by the body-limit
/// middleware, so no layer of its own): for `POST`, `PUT` and `DELETE`
/// under `/v1` with an `Idempotency-Key`, checks the key (400
/// `invalid_idempotency_key`), digests method, path, query and body,
/// refuses a duplicate of a request still running here, and hands the
/// handler an [`Idem`]; counts the bytes of answers recorded. O(body).
pub(crate) async fn run(
    gate: &Arc<Idempotency>,
    parts: Parts,
    bytes: Bytes,
    next: Next,
) -> Response {
    let mutating = matches!(parts.method, Method::POST | Method::PUT | Method::DELETE);
    let value = parts.headers.get(HEADER);
    let (Some(value), true) = (value, mutating && parts.uri.path().starts_with("/v1/")) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let Ok(key) = IdemKey::parse(value.as_bytes()) else {
        return ApiError::InvalidIdempotencyKey.into_response();
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let digest = Digest::of(parts.method.as_str(), target, &bytes);
    let _running = match gate.start(scope_of(parts.uri.path()), key.clone(), digest) {
        Ok(running) => running,
        Err(e) => return e.into_response(),
    };
    let metrics = parts.extensions.get::<Arc<Metrics>>().cloned();
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Idem {
        key,
        digest,
        ttl: gate.ttl,
        render: super::v1::render,
    });
    let response = next.run(req).await;
    if let (Some(metrics), Some(RecordedBytes(n))) = (metrics, response.extensions().get()) {
        metrics.idempotency_recorded(*n);
    }
    response
}

/// On an answer just recorded: the size of its body.
#[derive(Clone, Copy, Debug)]
struct RecordedBytes(u64);

/// The [`Idem`] of a request that carried an `Idempotency-Key`.
pub(crate) struct Idempotent(pub Option<Idem>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.remove::<Idem>()))
    }
}

/// Runs `change` (at most once per idempotency key) and answers it:
/// rendered by [`super::v1::render`] whether fresh, recorded or replayed.
pub(crate) async fn apply(
    state: &AppState,
    Idempotent(idem): Idempotent,
    change: Change,
) -> Result<Response, ApiError> {
    Ok(match state.store.apply(change, idem.as_ref()).await? {
        Applied::Done(effect) => match &idem {
            // A backend that records the effect and lets us render it.
            Some(_) => respond(super::v1::render(&effect), Some(false)),
            None => respond(super::v1::render(&effect), None),
        },
        Applied::Recorded { recorded, replayed } => respond(recorded, Some(replayed)),
    })
}

/// The answer for `recorded`; `replayed` says whether it was recorded (and
/// whether by an earlier request).
fn respond(recorded: Recorded, replayed: Option<bool>) -> Response {
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::OK);
    let size = recorded.body.len() as u64;
    let mut response = if recorded.body.is_empty() {
        status.into_response()
    } else {
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            recorded.body,
        )
            .into_response()
    };
    match replayed {
        Some(true) => {
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        Some(false) => {
            response.extensions_mut().insert(RecordedBytes(size));
        }
        None => {}
    }
    response
}

/// A bulk issue's JSON answer as CSV: a `token` header line, then one
/// token per line. Made from the JSON answer, fresh or replayed, so a
/// replay asked for as CSV is the same CSV. O(answer).
pub(crate) async fn as_csv(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::Unavailable("the answer could not be read back".into()).into_response();
    };
    let tokens: Vec<String> = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| serde_json::from_value(v["tokens"].clone()).ok())
        .unwrap_or_default();
    let mut csv = String::with_capacity(bytes.len());
    csv.push_str("token\n");
    for token in tokens {
        // RFC 4180: a field holding a comma or a quote is quoted (an
        // alphabet may hold either; never whitespace).
        if token.contains([',', '"']) {
            csv.push('"');
            csv.push_str(&token.replace('"', "\"\""));
            csv.push('"');
        } else {
            csv.push_str(&token);
        }
        csv.push('\n');
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(csv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_scoped_to_the_pool_or_keyspace_of_its_path() {
        assert_eq!(scope_of("/v1/pools/web/lease"), "pools/web");
        assert_eq!(scope_of("/v1/pools/web"), "pools/web");
        assert_eq!(
            scope_of("/v1/keyspaces/codes/tokens/ABCD/activate"),
            "keyspaces/codes"
        );
    }

    #[test]
    fn a_running_request_refuses_its_duplicate_until_it_answers() {
        let gate = Arc::new(Idempotency::new(Ttl::from_millis(1000).expect("a ttl")));
        let key = IdemKey::parse(b"k").expect("a key");
        let digest = Digest::of("POST", "/v1/pools/p/lease", b"");
        let running = gate
            .start("pools/p".into(), key.clone(), digest)
            .expect("first");
        assert!(matches!(
            gate.start("pools/p".into(), key.clone(), digest),
            Err(ApiError::IdempotencyInFlight)
        ));
        let other = Digest::of("POST", "/v1/pools/p/lease", b"{}");
        assert!(matches!(
            gate.start("pools/p".into(), key.clone(), other),
            Err(ApiError::IdempotencyKeyReused)
        ));
        assert!(gate.start("pools/q".into(), key.clone(), digest).is_ok());
        drop(running);
        assert!(gate.start("pools/p".into(), key, digest).is_ok());
    }
}
