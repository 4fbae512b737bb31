//! The Redis reaper follows due entries, not pools: idle pools cost it
//! nothing per tick, a pool with something due is reached through the due
//! index `kw:due`, and `/metrics`' snapshot stays bounded however many
//! pools there are. The store runs on a manual clock, so time moves only
//! when a test says so; work is counted with Redis's own command counter.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use keyward::clock::{Clock, ManualClock};
use keyward::core::{Name, Ttl};
use keyward::store::redis::RedisStore;
use keyward::store::{Limits, PoolPatch, SNAPSHOT_NAMED, Store};

use keyward_testkit::backends;
use keyward_testkit::redis::{self, RedisServer};

/// Idle pools in the cost test.
const IDLE_POOLS: usize = 2_000;

async fn store_on(server: &RedisServer, clock: Arc<ManualClock>) -> Result<RedisStore> {
    backends::redis_store(server, clock, Limits::DEFAULT).await
}

/// `total_commands_processed` of the server's `INFO stats`.
fn commands_processed(port: u16) -> Result<u64> {
    let info = redis::command(port, "INFO stats").context("INFO stats")?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .context("total_commands_processed in INFO stats")?
        .trim()
        .parse()
        .context("a number")
}

/// The score of `pool` in the due index, if it is there.
fn due_score(port: u16, pool: &str) -> Option<u64> {
    let reply = redis::command(port, &format!("ZSCORE kw:due {pool}"))?;
    // `$13\r\n1700000060000\r\n`, or `$-1` when absent.
    reply.lines().nth(1)?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_tick_over_two_thousand_idle_pools_sends_a_handful_of_commands() -> Result<()> {
    if redis::skip("a_reaper_tick_over_two_thousand_idle_pools_sends_a_handful_of_commands") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let clock = Arc::new(ManualClock::default());
    let store = store_on(&server, clock.clone()).await?;
    for i in 0..IDLE_POOLS {
        let pool = Name::parse(&format!("idle-{i}"))?;
        store.generate_keys(&pool, 1).await?;
    }
    // Settle: the first calls read the registry for the sweep.
    for _ in 0..3 {
        store.expire_due().await?;
    }

    let ticks = 8;
    let before = commands_processed(server.port)?;
    for _ in 0..ticks {
        let expired = store.expire_due().await?;
        assert_eq!(expired.keys + expired.leases, 0, "nothing is due");
    }
    let after = commands_processed(server.port)?;
    // The INFO commands themselves count too.
    let per_tick = (after - before) as f64 / f64::from(ticks);
    eprintln!("reaper: {per_tick} commands per tick over {IDLE_POOLS} idle pools");
    assert!(
        per_tick <= 20.0,
        "{per_tick} commands per tick over {IDLE_POOLS} idle pools"
    );

    // /metrics' snapshot: every pool counted, a bounded few named.
    let snapshot = store.snapshot().await?;
    assert_eq!(snapshot.pool_count, IDLE_POOLS as u64 + 1);
    assert!(
        snapshot.pools.len() <= SNAPSHOT_NAMED,
        "{}",
        snapshot.pools.len()
    );
    assert!(!snapshot.pools.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_due_index_holds_each_pool_at_its_earliest_deadline() -> Result<()> {
    if redis::skip("the_due_index_holds_each_pool_at_its_earliest_deadline") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let clock = Arc::new(ManualClock::default());
    let store = store_on(&server, clock.clone()).await?;
    let port = server.port;
    let t0 = clock.now().as_millis();
    // The pool's keys live the default keep-alive: the purge is due then.
    let keepalive = backends::pool_defaults().keepalive_ttl.as_millis();
    let pool = Name::parse("indexed")?;
    let patch = PoolPatch {
        lease_ttl: Some(Ttl::from_millis(1_000).context("ttl")?),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await?;
    assert_eq!(due_score(port, "indexed"), None, "no deadline yet");

    let keys = store.generate_keys(&pool, 2).await?;
    assert_eq!(
        due_score(port, "indexed"),
        Some(t0 + keepalive),
        "the purge"
    );
    let lease = store.lease_key(&pool).await?;
    assert_eq!(due_score(port, "indexed"), Some(t0 + 1_000), "the lease");
    store.release_key(&pool, &lease.key, None).await?;
    assert_eq!(
        due_score(port, "indexed"),
        Some(t0 + 1_000),
        "too early is fine: the reaper looks once for nothing"
    );

    clock.advance(Duration::from_millis(1_000));
    store.expire_due().await?;
    assert_eq!(
        due_score(port, "indexed"),
        Some(t0 + keepalive),
        "after a visit, the next deadline"
    );
    store.lease_key(&pool).await?;
    assert_eq!(due_score(port, "indexed"), Some(t0 + 2_000), "a new lease");

    clock.advance(Duration::from_millis(1_000));
    let expired = store.expire_due().await?;
    assert_eq!(expired.leases, 1, "{expired:?}");
    for key in &keys {
        store.delete_key(&pool, &key.key).await?;
    }
    clock.advance(Duration::from_millis(keepalive));
    store.expire_due().await?;
    assert_eq!(due_score(port, "indexed"), None, "nothing left to expire");
    Ok(())
}
