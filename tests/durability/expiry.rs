//! Deadlines are wall-clock instants: time that passes while the server
//! is down counts. The one test here that sleeps, since it is about real
//! time across a restart.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use crate::server::{Launch, TempDir, keys_of, str_field, u64_field};

#[tokio::test]
async fn deadlines_that_pass_while_the_server_is_down_have_expired_on_restart() -> Result<()> {
    let dir = TempDir::new("expiry")?;
    let launch = Launch::in_dir(&dir).args(["--lease-ttl", "1s", "--keepalive-ttl", "2s"]);
    let server = launch.start().await?;
    // "short" takes the flags; "long" keeps keys for a minute but leases
    // them for the flags' 1 s.
    server
        .api
        .put_pool("long", json!({"keepalive_ttl_ms": 60_000}))
        .await?
        .expect(201)?;
    let short = keys_of(&server.api.generate("short", 5).await?.expect(201)?)?;
    server.api.lease("short").await?.expect(200)?;
    let long = keys_of(&server.api.generate("long", 3).await?.expect(201)?)?;
    let long_lease = server.api.lease("long").await?.expect(200)?;
    // Every deadline above was set before this instant.
    let made = Instant::now();
    server.kill()?;

    tokio::time::sleep_until((made + Duration::from_millis(2_500)).into()).await;
    let server = launch.start().await?;
    for key in &short {
        server
            .api
            .key("short", key)
            .await?
            .expect_error(404, "key_not_found")?;
    }
    let pool = server.api.pool("short").await?.expect(200)?;
    assert_eq!(
        pool["total"], 0,
        "keys past keepalive_ttl are purged: {pool}"
    );

    for key in &long {
        server.api.key("long", key).await?.expect(200)?;
    }
    let key = str_field(&long_lease, "key")?;
    let after = server.api.key("long", &key).await?.expect(200)?;
    assert_eq!(
        after["state"], "free",
        "the 1 s lease ended while down: {after}"
    );
    assert_eq!(after["lease_id"], Value::Null);
    assert_eq!(after["alive_until"], long_lease["alive_until"]);
    let next = server.api.lease("long").await?.expect(200)?;
    ensure!(
        u64_field(&next, "lease_id")? > u64_field(&long_lease, "lease_id")?,
        "lease ids keep growing: {next} after {long_lease}"
    );
    server.terminate(Duration::from_secs(5)).await
}
