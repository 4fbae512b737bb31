//! Idempotent replay through a proxy that loses answers, and the calls of
//! shop keyspaces (batches, fingerprints, revocation).

use std::collections::BTreeSet;

use anyhow::Result;
use keyward_client::{Client, Error, KeyspaceSpec, Labels, TokenState};

use crate::kit::{Proxy, serve};

#[tokio::test]
async fn a_change_whose_answer_was_lost_is_retried_with_one_effect() -> Result<()> {
    let s = serve().await?;
    let proxy = Proxy::start(s.server.addr).await?;
    let lossy = Client::new(&proxy.url())?;
    proxy.lose_next_answers(1);
    let added = lossy
        .pool("web")
        .import_keys(&["sk-only"], &Labels::new())
        .await?;
    // The replay answers as the first try did: the key is new, not
    // "existing".
    assert_eq!(added.keys.len(), 1);
    assert!(added.existing.is_empty());
    assert_eq!(s.client.pool("web").info().await?.total, 1);

    // A new client: the last one's pooled connection would not be lossy.
    let lossy = Client::new(&proxy.url())?;
    proxy.lose_next_answers(1);
    lossy.pool("web").generate(1).await?;
    assert_eq!(s.client.pool("web").info().await?.total, 2);
    Ok(())
}

#[tokio::test]
async fn issue_many_issues_distinct_tokens_counted_in_their_batch() -> Result<()> {
    let s = serve().await?;
    let ks = s.client.keyspace("shop");
    ks.create(&KeyspaceSpec::new("crockford", 8)).await?;
    let issued = ks.issue_many(50, Some("march")).await?;
    let distinct: BTreeSet<_> = issued.tokens.iter().collect();
    assert_eq!(distinct.len(), 50);
    ks.issue(Some("march")).await?;
    ks.activate(&issued.tokens[0], None).await?;
    let batch = ks.batch("march").await?;
    assert_eq!((batch.issued, batch.activated, batch.revoked), (51, 1, 0));
    assert_eq!(
        ks.status(&issued.tokens[1]).await?.batch.as_deref(),
        Some("march")
    );
    assert!(matches!(ks.batch("april").await, Err(Error::BatchNotFound)));
    Ok(())
}

#[tokio::test]
async fn the_same_fingerprint_is_the_same_slot_and_deactivate_frees_it() -> Result<()> {
    let s = serve().await?;
    let ks = s.client.keyspace("shop");
    ks.create(&KeyspaceSpec::new("digits", 8).max_activations(2))
        .await?;
    let token = ks.issue(None).await?.token;
    ks.activate(&token, Some("laptop")).await?;
    let again = ks.activate(&token, Some("laptop")).await?;
    assert_eq!(again.activations.len(), 1);
    ks.activate(&token, Some("phone")).await?;
    assert!(matches!(
        ks.activate(&token, Some("tablet")).await,
        Err(Error::AlreadyActivated)
    ));
    ks.deactivate(&token, "laptop").await?;
    ks.activate(&token, Some("tablet")).await?;
    assert!(matches!(
        ks.deactivate(&token, "laptop").await,
        Err(Error::ActivationNotFound)
    ));
    Ok(())
}

#[tokio::test]
async fn a_revoked_token_cannot_be_activated() -> Result<()> {
    let s = serve().await?;
    let ks = s.client.keyspace("shop");
    ks.create(&KeyspaceSpec::new("unambiguous", 10)).await?;
    let token = ks.issue(None).await?.token;
    let revoked = ks.revoke(&token, Some("refunded")).await?;
    assert_eq!(revoked.state, TokenState::Revoked);
    assert_eq!(revoked.reason.as_deref(), Some("refunded"));
    assert!(matches!(
        ks.activate(&token, None).await,
        Err(Error::TokenRevoked)
    ));
    assert_eq!(ks.revoke(&token, None).await?.state, TokenState::Revoked);
    Ok(())
}
