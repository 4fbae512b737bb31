//! The native API under `/v1`: pools and keyspaces, JSON in and out.
//!
//! Times are RFC 3339 UTC with milliseconds; TTLs are integer milliseconds.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, BodyError, JsonBody, PathParts};
use crate::core::{Issued, KeyLength, KeyView, KeyspaceSpec, Name, TokenStatus, Ttl};
use crate::store::{KeyspaceView, PoolInfo, PoolPatch, Upsert};

/// Most keys one generate request may ask for.
pub const MAX_GENERATE: u64 = 10_000;

/// The `/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/pools/{pool}", get(get_pool).put(put_pool))
        .route("/v1/pools/{pool}/keys", post(generate_keys))
        .route("/v1/pools/{pool}/lease", post(lease_key))
        .route(
            "/v1/pools/{pool}/keys/{key}",
            get(get_key).delete(delete_key),
        )
        .route("/v1/pools/{pool}/keys/{key}/release", post(release_key))
        .route("/v1/pools/{pool}/keys/{key}/keepalive", post(keepalive_key))
        .route("/v1/keyspaces/{ks}", get(get_keyspace).put(put_keyspace))
        .route("/v1/keyspaces/{ks}/tokens", post(issue_token))
        .route("/v1/keyspaces/{ks}/tokens/{token}", get(token_status))
        .route(
            "/v1/keyspaces/{ks}/tokens/{token}/activate",
            post(activate_token),
        )
}

fn name(s: &str) -> Result<Name, ApiError> {
    Name::parse(s).map_err(|e| ApiError::InvalidName(format!("{e}; got {:?}", truncate(s))))
}

/// At most 64 characters of client input, for error messages.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn status_for(upsert: Upsert) -> StatusCode {
    match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Existed => StatusCode::OK,
    }
}

/// The pool object.
#[derive(Serialize)]
pub struct PoolBody {
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

/// The key object.
#[derive(Serialize)]
pub struct KeyBody {
    key: String,
    state: &'static str,
    created_at: String,
    alive_until: String,
    lease_id: Option<u64>,
    leased_until: Option<String>,
}

impl From<KeyView> for KeyBody {
    fn from(k: KeyView) -> Self {
        Self {
            state: if k.lease.is_some() { "leased" } else { "free" },
            created_at: k.created_at.to_string(),
            alive_until: k.alive_until.to_string(),
            lease_id: k.lease.map(|l| l.id),
            leased_until: k.lease.map(|l| l.until.to_string()),
            key: k.key,
        }
    }
}

/// Body of `PUT /v1/pools/{pool}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PoolSettingsBody {
    lease_ttl_ms: Option<u64>,
    keepalive_ttl_ms: Option<u64>,
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
async fn put_pool(
    State(state): State<AppState>,
    PathParts(pool): PathParts<String>,
    JsonBody(body): JsonBody<PoolSettingsBody>,
) -> Result<Response, ApiError> {
    let pool = name(&pool)?;
    let patch = body.parse()?;
    let (info, upsert) = state.store.put_pool(&pool, patch).await?;
    Ok((status_for(upsert), Json(PoolBody::from(info))).into_response())
}

/// A pool's settings and counts.
async fn get_pool(
    State(state): State<AppState>,
    PathParts(pool): PathParts<String>,
) -> Result<Json<PoolBody>, ApiError> {
    let pool = name(&pool)?;
    Ok(Json(state.store.pool_info(&pool).await?.into()))
}

/// Body of `POST /v1/pools/{pool}/keys`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    count: Option<u64>,
}

impl BodyError for GenerateBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidCount(message)
    }
}

#[derive(Serialize)]
struct KeysBody {
    keys: Vec<KeyBody>,
}

/// Generate keys (the pool is made with defaults if absent).
async fn generate_keys(
    State(state): State<AppState>,
    PathParts(pool): PathParts<String>,
    JsonBody(body): JsonBody<GenerateBody>,
) -> Result<(StatusCode, Json<KeysBody>), ApiError> {
    let pool = name(&pool)?;
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
async fn lease_key(
    State(state): State<AppState>,
    PathParts(pool): PathParts<String>,
) -> Result<Json<KeyBody>, ApiError> {
    let pool = name(&pool)?;
    Ok(Json(state.store.lease_key(&pool).await?.into()))
}

/// Body of release and keep-alive.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LeaseIdBody {
    lease_id: Option<u64>,
}

impl BodyError for LeaseIdBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidLeaseId(message)
    }
}

/// End a lease now.
async fn release_key(
    State(state): State<AppState>,
    PathParts((pool, key)): PathParts<(String, String)>,
    JsonBody(body): JsonBody<LeaseIdBody>,
) -> Result<Json<KeyBody>, ApiError> {
    let pool = name(&pool)?;
    let view = state.store.release_key(&pool, &key, body.lease_id).await?;
    Ok(Json(view.into()))
}

/// Keep a key alive (and with its lease id, the lease).
async fn keepalive_key(
    State(state): State<AppState>,
    PathParts((pool, key)): PathParts<(String, String)>,
    JsonBody(body): JsonBody<LeaseIdBody>,
) -> Result<Json<KeyBody>, ApiError> {
    let pool = name(&pool)?;
    let view = state
        .store
        .keepalive_key(&pool, &key, body.lease_id)
        .await?;
    Ok(Json(view.into()))
}

/// A key's state.
async fn get_key(
    State(state): State<AppState>,
    PathParts((pool, key)): PathParts<(String, String)>,
) -> Result<Json<KeyBody>, ApiError> {
    let pool = name(&pool)?;
    Ok(Json(state.store.get_key(&pool, &key).await?.into()))
}

/// Purge a key.
async fn delete_key(
    State(state): State<AppState>,
    PathParts((pool, key)): PathParts<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let pool = name(&pool)?;
    state.store.delete_key(&pool, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The keyspace object.
#[derive(Serialize)]
pub struct KeyspaceBody {
    name: String,
    alphabet: String,
    length: u32,
    capacity: u128,
    issued: u128,
    activated: u128,
    remaining: u128,
}

impl From<KeyspaceView> for KeyspaceBody {
    fn from(k: KeyspaceView) -> Self {
        Self {
            name: k.name.to_string(),
            alphabet: k.spec.alphabet().as_str().to_owned(),
            length: k.spec.length(),
            capacity: k.info.capacity,
            issued: k.info.issued,
            activated: k.info.activated,
            remaining: k.info.remaining,
        }
    }
}

/// Body of `PUT /v1/keyspaces/{ks}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceDefBody {
    alphabet: Option<String>,
    length: Option<u32>,
}

impl BodyError for KeyspaceDefBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidKeyspace(message)
    }
}

/// Create a keyspace (200 if an identical one exists).
async fn put_keyspace(
    State(state): State<AppState>,
    PathParts(ks): PathParts<String>,
    JsonBody(body): JsonBody<KeyspaceDefBody>,
) -> Result<Response, ApiError> {
    let ks = name(&ks)?;
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
async fn get_keyspace(
    State(state): State<AppState>,
    PathParts(ks): PathParts<String>,
) -> Result<Json<KeyspaceBody>, ApiError> {
    let ks = name(&ks)?;
    Ok(Json(state.store.keyspace_info(&ks).await?.into()))
}

#[derive(Serialize)]
struct IssuedBody {
    token: String,
    remaining: u128,
}

/// Issue one token.
async fn issue_token(
    State(state): State<AppState>,
    PathParts(ks): PathParts<String>,
) -> Result<(StatusCode, Json<IssuedBody>), ApiError> {
    let ks = name(&ks)?;
    let Issued {
        token, remaining, ..
    } = state.store.issue_token(&ks).await?;
    Ok((StatusCode::CREATED, Json(IssuedBody { token, remaining })))
}

/// The token object.
#[derive(Serialize)]
pub struct TokenBody {
    token: String,
    state: &'static str,
    activated_at: Option<String>,
}

impl From<TokenStatus> for TokenBody {
    fn from(t: TokenStatus) -> Self {
        Self {
            state: if t.activated_at.is_some() {
                "activated"
            } else {
                "issued"
            },
            activated_at: t.activated_at.map(|at| at.to_string()),
            token: t.token,
        }
    }
}

/// Whether a token was issued and activated.
async fn token_status(
    State(state): State<AppState>,
    PathParts((ks, token)): PathParts<(String, String)>,
) -> Result<Json<TokenBody>, ApiError> {
    let ks = name(&ks)?;
    Ok(Json(state.store.token_status(&ks, &token).await?.into()))
}

/// Activate a token, once.
async fn activate_token(
    State(state): State<AppState>,
    PathParts((ks, token)): PathParts<(String, String)>,
) -> Result<Json<TokenBody>, ApiError> {
    let ks = name(&ks)?;
    Ok(Json(state.store.activate_token(&ks, &token).await?.into()))
}
