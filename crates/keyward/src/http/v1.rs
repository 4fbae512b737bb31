//! The native API under `/v1`: pools and keyspaces, JSON in and out.
//!
//! Times are RFC 3339 UTC with milliseconds; TTLs are integer milliseconds.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{BodyError, JsonBody, KeyPath, KeyspacePath, PoolPath, TokenPath};
use super::page::{PageQuery, encode_cursor};
use super::{ApiError, AppState};
use crate::core::{Issued, KeyLength, KeyView, KeyspaceSpec, TokenStatus, Ttl};
use crate::store::{KeyspaceView, PoolInfo, PoolPatch, Upsert};

/// Most keys one generate request may ask for.
pub const MAX_GENERATE: u64 = 10_000;

/// The `/v1` routes, each documented in the OpenAPI document.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pools))
        .routes(routes!(get_pool, put_pool, delete_pool))
        .routes(routes!(generate_keys))
        .routes(routes!(lease_key))
        .routes(routes!(get_key, delete_key))
        .routes(routes!(release_key))
        .routes(routes!(keepalive_key))
        .routes(routes!(list_keyspaces))
        .routes(routes!(get_keyspace, put_keyspace, delete_keyspace))
        .routes(routes!(issue_token))
        .routes(routes!(token_status))
        .routes(routes!(activate_token))
}

fn status_for(upsert: Upsert) -> StatusCode {
    match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Existed => StatusCode::OK,
    }
}

/// The pool object.
#[derive(Serialize, ToSchema)]
pub(crate) struct PoolBody {
    name: String,
    lease_ttl_ms: u64,
    keepalive_ttl_ms: u64,
    key_length: usize,
    total: u64,
    free: u64,
    leased: u64,
}

impl From<PoolInfo> for PoolBody {
    fn from(p: PoolInfo) -> Self {
        Self {
            name: p.name.to_string(),
            lease_ttl_ms: p.settings.lease_ttl.as_millis(),
            keepalive_ttl_ms: p.settings.keepalive_ttl.as_millis(),
            key_length: p.settings.key_length.get(),
            total: p.stats.total,
            free: p.stats.free,
            leased: p.stats.leased,
        }
    }
}

/// Whether a key is leased.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyState {
    /// Free: `lease_id` and `leased_until` are `null`.
    Free,
    /// Leased until `leased_until`, under `lease_id`.
    Leased,
}

/// The key object.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyBody {
    key: String,
    state: KeyState,
    created_at: String,
    alive_until: String,
    lease_id: Option<u64>,
    leased_until: Option<String>,
}

impl From<KeyView> for KeyBody {
    fn from(k: KeyView) -> Self {
        Self {
            state: if k.lease.is_some() {
                KeyState::Leased
            } else {
                KeyState::Free
            },
            created_at: k.created_at.to_string(),
            alive_until: k.alive_until.to_string(),
            lease_id: k.lease.map(|l| l.id),
            leased_until: k.lease.map(|l| l.until.to_string()),
            key: k.key,
        }
    }
}

/// Body of `PUT /v1/pools/{pool}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolSettingsBody {
    // The bounds repeat `Ttl::MAX_MILLIS` and `KeyLength` as literals (the
    // derive takes nothing else); a test in tests/http compares them.
    #[schema(nullable = false, minimum = 1, maximum = 3153600000000.0)]
    lease_ttl_ms: Option<u64>,
    #[schema(nullable = false, minimum = 1, maximum = 3153600000000.0)]
    keepalive_ttl_ms: Option<u64>,
    #[schema(nullable = false, minimum = 8, maximum = 128)]
    key_length: Option<u64>,
}

impl BodyError for PoolSettingsBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidSettings(message)
    }
}

impl PoolSettingsBody {
    fn parse(self) -> Result<PoolPatch, ApiError> {
        let ttl = |v: Option<u64>, field: &str| {
            v.map(|ms| {
                Ttl::from_millis(ms).ok_or_else(|| {
                    ApiError::InvalidSettings(format!(
                        "{field} must be an integer from 1 to {}",
                        Ttl::MAX_MILLIS
                    ))
                })
            })
            .transpose()
        };
        Ok(PoolPatch {
            lease_ttl: ttl(self.lease_ttl_ms, "lease_ttl_ms")?,
            keepalive_ttl: ttl(self.keepalive_ttl_ms, "keepalive_ttl_ms")?,
            key_length: self
                .key_length
                .map(|n| {
                    KeyLength::new(n).ok_or_else(|| {
                        ApiError::InvalidSettings("key_length must be from 8 to 128".into())
                    })
                })
                .transpose()?,
        })
    }
}

/// Create a pool or change the given settings.
#[utoipa::path(
    put, path = "/v1/pools/{pool}", tag = "pools",
    params(PoolPath),
    request_body(content = Option<PoolSettingsBody>, description = "Settings to set; absent fields keep their value; may be empty"),
    responses(
        (status = 201, description = "Created", body = PoolBody),
        (status = 200, description = "Changed", body = PoolBody),
        (status = 400, description = "invalid_name, invalid_settings, invalid_json", body = ErrorBody),
        (status = 409, description = "pool_limit_reached (--max-pools)", body = ErrorBody),
    )
)]
async fn put_pool(
    State(state): State<AppState>,
    PoolPath { pool }: PoolPath,
    JsonBody(body): JsonBody<PoolSettingsBody>,
) -> Result<Response, ApiError> {
    let patch = body.parse()?;
    let (info, upsert) = state.store.put_pool(&pool, patch).await?;
    Ok((status_for(upsert), Json(PoolBody::from(info))).into_response())
}

/// A pool's settings and counts.
#[utoipa::path(
    get, path = "/v1/pools/{pool}", tag = "pools",
    params(PoolPath),
    responses(
        (status = 200, description = "The pool", body = PoolBody),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "pool_not_found", body = ErrorBody),
    )
)]
async fn get_pool(
    State(state): State<AppState>,
    PoolPath { pool }: PoolPath,
) -> Result<Json<PoolBody>, ApiError> {
    Ok(Json(state.store.pool_info(&pool).await?.into()))
}

/// Delete a pool and its keys.
#[utoipa::path(
    delete, path = "/v1/pools/{pool}", tag = "pools",
    params(PoolPath),
    responses(
        (status = 204, description = "Deleted: the name is free at once; the keys' storage is reclaimed in bounded background steps"),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "pool_not_found", body = ErrorBody),
        (status = 409, description = "cannot_delete_default", body = ErrorBody),
    )
)]
async fn delete_pool(
    State(state): State<AppState>,
    PoolPath { pool }: PoolPath,
) -> Result<StatusCode, ApiError> {
    state.store.delete_pool(&pool).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of pools.
#[derive(Serialize, ToSchema)]
pub(crate) struct PoolsPage {
    /// Pools ordered by name, each as `GET /v1/pools/{pool}` gives it.
    pools: Vec<PoolBody>,
    /// Pass as `cursor` for the next page; `null` after the last page.
    next_cursor: Option<String>,
}

/// List pools by name, a page at a time.
#[utoipa::path(
    get, path = "/v1/pools", tag = "pools",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of pools", body = PoolsPage),
        (status = 400, description = "invalid_query", body = ErrorBody),
    )
)]
async fn list_pools(
    State(state): State<AppState>,
    query: PageQuery,
) -> Result<Json<PoolsPage>, ApiError> {
    let page = state.store.list_pools(&query.request()).await?;
    Ok(Json(PoolsPage {
        pools: page.items.into_iter().map(PoolBody::from).collect(),
        next_cursor: page.next.as_deref().map(encode_cursor),
    }))
}

/// Body of `POST /v1/pools/{pool}/keys`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateBody {
    // `maximum` repeats `MAX_GENERATE`; a test in tests/http compares them.
    #[schema(nullable = false, minimum = 1, maximum = 10000, default = 1)]
    count: Option<u64>,
}

impl BodyError for GenerateBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidCount(message)
    }
}

/// Reply to a generate: the new keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeysBody {
    keys: Vec<KeyBody>,
}

/// Generate keys (the pool is made with defaults if absent).
#[utoipa::path(
    post, path = "/v1/pools/{pool}/keys", tag = "pools",
    params(PoolPath),
    request_body(content = Option<GenerateBody>, description = "How many keys (1-10000, default 1); may be empty"),
    responses(
        (status = 201, description = "Generated", body = KeysBody),
        (status = 400, description = "invalid_name, invalid_count, invalid_json", body = ErrorBody),
        (status = 409, description = "key_limit_reached (--max-keys-per-pool), pool_limit_reached (--max-pools); nothing generated", body = ErrorBody),
    )
)]
async fn generate_keys(
    State(state): State<AppState>,
    PoolPath { pool }: PoolPath,
    JsonBody(body): JsonBody<GenerateBody>,
) -> Result<(StatusCode, Json<KeysBody>), ApiError> {
    let count = body.count.unwrap_or(1);
    if !(1..=MAX_GENERATE).contains(&count) {
        return Err(ApiError::InvalidCount(format!(
            "count must be an integer from 1 to {MAX_GENERATE}"
        )));
    }
    let keys = state.store.generate_keys(&pool, count as usize).await?;
    let keys = keys.into_iter().map(KeyBody::from).collect();
    Ok((StatusCode::CREATED, Json(KeysBody { keys })))
}

/// Lease a uniformly random free key.
#[utoipa::path(
    post, path = "/v1/pools/{pool}/lease", tag = "pools",
    params(PoolPath),
    responses(
        (status = 200, description = "A uniformly random free key, now leased", body = KeyBody),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "no_free_key", body = ErrorBody),
    )
)]
async fn lease_key(
    State(state): State<AppState>,
    PoolPath { pool }: PoolPath,
) -> Result<Json<KeyBody>, ApiError> {
    Ok(Json(state.store.lease_key(&pool).await?.into()))
}

/// Body of release and keep-alive.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseIdBody {
    #[schema(nullable = false)]
    lease_id: Option<u64>,
}

impl BodyError for LeaseIdBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidLeaseId(message)
    }
}

/// End a lease now.
#[utoipa::path(
    post, path = "/v1/pools/{pool}/keys/{key}/release", tag = "pools",
    params(KeyPath),
    request_body(content = Option<LeaseIdBody>, description = "Optional fencing lease id; may be empty"),
    responses(
        (status = 200, description = "Released", body = KeyBody),
        (status = 400, description = "invalid_name, invalid_lease_id, invalid_json", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
        (status = 409, description = "not_leased, lease_mismatch", body = ErrorBody),
    )
)]
async fn release_key(
    State(state): State<AppState>,
    KeyPath { pool, key }: KeyPath,
    JsonBody(body): JsonBody<LeaseIdBody>,
) -> Result<Json<KeyBody>, ApiError> {
    let view = state.store.release_key(&pool, &key, body.lease_id).await?;
    Ok(Json(view.into()))
}

/// Keep a key alive (and with its lease id, the lease).
#[utoipa::path(
    post, path = "/v1/pools/{pool}/keys/{key}/keepalive", tag = "pools",
    params(KeyPath),
    request_body(content = Option<LeaseIdBody>, description = "With the current lease id, the lease is extended too; may be empty"),
    responses(
        (status = 200, description = "Kept alive", body = KeyBody),
        (status = 400, description = "invalid_name, invalid_lease_id, invalid_json", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
        (status = 409, description = "lease_mismatch", body = ErrorBody),
    )
)]
async fn keepalive_key(
    State(state): State<AppState>,
    KeyPath { pool, key }: KeyPath,
    JsonBody(body): JsonBody<LeaseIdBody>,
) -> Result<Json<KeyBody>, ApiError> {
    let view = state
        .store
        .keepalive_key(&pool, &key, body.lease_id)
        .await?;
    Ok(Json(view.into()))
}

/// A key's state.
#[utoipa::path(
    get, path = "/v1/pools/{pool}/keys/{key}", tag = "pools",
    params(KeyPath),
    responses(
        (status = 200, description = "The key", body = KeyBody),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
    )
)]
async fn get_key(
    State(state): State<AppState>,
    KeyPath { pool, key }: KeyPath,
) -> Result<Json<KeyBody>, ApiError> {
    Ok(Json(state.store.get_key(&pool, &key).await?.into()))
}

/// Purge a key.
#[utoipa::path(
    delete, path = "/v1/pools/{pool}/keys/{key}", tag = "pools",
    params(KeyPath),
    responses(
        (status = 204, description = "Purged"),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
    )
)]
async fn delete_key(
    State(state): State<AppState>,
    KeyPath { pool, key }: KeyPath,
) -> Result<StatusCode, ApiError> {
    state.store.delete_key(&pool, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The keyspace object. Counts above 2^53 lose digits in JavaScript and
/// jq, which read JSON numbers as doubles: `capacity_str` and
/// `remaining_str` repeat the two that can be that large as exact decimal
/// strings.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyspaceBody {
    name: String,
    alphabet: String,
    length: u32,
    capacity: u128,
    /// `capacity` as an exact decimal string.
    #[schema(pattern = "^[0-9]+$")]
    capacity_str: String,
    issued: u128,
    activated: u128,
    remaining: u128,
    /// `remaining` as an exact decimal string.
    #[schema(pattern = "^[0-9]+$")]
    remaining_str: String,
}

impl From<KeyspaceView> for KeyspaceBody {
    fn from(k: KeyspaceView) -> Self {
        Self {
            name: k.name.to_string(),
            alphabet: k.spec.alphabet().as_str().to_owned(),
            length: k.spec.length(),
            capacity: k.info.capacity,
            capacity_str: k.info.capacity.to_string(),
            issued: k.info.issued,
            activated: k.info.activated,
            remaining: k.info.remaining,
            remaining_str: k.info.remaining.to_string(),
        }
    }
}

/// Body of `PUT /v1/keyspaces/{ks}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyspaceDefBody {
    // Both are required; `Option` only lets the handler name what is
    // missing in its own words.
    #[schema(required = true, nullable = false, min_length = 2)]
    alphabet: Option<String>,
    #[schema(required = true, nullable = false, minimum = 1)]
    length: Option<u32>,
}

impl BodyError for KeyspaceDefBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidKeyspace(message)
    }
}

/// Create a keyspace (200 if an identical one exists).
#[utoipa::path(
    put, path = "/v1/keyspaces/{ks}", tag = "keyspaces",
    params(KeyspacePath),
    request_body(content = KeyspaceDefBody, description = "Alphabet and length"),
    responses(
        (status = 201, description = "Created", body = KeyspaceBody),
        (status = 200, description = "An identical keyspace exists", body = KeyspaceBody),
        (status = 400, description = "invalid_name, invalid_keyspace, invalid_json", body = ErrorBody),
        (status = 409, description = "keyspace_immutable, keyspace_limit_reached (--max-keyspaces)", body = ErrorBody),
    )
)]
async fn put_keyspace(
    State(state): State<AppState>,
    KeyspacePath { ks }: KeyspacePath,
    JsonBody(body): JsonBody<KeyspaceDefBody>,
) -> Result<Response, ApiError> {
    let (Some(alphabet), Some(length)) = (body.alphabet, body.length) else {
        return Err(ApiError::InvalidKeyspace(
            "the body needs \"alphabet\" (a string) and \"length\" (an integer)".into(),
        ));
    };
    let spec = KeyspaceSpec::new(&alphabet, length)
        .map_err(|e| ApiError::from(crate::store::StoreError::from(e)))?;
    let (view, upsert) = state.store.put_keyspace(&ks, spec).await?;
    Ok((status_for(upsert), Json(KeyspaceBody::from(view))).into_response())
}

/// A keyspace's definition and counts.
#[utoipa::path(
    get, path = "/v1/keyspaces/{ks}", tag = "keyspaces",
    params(KeyspacePath),
    responses(
        (status = 200, description = "The keyspace", body = KeyspaceBody),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "keyspace_not_found", body = ErrorBody),
    )
)]
async fn get_keyspace(
    State(state): State<AppState>,
    KeyspacePath { ks }: KeyspacePath,
) -> Result<Json<KeyspaceBody>, ApiError> {
    Ok(Json(state.store.keyspace_info(&ks).await?.into()))
}

/// Delete a keyspace and its activations.
#[utoipa::path(
    delete, path = "/v1/keyspaces/{ks}", tag = "keyspaces",
    params(KeyspacePath),
    responses(
        (status = 204, description = "Deleted: the name is free at once; the activations' storage is reclaimed in bounded background steps"),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "keyspace_not_found", body = ErrorBody),
        (status = 409, description = "cannot_delete_default", body = ErrorBody),
    )
)]
async fn delete_keyspace(
    State(state): State<AppState>,
    KeyspacePath { ks }: KeyspacePath,
) -> Result<StatusCode, ApiError> {
    state.store.delete_keyspace(&ks).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of keyspaces.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyspacesPage {
    /// Keyspaces ordered by name, each as `GET /v1/keyspaces/{ks}` gives it.
    keyspaces: Vec<KeyspaceBody>,
    /// Pass as `cursor` for the next page; `null` after the last page.
    next_cursor: Option<String>,
}

/// List keyspaces by name, a page at a time.
#[utoipa::path(
    get, path = "/v1/keyspaces", tag = "keyspaces",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keyspaces", body = KeyspacesPage),
        (status = 400, description = "invalid_query", body = ErrorBody),
    )
)]
async fn list_keyspaces(
    State(state): State<AppState>,
    query: PageQuery,
) -> Result<Json<KeyspacesPage>, ApiError> {
    let page = state.store.list_keyspaces(&query.request()).await?;
    Ok(Json(KeyspacesPage {
        keyspaces: page.items.into_iter().map(KeyspaceBody::from).collect(),
        next_cursor: page.next.as_deref().map(encode_cursor),
    }))
}

/// Reply to an issue: the token and how many are left.
#[derive(Serialize, ToSchema)]
pub(crate) struct IssuedBody {
    token: String,
    remaining: u128,
    /// `remaining` as an exact decimal string (see the keyspace object).
    #[schema(pattern = "^[0-9]+$")]
    remaining_str: String,
}

/// Body of `POST /v1/keyspaces/{ks}/tokens`: empty or `{}`. A body that
/// asks for more (say `{"count": 5}`) is refused rather than answered with
/// one token, until bulk issue exists.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(max_properties = 0)]
pub(crate) struct IssueBody {}

impl BodyError for IssueBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidBody(format!(
            "this route issues one token and takes no body fields (bulk issue does not exist): {message}"
        ))
    }
}

/// Issue one token.
#[utoipa::path(
    post, path = "/v1/keyspaces/{ks}/tokens", tag = "keyspaces",
    params(KeyspacePath),
    request_body(content = Option<IssueBody>, description = "Empty or `{}`: one token per request"),
    responses(
        (status = 201, description = "Issued", body = IssuedBody),
        (status = 400, description = "invalid_name, invalid_body, invalid_json", body = ErrorBody),
        (status = 404, description = "keyspace_not_found", body = ErrorBody),
        (status = 409, description = "keyspace_exhausted", body = ErrorBody),
    )
)]
async fn issue_token(
    State(state): State<AppState>,
    KeyspacePath { ks }: KeyspacePath,
    JsonBody(IssueBody {}): JsonBody<IssueBody>,
) -> Result<(StatusCode, Json<IssuedBody>), ApiError> {
    let Issued {
        token, remaining, ..
    } = state.store.issue_token(&ks).await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedBody {
            token,
            remaining,
            remaining_str: remaining.to_string(),
        }),
    ))
}

/// Whether an issued token was activated.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenState {
    /// Issued, not activated: `activated_at` is `null`.
    Issued,
    /// Activated at `activated_at`.
    Activated,
}

/// The token object.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenBody {
    token: String,
    state: TokenState,
    activated_at: Option<String>,
}

impl From<TokenStatus> for TokenBody {
    fn from(t: TokenStatus) -> Self {
        Self {
            state: if t.activated_at.is_some() {
                TokenState::Activated
            } else {
                TokenState::Issued
            },
            activated_at: t.activated_at.map(|at| at.to_string()),
            token: t.token,
        }
    }
}

/// Whether a token was issued and activated.
#[utoipa::path(
    get, path = "/v1/keyspaces/{ks}/tokens/{token}", tag = "keyspaces",
    params(TokenPath),
    responses(
        (status = 200, description = "The token", body = TokenBody),
        (status = 400, description = "invalid_name, invalid_token", body = ErrorBody),
        (status = 404, description = "keyspace_not_found, token_not_issued", body = ErrorBody),
    )
)]
async fn token_status(
    State(state): State<AppState>,
    TokenPath { ks, token }: TokenPath,
) -> Result<Json<TokenBody>, ApiError> {
    Ok(Json(state.store.token_status(&ks, &token).await?.into()))
}

/// Activate a token, once.
#[utoipa::path(
    post, path = "/v1/keyspaces/{ks}/tokens/{token}/activate", tag = "keyspaces",
    params(TokenPath),
    responses(
        (status = 200, description = "Activated", body = TokenBody),
        (status = 400, description = "invalid_name, invalid_token", body = ErrorBody),
        (status = 404, description = "keyspace_not_found, token_not_issued", body = ErrorBody),
        (status = 409, description = "already_activated", body = ErrorBody),
    )
)]
async fn activate_token(
    State(state): State<AppState>,
    TokenPath { ks, token }: TokenPath,
) -> Result<Json<TokenBody>, ApiError> {
    Ok(Json(state.store.activate_token(&ks, &token).await?.into()))
}
