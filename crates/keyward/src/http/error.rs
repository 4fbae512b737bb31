//! One error type for every HTTP answer that is not a success, and the one
//! `match` that gives each its status and code.
//!
//! Body: `{"error": {"code": "<snake_case>", "message": "<human text>"}}`.
//! 5xx bodies are generic; their cause, with its source chain, rides on the
//! response as a [`LoggedCause`] and is logged once by the request-logging
//! middleware, where the request id and route are known.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::core::{InvalidFingerprint, InvalidReason, KeyspaceError, PoolError, Ttl};
use crate::store::{ErrorChain, Limit, StoreError};

/// The shape of every error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// `code` is stable and machine-readable; `message` is for people.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    code: String,
    message: String,
    /// Only on `no_free_key`, when some key will become free by itself (a
    /// lease, cooldown or quarantine ends): milliseconds until the first
    /// does. The `Retry-After` header says the same in whole seconds,
    /// rounded up.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    retry_after_ms: Option<u64>,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400: a pool or keyspace name breaks the name rule.
    #[error("{0}")]
    InvalidName(String),
    /// 400: bad pool settings.
    #[error("{0}")]
    InvalidSettings(String),
    /// 400: bad key count.
    #[error("{0}")]
    InvalidCount(String),
    /// 400: bad lease id in a release or keep-alive body.
    #[error("{0}")]
    InvalidLeaseId(String),
    /// 400: bad keyspace definition.
    #[error("{0}")]
    InvalidKeyspace(String),
    /// 400: a token of the wrong length or with a character outside the alphabet.
    #[error("the token has the wrong length or a character outside the keyspace's alphabet")]
    InvalidToken,
    /// 400 `invalid_token`: a readable code whose check character does not
    /// match (a typo).
    #[error("check character does not match")]
    CheckMismatch,
    /// 400: the body is not JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// 400: the body cannot be read (malformed chunked framing) or is one
    /// this route does not take.
    #[error("{0}")]
    InvalidBody(String),
    /// 400: a path part is not valid (too long, not UTF-8).
    #[error("{0}")]
    InvalidPath(String),
    /// 400: a bad `limit` or `cursor`, or a query parameter the route does
    /// not take.
    #[error("{0}")]
    InvalidQuery(String),
    /// 400: an `Idempotency-Key` that is not 1-255 visible ASCII
    /// characters.
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// 422: the `Idempotency-Key` was used before, in this pool or
    /// keyspace, for a request with another method, path or body.
    #[error(
        "this Idempotency-Key was used for another request (method, path or body) in this pool or keyspace; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// 409: a request with this `Idempotency-Key` is still running.
    #[error("a request with this Idempotency-Key is still running; retry when it has answered")]
    IdempotencyInFlight,
    /// 401: missing or wrong bearer token.
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    /// 404: no such pool.
    #[error("no pool has this name")]
    PoolNotFound,
    /// 404: no such key (never generated, deleted or purged).
    #[error("no live key has this value in this pool")]
    KeyNotFound,
    /// 404: no key of the pool is free (or it has none); `Some` when one
    /// will be by itself that soon.
    #[error("no free key in this pool")]
    NoFreeKey(Option<Ttl>),
    /// 400: a bad release outcome, `retry_after_ms` or reason.
    #[error("{0}")]
    InvalidOutcome(String),
    /// 400: bad keys to import, or keys and count both given.
    #[error("{0}")]
    InvalidKeys(String),
    /// 400: bad labels.
    #[error("{0}")]
    InvalidLabels(String),
    /// 400: a bad `wait_ms`.
    #[error("{0}")]
    InvalidWait(String),
    /// 400: a bad disable reason.
    #[error("{0}")]
    InvalidReason(String),
    /// 404: no such keyspace.
    #[error("no keyspace has this name")]
    KeyspaceNotFound,
    /// 404: a well-formed token that was not issued.
    #[error("this token has not been issued")]
    TokenNotIssued,
    /// 404: no such route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// 405: the route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409: release of a key that is free.
    #[error("the key is not leased")]
    NotLeased,
    /// 409: the lease id is not the key's current lease.
    #[error("the lease id is not the key's current lease (it may have expired)")]
    LeaseMismatch,
    /// 409: the pool cannot address more keys.
    #[error("the pool holds the most keys it can")]
    PoolFull,
    /// 409: a keyspace with another alphabet or length exists.
    #[error("the keyspace exists with another alphabet, length or format; keyspaces cannot change")]
    KeyspaceImmutable,
    /// 409: the operation would cross a configured limit
    /// (`pool_limit_reached`, `keyspace_limit_reached`, `key_limit_reached`);
    /// nothing changed.
    #[error("the server's limit of {max} {limit} is reached; nothing was changed")]
    LimitReached {
        /// Which limit.
        limit: Limit,
        /// Its value.
        max: u64,
    },
    /// 409: the `default` pool or keyspace cannot be deleted.
    #[error("the default pool and keyspace cannot be deleted")]
    CannotDeleteDefault,
    /// 409: every token of the keyspace is issued.
    #[error("every token of this keyspace has been issued")]
    KeyspaceExhausted,
    /// 409: every activation slot of the token is taken.
    #[error("this token is already activated: every activation slot is taken")]
    AlreadyActivated,
    /// 409: the token was revoked.
    #[error("this token was revoked and cannot be activated")]
    TokenRevoked,
    /// 404: the token holds no activation with that fingerprint.
    #[error("this token has no activation with this fingerprint")]
    ActivationNotFound,
    /// 404: no token was issued under that batch name.
    #[error("no token of this keyspace was issued under this batch name")]
    BatchNotFound,
    /// 400: a fingerprint that is empty, too long or holds a control
    /// character.
    #[error("{0}")]
    InvalidFingerprint(String),
    /// 408: the body did not arrive within the body deadline (a client
    /// sending too slowly); the connection closes after this answer.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// 413: the body is over the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 503: the request took longer than the limit; it may or may not
    /// have taken effect.
    #[error("the request took longer than {0:?}; retry later")]
    Timeout(std::time::Duration),
    /// 503: the server is shutting down (a waiting lease gave up).
    #[error("the server is shutting down; retry on another instance or later")]
    ShuttingDown,
    /// 503: the store cannot answer now; the operation was not acknowledged.
    #[error("the store is unavailable; retry later")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            InvalidSettings(_) => (StatusCode::BAD_REQUEST, "invalid_settings"),
            InvalidCount(_) => (StatusCode::BAD_REQUEST, "invalid_count"),
            InvalidLeaseId(_) => (StatusCode::BAD_REQUEST, "invalid_lease_id"),
            InvalidKeyspace(_) => (StatusCode::BAD_REQUEST, "invalid_keyspace"),
            InvalidToken | CheckMismatch => (StatusCode::BAD_REQUEST, "invalid_token"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            InvalidPath(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            InvalidIdempotencyKey => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            IdempotencyInFlight => (StatusCode::CONFLICT, "idempotency_in_flight"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            PoolNotFound => (StatusCode::NOT_FOUND, "pool_not_found"),
            KeyNotFound => (StatusCode::NOT_FOUND, "key_not_found"),
            NoFreeKey(_) => (StatusCode::NOT_FOUND, "no_free_key"),
            InvalidOutcome(_) => (StatusCode::BAD_REQUEST, "invalid_outcome"),
            InvalidKeys(_) => (StatusCode::BAD_REQUEST, "invalid_keys"),
            InvalidLabels(_) => (StatusCode::BAD_REQUEST, "invalid_labels"),
            InvalidReason(_) => (StatusCode::BAD_REQUEST, "invalid_reason"),
            InvalidWait(_) => (StatusCode::BAD_REQUEST, "invalid_wait"),
            KeyspaceNotFound => (StatusCode::NOT_FOUND, "keyspace_not_found"),
            TokenNotIssued => (StatusCode::NOT_FOUND, "token_not_issued"),
            RouteNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            NotLeased => (StatusCode::CONFLICT, "not_leased"),
            LeaseMismatch => (StatusCode::CONFLICT, "lease_mismatch"),
            PoolFull => (StatusCode::CONFLICT, "pool_full"),
            KeyspaceImmutable => (StatusCode::CONFLICT, "keyspace_immutable"),
            LimitReached { limit, .. } => (
                StatusCode::CONFLICT,
                match limit {
                    Limit::Pools => "pool_limit_reached",
                    Limit::Keyspaces => "keyspace_limit_reached",
                    Limit::KeysPerPool => "key_limit_reached",
                },
            ),
            KeyspaceExhausted => (StatusCode::CONFLICT, "keyspace_exhausted"),
            AlreadyActivated => (StatusCode::CONFLICT, "already_activated"),
            TokenRevoked => (StatusCode::CONFLICT, "token_revoked"),
            ActivationNotFound => (StatusCode::NOT_FOUND, "activation_not_found"),
            BatchNotFound => (StatusCode::NOT_FOUND, "batch_not_found"),
            InvalidFingerprint(_) => (StatusCode::BAD_REQUEST, "invalid_fingerprint"),
            CannotDeleteDefault => (StatusCode::CONFLICT, "cannot_delete_default"),
            RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        }
    }
}

impl From<InvalidFingerprint> for ApiError {
    fn from(e: InvalidFingerprint) -> Self {
        Self::InvalidFingerprint(e.to_string())
    }
}

impl From<InvalidReason> for ApiError {
    fn from(e: InvalidReason) -> Self {
        Self::InvalidReason(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Pool(e) => match e {
                PoolError::KeyNotFound => Self::KeyNotFound,
                PoolError::NotLeased => Self::NotLeased,
                PoolError::LeaseMismatch => Self::LeaseMismatch,
                PoolError::NoFreeKey => Self::NoFreeKey(None),
                PoolError::Full => Self::PoolFull,
            },
            StoreError::Keyspace(e) => match e {
                KeyspaceError::InvalidKeyspace(why) => Self::InvalidKeyspace(why),
                KeyspaceError::InvalidToken => Self::InvalidToken,
                KeyspaceError::CheckMismatch => Self::CheckMismatch,
                KeyspaceError::NotIssued => Self::TokenNotIssued,
                KeyspaceError::AlreadyActivated => Self::AlreadyActivated,
                KeyspaceError::Exhausted => Self::KeyspaceExhausted,
                KeyspaceError::Revoked => Self::TokenRevoked,
                KeyspaceError::ActivationNotFound => Self::ActivationNotFound,
                KeyspaceError::BatchNotFound => Self::BatchNotFound,
            },
            StoreError::NoFreeKey { retry_after } => Self::NoFreeKey(retry_after),
            StoreError::ShuttingDown => Self::ShuttingDown,
            StoreError::InvalidCursor => Self::InvalidQuery(
                "cursor is not one this listing gave out; pass next_cursor as it came".into(),
            ),
            StoreError::PoolNotFound => Self::PoolNotFound,
            StoreError::KeyspaceNotFound => Self::KeyspaceNotFound,
            StoreError::KeyspaceImmutable => Self::KeyspaceImmutable,
            StoreError::CannotDeleteDefault => Self::CannotDeleteDefault,
            StoreError::LimitReached { limit, max } => Self::LimitReached { limit, max },
            StoreError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            StoreError::Unavailable(source) => Self::Unavailable(source),
        }
    }
}

/// The cause of a 5xx answer, `error: cause: cause …`, put on the response
/// for the middleware to log (the client sees only the generic message).
#[derive(Clone, Debug)]
pub(crate) struct LoggedCause(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let retry_after_ms = match &self {
            Self::NoFreeKey(ttl) => ttl.map(Ttl::as_millis),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                retry_after_ms,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(ms) = retry_after_ms {
            let seconds = ms.div_ceil(1000);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(LoggedCause(ErrorChain(&self).to_string()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_5xx_carries_its_cause_chain_for_the_log_and_a_4xx_carries_none() {
        let cause = std::io::Error::other("disk full");
        let unavailable = ApiError::from(StoreError::Unavailable(Box::new(cause))).into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        let logged = unavailable
            .extensions()
            .get::<LoggedCause>()
            .map(|LoggedCause(chain)| chain.as_str());
        assert_eq!(
            logged,
            Some("the store is unavailable; retry later: disk full")
        );

        let not_found = ApiError::PoolNotFound.into_response();
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        assert!(not_found.extensions().get::<LoggedCause>().is_none());
    }
}
