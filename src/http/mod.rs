//! The HTTP face of keyward: the native `/v1` API, the seeds' compat
//! routes and the ops routes, over one [`Store`].
//!
//! Handlers are thin: extract, call the store, map the result. Everything
//! a client can get wrong becomes an [`ApiError`] with a JSON body.

pub mod compat;
pub mod error;
pub mod v1;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use error::ApiError;

use crate::store::Store;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted path segment, in bytes as sent.
pub const MAX_PATH_PART: usize = 256;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The backend holding pools and keyspaces.
    pub store: Arc<dyn Store>,
}

/// The whole router: `/v1`, compat, ops, JSON fallbacks and limits.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(v1::routes())
        .merge(compat::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(reject_oversized))
        .with_state(state)
}

/// 200 while the process lives.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 while the store answers, else 503.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"code": "unavailable", "message": "the store is unavailable"}})),
            )
                .into_response()
        }
    }
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Refuses, before routing, any path segment over [`MAX_PATH_PART`] bytes
/// and any body over [`MAX_BODY_BYTES`], also on routes that ignore their
/// body. The body is buffered here (bounded), so handlers see it whole.
async fn reject_oversized(req: Request, next: Next) -> Response {
    if req
        .uri()
        .path()
        .split('/')
        .any(|part| part.len() > MAX_PATH_PART)
    {
        return ApiError::InvalidPath(format!("a path part is longer than {MAX_PATH_PART} bytes"))
            .into_response();
    }
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::PayloadTooLarge(MAX_BODY_BYTES).into_response();
    }
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => next.run(Request::from_parts(parts, bytes.into())).await,
        Err(_) => ApiError::PayloadTooLarge(MAX_BODY_BYTES).into_response(),
    }
}

/// Path parameters, with rejections (e.g. `%FF`) turned into JSON errors.
pub struct PathParts<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParts<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Self(t)),
            Err(e) => Err(ApiError::InvalidPath(e.body_text())),
        }
    }
}

/// A JSON body that may be absent (empty means `T::default()`), read
/// whatever the `Content-Type`, so `curl -d` works too.
///
/// Malformed JSON is `invalid_json`; well-formed JSON of the wrong shape is
/// the route's own error, chosen by [`BodyError`].
pub struct JsonBody<T>(pub T);

/// How a route names a body of the wrong shape.
pub trait BodyError {
    /// The error for a body that is JSON but not what the route takes.
    fn wrong_shape(message: String) -> ApiError;
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default + BodyError + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(MAX_BODY_BYTES)
            } else {
                ApiError::InvalidJson(e.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
        // serde would also read an array by field position; the contract
        // takes objects only.
        if !value.is_object() {
            return Err(T::wrong_shape("the body must be a JSON object".into()));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| T::wrong_shape(e.to_string()))
    }
}
