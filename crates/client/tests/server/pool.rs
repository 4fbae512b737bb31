//! Pool calls: settings, import with labels, outcomes, disable/enable,
//! and listing keys a page at a time.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use keyward_client::{KeyState, Labels, Outcome, PoolSettings, Report};

use crate::kit::serve;

#[tokio::test]
async fn keys_come_a_page_at_a_time_and_each_key_exactly_once() -> Result<()> {
    let s = serve().await?;
    let (pool, made) = s.pool_with("web", 25, Duration::from_secs(60)).await?;
    let mut pages = pool.keys(None).page_size(10);
    let mut sizes = Vec::new();
    let mut listed = Vec::new();
    while let Some(page) = pages.next_page().await? {
        sizes.push(page.len());
        listed.extend(page.into_iter().map(|k| k.key));
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert!(pages.next_page().await?.is_none(), "done stays done");
    let unique: BTreeSet<_> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "no key listed twice");
    let expected: BTreeSet<_> = made.into_iter().map(|k| k.key).collect();
    assert_eq!(unique, expected);
    Ok(())
}

#[tokio::test]
async fn a_state_filter_lists_only_keys_in_that_state() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("web", 7, Duration::from_secs(60)).await?;
    let mut leased = BTreeSet::new();
    for _ in 0..3 {
        leased.insert(pool.lease(None).await?.key);
    }
    let listed: BTreeSet<_> = pool
        .keys(Some(KeyState::Leased))
        .page_size(2)
        .all()
        .await?
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(listed, leased);
    assert_eq!(pool.keys(Some(KeyState::Free)).all().await?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn configure_changes_only_the_given_settings() -> Result<()> {
    let s = serve().await?;
    let pool = s.client.pool("llm");
    let created = pool
        .configure(&PoolSettings::new().no_keepalive().max_failures(2))
        .await?;
    assert_eq!(created.keepalive_ttl, None);
    assert_eq!(created.max_failures, 2);
    let changed = pool
        .configure(&PoolSettings::new().cooldown(Duration::from_secs(5)))
        .await?;
    assert_eq!(changed.cooldown, Duration::from_secs(5));
    assert_eq!(changed.max_failures, 2);
    assert_eq!(pool.info().await?, changed);
    Ok(())
}

#[tokio::test]
async fn import_adds_new_keys_with_labels_and_names_the_existing_ones() -> Result<()> {
    let s = serve().await?;
    let pool = s.client.pool("llm");
    let labels = Labels::from([("provider".to_owned(), "example".to_owned())]);
    // A key with characters that must be percent-encoded in a path.
    let odd = "sk/odd?key%20#1";
    let first = pool.import_keys(&["sk-alpha", odd], &labels).await?;
    assert_eq!(first.keys.len(), 2);
    assert!(first.existing.is_empty());
    let again = pool
        .import_keys(&["sk-alpha", "sk-carol"], &Labels::new())
        .await?;
    assert_eq!(again.existing, ["sk-alpha"]);
    assert_eq!(again.keys.len(), 1);

    let fetched = pool.key(odd).await?;
    assert_eq!(fetched.key, odd);
    assert_eq!(fetched.labels, labels);
    assert_eq!(pool.key("sk-carol").await?.labels, Labels::new());
    Ok(())
}

#[tokio::test]
async fn outcomes_cool_and_quarantine_keys_and_enable_frees_them() -> Result<()> {
    let s = serve().await?;
    let pool = s.client.pool("llm");
    pool.configure(&PoolSettings::new().max_failures(1)).await?;
    pool.import_keys(&["sk-a"], &Labels::new()).await?;

    let leased = pool.lease(None).await?;
    let cooled = pool
        .release(
            &leased.key,
            leased.lease_id,
            Report::new(Outcome::RateLimited { retry_after: None }).reason("429 upstream"),
        )
        .await?;
    assert_eq!(cooled.state, KeyState::Cooling);
    assert_eq!(cooled.reason.as_deref(), Some("429 upstream"));
    assert_eq!(pool.enable("sk-a").await?.state, KeyState::Free);

    let leased = pool.lease(None).await?;
    let failed = pool
        .release(&leased.key, leased.lease_id, Outcome::Failed)
        .await?;
    assert_eq!(failed.state, KeyState::Quarantined);
    assert_eq!(failed.failures, 1);
    let enabled = pool.enable("sk-a").await?;
    assert_eq!((enabled.state, enabled.failures), (KeyState::Free, 0));
    Ok(())
}

#[tokio::test]
async fn keepalive_with_the_lease_id_extends_the_lease() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("web", 1, Duration::from_secs(60)).await?;
    let leased = pool.lease(None).await?;
    let kept = pool.keepalive(&leased.key, leased.lease_id).await?;
    assert_eq!(kept.lease_id, leased.lease_id);
    assert!(kept.leased_until >= leased.leased_until);
    pool.delete_key(&leased.key).await?;
    assert!(matches!(
        pool.key(&leased.key).await,
        Err(keyward_client::Error::KeyNotFound)
    ));
    Ok(())
}
