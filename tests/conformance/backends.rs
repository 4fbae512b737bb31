//! The backends the suite runs on: one factory each, returning a fresh,
//! isolated store on a [`ManualClock`], or `None` when the backend cannot
//! run on this machine.

use std::any::Any;
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use keyward::clock::ManualClock;
use keyward::core::{KeyLength, KeyspaceSpec, PoolSettings, Ttl};
use keyward::store::local::{LocalSettings, LocalStore};
use keyward::store::{Limits, Store};

/// Set to `1` to fail, not skip, the tests of a backend that cannot start.
const REQUIRE_ALL: &str = "KEYWARD_REQUIRE_ALL_BACKENDS";

/// A store under test, its clock, and whatever must live as long as it.
pub struct Harness {
    /// The store; dropped before `_guard`.
    pub store: Arc<dyn Store>,
    /// The clock the store reads; cases advance it.
    pub clock: Arc<ManualClock>,
    /// A temp dir, a child server: dropped after the store.
    pub _guard: Option<Box<dyn Any + Send>>,
}

/// Settings of the `default` pool and of pools made implicitly, which every
/// backend must be started with: the server's own defaults.
pub fn pool_defaults() -> PoolSettings {
    PoolSettings {
        lease_ttl: Ttl::from_millis(60_000).expect("60 s is a valid TTL"),
        keepalive_ttl: Ttl::from_millis(300_000).expect("5 min is a valid TTL"),
        key_length: KeyLength::DEFAULT,
    }
}

/// The `default` keyspace every backend must be started with: the seed's.
pub fn default_keyspace() -> KeyspaceSpec {
    KeyspaceSpec::new("qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM", 4)
        .expect("the seed's keyspace is valid")
}

/// The limits every backend is started with: small, so the limit cases
/// reach them in a few calls, and far above what the other cases make.
pub const LIMITS: Limits = Limits {
    max_pools: 12,
    max_keyspaces: 6,
    max_keys_per_pool: 40,
};

/// `memory:` — the local engine with no journal.
pub async fn memory() -> Option<Harness> {
    let clock = Arc::new(ManualClock::default());
    let settings = LocalSettings {
        pool_defaults: pool_defaults(),
        default_keyspace: default_keyspace(),
        limits: LIMITS,
    };
    Some(Harness {
        store: Arc::new(LocalStore::new(settings, clock.clone())),
        clock,
        _guard: None,
    })
}

/// Removes a temp dir when the harness is dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sqlite:` — the local engine with its SQLite journal, in a fresh file.
pub async fn sqlite() -> Option<Harness> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("keyward-conf-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    let clock = Arc::new(ManualClock::default());
    let settings = LocalSettings {
        pool_defaults: pool_defaults(),
        default_keyspace: default_keyspace(),
        limits: LIMITS,
    };
    let store = LocalStore::open_sqlite(&dir.join("k.db"), settings, clock.clone())
        .await
        .expect("open a fresh SQLite store");
    Some(Harness {
        store: Arc::new(store),
        clock,
        _guard: Some(Box::new(TempDir(dir))),
    })
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
