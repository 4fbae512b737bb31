//! One keyward process on a 3-master Redis Cluster: every pool and keyspace
//! lives in one slot, and they spread over the masters.

use std::collections::HashSet;

use anyhow::Result;

use keyward_testkit::redis::{self, RedisCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_pools_and_a_whole_keyspace_work_on_a_three_master_cluster() -> Result<()> {
    if redis::skip("twelve_pools_and_a_whole_keyspace_work_on_a_three_master_cluster") {
        return Ok(());
    }
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await??;
    let keyward = crate::keyward(&cluster.url()).start_listening().await?;
    let api = &keyward.api;
    api.readyz().await?.expect(200);

    let mut masters = HashSet::new();
    for i in 0..12 {
        let pool = format!("cluster-{i}");
        let keys = api.new_keys(&pool, 3).await?;
        let leased = api.lease(&pool).await?;
        leased.expect(200);
        let key = leased.str("key");
        assert!(keys.contains(&key));
        api.release(&pool, &key, Some(leased.u64("lease_id")))
            .await?
            .expect(200);
        let info = api.get_pool(&pool).await?;
        assert_eq!((info.u64("total"), info.u64("free")), (3, 3));
        // The master holding the pool answers EXISTS; the others MOVED.
        let meta = format!("{{kw:p:{pool}}}:meta");
        let holders: Vec<u16> = cluster
            .nodes
            .iter()
            .filter(|n| {
                redis::command(n.port, &format!("EXISTS {meta}"))
                    .is_some_and(|r| r.starts_with(":1"))
            })
            .map(|n| n.port)
            .collect();
        assert_eq!(holders.len(), 1, "{pool} lives on one master: {holders:?}");
        masters.insert(holders[0]);
    }
    assert!(
        masters.len() >= 2,
        "12 pools spread over the masters: {masters:?}"
    );

    let ks = "cluster-ks";
    api.put_keyspace(ks, "wxyz", 3).await?.expect(201);
    let mut tokens = HashSet::new();
    for _ in 0..64 {
        let reply = api.issue_token(ks).await?;
        reply.expect(201);
        assert!(tokens.insert(reply.str("token")), "a token twice");
    }
    api.issue_token(ks)
        .await?
        .expect_error(409, "keyspace_exhausted");
    let token = tokens.iter().next().cloned().unwrap_or_default();
    api.activate(ks, &token).await?.expect(200);
    api.activate(ks, &token)
        .await?
        .expect_error(409, "already_activated");
    api.compat_get_token().await?.expect(200);
    keyward.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_ends_a_lease_on_a_three_master_cluster_through_the_due_index() -> Result<()> {
    if redis::skip("the_reaper_ends_a_lease_on_a_three_master_cluster_through_the_due_index") {
        return Ok(());
    }
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await??;
    let keyward = crate::keyward(&cluster.url()).start_listening().await?;
    let api = &keyward.api;
    api.readyz().await?.expect(200);
    api.put_pool("reaped", serde_json::json!({ "lease_ttl_ms": 300 }))
        .await?
        .expect(201);
    api.new_keys("reaped", 2).await?;
    api.lease("reaped").await?.expect(200);

    // Read Redis directly (a read through keyward would expire lazily):
    // the master holding the pool answers, the others say MOVED.
    let leases = |reply: &str| -> Option<u64> { reply.strip_prefix(':')?.trim().parse().ok() };
    let count_leases = || {
        cluster.nodes.iter().find_map(|n| {
            redis::command(n.port, "ZCARD {kw:p:reaped}:leases").and_then(|r| leases(&r))
        })
    };
    assert_eq!(count_leases(), Some(1));
    let indexed = cluster.nodes.iter().any(|n| {
        redis::command(n.port, "ZSCORE kw:due reaped")
            .is_some_and(|r| r.starts_with('$') && !r.starts_with("$-1"))
    });
    assert!(indexed, "the pool is in the due index");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count_leases() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the reaper did not end the lease within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    keyward.stop().await
}
