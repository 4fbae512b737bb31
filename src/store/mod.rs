//! The storage boundary: one async [`Store`] trait in domain types, and the
//! backends that implement it.
//!
//! - [`local::LocalStore`]: the core state machines in RAM, with no
//!   journal (`memory:`) or an SQLite journal with group commit
//!   ([`sqlite`], `sqlite:PATH`).
//! - [`redis::RedisStore`]: all state in Redis or Redis Cluster, one Lua
//!   script per operation, shared by any number of processes.
//!
//! Every backend passes the same conformance suite (`tests/conformance`).
//! Backend errors stay in here: callers see only [`StoreError`].

pub mod local;
pub mod redis;
pub mod sqlite;

use async_trait::async_trait;

use crate::core::{
    Expired, Issued, KeyLength, KeyView, KeyspaceError, KeyspaceInfo, KeyspaceSpec, Name,
    PoolError, PoolSettings, PoolStats, TokenStatus, Ttl,
};

/// Settings given to `PUT /v1/pools/{pool}`; absent fields keep their value
/// (or the server default for a new pool).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolPatch {
    /// New lease TTL.
    pub lease_ttl: Option<Ttl>,
    /// New keep-alive TTL.
    pub keepalive_ttl: Option<Ttl>,
    /// New length for keys generated from now on.
    pub key_length: Option<KeyLength>,
}

impl PoolPatch {
    /// `base` with the given fields replaced.
    pub fn apply(&self, base: PoolSettings) -> PoolSettings {
        PoolSettings {
            lease_ttl: self.lease_ttl.unwrap_or(base.lease_ttl),
            keepalive_ttl: self.keepalive_ttl.unwrap_or(base.keepalive_ttl),
            key_length: self.key_length.unwrap_or(base.key_length),
        }
    }
}

/// A pool's settings and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    /// The pool's name.
    pub name: Name,
    /// Its settings.
    pub settings: PoolSettings,
    /// Its key counts.
    pub stats: PoolStats,
    /// Leases ended and keys purged by expiry so far (since this process
    /// started for the local store; since the pool was created on Redis).
    pub expired: Expired,
}

/// Every pool's and keyspace's counts, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// All pools.
    pub pools: Vec<PoolInfo>,
    /// All keyspaces.
    pub keyspaces: Vec<KeyspaceView>,
}

/// A keyspace's definition and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceView {
    /// The keyspace's name.
    pub name: Name,
    /// Alphabet and length.
    pub spec: KeyspaceSpec,
    /// Capacity, issued, activated, remaining.
    pub info: KeyspaceInfo,
}

/// Whether a `PUT` made something new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// It did not exist before.
    Created,
    /// It existed (and may have changed).
    Existed,
}

/// Why a store operation did nothing. Domain variants are the caller's
/// mistake or the state of the data; `Unavailable` and `Internal` are ours.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A pool operation was refused.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A keyspace operation was refused.
    #[error(transparent)]
    Keyspace(#[from] KeyspaceError),
    /// No pool has that name.
    #[error("no such pool")]
    PoolNotFound,
    /// No keyspace has that name.
    #[error("no such keyspace")]
    KeyspaceNotFound,
    /// A keyspace exists with another alphabet or length.
    #[error("the keyspace exists with another alphabet or length")]
    KeyspaceImmutable,
    /// The backend cannot answer now (I/O error, connection lost); the
    /// operation did not happen or its outcome is not acknowledged.
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The operations every backend provides. Each states its complexity in
/// the backend's terms; all are O(1) or O(log n) in the pool or keyspace
/// size (generation is O(count)).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates a pool, or changes the given settings of an existing one.
    async fn put_pool(
        &self,
        pool: &Name,
        patch: PoolPatch,
    ) -> Result<(PoolInfo, Upsert), StoreError>;
    /// A pool's settings and counts.
    async fn pool_info(&self, pool: &Name) -> Result<PoolInfo, StoreError>;
    /// Generates `count` keys, creating the pool with defaults if absent.
    async fn generate_keys(&self, pool: &Name, count: usize) -> Result<Vec<KeyView>, StoreError>;
    /// Leases a uniformly random free key.
    async fn lease_key(&self, pool: &Name) -> Result<KeyView, StoreError>;
    /// Ends a key's lease now (only the given lease, if `lease_id`).
    async fn release_key(
        &self,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError>;
    /// Keeps a key alive; with its current `lease_id`, extends the lease.
    async fn keepalive_key(
        &self,
        pool: &Name,
        key: &str,
        lease_id: Option<u64>,
    ) -> Result<KeyView, StoreError>;
    /// A key's current state.
    async fn get_key(&self, pool: &Name, key: &str) -> Result<KeyView, StoreError>;
    /// Purges a key.
    async fn delete_key(&self, pool: &Name, key: &str) -> Result<(), StoreError>;
    /// Creates a keyspace; `Existed` if an identical one exists,
    /// `KeyspaceImmutable` if it differs.
    async fn put_keyspace(
        &self,
        keyspace: &Name,
        spec: KeyspaceSpec,
    ) -> Result<(KeyspaceView, Upsert), StoreError>;
    /// A keyspace's definition and counts.
    async fn keyspace_info(&self, keyspace: &Name) -> Result<KeyspaceView, StoreError>;
    /// Issues the next token.
    async fn issue_token(&self, keyspace: &Name) -> Result<Issued, StoreError>;
    /// Whether a token was issued and activated.
    async fn token_status(&self, keyspace: &Name, token: &str) -> Result<TokenStatus, StoreError>;
    /// Activates an issued token, once.
    async fn activate_token(&self, keyspace: &Name, token: &str)
    -> Result<TokenStatus, StoreError>;
    /// Applies due expiry in every pool, in bounded steps. Called by the
    /// background reaper.
    async fn expire_due(&self) -> Result<Expired, StoreError>;
    /// Succeeds while the store can answer; drives `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Waits until every change made so far is durable (at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
    /// Counts of every pool and keyspace; O(pools + keyspaces), never
    /// O(keys): each count is kept, not computed.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Adds the backend's own metrics (e.g. commit latency) to `registry`.
    /// Backends without any keep this default.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }
}
