//! The backends the conformance suite runs on: one factory each, returning
//! a fresh, isolated store on a [`ManualClock`], or `None` when the backend
//! cannot run on this machine (see [`start`]).
//!
//! Every backend is started as the server starts it by default: the pool
//! defaults and the `default` keyspace of [`Config::default`], with small
//! [`LIMITS`] so the limit cases reach them in a few calls.

use std::any::Any;
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use keyward::clock::ManualClock;
use keyward::config::Config;
use keyward::core::{KeyspaceSpec, PoolSettings};
use keyward::store::local::{LocalSettings, LocalStore};
use keyward::store::redis::{RedisSettings, RedisStore, RedisTarget, TimeSource};
use keyward::store::{Limits, Store};

use crate::process::TempDir;
use crate::redis::{REQUIRE_ALL, RedisCluster, RedisServer};

/// A store under test, its clock, and whatever must live as long as it.
pub struct Harness {
    /// The store; dropped before `_guard`.
    pub store: Arc<dyn Store>,
    /// The clock the store reads; cases advance it.
    pub clock: Arc<ManualClock>,
    /// A temp dir, a child server: dropped after the store.
    pub _guard: Option<Box<dyn Any + Send>>,
}

/// Settings of the `default` pool and of pools made implicitly: the
/// server's own defaults.
pub fn pool_defaults() -> PoolSettings {
    Config::default().pool_defaults
}

/// The `default` keyspace: the server's own.
pub fn default_keyspace() -> KeyspaceSpec {
    Config::default().default_keyspace
}

/// The limits every backend is started with: small, so the limit cases
/// reach them in a few calls, and far above what the other cases make.
pub const LIMITS: Limits = Limits {
    max_pools: 12,
    max_keyspaces: 6,
    max_keys_per_pool: 40,
};

fn local_settings() -> LocalSettings {
    LocalSettings {
        pool_defaults: pool_defaults(),
        default_keyspace: default_keyspace(),
        limits: LIMITS,
    }
}

/// `memory:` — the local engine with no journal.
pub async fn memory() -> Option<Harness> {
    let clock = Arc::new(ManualClock::default());
    Some(Harness {
        store: Arc::new(LocalStore::new(local_settings(), clock.clone())),
        clock,
        _guard: None,
    })
}

/// `sqlite:` — the local engine with its SQLite journal, in a fresh file.
pub async fn sqlite() -> Option<Harness> {
    let dir = TempDir::new("conformance").expect("create a temp dir");
    let clock = Arc::new(ManualClock::default());
    let store = LocalStore::open_sqlite(&dir.db(), local_settings(), clock.clone())
        .await
        .expect("open a fresh SQLite store");
    Some(Harness {
        store: Arc::new(store),
        clock,
        _guard: Some(Box::new(dir)),
    })
}

/// `redis://` on a fresh private server, the store on the case's manual
/// clock (scripts take `now` from it instead of Redis `TIME`); `None`
/// without `redis-server`.
pub async fn redis() -> Option<Harness> {
    if !crate::redis::available() {
        return None;
    }
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("the start-up thread does not panic")
        .expect("a private redis-server starts");
    let clock = Arc::new(ManualClock::default());
    let store = redis_store(&server, clock.clone(), LIMITS)
        .await
        .expect("the Redis store connects");
    Some(Harness {
        store: Arc::new(store),
        clock,
        _guard: Some(Box::new(server)),
    })
}

/// `redis+cluster://` on a fresh private 3-master cluster, the store on
/// the case's manual clock; `None` without `redis-server`. Every pool
/// lives in one hash slot, so the cases spread over the masters.
pub async fn redis_cluster() -> Option<Harness> {
    if !crate::redis::available() {
        return None;
    }
    // A node can lose its port, or its bus port (port + 10000), to another
    // process between `free_port` and its bind: try again on new ports.
    let mut tries = 0;
    let cluster = loop {
        tries += 1;
        match tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("the start-up thread does not panic")
        {
            Ok(cluster) => break cluster,
            Err(e) if tries < 3 => {
                let _ = writeln!(std::io::stderr(), "cluster start-up failed, retrying: {e}");
            }
            Err(e) => panic!("a private Redis Cluster starts: {e:?}"),
        }
    };
    let clock = Arc::new(ManualClock::default());
    let settings = RedisSettings {
        target: RedisTarget::Cluster(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect(),
        ),
        pool_defaults: pool_defaults(),
        default_keyspace: default_keyspace(),
        limits: LIMITS,
        time: TimeSource::Clock(clock.clone()),
    };
    let store = RedisStore::connect(settings)
        .await
        .expect("the Redis store connects to the cluster");
    Some(Harness {
        store: Arc::new(store),
        clock,
        _guard: Some(Box::new(cluster)),
    })
}

/// A Redis store on `server` with the server's default pool settings and
/// `default` keyspace, `limits`, and time from `clock`.
pub async fn redis_store(
    server: &RedisServer,
    clock: Arc<ManualClock>,
    limits: Limits,
) -> anyhow::Result<RedisStore> {
    let settings = RedisSettings {
        target: RedisTarget::Single(server.url()),
        pool_defaults: pool_defaults(),
        default_keyspace: default_keyspace(),
        limits,
        time: TimeSource::Clock(clock),
    };
    Ok(RedisStore::connect(settings).await?)
}

/// Runs `factory`; on `None`, skips (saying so once per backend) or, with
/// `KEYWARD_REQUIRE_ALL_BACKENDS=1`, panics.
pub async fn start<F, Fut>(backend: &str, factory: F) -> Option<Harness>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<Harness>>,
{
    if let Some(harness) = factory().await {
        return Some(harness);
    }
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("backend {backend} is unavailable and {REQUIRE_ALL}=1");
    }
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let first = WARNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(backend.to_owned());
    if first {
        // Straight to stderr: libtest captures `eprintln!` of passing
        // tests, and a skipped backend must not go unnoticed.
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED: conformance backend `{backend}` is unavailable; \
             set {REQUIRE_ALL}=1 to make this an error\n"
        );
    }
    None
}
