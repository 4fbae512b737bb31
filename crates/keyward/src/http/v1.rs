//! The native API under `/v1`: pools and keyspaces, JSON in and out.
//!
//! Times are RFC 3339 UTC with milliseconds; TTLs are integer milliseconds.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{
    ActivationPath, BatchPath, BodyError, JsonBody, KeyPath, KeyspacePath, PoolPath, TokenPath,
};
use super::idempotency::{Idempotent, apply};
use super::metrics::Metrics;
use super::page::{KeyPageQuery, PageQuery, encode_cursor};
use super::{ApiError, AppState};
use crate::core::{
    Fingerprint, Issued, KeyLength, KeyView, KeyspaceSpec, Labels, MaxActivations, MaxFailures,
    Name, Outcome, PoolKey, Reason, Timestamp, TokenState, TokenStatus, Ttl,
};
use crate::store::{Change, Effect, KeyspaceView, NewKeys, PoolInfo, PoolPatch, Recorded, Upsert};

/// Most keys one generate request may ask for.
pub const MAX_GENERATE: u64 = 10_000;

/// The `/v1` routes, each documented in the OpenAPI document.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pools))
        .routes(routes!(get_pool, put_pool, delete_pool))
        .routes(routes!(add_keys, list_keys))
        .routes(routes!(lease_key))
        .routes(routes!(get_key, delete_key))
        .routes(routes!(release_key))
        .routes(routes!(keepalive_key))
        .routes(routes!(disable_key))
        .routes(routes!(enable_key))
        .routes(routes!(list_keyspaces))
        .routes(routes!(get_keyspace, put_keyspace, delete_keyspace))
        .routes(routes!(issue_token))
        .routes(routes!(token_status))
        .routes(routes!(activate_token))
        .routes(routes!(revoke_token))
        .routes(routes!(deactivate_token))
        .routes(routes!(get_batch))
}

fn status_for(upsert: Upsert) -> StatusCode {
    match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Existed => StatusCode::OK,
    }
}

/// The answer to every change: its status and JSON body. The one place a
/// change's answer is made, so an idempotent replay (which the store
/// recorded from this function's output) is byte for byte the first
/// answer.
pub(crate) fn render(effect: &Effect) -> Recorded {
    fn json(status: StatusCode, body: &impl Serialize) -> Recorded {
        Recorded {
            status: status.as_u16(),
            body: serde_json::to_vec(body)
                .expect("answer bodies are plain structs that always serialize")
                .into(),
        }
    }
    match effect {
        Effect::Pool(info, upsert) => json(status_for(*upsert), &PoolBody::from(info.clone())),
        Effect::Added(added) => json(
            StatusCode::CREATED,
            &KeysBody {
                keys: added.added.iter().cloned().map(KeyBody::from).collect(),
                existing: added.existing.clone(),
            },
        ),
        Effect::Key(view) => json(StatusCode::OK, &KeyBody::from(view.clone())),
        Effect::Deleted => Recorded {
            status: StatusCode::NO_CONTENT.as_u16(),
            body: Default::default(),
        },
        Effect::Keyspace(view, upsert) => {
            json(status_for(*upsert), &KeyspaceBody::from(view.clone()))
        }
        Effect::Issued(Issued {
            token, remaining, ..
        }) => json(
            StatusCode::CREATED,
            &IssuedBody {
                token: token.clone(),
                remaining: *remaining,
                remaining_str: remaining.to_string(),
            },
        ),
        Effect::IssuedMany(issued) => json(
            StatusCode::CREATED,
            &IssuedManyBody {
                tokens: issued.tokens.clone(),
                remaining: issued.remaining,
                remaining_str: issued.remaining.to_string(),
            },
        ),
        Effect::Token(status) => json(StatusCode::OK, &TokenBody::from(status.clone())),
    }
}

/// The pool object. The five counts add up to `total`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PoolBody {
    name: String,
    lease_ttl_ms: u64,
    /// 0: keys never need a keep-alive.
    keepalive_ttl_ms: u64,
    key_length: usize,
    /// How long a key reported `rate_limited` without `retry_after_ms`
    /// cools down.
    cooldown_ms: u64,
    /// Consecutive `failed` outcomes that quarantine a key.
    max_failures: u32,
    /// The first quarantine's length; doubled for each further one in a
    /// row, up to 24 h.
    quarantine_ms: u64,
    total: u64,
    free: u64,
    leased: u64,
    cooling: u64,
    quarantined: u64,
    disabled: u64,
}

impl From<PoolInfo> for PoolBody {
    fn from(p: PoolInfo) -> Self {
        let (s, n) = (p.settings, p.stats);
        Self {
            name: p.name.to_string(),
            lease_ttl_ms: s.lease_ttl.as_millis(),
            keepalive_ttl_ms: if s.no_keepalive {
                0
            } else {
                s.keepalive_ttl.as_millis()
            },
            key_length: s.key_length.get(),
            cooldown_ms: s.recovery.cooldown.as_millis(),
            max_failures: s.recovery.max_failures.get(),
            quarantine_ms: s.recovery.quarantine.as_millis(),
            total: n.total,
            free: n.free,
            leased: n.leased,
            cooling: n.cooling,
            quarantined: n.quarantined,
            disabled: n.disabled,
        }
    }
}

/// Where a key stands. Only `free` keys are leased.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KeyState {
    /// Can be leased: `lease_id` and `leased_until` are `null`.
    Free,
    /// Leased until `leased_until`, under `lease_id`.
    Leased,
    /// Reported `rate_limited`: free again at `available_at`.
    Cooling,
    /// Failed `max_failures` times in a row: free again, on probation, at
    /// `available_at`.
    Quarantined,
    /// Out of use until enabled.
    Disabled,
}

impl From<crate::core::KeyState> for KeyState {
    fn from(s: crate::core::KeyState) -> Self {
        use crate::core::KeyState as S;
        match s {
            S::Free => Self::Free,
            S::Leased => Self::Leased,
            S::Cooling => Self::Cooling,
            S::Quarantined => Self::Quarantined,
            S::Disabled => Self::Disabled,
        }
    }
}

// The body of every lease and release: its timestamps, labels and reason
// are written straight from the key's own values as it is serialized,
// not copied into strings first.
/// The key object.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyBody {
    key: String,
    state: KeyState,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    created_at: Timestamp,
    /// When the key is purged unless kept alive; `null` in a pool with
    /// `keepalive_ttl_ms: 0`.
    #[serde(serialize_with = "optional_rfc3339")]
    #[schema(value_type = Option<String>)]
    alive_until: Option<Timestamp>,
    lease_id: Option<u64>,
    #[serde(serialize_with = "optional_rfc3339")]
    #[schema(value_type = Option<String>)]
    leased_until: Option<Timestamp>,
    /// Labels given when the key was added; `{}` if none.
    #[serde(serialize_with = "label_map")]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    labels: Labels,
    /// When a `cooling` or `quarantined` key becomes `free` by itself;
    /// else `null`.
    #[serde(serialize_with = "optional_rfc3339")]
    #[schema(value_type = Option<String>)]
    available_at: Option<Timestamp>,
    /// Why the key is cooling, quarantined or disabled; else `null`.
    #[serde(serialize_with = "optional_reason")]
    #[schema(value_type = Option<String>)]
    reason: Option<Reason>,
    /// Consecutive `failed` outcomes.
    failures: u32,
}

impl From<KeyView> for KeyBody {
    fn from(k: KeyView) -> Self {
        Self {
            state: k.state.into(),
            created_at: k.created_at,
            alive_until: k.alive_deadline(),
            lease_id: k.lease.map(|l| l.id),
            leased_until: k.lease.map(|l| l.until),
            available_at: k.available_at,
            failures: k.failures,
            key: k.key,
            labels: k.labels,
            reason: k.reason,
        }
    }
}

/// A timestamp as its RFC 3339 text (`Timestamp`'s `Display`).
fn rfc3339<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

fn optional_rfc3339<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// The labels as a JSON object, in name order.
fn label_map<S: serde::Serializer>(labels: &Labels, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(labels.iter())
}

fn optional_reason<S: serde::Serializer>(r: &Option<Reason>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_str(r.as_str()),
        None => s.serialize_none(),
    }
}

/// Body of `PUT /v1/pools/{pool}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolSettingsBody {
    // The bounds repeat `Ttl::MAX_MILLIS`, `KeyLength` and `MaxFailures`
    // as literals (the derive takes nothing else); a test in tests/http
    // compares them.
    #[schema(nullable = false, minimum = 1, maximum = 3153600000000.0)]
    lease_ttl_ms: Option<u64>,
    /// 0: keys never need a keep-alive (for upstream credentials).
    #[schema(nullable = false, minimum = 0, maximum = 3153600000000.0)]
    keepalive_ttl_ms: Option<u64>,
    #[schema(nullable = false, minimum = 8, maximum = 128)]
    key_length: Option<u64>,
    #[schema(nullable = false, minimum = 1, maximum = 3153600000000.0)]
    cooldown_ms: Option<u64>,
    #[schema(nullable = false, minimum = 1, maximum = 1000)]
    max_failures: Option<u64>,
    #[schema(nullable = false, minimum = 1, maximum = 3153600000000.0)]
    quarantine_ms: Option<u64>,
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
        let keepalive_ttl = match self.keepalive_ttl_ms {
            Some(0) => Some(None),
            ms => ttl(ms, "keepalive_ttl_ms")
                .map_err(|_| {
                    ApiError::InvalidSettings(format!(
                        "keepalive_ttl_ms must be 0 (no keep-alive needed) or an integer from 1 \
                         to {}",
                        Ttl::MAX_MILLIS
                    ))
                })?
                .map(Some),
        };
        Ok(PoolPatch {
            lease_ttl: ttl(self.lease_ttl_ms, "lease_ttl_ms")?,
            keepalive_ttl,
            key_length: self
                .key_length
                .map(|n| {
                    KeyLength::new(n).ok_or_else(|| {
                        ApiError::InvalidSettings("key_length must be from 8 to 128".into())
                    })
                })
                .transpose()?,
            cooldown: ttl(self.cooldown_ms, "cooldown_ms")?,
            max_failures: self
                .max_failures
                .map(|n| {
                    MaxFailures::new(n).ok_or_else(|| {
                        ApiError::InvalidSettings("max_failures must be from 1 to 1000".into())
                    })
                })
                .transpose()?,
            quarantine: ttl(self.quarantine_ms, "quarantine_ms")?,
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
    idem: Idempotent,
    PoolPath { pool }: PoolPath,
    JsonBody(body): JsonBody<PoolSettingsBody>,
) -> Result<Response, ApiError> {
    let patch = body.parse()?;
    apply(&state, idem, Change::PutPool { pool, patch }).await
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
    idem: Idempotent,
    PoolPath { pool }: PoolPath,
) -> Result<Response, ApiError> {
    apply(&state, idem, Change::DeletePool { pool }).await
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

/// Body of `POST /v1/pools/{pool}/keys`: `keys` to import them, else
/// `count` to generate that many (1 by default); `labels` go on each.
/// `keys`, `count` and `labels` are read by hand so that each names its
/// own error code.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddKeysBody {
    // `maximum` repeats `MAX_GENERATE`; a test in tests/http compares them.
    #[schema(value_type = Option<u64>, nullable = false, minimum = 1, maximum = 10000, default = 1)]
    count: Option<serde_json::Value>,
    /// Keys to import: 1-10000 of them, each 1-256 visible ASCII
    /// characters (`!` to `~`).
    #[schema(value_type = Option<Vec<String>>, nullable = false, min_items = 1, max_items = 10000)]
    keys: Option<serde_json::Value>,
    /// Labels of every new key: at most 32; names 1-64 of
    /// `[A-Za-z0-9._/-]`, values up to 256 characters, no control
    /// characters.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>, nullable = false)]
    labels: Option<serde_json::Value>,
}

impl BodyError for AddKeysBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidCount(message)
    }
}

impl AddKeysBody {
    fn parse(self) -> Result<(NewKeys, Labels), ApiError> {
        let labels = match self.labels {
            None => Labels::default(),
            Some(serde_json::Value::Object(map)) => {
                let mut pairs = Vec::with_capacity(map.len());
                for (name, value) in map {
                    let serde_json::Value::String(value) = value else {
                        return Err(ApiError::InvalidLabels(format!(
                            "the value of label {name:?} must be a string"
                        )));
                    };
                    pairs.push((name, value));
                }
                Labels::parse(pairs).map_err(|e| ApiError::InvalidLabels(e.to_string()))?
            }
            Some(_) => {
                return Err(ApiError::InvalidLabels(
                    "labels must be an object of string values".into(),
                ));
            }
        };
        let keys = match (self.keys, self.count) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidKeys(
                    "give keys to import or a count to generate, not both".into(),
                ));
            }
            (Some(keys), None) => NewKeys::Import(parse_import(keys)?),
            (None, count) => {
                let count = count.map_or(Some(1), |c| c.as_u64()).unwrap_or(0);
                if !(1..=MAX_GENERATE).contains(&count) {
                    return Err(ApiError::InvalidCount(format!(
                        "count must be an integer from 1 to {MAX_GENERATE}"
                    )));
                }
                NewKeys::Generate(count as usize)
            }
        };
        Ok((keys, labels))
    }
}

/// The keys of an import, validated. The message names a bad key by its
/// position only: keys are secrets, and error texts end up in logs.
fn parse_import(keys: serde_json::Value) -> Result<Vec<PoolKey>, ApiError> {
    let serde_json::Value::Array(items) = keys else {
        return Err(ApiError::InvalidKeys(
            "keys must be an array of strings".into(),
        ));
    };
    if !(1..=MAX_GENERATE as usize).contains(&items.len()) {
        return Err(ApiError::InvalidKeys(format!(
            "keys must hold 1 to {MAX_GENERATE} keys"
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .and_then(|k| PoolKey::parse(k).ok())
                .ok_or_else(|| {
                    ApiError::InvalidKeys(format!(
                        "keys[{i}] must be a string of 1 to {} visible ASCII characters (! to ~)",
                        PoolKey::MAX_LEN
                    ))
                })
        })
        .collect()
}

/// Reply to an add: the new keys, and (for an import) the given keys that
/// were already in the pool.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeysBody {
    /// The keys added, as they now are.
    keys: Vec<KeyBody>,
    /// Imported keys that were already in the pool, left unchanged.
    existing: Vec<String>,
}

/// Generate keys, or import your own (the pool is made with defaults if
/// absent).
#[utoipa::path(
    post, path = "/v1/pools/{pool}/keys", tag = "pools",
    params(PoolPath),
    request_body(content = Option<AddKeysBody>, description = "`keys` to import, or `count` to generate (1-10000, default 1), with optional `labels`; may be empty"),
    responses(
        (status = 201, description = "Added", body = KeysBody),
        (status = 400, description = "invalid_name, invalid_count, invalid_keys, invalid_labels, invalid_json", body = ErrorBody),
        (status = 409, description = "key_limit_reached (--max-keys-per-pool), pool_limit_reached (--max-pools); nothing added", body = ErrorBody),
    )
)]
async fn add_keys(
    State(state): State<AppState>,
    idem: Idempotent,
    PoolPath { pool }: PoolPath,
    JsonBody(body): JsonBody<AddKeysBody>,
) -> Result<Response, ApiError> {
    let (keys, labels) = body.parse()?;
    apply(&state, idem, Change::AddKeys { pool, keys, labels }).await
}

/// A page of keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeysPage {
    /// Keys in an order that is stable between pages.
    keys: Vec<KeyBody>,
    /// Pass as `cursor` for the next page; `null` after the last page.
    next_cursor: Option<String>,
}

/// List a pool's keys, optionally in one state, a page at a time.
#[utoipa::path(
    get, path = "/v1/pools/{pool}/keys", tag = "pools",
    params(PoolPath, KeyPageQuery, PageQuery),
    responses(
        (status = 200, description = "A page of keys", body = KeysPage),
        (status = 400, description = "invalid_name, invalid_query", body = ErrorBody),
        (status = 404, description = "pool_not_found", body = ErrorBody),
    )
)]
async fn list_keys(
    State(state): State<AppState>,
    PoolPath { pool }: PoolPath,
    query: KeyPageQuery,
) -> Result<Json<KeysPage>, ApiError> {
    let page = state
        .store
        .list_keys(&pool, query.state, &query.page.request())
        .await?;
    Ok(Json(KeysPage {
        keys: page.items.into_iter().map(KeyBody::from).collect(),
        next_cursor: page.next.as_deref().map(encode_cursor),
    }))
}

/// Body of lease.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseBody {
    /// With no free key, wait up to this long for one (first come, first
    /// served); 0, the default, answers at once.
    #[schema(nullable = false, minimum = 0, maximum = 30000, default = 0)]
    wait_ms: Option<u64>,
}

impl BodyError for LeaseBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidWait(message)
    }
}

/// Lease a uniformly random free key, waiting for one if asked.
#[utoipa::path(
    post, path = "/v1/pools/{pool}/lease", tag = "pools",
    params(PoolPath),
    request_body(content = Option<LeaseBody>, description = "Optional `wait_ms`; may be empty"),
    responses(
        (status = 200, description = "A uniformly random free key (or the first one freed while waiting), now leased", body = KeyBody),
        (status = 400, description = "invalid_name, invalid_wait, invalid_json", body = ErrorBody),
        (status = 404, description = "no_free_key (after `wait_ms`); with `retry_after_ms` and a `Retry-After` header (whole seconds, rounded up) when a lease, cooldown or quarantine will end by itself", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds (at least 1) until a key may be free; only with `retry_after_ms`"))),
        (status = 503, description = "shutting_down: the server stopped while the lease waited", body = ErrorBody),
    )
)]
async fn lease_key(
    State(state): State<AppState>,
    axum::Extension(metrics): axum::Extension<std::sync::Arc<Metrics>>,
    idem: Idempotent,
    PoolPath { pool }: PoolPath,
    JsonBody(body): JsonBody<LeaseBody>,
) -> Result<Response, ApiError> {
    let wait_ms = body.wait_ms.unwrap_or(0);
    let max = crate::store::MAX_WAIT.as_millis() as u64;
    if wait_ms > max {
        return Err(ApiError::InvalidWait(format!(
            "wait_ms must be an integer from 0 to {max}"
        )));
    }
    let wait = std::time::Duration::from_millis(wait_ms);
    if wait_ms == 0 {
        return apply(&state, idem, Change::Lease { pool, wait }).await;
    }
    let waiting = metrics.start_wait(&pool);
    let result = apply(&state, idem, Change::Lease { pool, wait }).await;
    let timed_out = matches!(result, Err(ApiError::NoFreeKey(_)))
        && waiting.elapsed().as_millis() >= u128::from(wait_ms);
    waiting.done(timed_out);
    result
}

/// Body of keep-alive.
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

/// How the holder's use of a key went.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutcomeName {
    /// The key worked: `free`, `failures` reset to 0.
    Ok,
    /// The upstream answered 429: `cooling` for `retry_after_ms`, else
    /// the pool's `cooldown_ms`.
    RateLimited,
    /// The key failed (401, 402, quota): `failures` + 1; at
    /// `max_failures`, `quarantined`.
    Failed,
}

/// Body of release. `outcome`, `retry_after_ms` and `reason` are read by
/// hand so that a bad one is 400 `invalid_outcome`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    #[schema(nullable = false)]
    lease_id: Option<u64>,
    /// `ok` by default.
    #[schema(value_type = Option<OutcomeName>, nullable = false)]
    outcome: Option<serde_json::Value>,
    /// Only with `rate_limited`: how long the upstream asked to wait.
    #[schema(value_type = Option<u64>, nullable = false, minimum = 1, maximum = 3153600000000.0)]
    retry_after_ms: Option<serde_json::Value>,
    /// Why (kept while the key cools or is quarantined): 1-256
    /// characters, no control characters. Never put a secret here.
    #[schema(value_type = Option<String>, nullable = false, min_length = 1, max_length = 256)]
    reason: Option<serde_json::Value>,
}

impl BodyError for ReleaseBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidLeaseId(message)
    }
}

impl ReleaseBody {
    fn parse(self) -> Result<(Option<u64>, Outcome, Option<Reason>), ApiError> {
        let bad = |m: &str| ApiError::InvalidOutcome(m.to_owned());
        let retry_after = self
            .retry_after_ms
            .map(|v| {
                v.as_u64().and_then(Ttl::from_millis).ok_or_else(|| {
                    ApiError::InvalidOutcome(format!(
                        "retry_after_ms must be an integer from 1 to {}",
                        Ttl::MAX_MILLIS
                    ))
                })
            })
            .transpose()?;
        let outcome = match self.outcome.as_ref().map(|v| v.as_str()) {
            None | Some(Some("ok")) => Outcome::Ok,
            Some(Some("rate_limited")) => Outcome::RateLimited { retry_after },
            Some(Some("failed")) => Outcome::Failed,
            Some(_) => return Err(bad("outcome must be one of ok, rate_limited, failed")),
        };
        if retry_after.is_some() && !matches!(outcome, Outcome::RateLimited { .. }) {
            return Err(bad("retry_after_ms goes only with outcome rate_limited"));
        }
        let reason = self
            .reason
            .map(|v| {
                v.as_str()
                    .and_then(|r| Reason::parse(r).ok())
                    .ok_or_else(|| bad(&crate::core::InvalidReason.to_string()))
            })
            .transpose()?;
        Ok((self.lease_id, outcome, reason))
    }
}

/// End a lease now, and report how the key did.
#[utoipa::path(
    post, path = "/v1/pools/{pool}/keys/{key}/release", tag = "pools",
    params(KeyPath),
    request_body(content = Option<ReleaseBody>, description = "Optional fencing lease id and outcome; may be empty (an `ok` release)"),
    responses(
        (status = 200, description = "Released: free, cooling or quarantined by the outcome", body = KeyBody),
        (status = 400, description = "invalid_name, invalid_lease_id, invalid_outcome, invalid_json", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
        (status = 409, description = "not_leased, lease_mismatch", body = ErrorBody),
    )
)]
async fn release_key(
    State(state): State<AppState>,
    axum::Extension(metrics): axum::Extension<std::sync::Arc<Metrics>>,
    idem: Idempotent,
    KeyPath { pool, key }: KeyPath,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<Response, ApiError> {
    let (lease_id, outcome, reason) = body.parse()?;
    let change = Change::Report {
        pool,
        key,
        lease_id,
        outcome,
        reason,
    };
    let response = apply(&state, idem, change).await?;
    if !response
        .headers()
        .contains_key(super::idempotency::REPLAYED)
    {
        metrics.outcome(outcome);
    }
    Ok(response)
}

/// Body of disable.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisableBody {
    /// Why: 1-256 characters, no control characters.
    #[schema(nullable = false, min_length = 1, max_length = 256)]
    reason: Option<String>,
}

impl BodyError for DisableBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidReason(message)
    }
}

/// Take a key out of use until enabled; a lease on it ends now.
#[utoipa::path(
    post, path = "/v1/pools/{pool}/keys/{key}/disable", tag = "pools",
    params(KeyPath),
    request_body(content = Option<DisableBody>, description = "Optional reason; may be empty"),
    responses(
        (status = 200, description = "Disabled", body = KeyBody),
        (status = 400, description = "invalid_name, invalid_reason, invalid_json", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
    )
)]
async fn disable_key(
    State(state): State<AppState>,
    idem: Idempotent,
    KeyPath { pool, key }: KeyPath,
    JsonBody(body): JsonBody<DisableBody>,
) -> Result<Response, ApiError> {
    let reason = body.reason.map(|r| Reason::parse(&r)).transpose()?;
    apply(&state, idem, Change::Disable { pool, key, reason }).await
}

/// Make a cooling, quarantined or disabled key free now, `failures` reset.
#[utoipa::path(
    post, path = "/v1/pools/{pool}/keys/{key}/enable", tag = "pools",
    params(KeyPath),
    responses(
        (status = 200, description = "Free (a free or leased key is unchanged)", body = KeyBody),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "key_not_found", body = ErrorBody),
    )
)]
async fn enable_key(
    State(state): State<AppState>,
    idem: Idempotent,
    KeyPath { pool, key }: KeyPath,
) -> Result<Response, ApiError> {
    apply(&state, idem, Change::Enable { pool, key }).await
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
    idem: Idempotent,
    KeyPath { pool, key }: KeyPath,
    JsonBody(body): JsonBody<LeaseIdBody>,
) -> Result<Response, ApiError> {
    let lease_id = body.lease_id;
    apply(
        &state,
        idem,
        Change::Keepalive {
            pool,
            key,
            lease_id,
        },
    )
    .await
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
    idem: Idempotent,
    KeyPath { pool, key }: KeyPath,
) -> Result<Response, ApiError> {
    apply(&state, idem, Change::DeleteKey { pool, key }).await
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
    /// Issued tokens holding at least one activation.
    activated: u128,
    /// Issued tokens revoked.
    revoked: u128,
    remaining: u128,
    /// `remaining` as an exact decimal string.
    #[schema(pattern = "^[0-9]+$")]
    remaining_str: String,
    /// Activation slots per token, 1-1000.
    #[schema(minimum = 1, maximum = 1000)]
    max_activations: u16,
    /// The preset the alphabet was named by (`digits`, `crockford`,
    /// `unambiguous`), `null` for listed characters.
    preset: Option<String>,
    /// How tokens are shown and read; `null`: bare tokens.
    format: Option<FormatBody>,
}

/// A token format: `prefix`, then the characters in groups of `group`
/// joined by `separator`, and with `check` one more character, a check
/// character (Damm's algorithm where the alphabet's size allows, else
/// Luhn mod N) that refuses a mistyped code before any lookup.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatBody {
    /// Characters per group, 1-16; absent or `null`: one group.
    #[schema(minimum = 1, maximum = 16)]
    group: Option<usize>,
    /// Between groups, 1-16 characters of none of the alphabet's
    /// (default `-`).
    #[schema(min_length = 1, max_length = 16)]
    separator: Option<String>,
    /// Shown before the code, up to 16 characters; optional when typed.
    #[schema(max_length = 16)]
    prefix: Option<String>,
    /// A check character at the end (default false).
    check: Option<bool>,
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
            revoked: k.info.revoked,
            remaining: k.info.remaining,
            remaining_str: k.info.remaining.to_string(),
            max_activations: k.info.max_activations.get(),
            preset: k.spec.preset().map(|p| p.name().to_owned()),
            format: k.spec.format().map(|f| {
                let (group, separator, prefix) = f.parts();
                FormatBody {
                    group,
                    separator: Some(separator.to_owned()),
                    prefix: Some(prefix.to_owned()),
                    check: Some(f.check()),
                }
            }),
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
    /// How tokens are shown and read; absent: bare tokens. Like the
    /// alphabet and length, it cannot change once the keyspace exists.
    #[schema(nullable = false)]
    format: Option<FormatBody>,
    /// Activation slots per token, 1-1000: the one field a later `PUT`
    /// may change. Absent: 1 for a new keyspace, unchanged for one that
    /// exists.
    #[schema(value_type = Option<u16>, nullable = false, minimum = 1, maximum = 1000)]
    max_activations: Option<serde_json::Value>,
}

impl BodyError for KeyspaceDefBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidKeyspace(message)
    }
}

/// Create a keyspace (200 if one with the same alphabet, length and format
/// exists; its `max_activations` is then set if given).
#[utoipa::path(
    put, path = "/v1/keyspaces/{ks}", tag = "keyspaces",
    params(KeyspacePath),
    request_body(content = KeyspaceDefBody, description = "Alphabet and length"),
    responses(
        (status = 201, description = "Created", body = KeyspaceBody),
        (status = 200, description = "A keyspace with this alphabet, length and format exists (`max_activations` set if given)", body = KeyspaceBody),
        (status = 400, description = "invalid_name, invalid_keyspace, invalid_json", body = ErrorBody),
        (status = 409, description = "keyspace_immutable, keyspace_limit_reached (--max-keyspaces)", body = ErrorBody),
    )
)]
async fn put_keyspace(
    State(state): State<AppState>,
    idem: Idempotent,
    KeyspacePath { ks }: KeyspacePath,
    JsonBody(body): JsonBody<KeyspaceDefBody>,
) -> Result<Response, ApiError> {
    let (Some(alphabet), Some(length)) = (body.alphabet, body.length) else {
        return Err(ApiError::InvalidKeyspace(
            "the body needs \"alphabet\" (a string) and \"length\" (an integer)".into(),
        ));
    };
    let invalid = |e: crate::core::KeyspaceError| ApiError::from(crate::store::StoreError::from(e));
    let mut spec = KeyspaceSpec::named(&alphabet, length).map_err(invalid)?;
    if let Some(f) = body.format {
        let format = crate::core::keyspace::Format::new(
            spec.alphabet(),
            f.group,
            f.separator.as_deref(),
            f.prefix.as_deref(),
            f.check.unwrap_or(false),
        )
        .map_err(invalid)?;
        spec = spec.with_format(format);
    }
    let max_activations = body
        .max_activations
        .map(|v| {
            v.as_u64().and_then(MaxActivations::new).ok_or_else(|| {
                ApiError::InvalidKeyspace(format!(
                    "max_activations must be an integer from 1 to {}",
                    MaxActivations::MAX
                ))
            })
        })
        .transpose()?;
    let change = Change::PutKeyspace {
        keyspace: ks,
        spec,
        max_activations,
    };
    apply(&state, idem, change).await
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
    idem: Idempotent,
    KeyspacePath { ks }: KeyspacePath,
) -> Result<Response, ApiError> {
    apply(&state, idem, Change::DeleteKeyspace { keyspace: ks }).await
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

/// Reply to a bulk issue: the tokens, in counter order, and how many are
/// left.
#[derive(Serialize, ToSchema)]
pub(crate) struct IssuedManyBody {
    tokens: Vec<String>,
    remaining: u128,
    /// `remaining` as an exact decimal string (see the keyspace object).
    #[schema(pattern = "^[0-9]+$")]
    remaining_str: String,
}

/// Most tokens one bulk issue may ask for.
pub const MAX_ISSUE: u32 = 10_000;

/// Body of `POST /v1/keyspaces/{ks}/tokens`: empty or `{}` for one token
/// (the single-token reply), or `{"count": n}` for n tokens at once; either
/// under a `batch` name.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueBody {
    /// 1-10000 tokens, all or nothing.
    #[schema(value_type = Option<u32>, nullable = false, minimum = 1, maximum = 10000)]
    count: Option<serde_json::Value>,
    /// The batch the tokens belong to: 1-64 of [A-Za-z0-9._-].
    #[schema(nullable = false)]
    batch: Option<String>,
}

impl BodyError for IssueBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidBody(format!(
            "this route takes an empty body, {{}}, or {{\"count\": n, \"batch\": name}} (both optional): {message}"
        ))
    }
}

/// Issue one token, or `count` tokens at once, optionally under a batch.
#[utoipa::path(
    post, path = "/v1/keyspaces/{ks}/tokens", tag = "keyspaces",
    params(KeyspacePath),
    request_body(content = Option<IssueBody>, description = "Empty or `{}`: one token; `{\"count\": n}`: n tokens at once (with `Accept: text/csv`, a CSV body); `batch`: the batch they are counted in"),
    responses(
        (status = 201, description = "Issued: `IssuedBody` for one token, `IssuedManyBody` for a count; with `count` and `Accept: text/csv`, CSV (a `token` header line, one token per line)", body = IssuedBody),
        (status = 400, description = "invalid_name, invalid_count, invalid_body, invalid_json", body = ErrorBody),
        (status = 404, description = "keyspace_not_found", body = ErrorBody),
        (status = 409, description = "keyspace_exhausted (nothing issued)", body = ErrorBody),
    )
)]
async fn issue_token(
    State(state): State<AppState>,
    idem: Idempotent,
    headers: axum::http::HeaderMap,
    KeyspacePath { ks }: KeyspacePath,
    JsonBody(body): JsonBody<IssueBody>,
) -> Result<Response, ApiError> {
    let batch = body
        .batch
        .map(|b| {
            Name::parse(&b).map_err(|e| ApiError::InvalidName(format!("batch: {e}; got {b:?}")))
        })
        .transpose()?;
    let Some(count) = body.count else {
        return apply(
            &state,
            idem,
            Change::Issue {
                keyspace: ks,
                batch,
            },
        )
        .await;
    };
    let count = count
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (1..=MAX_ISSUE).contains(n))
        .ok_or_else(|| {
            ApiError::InvalidCount(format!("count must be an integer from 1 to {MAX_ISSUE}"))
        })?;
    let response = apply(
        &state,
        idem,
        Change::IssueMany {
            keyspace: ks,
            count,
            batch,
        },
    )
    .await?;
    let csv = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if csv {
        return Ok(super::idempotency::as_csv(response).await);
    }
    Ok(response)
}

/// A token's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenStateBody {
    /// Issued, no activation slot taken: `activated_at` is `null`.
    Issued,
    /// At least one slot taken; `activated_at` is the first still held.
    Activated,
    /// Revoked for good (its activations are still listed).
    Revoked,
}

/// One taken activation slot.
#[derive(Serialize, ToSchema)]
pub(crate) struct ActivationBody {
    /// Who took it; `null`: a slot of its own.
    fingerprint: Option<String>,
    activated_at: String,
}

/// The token object. `token` is always the display form.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenBody {
    token: String,
    state: TokenStateBody,
    /// The first activation still held; `null` when none is.
    activated_at: Option<String>,
    /// Slots taken, oldest first.
    activations: Vec<ActivationBody>,
    /// The batch it was issued under; `null` for none.
    batch: Option<String>,
    /// Why it was revoked, if it was and a reason was given.
    reason: Option<String>,
    /// When it was revoked; `null` unless revoked.
    revoked_at: Option<String>,
}

impl From<TokenStatus> for TokenBody {
    fn from(t: TokenStatus) -> Self {
        let revoked = t.marks.revoked.as_ref();
        Self {
            state: match t.marks.state() {
                TokenState::Issued => TokenStateBody::Issued,
                TokenState::Activated => TokenStateBody::Activated,
                TokenState::Revoked => TokenStateBody::Revoked,
            },
            activated_at: t.activated_at().map(|at| at.to_string()),
            activations: t
                .marks
                .activations
                .iter()
                .map(|a| ActivationBody {
                    fingerprint: a.fingerprint.as_ref().map(|f| f.as_str().to_owned()),
                    activated_at: a.at.to_string(),
                })
                .collect(),
            batch: t.batch.as_ref().map(|b| b.to_string()),
            reason: revoked
                .and_then(|r| r.reason.as_ref())
                .map(|r| r.as_str().to_owned()),
            revoked_at: revoked.map(|r| r.at.to_string()),
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

/// Body of activate.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivateBody {
    /// Who activates (a machine id): the same fingerprint again is the
    /// same slot. 1-256 characters, no control characters. Absent: a slot
    /// of its own.
    #[schema(nullable = false, min_length = 1, max_length = 256)]
    fingerprint: Option<String>,
}

impl BodyError for ActivateBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidFingerprint(message)
    }
}

/// Take an activation slot of a token.
#[utoipa::path(
    post, path = "/v1/keyspaces/{ks}/tokens/{token}/activate", tag = "keyspaces",
    params(TokenPath),
    request_body(content = Option<ActivateBody>, description = "Optional fingerprint; may be empty"),
    responses(
        (status = 200, description = "Activated (or, for a fingerprint that holds a slot, unchanged)", body = TokenBody),
        (status = 400, description = "invalid_name, invalid_token, invalid_fingerprint", body = ErrorBody),
        (status = 404, description = "keyspace_not_found, token_not_issued", body = ErrorBody),
        (status = 409, description = "already_activated (every slot taken), token_revoked", body = ErrorBody),
    )
)]
async fn activate_token(
    State(state): State<AppState>,
    idem: Idempotent,
    TokenPath { ks, token }: TokenPath,
    JsonBody(body): JsonBody<ActivateBody>,
) -> Result<Response, ApiError> {
    let fingerprint = body
        .fingerprint
        .map(|f| Fingerprint::parse(&f))
        .transpose()?;
    let change = Change::Activate {
        keyspace: ks,
        token,
        fingerprint,
    };
    apply(&state, idem, change).await
}

/// Free the activation slot a fingerprint holds.
#[utoipa::path(
    delete, path = "/v1/keyspaces/{ks}/tokens/{token}/activations/{fingerprint}", tag = "keyspaces",
    params(ActivationPath),
    responses(
        (status = 204, description = "Freed; a token left with no activation is `issued` again"),
        (status = 400, description = "invalid_name, invalid_token, invalid_fingerprint", body = ErrorBody),
        (status = 404, description = "keyspace_not_found, token_not_issued, activation_not_found", body = ErrorBody),
    )
)]
async fn deactivate_token(
    State(state): State<AppState>,
    idem: Idempotent,
    ActivationPath {
        ks,
        token,
        fingerprint,
    }: ActivationPath,
) -> Result<Response, ApiError> {
    let change = Change::Deactivate {
        keyspace: ks,
        token,
        fingerprint,
    };
    apply(&state, idem, change).await
}

/// Body of revoke.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    /// Why: 1-256 characters, no control characters.
    #[schema(nullable = false, min_length = 1, max_length = 256)]
    reason: Option<String>,
}

impl BodyError for RevokeBody {
    fn wrong_shape(message: String) -> ApiError {
        ApiError::InvalidReason(message)
    }
}

/// Revoke a token for good: it can never be activated again (its
/// activations stay listed). Revoking again changes nothing.
#[utoipa::path(
    post, path = "/v1/keyspaces/{ks}/tokens/{token}/revoke", tag = "keyspaces",
    params(TokenPath),
    request_body(content = Option<RevokeBody>, description = "Optional reason; may be empty"),
    responses(
        (status = 200, description = "Revoked", body = TokenBody),
        (status = 400, description = "invalid_name, invalid_token, invalid_reason", body = ErrorBody),
        (status = 404, description = "keyspace_not_found, token_not_issued", body = ErrorBody),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    idem: Idempotent,
    TokenPath { ks, token }: TokenPath,
    JsonBody(body): JsonBody<RevokeBody>,
) -> Result<Response, ApiError> {
    let reason = body.reason.map(|r| Reason::parse(&r)).transpose()?;
    let change = Change::Revoke {
        keyspace: ks,
        token,
        reason,
    };
    apply(&state, idem, change).await
}

/// A batch's counts.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchBody {
    name: String,
    /// Tokens issued under it.
    issued: u128,
    /// Of those, tokens holding at least one activation.
    activated: u128,
    /// Of those, tokens revoked.
    revoked: u128,
}

/// How many tokens a batch issued, and how many of them are activated or
/// revoked.
#[utoipa::path(
    get, path = "/v1/keyspaces/{ks}/batches/{batch}", tag = "keyspaces",
    params(BatchPath),
    responses(
        (status = 200, description = "The batch", body = BatchBody),
        (status = 400, description = "invalid_name", body = ErrorBody),
        (status = 404, description = "keyspace_not_found, batch_not_found", body = ErrorBody),
    )
)]
async fn get_batch(
    State(state): State<AppState>,
    BatchPath { ks, batch }: BatchPath,
) -> Result<Json<BatchBody>, ApiError> {
    let info = state.store.batch_info(&ks, &batch).await?;
    Ok(Json(BatchBody {
        name: info.name.to_string(),
        issued: info.issued,
        activated: info.activated,
        revoked: info.revoked,
    }))
}
