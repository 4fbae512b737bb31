//! Deleting on Redis: a pool's keys are reclaimed by the reaper in bounded
//! steps while a new pool of the same name works untouched, and the
//! plain-set name registries of earlier versions become sorted sets at
//! start-up. Sizes are read with Redis's own `DBSIZE`.

use std::sync::Arc;

use anyhow::Result;
use keyward::clock::ManualClock;
use keyward::core::Name;
use keyward::store::{Limits, PageLimit, PageRequest, Store};

use crate::states::int_reply;
use keyward_testkit::backends;
use keyward_testkit::redis::{self, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pool_is_reclaimed_in_bounded_steps_while_its_name_lives_on() -> Result<()> {
    if redis::skip("a_deleted_pool_is_reclaimed_in_bounded_steps_while_its_name_lives_on") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let clock = Arc::new(ManualClock::default());
    let store = backends::redis_store(&server, clock, Limits::DEFAULT).await?;
    let baseline = int_reply(server.port, "DBSIZE")?;

    // More keys than one reaper call reclaims (16 steps of 4096).
    let pool = Name::parse("big")?;
    for _ in 0..7 {
        store.generate_keys(&pool, 10_000).await?;
    }
    assert!(int_reply(server.port, "DBSIZE")? > baseline + 70_000);
    store.delete_pool(&pool).await?;

    // The name is free at once: a new pool of it starts empty and keeps
    // its keys while the old ones are reclaimed.
    let fresh = store.generate_keys(&pool, 3).await?;
    assert_eq!(store.pool_info(&pool).await?.stats.total, 3);

    store.expire_due().await?;
    let left = int_reply(server.port, "DBSIZE")?;
    assert!(
        left > baseline + 3,
        "one reaper call reclaims a bounded number of keys, not all 70,000"
    );
    for _ in 0..10 {
        store.expire_due().await?;
    }
    assert_eq!(int_reply(server.port, "SCARD kw:graves")?, 0);
    // The new pool's meta, generation, free set, alive set, list of all
    // keys, list of free keys, listing counter and 3 key hashes remain,
    // and its due index entry.
    let after = int_reply(server.port, "DBSIZE")?;
    assert!(
        after <= baseline + 11,
        "{after} keys left of {baseline} at the start"
    );
    for key in &fresh {
        store.get_key(&pool, &key.key).await?;
    }
    assert_eq!(store.pool_info(&pool).await?.stats.total, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_set_registries_of_earlier_versions_become_sorted_sets_at_start() -> Result<()> {
    if redis::skip("plain_set_registries_of_earlier_versions_become_sorted_sets_at_start") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    assert_eq!(int_reply(server.port, "SADD kw:pools default web api")?, 3);
    assert_eq!(int_reply(server.port, "SADD kw:keyspaces default")?, 1);
    let clock = Arc::new(ManualClock::default());
    let store = backends::redis_store(&server, clock, Limits::DEFAULT).await?;
    // Any operation initialises the store, the migration first.
    let pool_count = store.snapshot().await?.pool_count;
    assert_eq!(int_reply(server.port, "EXISTS kw:pools")?, 0);
    assert_eq!(int_reply(server.port, "ZCARD kw:pool-names")?, 3);
    assert_eq!(int_reply(server.port, "ZCARD kw:keyspace-names")?, 1);
    assert_eq!(pool_count, 3);
    // `web` and `api` were names without pools: listed only if they exist.
    let page = store
        .list_pools(&PageRequest {
            after: None,
            limit: PageLimit::DEFAULT,
        })
        .await?;
    let names: Vec<&str> = page.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_deleting_work_on_a_three_master_cluster() -> Result<()> {
    if redis::skip("listing_and_deleting_work_on_a_three_master_cluster") {
        return Ok(());
    }
    let cluster = tokio::task::spawn_blocking(redis::RedisCluster::start).await??;
    let keyward = crate::keyward(&cluster.url()).start_listening().await?;
    let api = &keyward.api;
    api.readyz().await?.expect(200);
    let mut pools = Vec::new();
    for i in 0..8 {
        let pool = format!("cl-{i}");
        api.new_keys(&pool, 3).await?;
        pools.push(pool);
    }
    api.put_keyspace("cl-ks", "abc", 3).await?.expect(201);
    let mut want = pools.clone();
    want.push("default".into());
    want.sort();
    assert_eq!(api.list_all_names("/v1/pools", "pools", 3).await?, want);
    assert_eq!(
        api.list_all_names("/v1/keyspaces", "keyspaces", 1).await?,
        ["cl-ks", "default"]
    );

    let leased = api.lease("cl-2").await?.str("key");
    api.delete_pool("cl-2").await?.expect(204);
    api.delete_keyspace("cl-ks").await?.expect(204);
    api.get_pool("cl-2")
        .await?
        .expect_error(404, "pool_not_found");
    api.get_key("cl-2", &leased)
        .await?
        .expect_error(404, "key_not_found");
    api.get_keyspace("cl-ks")
        .await?
        .expect_error(404, "keyspace_not_found");
    want.retain(|p| p != "cl-2");
    assert_eq!(api.list_all_names("/v1/pools", "pools", 4).await?, want);
    assert_eq!(
        api.put_pool("cl-2", serde_json::json!({}))
            .await?
            .expect(201)["total"],
        0
    );
    Ok(())
}
