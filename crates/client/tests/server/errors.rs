//! Every error the server answers with arrives as its typed variant;
//! no answer at all is `Transport`, and neither shows a key.

use std::time::Duration;

use anyhow::Result;
use keyward_client::{Client, Error, Outcome, PoolSettings, RetryPolicy};
use keyward_testkit::process::free_port;

use crate::kit::{serve, serve_with};

#[tokio::test]
async fn no_free_key_says_when_a_key_frees_by_itself() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("web", 1, Duration::from_secs(60)).await?;
    pool.lease(None).await?;
    match pool.lease(None).await {
        Err(Error::NoFreeKey {
            retry_after: Some(after),
        }) => assert!(after > Duration::ZERO && after <= Duration::from_secs(60)),
        other => panic!("expected NoFreeKey with retry_after, got {other:?}"),
    }
    // A pool that does not exist has nothing to lease, and nothing frees.
    assert!(matches!(
        s.client.pool("none").lease(None).await,
        Err(Error::NoFreeKey { retry_after: None })
    ));
    Ok(())
}

#[tokio::test]
async fn fencing_and_lookup_errors_have_their_own_variants() -> Result<()> {
    let s = serve().await?;
    let (pool, _) = s.pool_with("web", 1, Duration::from_secs(60)).await?;
    let leased = pool.lease(None).await?;
    let stale = leased.lease_id.map(|id| id + 1);
    assert!(matches!(
        pool.release(&leased.key, stale, Outcome::Ok).await,
        Err(Error::LeaseMismatch)
    ));
    pool.release(&leased.key, leased.lease_id, Outcome::Ok)
        .await?;
    assert!(matches!(
        pool.release(&leased.key, None, Outcome::Ok).await,
        Err(Error::NotLeased)
    ));
    assert!(matches!(
        pool.key("nokey-nokey").await,
        Err(Error::KeyNotFound)
    ));
    assert!(matches!(
        s.client.pool("none").info().await,
        Err(Error::PoolNotFound)
    ));
    Ok(())
}

#[tokio::test]
async fn other_codes_keep_code_message_and_status() -> Result<()> {
    let s = serve().await?;
    let err = s
        .client
        .pool("web")
        .configure(&PoolSettings::new().key_length(3))
        .await
        .expect_err("a key length of 3 is refused");
    match &err {
        Error::Other { code, status, .. } => {
            assert_eq!((code.as_str(), *status), ("invalid_settings", 400))
        }
        other => panic!("expected Other, got {other:?}"),
    }
    assert_eq!(err.code(), Some("invalid_settings"));
    Ok(())
}

#[tokio::test]
async fn a_key_dot_or_dot_dot_is_refused_before_anything_is_sent() -> Result<()> {
    let s = serve().await?;
    for key in [".", ".."] {
        assert!(matches!(
            s.client.pool("web").key(key).await,
            Err(Error::InvalidInput(_))
        ));
    }
    Ok(())
}

#[tokio::test]
async fn a_token_is_sent_as_a_bearer_and_a_missing_one_is_unauthorized() -> Result<()> {
    let s = serve_with(&["--admin-token", "s3cret-admin"]).await?;
    assert!(matches!(
        s.client.pool("default").info().await,
        Err(Error::Unauthorized)
    ));
    let authed = Client::builder(&s.url()).token("s3cret-admin").build()?;
    authed.pool("default").info().await?;
    assert!(
        !format!("{authed:?}").contains("s3cret"),
        "Debug shows no token"
    );
    Ok(())
}

#[tokio::test]
async fn no_server_is_a_transport_error_after_the_retries_without_the_key_in_it() -> Result<()> {
    let port = free_port()?;
    let client = Client::builder(&format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy::new(
            3,
            Duration::from_millis(10),
            Duration::from_millis(20),
        ))
        .build()?;
    let err = client
        .pool("web")
        .release("sk-secret-value", Some(1), Outcome::Ok)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("sk-secret-value"), "{shown}");
    Ok(())
}
