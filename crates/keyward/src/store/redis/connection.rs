//! The connection to Redis (one server or a cluster), and how the store
//! comes up: the `default` pool and keyspace ensured on first contact,
//! again after any Redis error (Redis may come back empty), and a
//! background task that retries with [`Backoff`] while Redis is down at
//! start.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Value};

use super::reply::Reply;
use super::scripts::{self, Call, Code, Family, PutKeyspace, PutPool};
use super::{Inner, KEYSPACES, REGISTRY, RedisOpenError, RedisTarget, lock};
use crate::core::{KeyspaceSpec, MaxFailures, Name, Secret};
use crate::store::backoff::Backoff;
use crate::store::{DefaultKeyspaceChanged, ErrorChain, Idem, PoolPatch, StoreError};

/// Per-command limits, so a stuck Redis fails requests instead of hanging
/// them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Waits of the start-up retry: from the first to the longest.
const START_RETRY_MIN: Duration = Duration::from_millis(100);
const START_RETRY_MAX: Duration = Duration::from_secs(2);

/// A connection of either kind; both multiplex and are cheap to clone.
#[derive(Clone)]
pub(super) enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Handle {
    /// Runs a script (`EVALSHA`, loading it after `NOSCRIPT`).
    pub(super) async fn eval(
        &mut self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, RedisError> {
        match self {
            Self::Single(c) => invocation.invoke_async(c).await,
            Self::Cluster(c) => invocation.invoke_async(c).await,
        }
    }

    /// Runs one command.
    pub(super) async fn query(&mut self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

/// Where connections come from.
pub(super) enum Connector {
    /// Reconnects by itself; created without connecting. The client makes
    /// the RESP3 connections of waiting leases' wake-ups.
    Single(ConnectionManager, redis::Client),
    /// Connected on first use (the cluster must answer to learn its slots).
    Cluster(Box<ClusterConnector>),
}

pub(super) struct ClusterConnector {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
    /// One client per seed node, for the wake-ups of waiting leases: a
    /// plain `PUBLISH` reaches every node, so any one node will do.
    nodes: Vec<redis::Client>,
}

impl Connector {
    /// A connector for `target`, without connecting yet; fails only on an
    /// unusable address.
    pub(super) fn new(target: &RedisTarget) -> Result<Self, RedisOpenError> {
        match target {
            RedisTarget::Single(url) => {
                let address = |source| RedisOpenError::Address {
                    target: url.clone(),
                    source,
                };
                let client = redis::Client::open(url.as_str()).map_err(address)?;
                // One attempt per request: while Redis is down requests
                // fail fast (503) rather than queue behind reconnect waits;
                // each failed request starts the next attempt.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let wake = resp3(&client).map_err(address)?;
                Ok(Self::Single(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(address)?,
                    wake,
                ))
            }
            RedisTarget::Cluster(nodes) => {
                let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
                let client = ClusterClientBuilder::new(urls.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()
                    .map_err(|source| RedisOpenError::Address {
                        target: nodes.join(","),
                        source,
                    })?;
                let nodes = urls
                    .iter()
                    .map(|url| redis::Client::open(url.as_str()).and_then(|c| resp3(&c)))
                    .collect::<Result<_, _>>()
                    .map_err(|source| RedisOpenError::Address {
                        target: nodes.join(","),
                        source,
                    })?;
                Ok(Self::Cluster(Box::new(ClusterConnector {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                    nodes,
                })))
            }
        }
    }

    /// `single` or `cluster`, for `Debug`.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Single(..) => "single",
            Self::Cluster(_) => "cluster",
        }
    }
}

/// The same server as `client`, speaking RESP3 (pushes: subscriptions on
/// a connection that also answers commands).
fn resp3(client: &redis::Client) -> Result<redis::Client, RedisError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

impl Connector {
    /// A new connection subscribed to `channel`, its messages (and its
    /// end, a `Disconnection` push) sent to `pushes`. On a cluster, the
    /// first seed node that answers: a plain `PUBLISH` reaches them all.
    /// O(1) round trips per node tried.
    pub(super) async fn subscribe(
        &self,
        channel: &str,
        pushes: &tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Result<redis::aio::MultiplexedConnection, RedisError> {
        let clients = match self {
            Self::Single(_, client) => std::slice::from_ref(client),
            Self::Cluster(cluster) => cluster.nodes.as_slice(),
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(pushes.clone());
        let mut last = None;
        for client in clients {
            let attempt = async {
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                conn.subscribe(channel).await?;
                Ok::<_, RedisError>(conn)
            };
            match attempt.await {
                Ok(conn) => return Ok(conn),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((redis::ErrorKind::Client, "no Redis node to subscribe on"))
        }))
    }
}

/// Why the store is not ready.
#[derive(Debug, thiserror::Error)]
pub(super) enum InitError {
    #[error("Redis is unreachable")]
    Redis(#[source] RedisError),
    #[error(transparent)]
    Open(#[from] RedisOpenError),
    #[error("Redis sent an unexpected reply: {0}")]
    Reply(String),
}

/// The first wait of the start-up retry, and the schedule after it.
pub(super) fn start_retry() -> (Duration, Backoff) {
    let mut backoff = Backoff::new(START_RETRY_MIN, START_RETRY_MAX);
    (backoff.next_wait(), backoff)
}

/// Retries initialisation, waiting `first` and then by `backoff`, until it
/// succeeds or the store is dropped (the store aborts this task on drop,
/// and the weak reference ends it too).
pub(super) async fn retry_until_ready(inner: Weak<Inner>, first: Duration, mut backoff: Backoff) {
    let mut wait = first;
    loop {
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        wait = backoff.next_wait();
        match inner.ensure_ready_typed().await {
            Ok(()) => {
                inner.retrying.store(false, Ordering::Release);
                tracing::info!("Redis store ready");
                return;
            }
            Err(InitError::Open(e)) => {
                tracing::error!(error = %e, retry_in = ?wait, "Redis store refuses to serve");
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), retry_in = ?wait, "Redis store not ready");
            }
        }
    }
}

impl Inner {
    /// A connection: O(1) once connected (the cluster's first call learns
    /// its slots).
    pub(super) async fn handle(&self) -> Result<Handle, RedisError> {
        match &self.connector {
            Connector::Single(manager, _) => Ok(Handle::Single(manager.clone())),
            Connector::Cluster(cluster) => {
                let conn = cluster
                    .conn
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await?;
                Ok(Handle::Cluster(conn.clone()))
            }
        }
    }

    /// Maps a Redis error, and forgets what Redis may have lost meanwhile:
    /// the next operation initialises again.
    pub(super) fn failed(&self, e: RedisError) -> StoreError {
        self.ready.store(false, Ordering::Release);
        StoreError::Unavailable(Box::new(e))
    }

    /// Runs the script of `args` with `KEYS[1] = key`, on `prefix` (pool
    /// and keyspace scripts), with `idem`'s record; leases and releases in
    /// their pool's next batch (`batch.rs`). No readiness check, no error
    /// mapping.
    pub(super) async fn invoke<A: Call>(
        &self,
        key: &str,
        prefix: String,
        args: &A,
        idem: Option<&Idem>,
    ) -> Result<Value, RedisError> {
        if A::BATCH.is_some() {
            let argv = scripts::batch_argv(args, idem);
            let handle = self.handle().await?;
            return self
                .batches
                .run(
                    handle,
                    &self.scripts.batch,
                    key,
                    prefix,
                    self.now_arg(),
                    argv,
                )
                .await;
        }
        let mut invocation = A::script(&self.scripts).key(key);
        for arg in scripts::argv(args, prefix, self.now_arg(), idem) {
            invocation.arg(arg);
        }
        self.handle().await?.eval(&invocation).await
    }

    /// O(1) once ready (an atomic load); else initialises (see
    /// [`Inner::init`]).
    pub(super) async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.ensure_ready_typed()
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }

    pub(super) async fn ensure_ready_typed(&self) -> Result<(), InitError> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _init = self.init.lock().await;
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.init().await?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Ensures the `default` pool and keyspace exist. The first time, the
    /// pool takes this server's settings and the keyspace is redefined if
    /// nothing was issued; afterwards both are only created if missing.
    async fn init(&self) -> Result<(), InitError> {
        let first = !self.flags_applied.load(Ordering::Acquire);
        let default = Name::default_name();
        self.migrate_registries()
            .await
            .map_err(|e| InitError::Reply(crate::store::ErrorChain(&e).to_string()))?;
        self.migrate_pools()
            .await
            .map_err(|e| InitError::Reply(crate::store::ErrorChain(&e).to_string()))?;
        let mut handle = self.handle().await.map_err(InitError::Redis)?;
        handle
            .query(
                redis::cmd("ZADD")
                    .arg(REGISTRY)
                    .arg(0)
                    .arg(default.as_str()),
            )
            .await
            .map_err(InitError::Redis)?;
        let patch = if first {
            PoolPatch::all(self.pool_defaults)
        } else {
            PoolPatch::default()
        };
        let prefix = Family::Pool.prefix(&default);
        self.invoke(
            &Family::Pool.routing(&prefix),
            prefix,
            &self.put_pool_args(patch),
            None,
        )
        .await
        .map_err(InitError::Redis)?;

        let want = &self.default_keyspace;
        let prefix = Family::Keyspace.prefix(&default);
        let value = self
            .invoke(
                &Family::Keyspace.routing(&prefix),
                prefix,
                &put_keyspace_args(want, first),
                None,
            )
            .await
            .map_err(InitError::Redis)?;
        let reply = (|| {
            let mut reply = Reply::new(value)?;
            let code = reply.code()?;
            let (codec, info) = reply.keyspace_def()?;
            Ok::<_, StoreError>((code, codec, info.issued))
        })();
        let (code, codec, issued) = reply.map_err(|e| InitError::Reply(e.to_string()))?;
        if code == Code::Differs && first {
            return Err(RedisOpenError::from(Box::new(DefaultKeyspaceChanged {
                place: "Redis".to_owned(),
                issued,
                have: codec.spec().clone(),
                want: want.clone(),
                instead: "use another Redis database",
            }))
            .into());
        }
        lock(&self.codecs).insert(default.clone(), codec);
        let mut handle = self.handle().await.map_err(InitError::Redis)?;
        handle
            .query(
                redis::cmd("ZADD")
                    .arg(KEYSPACES)
                    .arg(0)
                    .arg(default.as_str()),
            )
            .await
            .map_err(InitError::Redis)?;
        self.flags_applied.store(true, Ordering::Release);
        Ok(())
    }

    /// The `put_pool` arguments: this server's defaults for a new pool,
    /// then `patch`.
    pub(super) fn put_pool_args(&self, patch: PoolPatch) -> PutPool {
        let d = self.pool_defaults;
        PutPool {
            default_lease_ttl_ms: d.lease_ttl,
            default_keepalive_ttl_ms: d.keepalive_ttl,
            default_key_length: d.key_length,
            default_cooldown_ms: d.recovery.cooldown,
            default_max_failures: d.recovery.max_failures.get(),
            default_quarantine_ms: d.recovery.quarantine,
            default_no_keepalive: d.no_keepalive,
            lease_ttl_ms: patch.lease_ttl,
            keepalive_ttl_ms: patch.keepalive_ttl.flatten(),
            key_length: patch.key_length,
            cooldown_ms: patch.cooldown,
            max_failures: patch.max_failures.map(MaxFailures::get),
            quarantine_ms: patch.quarantine,
            no_keepalive: patch.keepalive_ttl.map(|ttl| ttl.is_none()),
        }
    }
}

/// The `put_keyspace` arguments for `spec`, with a fresh secret.
pub(super) fn put_keyspace_args(spec: &KeyspaceSpec, replace_if_unissued: bool) -> PutKeyspace {
    PutKeyspace {
        alphabet: spec.alphabet().as_str().to_owned(),
        length: spec.length(),
        secret: scripts::secret_hex(&Secret::generate()),
        replace_if_unissued,
        shape: spec.shape_text(),
        max_activations: None,
    }
}
