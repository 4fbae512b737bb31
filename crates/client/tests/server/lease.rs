//! The lease guard: keep-alive across TTLs, release on drop and
//! explicitly, loss when the key is taken away, the outcome it reports.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use keyward_client::{Client, KeyState, Outcome, RetryPolicy};
use keyward_testkit::process::free_port;
use tokio::sync::watch;

use crate::kit::{Proxy, WITHIN, serve, until_state};

const TTL: Duration = Duration::from_millis(600);

/// Waits (at most [`WITHIN`]) until the keep-alive task behind `signal`
/// has ended: the channel closes when its sender, owned by the task, is
/// dropped.
async fn task_ended(mut signal: watch::Receiver<bool>) -> Result<()> {
    let closed =
        tokio::time::timeout(WITHIN, async { while signal.changed().await.is_ok() {} }).await;
    ensure!(
        closed.is_ok(),
        "the keep-alive task still runs {WITHIN:?} later"
    );
    Ok(())
}

#[tokio::test]
async fn a_guard_keeps_its_key_leased_across_several_ttls_and_frees_it_on_drop() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("web", 1, TTL).await?;
    let guard = pool.lease_guard(None).await?;
    let first = guard.leased().clone();
    let signal = guard.lost_signal();

    // Without keep-alives the lease would end after one TTL.
    tokio::time::sleep(TTL * 4).await;
    let held = pool.key(guard.key()).await?;
    assert_eq!(held.state, KeyState::Leased);
    assert_eq!(held.lease_id, Some(guard.lease_id()));
    assert_ne!(
        held.leased_until, first.leased_until,
        "the lease was extended"
    );
    assert!(!guard.is_lost());

    let key = guard.key().to_owned();
    drop(guard);
    let freed = until_state(&pool, &key, KeyState::Free).await?;
    assert_eq!(freed.failures, 0);
    task_ended(signal).await
}

#[tokio::test]
async fn a_guard_is_lost_when_its_key_is_disabled_from_outside() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("web", 1, TTL).await?;
    let guard = pool.lease_guard(None).await?;
    let mut signal = guard.lost_signal();

    pool.disable(guard.key(), Some("revoked upstream")).await?;
    let lost = tokio::time::timeout(WITHIN, signal.wait_for(|lost| *lost)).await;
    assert!(matches!(lost, Ok(Ok(_))), "no loss seen within {WITHIN:?}");
    assert!(guard.is_lost());
    task_ended(guard.lost_signal()).await?;

    let key = guard.key().to_owned();
    drop(guard);
    assert_eq!(pool.key(&key).await?.state, KeyState::Disabled);
    Ok(())
}

#[tokio::test]
async fn an_explicit_release_sends_the_reported_outcome() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("llm", 1, TTL).await?;
    let mut guard = pool.lease_guard(None).await?;
    let signal = guard.lost_signal();
    guard.report(Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(60)),
    });
    let released = guard.release().await?;
    assert_eq!(released.state, KeyState::Cooling);
    assert!(released.available_at.is_some());
    task_ended(signal).await
}

#[tokio::test]
async fn a_release_after_the_lease_was_lost_answers_with_the_servers_error() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("web", 1, TTL).await?;
    let guard = pool.lease_guard(None).await?;
    pool.disable(guard.key(), None).await?;
    let err = guard
        .release()
        .await
        .expect_err("a disabled key's lease is over");
    assert!(err.ends_lease(), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_guard_dropped_by_a_panic_reports_the_key_failed() -> Result<()> {
    let s = serve().await?;
    let (pool, keys) = s.pool_with("llm", 1, TTL).await?;
    let in_task = pool.clone();
    let panicked = tokio::spawn(async move {
        let _guard = in_task.lease_guard(None).await.expect("a key is free");
        panic!("the worker fails while holding the key");
    })
    .await;
    assert!(panicked.is_err());
    let after = until_state(&pool, &keys[0].key, KeyState::Free).await?;
    assert_eq!(after.failures, 1);
    Ok(())
}

#[tokio::test]
async fn a_guard_waits_for_a_key_released_meanwhile() -> Result<()> {
    let s = serve().await?;
    let (pool, keys) = s.pool_with("web", 1, Duration::from_secs(60)).await?;
    let held = pool.lease(None).await?;
    let waiter = pool.clone();
    let waiting =
        tokio::spawn(async move { waiter.lease_guard(Some(Duration::from_secs(10))).await });
    // The waiter gets the key whenever it is released; no timing needed.
    pool.release(&held.key, held.lease_id, Outcome::Ok).await?;
    let guard = tokio::time::timeout(WITHIN, waiting).await???;
    assert_eq!(guard.key(), keys[0].key);
    assert!(guard.lease_id() > held.lease_id.unwrap_or(0));
    guard.release().await?;
    Ok(())
}

#[tokio::test]
async fn a_guard_that_cannot_reach_the_server_for_a_whole_ttl_is_lost() -> Result<()> {
    let s = serve().await?;
    s.pool_with("web", 1, TTL).await?;
    let proxy = Proxy::start(s.server.addr).await?;
    let through = Client::builder(&proxy.url())
        .retry(RetryPolicy::new(
            2,
            Duration::from_millis(10),
            Duration::from_millis(20),
        ))
        .build()?;
    let guard = through.pool("web").lease_guard(None).await?;
    let mut signal = guard.lost_signal();

    // Nothing answers there: every keep-alive fails for want of an answer.
    proxy.point_to(SocketAddr::from(([127, 0, 0, 1], free_port()?)));
    let lost = tokio::time::timeout(WITHIN, signal.wait_for(|lost| *lost)).await;
    assert!(matches!(lost, Ok(Ok(_))), "no loss seen within {WITHIN:?}");
    // The server agrees: the lease ran out.
    until_state(&s.client.pool("web"), guard.key(), KeyState::Free).await?;
    Ok(())
}
