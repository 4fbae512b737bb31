//! Deadlines are wall-clock instants: time that passes while the server
//! is down counts. The one test here that sleeps, since it is about real
//! time across a restart.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use keyward_testkit::client::{str_field, u64_field};
use keyward_testkit::process::TempDir;

#[tokio::test]
async fn deadlines_that_pass_while_the_server_is_down_have_expired_on_restart() -> Result<()> {
    let dir = TempDir::new("expiry")?;
    let launch = crate::launch(&dir).args(["--lease-ttl", "1s", "--keepalive-ttl", "2s"]);
    let server = launch.start().await?;
    // "short" takes the flags; "long" keeps keys for a minute but leases
    // them for the flags' 1 s.
    server
        .api
        .put_pool("long", json!({"keepalive_ttl_ms": 60_000}))
        .await?
        .expect(201);
    let short = server.api.new_keys("short", 5).await?;
    server.api.lease("short").await?.expect(200);
    let long = server.api.new_keys("long", 3).await?;
    let long_lease = server.api.lease("long").await?.expect(200).clone();
    // Every deadline above was set before this instant.
    let made = Instant::now();
    server.kill()?;

    tokio::time::sleep_until((made + Duration::from_millis(2_500)).into()).await;
    let server = launch.start().await?;
    for key in &short {
        server
            .api
            .get_key("short", key)
            .await?
            .expect_error(404, "key_not_found");
    }
    let pool = server.api.get_pool("short").await?.expect(200).clone();
    assert_eq!(
        pool["total"], 0,
        "keys past keepalive_ttl are purged: {pool}"
    );

    for key in &long {
        server.api.get_key("long", key).await?.expect(200);
    }
    let key = str_field(&long_lease, "key");
    let after = server.api.get_key("long", &key).await?.expect(200).clone();
    assert_eq!(
        after["state"], "free",
        "the 1 s lease ended while down: {after}"
    );
    assert_eq!(after["lease_id"], Value::Null);
    assert_eq!(after["alive_until"], long_lease["alive_until"]);
    let next = server.api.lease("long").await?.expect(200).clone();
    ensure!(
        u64_field(&next, "lease_id") > u64_field(&long_lease, "lease_id"),
        "lease ids keep growing: {next} after {long_lease}"
    );
    server.terminate(Duration::from_secs(5)).await
}
