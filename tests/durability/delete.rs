//! Deleting on `sqlite:`: a deleted pool or keyspace stays deleted across
//! `kill -9`, a new one of the same name starts empty and survives, and
//! rows filed for reclaiming are ignored at start and reclaimed afterwards
//! (a restart in the middle of reclaiming finishes the job).

use std::time::{Duration, Instant};

use crate::sqlite3;
use anyhow::{Context, Result, ensure};
use serde_json::json;

use keyward_testkit::process::TempDir;

const STOP_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_deleted_pool_and_keyspace_stay_deleted_after_a_kill() -> Result<()> {
    let dir = TempDir::new("delete-kill")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    let api = &server.api;
    let mut old = api.new_keys("big", 10_000).await?;
    old.extend(api.new_keys("big", 5_000).await?);
    api.lease("big").await?.expect(200);
    api.put_keyspace("ids", "abc", 4).await?.expect(201);
    let token = api.issue_token("ids").await?.str("token");
    api.activate("ids", &token).await?.expect(200);
    api.delete_pool("big").await?.expect(204);
    api.delete_keyspace("ids").await?.expect(204);
    // Acknowledged, so durable: kill before anything else can happen.
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    api.get_pool("big")
        .await?
        .expect_error(404, "pool_not_found");
    api.get_key("big", &old[0])
        .await?
        .expect_error(404, "key_not_found");
    api.get_keyspace("ids")
        .await?
        .expect_error(404, "keyspace_not_found");
    assert_eq!(
        api.list_all_names("/v1/pools", "pools", 10).await?,
        ["default"]
    );
    assert_eq!(
        api.list_all_names("/v1/keyspaces", "keyspaces", 10).await?,
        ["default"]
    );

    // The same names again: new and empty, and they survive a kill.
    let fresh = api.new_keys("big", 2).await?;
    api.put_keyspace("ids", "xyz", 2).await?.expect(201);
    server.kill()?;

    let server = launch.start().await?;
    let api = &server.api;
    assert_eq!(api.get_pool("big").await?.expect(200)["total"], 2);
    for key in &fresh {
        api.get_key("big", key).await?.expect(200);
    }
    api.get_key("big", &old[1])
        .await?
        .expect_error(404, "key_not_found");
    let ks = api.get_keyspace("ids").await?.expect(200).clone();
    assert_eq!(
        (ks["alphabet"].clone(), ks["issued"].clone()),
        (json!("xyz"), json!(0))
    );
    server.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn rows_left_to_reclaim_at_a_restart_are_ignored_then_reclaimed() -> Result<()> {
    let dir = TempDir::new("delete-reclaim")?;
    let launch = crate::launch(&dir);
    let server = launch.start().await?;
    server.api.new_keys("kept", 3).await?;
    server.terminate(STOP_WITHIN).await?;

    // As if a server was stopped in the middle of reclaiming a deleted
    // pool `gone` (its keys and a lease still there, its pools row gone)
    // and a deleted keyspace's marks and batches.
    let db = dir.db();
    let filed = "BEGIN;
        INSERT INTO keys (pool, key, created_at_ms, alive_until_ms)
            VALUES ('gone', 'AAAAAAAAAAAA', 1, 2), ('gone', 'BBBBBBBBBBBB', 1, 2);
        INSERT INTO leases (pool, key, lease_id, leased_until_ms)
            VALUES ('gone', 'AAAAAAAAAAAA', 7, 2);
        INSERT INTO marks (keyspace, token, activations) VALUES ('old', 'abc', '[[null, 1]]');
        INSERT INTO batches (keyspace, first, end, name) VALUES ('old', '0', '1', 'b');
        INSERT INTO reclaim (kind, rows_key) VALUES ('pool', 'gone'), ('keyspace', 'old');
        COMMIT;";
    if sqlite3(&db, filed)?.is_none() {
        return Ok(());
    }

    let server = launch.start().await?;
    let api = &server.api;
    api.get_pool("gone")
        .await?
        .expect_error(404, "pool_not_found");
    assert_eq!(api.get_pool("kept").await?.expect(200)["total"], 3);
    // The writer reclaims while idle; bounded wait.
    let started = Instant::now();
    loop {
        let left = sqlite3(
            &db,
            "SELECT (SELECT count(*) FROM keys WHERE pool = 'gone')
                  + (SELECT count(*) FROM leases WHERE pool = 'gone')
                  + (SELECT count(*) FROM marks WHERE keyspace = 'old')
                  + (SELECT count(*) FROM batches WHERE keyspace = 'old')
                  + (SELECT count(*) FROM reclaim)",
        )?
        .context("sqlite3 ran before")?;
        if left == "0" {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{left} rows still to reclaim after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(api.get_pool("kept").await?.expect(200)["total"], 3);
    server.terminate(STOP_WITHIN).await
}
