//! The client's one error type: a variant per server error code a caller
//! is expected to act on, [`Error::Other`] for every other code, and the
//! failures that never reached an answer ([`Error::Transport`]).
//!
//! Nothing here holds a key, a token or a URL: a key travels in the path,
//! so transport errors are stored without their URL.

use std::time::Duration;

use serde::Deserialize;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 404 `no_free_key`: no key was free (after the wait, if any).
    /// `retry_after` is how soon one frees by itself, when one will.
    #[error("no free key{}", .retry_after.map(|d| format!(" (one frees in {d:?})")).unwrap_or_default())]
    NoFreeKey {
        /// The server's `retry_after_ms`.
        retry_after: Option<Duration>,
    },
    /// 409 `lease_mismatch`: the key is leased under another `lease_id`
    /// (or not at all): this lease is over.
    #[error("the lease id is not the key's current lease")]
    LeaseMismatch,
    /// 409 `not_leased`: released already, or the lease expired.
    #[error("the key is not leased")]
    NotLeased,
    /// 404 `key_not_found`: no such key (deleted, expired, or no pool).
    #[error("no such key")]
    KeyNotFound,
    /// 404 `pool_not_found`.
    #[error("no such pool")]
    PoolNotFound,
    /// 404 `keyspace_not_found`.
    #[error("no such keyspace")]
    KeyspaceNotFound,
    /// 409 `keyspace_exhausted`: every token was issued (nothing issued).
    #[error("the keyspace is exhausted")]
    KeyspaceExhausted,
    /// 404 `token_not_issued`.
    #[error("the token was not issued")]
    TokenNotIssued,
    /// 400 `invalid_token`: wrong length, a character outside the
    /// alphabet, or a check character that does not match.
    #[error("invalid token: {message}")]
    InvalidToken {
        /// The server's explanation.
        message: String,
    },
    /// 409 `already_activated`: no activation slot left.
    #[error("the token is already activated")]
    AlreadyActivated,
    /// 409 `token_revoked`.
    #[error("the token is revoked")]
    TokenRevoked,
    /// 404 `batch_not_found`.
    #[error("no such batch")]
    BatchNotFound,
    /// 404 `activation_not_found`: no activation with that fingerprint.
    #[error("no such activation")]
    ActivationNotFound,
    /// 401 `unauthorized`: a missing or wrong bearer token.
    #[error("unauthorized: a missing or wrong token")]
    Unauthorized,
    /// 422 `idempotency_key_reused`: the same idempotency key went with
    /// another request. Never expected from this client, which makes a
    /// fresh key per call.
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    /// Any other error answer, as the server gave it (after the retries,
    /// for a 503).
    #[error("HTTP {status} {code}: {message}")]
    Other {
        /// The `error.code`, e.g. `invalid_settings`.
        code: String,
        /// The server's explanation.
        message: String,
        /// The HTTP status.
        status: u16,
    },
    /// No answer: connection refused or reset, timeout (after the
    /// retries). The URL is left out, since a key may be in it.
    #[error("transport: {0}")]
    Transport(#[source] reqwest::Error),
    /// An answer that is not the HTTP contract's (wrong JSON, or not the
    /// error shape).
    #[error("unexpected answer (HTTP {status}): {detail}")]
    Protocol {
        /// The HTTP status.
        status: u16,
        /// What did not fit (never the body itself).
        detail: String,
    },
    /// A value this client cannot send or a setting it cannot use: a bad
    /// base URL, a token that is not a header value, a key `.` or `..`
    /// (URL rules drop such path segments).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    #[serde(default)]
    message: String,
    retry_after_ms: Option<u64>,
}

impl Error {
    /// The error an answer with a non-2xx `status` and `body` stands for.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Self {
        let Ok(ErrorEnvelope { error }) = serde_json::from_slice::<ErrorEnvelope>(body) else {
            return Error::Protocol {
                status,
                detail: "the body is not {\"error\": {\"code\", \"message\"}}".to_owned(),
            };
        };
        let ErrorObject {
            code,
            message,
            retry_after_ms,
        } = error;
        match code.as_str() {
            "no_free_key" => Error::NoFreeKey {
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            "lease_mismatch" => Error::LeaseMismatch,
            "not_leased" => Error::NotLeased,
            "key_not_found" => Error::KeyNotFound,
            "pool_not_found" => Error::PoolNotFound,
            "keyspace_not_found" => Error::KeyspaceNotFound,
            "keyspace_exhausted" => Error::KeyspaceExhausted,
            "token_not_issued" => Error::TokenNotIssued,
            "invalid_token" => Error::InvalidToken { message },
            "already_activated" => Error::AlreadyActivated,
            "token_revoked" => Error::TokenRevoked,
            "batch_not_found" => Error::BatchNotFound,
            "activation_not_found" => Error::ActivationNotFound,
            "unauthorized" => Error::Unauthorized,
            "idempotency_key_reused" => Error::IdempotencyKeyReused,
            _ => Error::Other {
                code,
                message,
                status,
            },
        }
    }

    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            Error::NoFreeKey { .. } => "no_free_key",
            Error::LeaseMismatch => "lease_mismatch",
            Error::NotLeased => "not_leased",
            Error::KeyNotFound => "key_not_found",
            Error::PoolNotFound => "pool_not_found",
            Error::KeyspaceNotFound => "keyspace_not_found",
            Error::KeyspaceExhausted => "keyspace_exhausted",
            Error::TokenNotIssued => "token_not_issued",
            Error::InvalidToken { .. } => "invalid_token",
            Error::AlreadyActivated => "already_activated",
            Error::TokenRevoked => "token_revoked",
            Error::BatchNotFound => "batch_not_found",
            Error::ActivationNotFound => "activation_not_found",
            Error::Unauthorized => "unauthorized",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::Other { code, .. } => code,
            Error::Transport(_) | Error::Protocol { .. } | Error::InvalidInput(_) => return None,
        })
    }

    /// Whether this answer to a keep-alive or release with a `lease_id`
    /// means the lease is over for good (expired, released, disabled,
    /// deleted), as opposed to "could not tell".
    pub fn ends_lease(&self) -> bool {
        matches!(
            self,
            Error::LeaseMismatch | Error::NotLeased | Error::KeyNotFound | Error::PoolNotFound
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_free_key_carries_the_retry_after() {
        let body = br#"{"error":{"code":"no_free_key","message":"m","retry_after_ms":1500}}"#;
        assert!(matches!(
            Error::from_answer(404, body),
            Error::NoFreeKey { retry_after: Some(d) } if d == Duration::from_millis(1500)
        ));
    }

    #[test]
    fn an_unknown_code_keeps_code_message_and_status() {
        let body = br#"{"error":{"code":"invalid_settings","message":"lease_ttl_ms"}}"#;
        let e = Error::from_answer(400, body);
        assert_eq!(e.code(), Some("invalid_settings"));
        assert!(
            matches!(e, Error::Other { ref message, status: 400, .. } if message == "lease_ttl_ms")
        );
    }

    #[test]
    fn a_body_that_is_not_the_error_shape_is_a_protocol_error() {
        assert!(matches!(
            Error::from_answer(502, b"<html>bad gateway</html>"),
            Error::Protocol { status: 502, .. }
        ));
    }
}
