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

/// Largest accepted request body, on every route but `PUT /v1/keyspaces/{ks}`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest accepted body of `PUT /v1/keyspaces/{ks}`: the largest alphabet
/// (65,536 characters) fits even written entirely as `\uXXXX\uXXXX`
/// surrogate-pair escapes (12 bytes a character, 786,432 bytes in all).
pub const MAX_KEYSPACE_BODY_BYTES: usize = 1024 * 1024;
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
        // `reject_oversized` has read every body whole within its route's
        // limit before any extractor runs; a second, looser cap here
        // would only disagree with it.
        .layer(DefaultBodyLimit::disable())
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
    let mut routes = OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .merge(v1::routes())
        .merge(compat::routes());
    finish_doc(routes.get_openapi_mut());
    routes
}

/// Name of the bearer scheme in the document's `securitySchemes`.
const BEARER_SCHEME: &str = "bearer";

/// What the route annotations cannot say: declares the admin token as an
/// HTTP bearer scheme and puts it, with its 401 answer, on every
/// documented operation (all are under `/v1` or `/api`, the prefixes
/// [`require_token`] guards), and lets optional bodies be absent rather
/// than `null`.
fn finish_doc(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{ComponentsBuilder, ContentBuilder, Ref, RefOr, ResponseBuilder};

    let components = doc
        .components
        .get_or_insert_with(|| ComponentsBuilder::new().build());
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token; required only when the server runs with --admin-token \
                     (or KEYWARD_ADMIN_TOKEN)",
                ))
                .build(),
        ),
    );
    let unauthorized: RefOr<utoipa::openapi::Response> = ResponseBuilder::new()
        .description("unauthorized: missing or wrong bearer token (only with --admin-token)")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![SecurityRequirement::new(
                BEARER_SCHEME,
                Vec::<String>::new(),
            )]);
            operation
                .responses
                .responses
                .insert("401".to_owned(), unauthorized.clone());
            if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
                body.content.values_mut().for_each(drop_null_alternative);
            }
        }
    }
}

/// An `Option<Body>` request body is rendered `oneOf: [Body, null]`, but
/// what may be left out is the body, not its value: `required: false`
/// says that, and a JSON `null` body is refused. Keeps `Body` alone.
fn drop_null_alternative(content: &mut utoipa::openapi::RefOr<utoipa::openapi::Content>) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};

    let RefOr::T(content) = content else { return };
    let Some(RefOr::T(Schema::OneOf(one_of))) = content.schema.as_mut() else {
        return;
    };
    one_of.items.retain(|item| {
        !matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
    });
    if one_of.items.len() == 1 {
        let body = one_of.items.remove(0);
        content.schema = Some(body);
    }
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
    match metrics.scrape(state.store.as_ref()).await {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            text,
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
            let mut response = ApiError::Unauthorized.into_response();
            // RFC 9110 §11.6.1: a 401 names the scheme that would be accepted.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return response;
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

/// The body limit of a request: [`MAX_KEYSPACE_BODY_BYTES`] on
/// `PUT /v1/keyspaces/{ks}` (an alphabet may be 65,536 characters), else
/// [`MAX_BODY_BYTES`].
fn body_limit(parts: &Parts) -> usize {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if parts.method == axum::http::Method::PUT && route == Some("/v1/keyspaces/{ks}") {
        MAX_KEYSPACE_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// Whether `err` or one of its sources is the body reader's "over the
/// limit"; any other failure to read a body is the client's malformed
/// framing (e.g. a chunk size that is not hex), not its size.
fn over_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The innermost cause of `err`, for a message about the client's input.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

/// Refuses any path segment over [`MAX_PATH_PART`] bytes and any body over
/// its route's [`body_limit`], also on routes that ignore their body (it
/// runs after routing, for every route and the fallbacks). The body is
/// buffered here (bounded), so handlers see it whole.
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
    let limit = body_limit(&parts);
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => next.run(Request::from_parts(parts, bytes.into())).await,
        // A body trickled past the body deadline is the client's fault: 408.
        Err(e) => match listener::body_timed_out(&e) {
            Some(limit) => {
                let mut response = ApiError::RequestTimeout(limit).into_response();
                // RFC 9110 §15.5.9: the connection closes after a 408 (the
                // rest of the body is never read); say so.
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                response
            }
            None if over_limit(&e) => ApiError::PayloadTooLarge(limit).into_response(),
            None => ApiError::InvalidBody(format!(
                "the request body cannot be read: {}",
                root_cause(&e)
            ))
            .into_response(),
        },
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
/// Malformed JSON, and an object that repeats a key (which serde would
/// silently resolve to the last), is `invalid_json`; well-formed JSON of
/// the wrong shape, including `null` for a field (no request field is
/// nullable: leave it out for its default), is the route's own error,
/// chosen by [`BodyError`]. O(body).
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
        // `reject_oversized` already holds the whole body, within its limit.
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::InvalidJson(e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        let UniqueKeys(value) = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
        // serde would also read an array by field position; the contract
        // takes objects only.
        let Some(object) = value.as_object() else {
            return Err(T::wrong_shape("the body must be a JSON object".into()));
        };
        // serde reads `null` as an absent `Option`: `{"count": null}` would
        // quietly mean the default.
        let null_field = object
            .iter()
            .find(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone());
        let body = serde_json::from_value(value).map_err(|e| T::wrong_shape(e.to_string()))?;
        match null_field {
            Some(field) => Err(T::wrong_shape(format!(
                "`{field}` must not be null; leave it out for its default"
            ))),
            None => Ok(Self(body)),
        }
    }
}

/// A JSON value read in one pass that fails on an object repeating a key,
/// at any depth (RFC 8259 leaves repeated names to the reader; here they
/// are an error rather than "the last one wins"). serde_json's recursion
/// limit still bounds the nesting.
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(Self)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "the key {shown:?} appears twice in one object"
                )));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}
