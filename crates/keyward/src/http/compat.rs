//! The routes of the two services keyward replaced, kept byte for byte
//! for their old clients (the README's glossary names them).
//!
//! - The activation-token service, on keyspace `default`: always HTTP 200,
//!   field names ending in a colon, messages in Russian.
//! - The API-key pool service, on pool `default`: Django REST style
//!   bodies.
//!
//! The trailing slash is optional on every route.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{CompatTokenPath, PathParts};
use super::{ApiError, AppState};
use crate::core::{KeyspaceError, Name, PoolError};
use crate::store::StoreError;

/// OpenAPI tag of the activation-token service's routes.
const TOKEN_SERVICE: &str = "compat: activation-token service (keyspace default)";
/// OpenAPI tag of the API-key pool service's routes.
const POOL_SERVICE: &str = "compat: API-key pool service (pool default)";

const NOT_ISSUED: &str = "Ключ не выдан";
const EXHAUSTED: &str = "Ключи кончились";
const ALREADY_ACTIVATED: &str = "Ключ уже активирован";
const ISSUED_NOT_ACTIVATED: &str = "Ключ выдан, но не активирован";
const ISSUED_AND_ACTIVATED: &str = "Ключ выдан и активирован";

/// The compat routes of both services. A trailing slash is trimmed before
/// routing (see [`super::router`]), so each is registered once. Their
/// OpenAPI operation ids start with `compat_`, so none repeats a `/v1` one
/// (`activate_token` is a handler name in both modules).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_token))
        .routes(routes!(activate_token))
        .routes(routes!(get_token_status))
        .routes(routes!(get_number_token))
        .routes(routes!(
            lease_api_key,
            generate_api_key,
            release_api_key,
            delete_api_key
        ))
        .routes(routes!(start_scheduler))
}

/// The activation-token service's issue reply. Typed, not `json!`: a `u128` count above
/// `u64::MAX` cannot become a `serde_json::Value`, but serializes fine.
#[derive(serde::Serialize)]
struct IssuedToken {
    #[serde(rename = "key:")]
    key: String,
    #[serde(rename = "leftkeys:")]
    leftkeys: u128,
}

/// The activation-token service's count reply.
#[derive(serde::Serialize)]
struct LeftKeys {
    #[serde(rename = "leftkeys:")]
    leftkeys: u128,
}

fn keystatus(message: impl Into<String>) -> Json<serde_json::Value> {
    Json(json!({ "keystatus:": message.into() }))
}

/// `POST /api/get_token`: issue a token of the default keyspace.
#[utoipa::path(
    post, path = "/api/get_token", operation_id = "compat_get_token", tag = TOKEN_SERVICE,
    responses((status = 200, description = "`{\"key:\": T, \"leftkeys:\": N}` or `{\"keystatus:\": \"Ключи кончились\"}`", body = serde_json::Value))
)]
async fn get_token(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.store.issue_token(&Name::default_name()).await {
        Ok(issued) => Ok(Json(IssuedToken {
            key: issued.token,
            leftkeys: issued.remaining,
        })
        .into_response()),
        Err(StoreError::Keyspace(KeyspaceError::Exhausted)) => {
            Ok(keystatus(EXHAUSTED).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `PUT /api/activate_token/{token}`.
#[utoipa::path(
    put, path = "/api/activate_token/{token}", operation_id = "compat_activate_token", tag = TOKEN_SERVICE,
    params(CompatTokenPath),
    responses((status = 200, description = "`{\"keystatus:\": …}`: Вы активировали ключ T / Ключ уже активирован / Ключ не выдан", body = serde_json::Value))
)]
async fn activate_token(
    State(state): State<AppState>,
    PathParts(CompatTokenPath { token }): PathParts<CompatTokenPath>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state
        .store
        .activate_token(&Name::default_name(), &token)
        .await
    {
        Ok(status) => Ok(keystatus(format!("Вы активировали ключ {}", status.token))),
        // The seed has no revocation: a revoked token is refused as one
        // that cannot be activated again.
        Err(StoreError::Keyspace(KeyspaceError::AlreadyActivated | KeyspaceError::Revoked)) => {
            Ok(keystatus(ALREADY_ACTIVATED))
        }
        Err(StoreError::Keyspace(KeyspaceError::NotIssued | KeyspaceError::InvalidToken)) => {
            Ok(keystatus(NOT_ISSUED))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/get_token_status/{token}`.
#[utoipa::path(
    get, path = "/api/get_token_status/{token}", operation_id = "compat_get_token_status", tag = TOKEN_SERVICE,
    params(CompatTokenPath),
    responses((status = 200, description = "`{\"keystatus:\": …}`: Ключ выдан и активирован / Ключ выдан, но не активирован / Ключ не выдан", body = serde_json::Value))
)]
async fn get_token_status(
    State(state): State<AppState>,
    PathParts(CompatTokenPath { token }): PathParts<CompatTokenPath>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state
        .store
        .token_status(&Name::default_name(), &token)
        .await
    {
        Ok(status) if status.activated_at().is_some() => Ok(keystatus(ISSUED_AND_ACTIVATED)),
        Ok(_) => Ok(keystatus(ISSUED_NOT_ACTIVATED)),
        Err(StoreError::Keyspace(KeyspaceError::NotIssued | KeyspaceError::InvalidToken)) => {
            Ok(keystatus(NOT_ISSUED))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/get_number_token`: tokens left in the default keyspace.
#[utoipa::path(
    get, path = "/api/get_number_token", operation_id = "compat_get_number_token", tag = TOKEN_SERVICE,
    responses((status = 200, description = "`{\"leftkeys:\": N}`", body = serde_json::Value))
)]
async fn get_number_token(State(state): State<AppState>) -> Result<Json<LeftKeys>, ApiError> {
    let view = state.store.keyspace_info(&Name::default_name()).await?;
    Ok(Json(LeftKeys {
        leftkeys: view.info.remaining,
    }))
}

fn django(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn not_found() -> Response {
    django(StatusCode::NOT_FOUND, json!({"detail": "Not found."}))
}

/// The query of the routes that name a key (`?api_key=K`); a malformed
/// query counts as one without the key.
type ApiKeyQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The `api_key` query parameter, if present and non-empty.
fn api_key(query: &ApiKeyQuery) -> Option<&str> {
    query
        .as_ref()
        .ok()
        .and_then(|q| q.get("api_key"))
        .map(String::as_str)
        .filter(|k| !k.is_empty())
}

/// The old server's 400 reply to a request without the key that was to be
/// `done` ("updated", "deleted").
fn no_api_key(done: &str) -> Response {
    django(
        StatusCode::BAD_REQUEST,
        json!({"message": format!("Kindly send key to be {done}, given key does not exist")}),
    )
}

/// `POST /api/v1/random_api_key/`: generate one key in the default pool.
#[utoipa::path(
    post, path = "/api/v1/random_api_key", operation_id = "compat_generate_api_key", tag = POOL_SERVICE,
    responses((status = 201, description = "`{\"api_key\": K}`", body = serde_json::Value))
)]
async fn generate_api_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut keys = state.store.generate_keys(&Name::default_name(), 1).await?;
    let key = keys.pop().map(|k| k.key).unwrap_or_default();
    Ok(django(StatusCode::CREATED, json!({"api_key": key})))
}

/// `GET /api/v1/random_api_key/`: lease a random free key.
#[utoipa::path(
    get, path = "/api/v1/random_api_key", operation_id = "compat_lease_api_key", tag = POOL_SERVICE,
    responses(
        (status = 200, description = "`{\"api_key\": K}`, now leased", body = serde_json::Value),
        (status = 404, description = "`{\"message\": \"No available key found\"}`", body = serde_json::Value),
    )
)]
async fn lease_api_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.store.lease_key(&Name::default_name()).await {
        Ok(view) => Ok(django(StatusCode::OK, json!({"api_key": view.key}))),
        Err(StoreError::NoFreeKey { .. } | StoreError::Pool(PoolError::NoFreeKey)) => Ok(django(
            StatusCode::NOT_FOUND,
            json!({"message": "No available key found"}),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `PUT /api/v1/random_api_key/?api_key=K`: release (a free key stays free).
#[utoipa::path(
    put, path = "/api/v1/random_api_key", operation_id = "compat_release_api_key", tag = POOL_SERVICE,
    params(("api_key" = Option<String>, Query, description = "The key")),
    responses(
        (status = 200, description = "`{\"api_key\": K}`, released", body = serde_json::Value),
        (status = 400, description = "no api_key", body = serde_json::Value),
        (status = 404, description = "`{\"detail\": \"Not found.\"}`", body = serde_json::Value),
    )
)]
async fn release_api_key(
    State(state): State<AppState>,
    query: ApiKeyQuery,
) -> Result<Response, ApiError> {
    let Some(key) = api_key(&query) else {
        return Ok(no_api_key("updated"));
    };
    let pool = Name::default_name();
    match state.store.release_key(&pool, key, None).await {
        Ok(view) => Ok(django(StatusCode::OK, json!({"api_key": view.key}))),
        Err(StoreError::Pool(PoolError::NotLeased)) => {
            Ok(django(StatusCode::OK, json!({"api_key": key})))
        }
        Err(StoreError::Pool(PoolError::KeyNotFound)) => Ok(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v1/random_api_key/?api_key=K`: purge.
#[utoipa::path(
    delete, path = "/api/v1/random_api_key", operation_id = "compat_delete_api_key", tag = POOL_SERVICE,
    params(("api_key" = Option<String>, Query, description = "The key")),
    responses(
        (status = 200, description = "`{\"message\": \"Given key has been deleted\"}`", body = serde_json::Value),
        (status = 400, description = "no api_key", body = serde_json::Value),
        (status = 404, description = "`{\"detail\": \"Not found.\"}`", body = serde_json::Value),
    )
)]
async fn delete_api_key(
    State(state): State<AppState>,
    query: ApiKeyQuery,
) -> Result<Response, ApiError> {
    let Some(key) = api_key(&query) else {
        return Ok(no_api_key("deleted"));
    };
    match state.store.delete_key(&Name::default_name(), key).await {
        Ok(()) => Ok(django(
            StatusCode::OK,
            json!({"message": "Given key has been deleted"}),
        )),
        Err(StoreError::Pool(PoolError::KeyNotFound)) => Ok(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/start_scheduler/`: expiry always runs; kept for old clients.
#[utoipa::path(
    get, path = "/api/v1/start_scheduler", operation_id = "compat_start_scheduler", tag = POOL_SERVICE,
    responses((status = 200, description = "Expiry always runs; kept for old clients", body = serde_json::Value))
)]
async fn start_scheduler() -> Json<serde_json::Value> {
    Json(json!({"message": "Scheduler is running: expiry always runs in keyward"}))
}
