//! Retries: a call made while the server is down goes through once it is
//! back, within the retry policy's bounds.

use std::time::Duration;

use anyhow::Result;
use keyward_client::{Client, Error, RetryPolicy};
use keyward_testkit::process::{Launch, TempDir};

use crate::kit::{Proxy, WITHIN, binary};

#[tokio::test]
async fn a_call_while_the_server_restarts_is_retried_until_it_is_back() -> Result<()> {
    let dir = TempDir::new("client-restart")?;
    let launch = Launch::sqlite(binary()?, &dir.db(), dir.path());
    let first = launch.start().await?;
    let proxy = Proxy::start(first.addr).await?;
    let patient = Client::builder(&proxy.url())
        .retry(RetryPolicy::new(
            40,
            Duration::from_millis(50),
            Duration::from_millis(400),
        ))
        .build()?;
    let impatient = Client::builder(&proxy.url())
        .retry(RetryPolicy::never())
        .build()?;
    patient.pool("web").generate(2).await?;

    first.kill()?;
    assert!(matches!(
        impatient.pool("web").info().await,
        Err(Error::Transport(_))
    ));
    let pool = patient.pool("web");
    let call = tokio::spawn(async move { pool.generate(1).await });
    let second = launch.start().await?;
    proxy.point_to(second.addr);

    let added = tokio::time::timeout(WITHIN, call).await???;
    assert_eq!(added.len(), 1);
    assert_eq!(patient.pool("web").info().await?.total, 3);
    Ok(())
}
