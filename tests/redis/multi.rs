//! Two keyward processes on one private Redis: they share every pool and
//! keyspace, atomically.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use keyward_testkit::client::{Api, time_of};
use keyward_testkit::process::Server;
use keyward_testkit::redis::{self, RedisServer};

/// A private Redis and two keyward processes on it.
struct Pair {
    a: Server,
    b: Server,
    redis: RedisServer,
}

async fn pair(extra: &[&str]) -> Result<Pair> {
    let redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    let a = crate::keyward(&redis.url())
        .args(extra)
        .start_listening()
        .await?;
    let b = crate::keyward(&redis.url())
        .args(extra)
        .start_listening()
        .await?;
    a.api.readyz().await?.expect(200);
    b.api.readyz().await?.expect(200);
    Ok(Pair { a, b, redis })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_through_two_processes_never_hold_one_key_twice() -> Result<()> {
    if redis::skip("sixteen_clients_through_two_processes_never_hold_one_key_twice") {
        return Ok(());
    }
    let p = pair(&[]).await?;
    let pool = "mp-lease";
    let keys = p.a.api.new_keys(pool, 24).await?;
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let ids: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let apis = [p.a.api.clone(), p.b.api.clone()];
    let mut clients = Vec::new();
    for client in 0..16usize {
        let apis = apis.clone();
        let (held, ids) = (held.clone(), ids.clone());
        clients.push(tokio::spawn(async move {
            let mut leases = 0;
            for round in 0..40usize {
                // Lease through one process, release through the other.
                let (lease_api, release_api) = if (client + round) % 2 == 0 {
                    (&apis[0], &apis[1])
                } else {
                    (&apis[1], &apis[0])
                };
                let reply = lease_api.lease(pool).await?;
                if reply.status == 404 {
                    reply.expect_error(404, "no_free_key");
                    continue;
                }
                reply.expect(200);
                let key = reply.str("key");
                let id = reply.u64("lease_id");
                assert!(
                    held.lock().unwrap().insert(key.clone()),
                    "{key} leased while another client held it"
                );
                assert!(ids.lock().unwrap().insert(id), "lease id {id} twice");
                tokio::task::yield_now().await;
                held.lock().unwrap().remove(&key);
                release_api.release(pool, &key, Some(id)).await?.expect(200);
                leases += 1;
            }
            anyhow::Ok(leases)
        }));
    }
    let mut total = 0;
    for client in clients {
        total += client.await??;
    }
    // 24 keys for 16 clients: every lease succeeds.
    assert_eq!(total, 16 * 40);
    assert_eq!(ids.lock().unwrap().len(), 16 * 40);
    let info = p.b.api.get_pool(pool).await?;
    info.expect(200);
    assert_eq!(
        (info.u64("total"), info.u64("free"), info.u64("leased")),
        (24, 24, 0)
    );
    assert_eq!(keys.len(), 24);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_issued_through_two_processes_cover_the_space_once_then_409() -> Result<()> {
    if redis::skip("tokens_issued_through_two_processes_cover_the_space_once_then_409") {
        return Ok(());
    }
    let p = pair(&[]).await?;
    let ks = "mp-tokens";
    p.a.api.put_keyspace(ks, "abcdef", 3).await?.expect(201);
    p.b.api.put_keyspace(ks, "abcdef", 3).await?.expect(200);
    p.b.api
        .put_keyspace(ks, "abcdeg", 3)
        .await?
        .expect_error(409, "keyspace_immutable");
    let apis = [p.a.api.clone(), p.b.api.clone()];
    let mut clients = Vec::new();
    for client in 0..16usize {
        let api: Api = apis[client % 2].clone();
        clients.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            // 216 tokens in all; a client stops at the first 409.
            for _ in 0..300 {
                let reply = api.issue_token(ks).await?;
                if reply.status == 409 {
                    reply.expect_error(409, "keyspace_exhausted");
                    break;
                }
                reply.expect(201);
                tokens.push(reply.str("token"));
            }
            anyhow::Ok(tokens)
        }));
    }
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await??);
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 216, "every token issued once");
    assert_eq!(distinct.len(), 216, "no token twice");
    assert!(
        all.iter()
            .all(|t| t.chars().count() == 3 && t.chars().all(|c| "abcdef".contains(c)))
    );
    for api in &apis {
        api.issue_token(ks)
            .await?
            .expect_error(409, "keyspace_exhausted");
        let info = api.get_keyspace(ks).await?;
        assert_eq!((info.u64("issued"), info.u64("remaining")), (216, 0));
    }
    // Issued by one, activated on the other, once.
    let token = &all[0];
    p.b.api.token_status(ks, token).await?.expect(200);
    p.b.api.activate(ks, token).await?.expect(200);
    p.a.api
        .activate(ks, token)
        .await?
        .expect_error(409, "already_activated");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_on_one_process_is_released_on_the_other() -> Result<()> {
    if redis::skip("a_lease_taken_on_one_process_is_released_on_the_other") {
        return Ok(());
    }
    let p = pair(&[]).await?;
    let pool = "mp-cross";
    p.a.api.new_keys(pool, 1).await?;
    let leased = p.a.api.lease(pool).await?;
    leased.expect(200);
    let key = leased.str("key");
    let id = leased.u64("lease_id");
    let seen = p.b.api.get_key(pool, &key).await?;
    assert_eq!(seen.body, leased.body, "both processes see the same lease");
    p.b.api.lease(pool).await?.expect_error(404, "no_free_key");
    p.b.api
        .release(pool, &key, Some(id + 1))
        .await?
        .expect_error(409, "lease_mismatch");
    let released = p.b.api.release(pool, &key, Some(id)).await?;
    assert_eq!(released.expect(200)["state"], "free");
    assert_eq!(
        p.a.api.get_key(pool, &key).await?.expect(200)["state"],
        "free"
    );
    let again = p.a.api.lease(pool).await?;
    assert!(again.u64("lease_id") > id, "lease ids only grow");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_and_a_key_expire_for_both_processes() -> Result<()> {
    if redis::skip("a_lease_and_a_key_expire_for_both_processes") {
        return Ok(());
    }
    let p = pair(&["--lease-ttl", "1s"]).await?;
    let pool = "mp-expiry";
    p.a.api.new_keys(pool, 1).await?;
    let leased = p.a.api.lease(pool).await?;
    leased.expect(200);
    let key = leased.str("key");
    // Redis TIME is the clock: the lease ends 1 s after it began.
    let until = time_of(&leased.body, "leased_until");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    assert!(until.abs_diff(now + 1_000) < 500, "{until} vs now {now}");
    assert_eq!(
        p.b.api.get_key(pool, &key).await?.expect(200)["state"],
        "leased"
    );

    // The contract: ended no later than lease_ttl + 1 s; bounded polling.
    let start = Instant::now();
    let mut freed = false;
    while start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let info = p.b.api.get_pool(pool).await?;
        if info.u64("free") == 1 {
            freed = true;
            break;
        }
    }
    assert!(freed, "the lease did not end within 3 s");
    assert!(
        start.elapsed() < Duration::from_millis(2_100),
        "{:?}",
        start.elapsed()
    );
    for api in [&p.a.api, &p.b.api] {
        assert_eq!(api.get_key(pool, &key).await?.expect(200)["state"], "free");
    }

    // A key with no keep-alive is purged, for both.
    let short = "mp-purge";
    p.a.api
        .put_pool(short, json!({"keepalive_ttl_ms": 500}))
        .await?
        .expect(201);
    let doomed = p.a.api.new_keys(short, 1).await?.remove(0);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for api in [&p.a.api, &p.b.api] {
        api.get_key(short, &doomed)
            .await?
            .expect_error(404, "key_not_found");
        assert_eq!(api.get_pool(short).await?.u64("total"), 0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_intact_after_both_processes_restart() -> Result<()> {
    if redis::skip("state_is_intact_after_both_processes_restart") {
        return Ok(());
    }
    let p = pair(&[]).await?;
    let (pool, ks) = ("mp-restart", "mp-restart");
    p.a.api.new_keys(pool, 3).await?;
    let leased = p.b.api.lease(pool).await?;
    leased.expect(200);
    let key = leased.str("key");
    p.a.api.put_keyspace(ks, "abcdefgh", 2).await?.expect(201);
    let t1 = p.a.api.issue_token(ks).await?.str("token");
    let t2 = p.b.api.issue_token(ks).await?.str("token");
    let activated = p.b.api.activate(ks, &t1).await?;
    activated.expect(200);
    let compat = p.a.api.compat_get_token().await?;
    compat.expect(200);
    let default_before = p.a.api.get_keyspace("default").await?;

    let Pair { a, b, redis } = p;
    a.stop().await?;
    b.stop().await?;
    let a = crate::keyward(&redis.url()).start_listening().await?;
    let b = crate::keyward(&redis.url()).start_listening().await?;

    assert_eq!(b.api.get_key(pool, &key).await?.body, leased.body);
    let info = a.api.get_pool(pool).await?;
    assert_eq!((info.u64("total"), info.u64("leased")), (3, 1));
    assert_eq!(a.api.token_status(ks, &t1).await?.body, activated.body);
    assert_eq!(
        b.api.token_status(ks, &t2).await?.expect(200)["state"],
        "issued"
    );
    let ksinfo = b.api.get_keyspace(ks).await?;
    assert_eq!((ksinfo.u64("issued"), ksinfo.u64("activated")), (2, 1));
    let t3 = a.api.issue_token(ks).await?.str("token");
    assert!(t3 != t1 && t3 != t2);
    assert_eq!(
        b.api.get_keyspace("default").await?.body,
        default_before.body,
        "the default keyspace keeps its tokens"
    );
    let next = b.api.lease(pool).await?;
    assert!(next.u64("lease_id") > leased.u64("lease_id"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_keyspace_with_tokens_cannot_change_but_an_empty_one_can() -> Result<()> {
    if redis::skip("a_default_keyspace_with_tokens_cannot_change_but_an_empty_one_can") {
        return Ok(());
    }
    let redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    // Nothing issued yet: the flags may redefine it.
    let first = crate::keyward(&redis.url())
        .args(["--token-length", "3"])
        .start_listening()
        .await?;
    first.stop().await?;
    let second = crate::keyward(&redis.url())
        .args(["--token-length", "5"])
        .start_listening()
        .await?;
    assert_eq!(second.api.get_keyspace("default").await?.u64("length"), 5);
    second.api.compat_get_token().await?.expect(200);
    second.stop().await?;

    let refused = crate::keyward(&redis.url())
        .args(["--token-length", "6"])
        .start_listening()
        .await;
    let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("already issued 1 tokens") && error.contains("--token-length 5"),
        "{error}"
    );
    Ok(())
}
