//! Keyspace calls the server answers today: create, issue, status,
//! activate, and their errors.

use anyhow::Result;
use keyward_client::{Error, KeyspaceSpec, TokenState};

use crate::kit::serve;

#[tokio::test]
async fn an_issued_token_activates_once() -> Result<()> {
    let s = serve().await?;
    let ks = s.client.keyspace("shop");
    let created = ks.create(&KeyspaceSpec::new("ABCDEFGHJK", 6)).await?;
    assert_eq!(created.capacity, 1_000_000);

    let issued = ks.issue(None).await?;
    assert_eq!(issued.remaining, 999_999);
    assert_eq!(ks.status(&issued.token).await?.state, TokenState::Issued);
    let activated = ks.activate(&issued.token, None).await?;
    assert_eq!(activated.state, TokenState::Activated);
    assert!(activated.activated_at.is_some());
    assert!(matches!(
        ks.activate(&issued.token, None).await,
        Err(Error::AlreadyActivated)
    ));
    assert_eq!(ks.info().await?.activated, 1);
    Ok(())
}

#[tokio::test]
async fn token_errors_have_their_own_variants() -> Result<()> {
    let s = serve().await?;
    let ks = s.client.keyspace("shop");
    ks.create(&KeyspaceSpec::new("ab", 1)).await?;
    let first = ks.issue(None).await?.token;
    let other = if first == "a" { "b" } else { "a" };
    assert!(matches!(ks.status(other).await, Err(Error::TokenNotIssued)));
    assert!(matches!(
        ks.status("abc").await,
        Err(Error::InvalidToken { .. })
    ));
    ks.issue(None).await?;
    assert!(matches!(
        ks.issue(None).await,
        Err(Error::KeyspaceExhausted)
    ));
    assert!(matches!(
        s.client.keyspace("none").info().await,
        Err(Error::KeyspaceNotFound)
    ));
    Ok(())
}
