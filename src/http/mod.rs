//! The HTTP face of keyward: the native `/v1` API, the seeds' compat
//! routes and the ops routes, over one [`Store`].
//!
//! Handlers are thin: extract, call the store, map the result. Everything
//! a client can get wrong becomes an [`ApiError`] with a JSON body.

pub mod compat;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod v1;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tower_http::normalize_path::NormalizePath;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;

use crate::config::AdminToken;
use crate::store::Store;
use metrics::Metrics;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted path segment, in bytes as sent.
pub const MAX_PATH_PART: usize = 256;
/// A request still running after this answers 503 `timeout`, so a stuck
/// request cannot hold a client or block shutdown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The backend holding pools and keyspaces.
    pub store: Arc<dyn Store>,
    /// Bearer token required on `/v1` and `/api` routes, if set.
    pub admin_token: Option<AdminToken>,
}

/// The whole router: `/v1`, compat, ops, `/openapi.json`, JSON fallbacks
/// and limits. A trailing slash is trimmed before routing, so every route
/// answers with or without one (the seed-002 clients send one).
pub fn router(state: AppState) -> Router {
    let (api, doc) = documented_routes().split_for_parts();
    // Rendered once; each request clones a reference-counted buffer.
    let doc = Bytes::from(serde_json::to_vec(&doc).expect("the OpenAPI document serializes"));
    let metrics = Arc::new(Metrics::new(state.store.as_ref()));
    let inner = Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get({
                let metrics = metrics.clone();
                move |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    render_metrics(&state, &metrics).await
                }
            }),
        )
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc,
                    )
                }
            }),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(reject_oversized))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(metrics, log_and_time_out))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state);
    Router::new().fallback_service(NormalizePath::trim_trailing_slash(inner))
}

/// The OpenAPI document of every `/v1` and compat route, generated from
/// the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().into_openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "keyward",
    description = "Activation-token keyspaces and leased API-key pools. Errors are `{\"error\": {\"code\", \"message\"}}`. With --admin-token, /v1 and /api need `Authorization: Bearer <token>` (else 401 `unauthorized`)."
))]
struct ApiDoc;

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .merge(v1::routes())
        .merge(compat::routes())
}

/// Runs the request inside a span carrying its `x-request-id` (so any log
/// line it causes names it), answers 503 `timeout` after
/// [`REQUEST_TIMEOUT`], and logs one line per request at `debug` (the route
/// template, never the path: paths hold pool keys).
async fn log_and_time_out(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched>", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!("request", request_id = %id);
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req))
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(REQUEST_TIMEOUT).into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.observe(method.as_str(), &route, status, elapsed);
    span.in_scope(|| {
        tracing::debug!(
            %method,
            route,
            status,
            micros = elapsed.as_micros() as u64,
            "request"
        );
    });
    response
}

/// `GET /metrics`: the registry plus the store's counts (503 if the store
/// cannot answer, so a scrape never shows made-up zeros).
async fn render_metrics(state: &AppState, metrics: &Metrics) -> Response {
    match state.store.snapshot().await {
        Ok(snapshot) => (
            [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics.render(&snapshot),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Refuses every request under `/v1` and `/api` without the admin bearer
/// token (when one is configured), unknown routes and methods included, so
/// a stranger cannot even map the API. The comparison takes the same time
/// wherever the tokens differ.
async fn require_token(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let guarded = ["/v1", "/api"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    if let Some(token) = state.admin_token.as_ref().filter(|_| guarded) {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        if !token.matches(given) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// The credentials of an `Authorization: Bearer …` value; the scheme name
/// is case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
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
