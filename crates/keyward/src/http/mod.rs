//! The HTTP face of keyward: the native `/v1` API, the compat routes of
//! the two services keyward replaced, and the ops routes, over one
//! [`Store`].
//!
//! Handlers are thin: extract (`extract.rs`: names parsed, bodies read),
//! call the store, map the result. Everything a client can get wrong
//! becomes an `ApiError` with a JSON body; a 5xx's cause is logged once,
//! by the `log_and_time_out` middleware, from the response's `LoggedCause`.
//!
//! Public: [`router`], [`openapi`], [`AppState`] and the limits; the
//! handlers, extractors and the serve loop are the crate's own.

pub(crate) mod compat;
pub(crate) mod error;
mod extract;
pub mod idempotency;
pub(crate) mod listener;
pub mod metrics;
mod page;
pub mod v1;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::normalize_path::NormalizePath;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;

pub(crate) use error::ApiError;
use error::LoggedCause;

use crate::config::AdminToken;
use crate::store::Store;
use metrics::Metrics;

/// Largest accepted request body, on every route but `PUT /v1/keyspaces/{ks}`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest accepted body of `PUT /v1/keyspaces/{ks}`: the largest alphabet
/// (65,536 characters) fits even written entirely as `\uXXXX\uXXXX`
/// surrogate-pair escapes (12 bytes a character, 786,432 bytes in all).
pub const MAX_KEYSPACE_BODY_BYTES: usize = 1024 * 1024;
/// Largest accepted body of `POST /v1/pools/{pool}/keys`: an import of
/// 10,000 keys of 256 characters, even when JSON must escape every one
/// (`\"`, `\\`: 515 bytes a key with its quotes and comma), with room for
/// labels.
pub const MAX_IMPORT_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Longest accepted path segment, in bytes as sent: a fingerprint of 256
/// characters of four UTF-8 bytes each, every byte percent-encoded (an
/// imported key, 256 ASCII characters, needs at most 768).
pub const MAX_PATH_PART: usize = 3072;
/// A request still running after this answers 503 `timeout`, so a stuck
/// request cannot hold a client or block shutdown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler can reach, behind one reference count: axum clones
/// a handler's state on every request, and each clone of a shared count
/// is a cache line the two cores pass back and forth.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The backend holding pools and keyspaces.
    pub store: Arc<dyn Store>,
    /// Bearer token required on `/v1` and `/api` routes, if set.
    pub admin_token: Option<AdminToken>,
    /// How long idempotency records live, and the keys running now.
    pub idempotency: Arc<idempotency::Idempotency>,
}

impl AppState {
    /// The state of a server on `store`. O(1).
    pub fn new(
        store: Arc<dyn Store>,
        admin_token: Option<AdminToken>,
        idempotency: Arc<idempotency::Idempotency>,
    ) -> Self {
        Self(Arc::new(Shared {
            store,
            admin_token,
            idempotency,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole router: `/v1`, compat, ops, `/openapi.json`, JSON fallbacks
/// and limits. A trailing slash is trimmed before routing, so every route
/// answers with or without one (the API-key pool service's clients send
/// one).
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
                move |State(state): State<AppState>| async move {
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
        .layer(middleware::from_fn_with_state(
            state.idempotency.clone(),
            reject_oversized,
        ))
        .layer(middleware::from_fn_with_state(
            state.admin_token.clone().map(Arc::new),
            require_token,
        ))
        .layer(middleware::from_fn_with_state(
            metrics.clone(),
            log_and_time_out,
        ))
        .layer(axum::Extension(metrics))
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
    use utoipa::openapi::{ComponentsBuilder, RefOr};

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
    let unauthorized =
        error_response("unauthorized: missing or wrong bearer token (only with --admin-token)");
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.starts_with("/v1/") {
            for operation in [&mut item.put, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                document_idempotency(operation);
            }
        }
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

/// An error answer of the document: `description`, with the error body.
fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// The `Idempotency-Key` header of a `/v1` change, and its answers: 400
/// `invalid_idempotency_key`, 409 `idempotency_in_flight`, 422
/// `idempotency_key_reused`, and the replay header.
fn document_idempotency(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{RefOr, Required};

    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the first request with this key runs and, if it succeeds, its \
             answer is recorded with the change for --idempotency-ttl (24 h by default); a \
             retry with the same key, method, path and body in this pool or keyspace gets that \
             answer again with `Idempotent-Replayed: true` and changes nothing",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(crate::store::idempotency::MAX_KEY_LEN))
                .pattern(Some("^[\\x21-\\x7e]+$")),
        ))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::T(key));
    let responses = &mut operation.responses.responses;
    for (status, code) in [
        ("400", "invalid_idempotency_key"),
        (
            "409",
            "idempotency_in_flight (a request with this Idempotency-Key is still running)",
        ),
    ] {
        match responses.get_mut(status) {
            Some(RefOr::T(response)) => {
                response.description = format!("{}, {code}", response.description);
            }
            _ => {
                responses.insert(status.to_owned(), error_response(code));
            }
        }
    }
    responses.insert(
        "422".to_owned(),
        error_response("idempotency_key_reused: the Idempotency-Key was used for another request in this pool or keyspace"),
    );
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
/// [`REQUEST_TIMEOUT`], logs one line per request at `debug` (the route
/// template, never the path: paths hold pool keys), and logs the cause of
/// every 5xx once, at `error`, with its source chain, from the
/// [`LoggedCause`] the [`ApiError`] left on the response.
async fn log_and_time_out(
    State(metrics): State<Arc<Metrics>>,
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
    // A lease may wait up to `MAX_WAIT` for a key on top of its work.
    let limit = if route == "/v1/pools/{pool}/lease" {
        REQUEST_TIMEOUT + crate::store::MAX_WAIT
    } else {
        REQUEST_TIMEOUT
    };
    let response = match tokio::time::timeout(limit, next.run(req))
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.observe(method.as_str(), &route, status, elapsed);
    span.in_scope(|| {
        if let Some(LoggedCause(cause)) = response.extensions().get::<LoggedCause>() {
            tracing::error!(%method, route, status, error = %cause, "request failed");
        }
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
    State(admin_token): State<Option<Arc<AdminToken>>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let guarded = ["/v1", "/api"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    if let Some(token) = admin_token.as_ref().filter(|_| guarded) {
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

/// 200 while the store answers, else 503 `unavailable` (whatever the
/// store's error: a probe asks only whether it can serve).
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(Box::new(e)))?;
    Ok(Json(json!({"status": "ready"})))
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The body limit of a request: [`MAX_KEYSPACE_BODY_BYTES`] on
/// `PUT /v1/keyspaces/{ks}` (an alphabet may be 65,536 characters),
/// [`MAX_IMPORT_BODY_BYTES`] on `POST /v1/pools/{pool}/keys` (an import of
/// 10,000 keys), else [`MAX_BODY_BYTES`].
fn body_limit(parts: &Parts) -> usize {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    match (&parts.method, route) {
        (&axum::http::Method::PUT, Some("/v1/keyspaces/{ks}")) => MAX_KEYSPACE_BODY_BYTES,
        (&axum::http::Method::POST, Some("/v1/pools/{pool}/keys")) => MAX_IMPORT_BODY_BYTES,
        _ => MAX_BODY_BYTES,
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
/// buffered here (bounded), so handlers see it whole, and an
/// `Idempotency-Key` is taken in with it ([`idempotency::run`]).
async fn reject_oversized(
    State(idempotency): State<Arc<idempotency::Idempotency>>,
    req: Request,
    next: Next,
) -> Response {
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
        Ok(bytes) => idempotency::run(&idempotency, parts, bytes, next).await,
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tower::ServiceExt;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::store::local::{LocalSettings, LocalStore};

    /// Every `error` event, with the `request_id` of the span it was in.
    #[derive(Default)]
    struct Errors {
        next_span: AtomicU64,
        span_ids: Mutex<HashMap<u64, String>>,
        entered: Mutex<Vec<u64>>,
        seen: Mutex<Vec<(Option<String>, String)>>,
    }

    /// The fields of one span or event, as text.
    #[derive(Default)]
    struct Fields(HashMap<String, String>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl Subscriber for &'static Errors {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next_span.fetch_add(1, Ordering::Relaxed) + 1;
            let mut fields = Fields::default();
            span.record(&mut fields);
            if let Some(request_id) = fields.0.remove("request_id") {
                self.span_ids
                    .lock()
                    .expect("not poisoned")
                    .insert(id, request_id);
            }
            Id::from_u64(id)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() != Level::ERROR {
                return;
            }
            let mut fields = Fields::default();
            event.record(&mut fields);
            let span = self.entered.lock().expect("not poisoned").last().copied();
            let request_id = span.and_then(|id| {
                self.span_ids
                    .lock()
                    .expect("not poisoned")
                    .get(&id)
                    .cloned()
            });
            let error = fields.0.remove("error").unwrap_or_default();
            self.seen
                .lock()
                .expect("not poisoned")
                .push((request_id, error));
        }

        fn enter(&self, span: &Id) {
            self.entered
                .lock()
                .expect("not poisoned")
                .push(span.into_u64());
        }

        fn exit(&self, _: &Id) {
            self.entered.lock().expect("not poisoned").pop();
        }
    }

    #[test]
    fn a_5xx_is_logged_once_by_the_middleware_with_its_request_id_and_cause() {
        let errors: &'static Errors = Box::leak(Box::default());
        let config = Config::default();
        let store = LocalStore::new(
            LocalSettings {
                pool_defaults: config.pool_defaults,
                default_keyspace: config.default_keyspace,
                limits: config.limits,
            },
            Arc::new(SystemClock),
        );
        let metrics = Arc::new(Metrics::new(&store));
        let app = Router::new()
            .route(
                "/fails",
                get(|| async { ApiError::Unavailable("the disk is full".into()) }),
            )
            .route("/works", get(|| async { "ok" }))
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                log_and_time_out,
            ))
            .layer(axum::Extension(metrics));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        tracing::subscriber::with_default(errors, || {
            runtime.block_on(async {
                for (path, id) in [("/fails", "req-1"), ("/works", "req-2")] {
                    let request = Request::get(path)
                        .header("x-request-id", id)
                        .body(axum::body::Body::empty())
                        .expect("a request");
                    app.clone().oneshot(request).await.expect("infallible");
                }
            });
        });
        let seen = errors.seen.lock().expect("not poisoned").clone();
        assert_eq!(
            seen,
            [(
                Some("req-1".to_owned()),
                "the store is unavailable; retry later: the disk is full".to_owned()
            )]
        );
    }
}
