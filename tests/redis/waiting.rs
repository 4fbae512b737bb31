//! Waiting leases (`wait_ms`) on Redis: served first come first served,
//! woken through Redis by whatever frees a key (release, cooldown end,
//! lease expiry, add, import, enable) across processes, and never leaving
//! a key held by a waiter that gave up or went away.
//!
//! The stores here read Redis `TIME` (as a served keyward does), so
//! deadlines pass in real time; latencies are asserted against the
//! contract's bound, [`WAKE_BOUND`] (50 ms from the event that frees the
//! key to the waiter holding it), and printed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use keyward::core::{KeyView, Labels, Name, Outcome, PoolKey, Timestamp, Ttl};
use keyward::store::redis::{RedisSettings, RedisStore, RedisTarget, TimeSource};
use keyward::store::{Limits, NewKeys, PoolPatch, Store, StoreError};

use keyward_testkit::backends;
use keyward_testkit::redis::{self, RedisCluster, RedisServer};

/// The contract: a waiter holds a freed key within 50 ms of its release,
/// or of the deadline that frees it.
const WAKE_BOUND: Duration = Duration::from_millis(50);
/// Long enough never to end in these tests unless meant to.
const LONG_WAIT: Duration = Duration::from_secs(10);

/// A store on `target` with time from Redis `TIME`.
async fn store_on(target: RedisTarget) -> Result<Arc<RedisStore>> {
    let settings = RedisSettings {
        target,
        pool_defaults: backends::pool_defaults(),
        default_keyspace: backends::default_keyspace(),
        limits: Limits::DEFAULT,
        time: TimeSource::Redis,
    };
    Ok(Arc::new(RedisStore::connect(settings).await?))
}

async fn single() -> Result<(RedisServer, Arc<RedisStore>)> {
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let store = store_on(RedisTarget::Single(server.url())).await?;
    Ok((server, store))
}

/// Wall-clock now in ms: the clock Redis `TIME` reads on this machine.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A waiting lease in a task: its answer and when it came (wall ms).
type Waiter = tokio::task::JoinHandle<(Result<KeyView, StoreError>, Instant, u64)>;

fn wait_for(store: &Arc<RedisStore>, pool: &Name, wait: Duration) -> Waiter {
    let (store, pool) = (store.clone(), pool.clone());
    tokio::spawn(async move {
        let got = store.lease_key_waiting(&pool, wait).await;
        (got, Instant::now(), now_ms())
    })
}

/// Until the pool's waiting marker is set (the first waiter of a process
/// is queued and subscribed), at most 5 s.
async fn marked(port: u16, pool: &str) -> Result<()> {
    let cmd = format!("EXISTS {{kw:p:{pool}}}:waiting");
    for _ in 0..500 {
        if redis::command(port, &cmd).is_some_and(|r| r.starts_with(":1")) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("no waiting marker for {pool} within 5 s")
}

fn lease_id(view: &KeyView) -> Option<u64> {
    view.lease.map(|l| l.id)
}

fn ttl(ms: u64) -> Result<Ttl> {
    Ttl::from_millis(ms).context("a valid TTL")
}

/// `cmdstat_publish` calls so far, from `INFO commandstats`.
fn publishes(port: u16) -> Result<u64> {
    let info = redis::command(port, "INFO commandstats").context("INFO")?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_serve_waiters_first_come_first_served_within_the_bound() -> Result<()> {
    if redis::skip("releases_serve_waiters_first_come_first_served_within_the_bound") {
        return Ok(());
    }
    let (server, store) = single().await?;
    let pool = Name::parse("fifo")?;
    store.generate_keys(&pool, 1).await?;
    let mut held = store.lease_key(&pool).await?;
    // Nobody waits: releases publish nothing.
    store.release_key(&pool, &held.key, lease_id(&held)).await?;
    held = store.lease_key(&pool).await?;
    assert_eq!(publishes(server.port)?, 0, "no PUBLISH while nobody waits");

    let mut waiters = Vec::new();
    for i in 0..4 {
        waiters.push(wait_for(&store, &pool, LONG_WAIT));
        if i == 0 {
            marked(server.port, "fifo").await?;
        }
        // Arrival order is what is tested: let each queue before the next.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut latencies = Vec::new();
    for (i, waiter) in waiters.into_iter().enumerate() {
        let released_at = Instant::now();
        store.release_key(&pool, &held.key, lease_id(&held)).await?;
        let (got, at, _) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .with_context(|| format!("waiter {i} was not served"))??;
        held = got?;
        latencies.push(at - released_at);
    }
    eprintln!("release → waiter latencies: {latencies:?}");
    for (i, l) in latencies.iter().enumerate() {
        ensure!(*l < WAKE_BOUND, "waiter {i} served after {l:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_and_cooldown_end_serve_a_waiter_at_the_deadline() -> Result<()> {
    if redis::skip("lease_expiry_and_cooldown_end_serve_a_waiter_at_the_deadline") {
        return Ok(());
    }
    let (_server, store) = single().await?;
    let pool = Name::parse("deadline")?;
    let patch = PoolPatch {
        lease_ttl: Some(ttl(1_000)?),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await?;
    store.generate_keys(&pool, 1).await?;

    // A lease of 1 s that nobody releases.
    let lease = store.lease_key(&pool).await?;
    let ends = lease.lease.context("leased")?.until.as_millis();
    let (got, _, at_ms) = wait_for(&store, &pool, LONG_WAIT).await?;
    let got = got?;
    assert_eq!(got.key, lease.key);
    let late = at_ms.saturating_sub(ends);
    eprintln!("lease end → waiter: {late} ms");
    ensure!(
        at_ms + 1 >= ends,
        "served {} ms before the lease ended",
        ends - at_ms
    );
    ensure!(
        late < WAKE_BOUND.as_millis() as u64,
        "served {late} ms after the lease ended"
    );

    // A 300 ms cooldown.
    let cooling = store
        .report_key(
            &pool,
            &got.key,
            lease_id(&got),
            Outcome::RateLimited {
                retry_after: Some(ttl(300)?),
            },
            None,
        )
        .await?;
    let ends = cooling.available_at.context("cooling")?.as_millis();
    let (again, _, at_ms) = wait_for(&store, &pool, LONG_WAIT).await?;
    assert_eq!(again?.key, got.key);
    let late = at_ms.saturating_sub(ends);
    eprintln!("cooldown end → waiter: {late} ms");
    ensure!(at_ms + 1 >= ends, "served before the cooldown ended");
    ensure!(
        late < WAKE_BOUND.as_millis() as u64,
        "served {late} ms after the cooldown ended"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_and_an_enabled_key_serve_waiters() -> Result<()> {
    if redis::skip("new_keys_and_an_enabled_key_serve_waiters") {
        return Ok(());
    }
    let (server, store) = single().await?;
    let pool = Name::parse("adds")?;
    let first = store.generate_keys(&pool, 1).await?;
    store.lease_key(&pool).await?;

    // Import.
    let waiter = wait_for(&store, &pool, LONG_WAIT);
    marked(server.port, "adds").await?;
    let t = Instant::now();
    let keys = NewKeys::Import(vec![PoolKey::parse("imported-key-1")?]);
    store.add_keys(&pool, keys, &Labels::default()).await?;
    let (got, at, _) = waiter.await?;
    assert_eq!(got?.key, "imported-key-1");
    eprintln!("import → waiter: {:?}", at - t);
    ensure!(at - t < WAKE_BOUND, "import served after {:?}", at - t);

    // Generate.
    let waiter = wait_for(&store, &pool, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = Instant::now();
    let made = store.generate_keys(&pool, 1).await?;
    let (got, at, _) = waiter.await?;
    assert_eq!(got?.key, made[0].key);
    eprintln!("generate → waiter: {:?}", at - t);
    ensure!(at - t < WAKE_BOUND, "generate served after {:?}", at - t);

    // Enable: the first key, released into a disabled state.
    let held = store.get_key(&pool, &first[0].key).await?;
    store.release_key(&pool, &held.key, lease_id(&held)).await?;
    store.disable_key(&pool, &held.key, None).await?;
    let waiter = wait_for(&store, &pool, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = Instant::now();
    store.enable_key(&pool, &held.key).await?;
    let (got, at, _) = waiter.await?;
    assert_eq!(got?.key, held.key);
    eprintln!("enable → waiter: {:?}", at - t);
    ensure!(at - t < WAKE_BOUND, "enable served after {:?}", at - t);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_waiter_holds_no_key_and_stop_waiting_answers_at_once() -> Result<()> {
    if redis::skip("a_timed_out_waiter_holds_no_key_and_stop_waiting_answers_at_once") {
        return Ok(());
    }
    let (_server, store) = single().await?;
    let pool = Name::parse("timeout")?;
    store.generate_keys(&pool, 1).await?;
    let held = store.lease_key(&pool).await?;
    let t = Instant::now();
    let gave_up = store
        .lease_key_waiting(&pool, Duration::from_millis(200))
        .await;
    ensure!(t.elapsed() >= Duration::from_millis(200), "gave up early");
    match gave_up {
        Err(StoreError::NoFreeKey { retry_after }) => {
            ensure!(retry_after.is_some(), "the lease's end is known");
        }
        other => bail!("expected no_free_key, got {other:?}"),
    }
    store.release_key(&pool, &held.key, lease_id(&held)).await?;
    let info = store.pool_info(&pool).await?;
    assert_eq!((info.stats.free, info.stats.leased), (1, 0));
    store.lease_key(&pool).await?;

    let waiter = wait_for(&store, &pool, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    store.stop_waiting();
    let (got, at, _) = waiter.await?;
    assert!(matches!(got, Err(StoreError::ShuttingDown)), "{got:?}");
    ensure!(
        at - t < Duration::from_millis(50),
        "answered after {:?}",
        at - t
    );
    let refused = store.lease_key_waiting(&pool, LONG_WAIT).await;
    assert!(
        matches!(refused, Err(StoreError::ShuttingDown)),
        "{refused:?}"
    );
    Ok(())
}

/// Whether `held` keys are leased within `tries` looks 10 ms apart;
/// fails at once if free + leased ever differs from the total.
async fn settle(store: &RedisStore, pool: &Name, held: u64, tries: u32) -> Result<bool> {
    for _ in 0..tries {
        let s = store.pool_info(pool).await?.stats;
        ensure!(s.free + s.leased == s.total, "a key lost: {s:?}");
        if s.leased == held {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(false)
}

/// After `flush` (which waits for this process's leases for waiters and
/// give-backs of keys dropped waiters left), exactly `held` keys are
/// leased and the rest free.
async fn settled(store: &RedisStore, pool: &Name, held: u64) -> Result<()> {
    store.flush().await?;
    let s = store.pool_info(pool).await?.stats;
    ensure!(s.free + s.leased == s.total, "a key lost: {s:?}");
    ensure!(s.leased == held, "expected {held} leased, have {s:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_waiters_never_hold_a_key_over_two_hundred_rounds() -> Result<()> {
    if redis::skip("dropped_waiters_never_hold_a_key_over_two_hundred_rounds") {
        return Ok(());
    }
    let (_server, store) = single().await?;
    let pool = Name::parse("drops")?;
    store.generate_keys(&pool, 2).await?;
    let kept = store.lease_key(&pool).await?;
    let mut held: HashSet<String> = HashSet::from([kept.key.clone()]);
    let (mut answered, mut handed) = (0, 0);
    for round in 0..200u64 {
        let mine = store.lease_key(&pool).await?;
        ensure!(held.insert(mine.key.clone()), "{} held twice", mine.key);
        if round % 2 == 0 {
            // Handed a key, then dropped unpolled: the key is in its
            // channel when the request future goes (a client gone at the
            // worst moment). If the waiter had not queued within the
            // window (a slow lease under load), the key just stays free.
            let mut waiting = Box::pin(store.lease_key_waiting(&pool, LONG_WAIT));
            tokio::select! {
                biased;
                got = &mut waiting => bail!("round {round}: answered with no free key: {got:?}"),
                () = tokio::time::sleep(Duration::from_millis(10 + round % 3)) => {}
            }
            store.release_key(&pool, &mine.key, lease_id(&mine)).await?;
            held.remove(&mine.key);
            // The watcher leases the key for the queued waiter.
            if settle(&store, &pool, held.len() as u64 + 1, 50).await? {
                handed += 1;
            }
            drop(waiting);
        } else {
            // Dropped at varied moments: before, around or after the
            // hand-over.
            let waiter = wait_for(&store, &pool, LONG_WAIT);
            tokio::time::sleep(Duration::from_millis(round % 4)).await;
            let release = {
                let (store, pool, key, id) = (
                    store.clone(),
                    pool.clone(),
                    mine.key.clone(),
                    lease_id(&mine),
                );
                tokio::spawn(async move { store.release_key(&pool, &key, id).await })
            };
            tokio::time::sleep(Duration::from_micros((round % 7) * 300)).await;
            waiter.abort();
            release.await??;
            held.remove(&mine.key);
            if let Ok((got, _, _)) = waiter.await {
                // It answered before the drop: it holds the key, rightly.
                let got = got?;
                answered += 1;
                ensure!(held.insert(got.key.clone()), "{} held twice", got.key);
                store.release_key(&pool, &got.key, lease_id(&got)).await?;
                held.remove(&got.key);
            }
        }
        settled(&store, &pool, held.len() as u64)
            .await
            .with_context(|| format!("round {round}"))?;
    }
    eprintln!(
        "200 rounds: {handed} of 100 unpolled waiters dropped holding a handed key, \
         {answered} of 100 aborted waiters answered before their drop"
    );
    ensure!(
        handed >= 50,
        "the hand-then-drop path ran only {handed} times"
    );
    let s = store.pool_info(&pool).await?.stats;
    assert_eq!((s.total, s.free, s.leased), (2, 1, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_handed_to_a_waiter_that_left_goes_to_the_next_waiter() -> Result<()> {
    if redis::skip("a_key_handed_to_a_waiter_that_left_goes_to_the_next_waiter") {
        return Ok(());
    }
    let (_server, store) = single().await?;
    let pool = Name::parse("next")?;
    store.generate_keys(&pool, 1).await?;
    let held = store.lease_key(&pool).await?;
    // The first waiter queues, then is never polled again.
    let mut first = Box::pin(store.lease_key_waiting(&pool, LONG_WAIT));
    tokio::select! {
        biased;
        got = &mut first => bail!("answered with no free key: {got:?}"),
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    let second = wait_for(&store, &pool, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.release_key(&pool, &held.key, lease_id(&held)).await?;
    // Free after the release, then leased again for the first waiter,
    // which never answers.
    ensure!(settle(&store, &pool, 1, 200).await?, "not handed");
    assert!(!second.is_finished(), "the second waiter jumped the queue");
    drop(first);
    let (got, _, _) = tokio::time::timeout(Duration::from_secs(5), second).await??;
    let got = got?;
    assert_eq!(got.key, held.key);
    let s = store.pool_info(&pool).await?.stats;
    assert_eq!((s.free, s.leased), (0, 1), "one lease: the second waiter's");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_on_one_process_gets_a_key_released_on_the_other() -> Result<()> {
    if redis::skip("a_waiter_on_one_process_gets_a_key_released_on_the_other") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let a = crate::keyward(&server.url()).start_listening().await?;
    let b = crate::keyward(&server.url()).start_listening().await?;
    a.api.readyz().await?.expect(200);
    b.api.readyz().await?.expect(200);
    let pool = "mp-wait";
    a.api.new_keys(pool, 1).await?;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let leased = a.api.lease(pool).await?;
        leased.expect(200);
        let waiter = {
            let api = b.api.clone();
            tokio::spawn(async move {
                let reply = api
                    .request(
                        reqwest::Method::POST,
                        &format!("/v1/pools/{pool}/lease"),
                        Some(json!({ "wait_ms": 10_000 })),
                    )
                    .await;
                (reply, Instant::now())
            })
        };
        marked(server.port, pool).await?;
        // The marker is set before the waiter's lease: let that lease
        // answer no_free_key before releasing.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let t = Instant::now();
        a.api
            .release(pool, &leased.str("key"), Some(leased.u64("lease_id")))
            .await?
            .expect(200);
        let (reply, at) = waiter.await?;
        let reply = reply?;
        reply.expect(200);
        assert_eq!(reply.str("key"), leased.str("key"));
        latencies.push(at - t);
        b.api
            .release(pool, &reply.str("key"), Some(reply.u64("lease_id")))
            .await?
            .expect(200);
    }
    eprintln!("release on A → waiter on B (HTTP round trips included): {latencies:?}");
    for l in &latencies {
        ensure!(*l < WAKE_BOUND, "served after {l:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_a_cluster_is_served_by_a_release_and_a_lease_end() -> Result<()> {
    if redis::skip("a_waiter_on_a_cluster_is_served_by_a_release_and_a_lease_end") {
        return Ok(());
    }
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await??;
    let nodes = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let store = store_on(RedisTarget::Cluster(nodes)).await?;
    let pool = Name::parse("cluster-wait")?;
    let patch = PoolPatch {
        lease_ttl: Some(ttl(1_000)?),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await?;
    store.generate_keys(&pool, 1).await?;
    let held = store.lease_key(&pool).await?;

    let waiter = wait_for(&store, &pool, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    store.release_key(&pool, &held.key, lease_id(&held)).await?;
    let (got, at, _) = waiter.await?;
    let got = got?;
    assert_eq!(got.key, held.key);
    eprintln!("cluster: release → waiter: {:?}", at - t);
    ensure!(at - t < WAKE_BOUND, "served after {:?}", at - t);

    // Nobody releases this one: its end serves the next waiter.
    let ends = got.lease.context("leased")?.until;
    let (again, _, at_ms) = wait_for(&store, &pool, LONG_WAIT).await?;
    assert_eq!(again?.key, held.key);
    let late = at_ms.saturating_sub(ends.as_millis());
    eprintln!("cluster: lease end → waiter: {late} ms");
    ensure!(
        at_ms + 1 >= Timestamp::as_millis(ends),
        "served before the end"
    );
    ensure!(
        late < WAKE_BOUND.as_millis() as u64,
        "served {late} ms late"
    );
    Ok(())
}

/// The conformance suite's race of a drop and a release, on Redis `TIME`,
/// read after `flush`: a give-back on Redis is a spawned release, which
/// `flush` waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_dropped_as_its_key_is_released_holds_no_key_after_flush() -> Result<()> {
    if redis::skip("a_waiter_dropped_as_its_key_is_released_holds_no_key_after_flush") {
        return Ok(());
    }
    let (_server, store) = single().await?;
    let pool = Name::parse("w-race")?;
    store
        .add_keys(
            &pool,
            NewKeys::Import(vec![PoolKey::parse("wz-key")?]),
            &Labels::default(),
        )
        .await?;
    let mut taken = 0;
    for round in 0..300 {
        let mine = store.lease_key(&pool).await?;
        let mut waiter = Box::pin(store.lease_key_waiting(&pool, LONG_WAIT));
        // Polled a few times: it may not have queued yet.
        for _ in 0..(1 + round % 3) {
            tokio::select! {
                biased;
                early = &mut waiter => bail!("round {round}: early {early:?}"),
                () = tokio::task::yield_now() => {}
            }
        }
        let release = store.release_key(&pool, "wz-key", lease_id(&mine));
        let answer = match round % 3 {
            // Dropped right after the release.
            0 => {
                release.await?;
                None
            }
            // Release and waiter polled together, release first.
            1 => tokio::select! {
                biased;
                released = release => { released?; None }
                answer = &mut waiter => Some(answer),
            },
            // One more poll of the waiter after the release.
            _ => {
                release.await?;
                tokio::time::timeout(Duration::ZERO, &mut waiter).await.ok()
            }
        };
        drop(waiter);
        store.flush().await?;
        let s = store.pool_info(&pool).await?.stats;
        match answer {
            Some(Ok(view)) => {
                taken += 1;
                ensure!((s.free, s.leased) == (0, 1), "round {round}: {s:?}");
                store.release_key(&pool, "wz-key", lease_id(&view)).await?;
            }
            Some(Err(e)) => bail!("round {round}: {e:?}"),
            None => ensure!(
                (s.free, s.leased) == (1, 0),
                "round {round} v{}: {s:?}",
                round % 3
            ),
        }
    }
    eprintln!("{taken} of 300 waiters answered before they were dropped");
    Ok(())
}
