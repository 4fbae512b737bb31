//! Redis unreachable: 503 JSON while it is down, service once it is back,
//! and never a 2xx for an operation that did not happen.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use reqwest::Method;

use keyward_testkit::client::Api;
use keyward_testkit::redis::{self, RedisServer};

/// Polls `/readyz` until it answers `status` (at most `limit`).
async fn wait_ready(api: &Api, status: u16, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if api.readyz().await?.status == status {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("/readyz did not answer {status} within {limit:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_gives_503_until_it_comes_up_then_serves() -> Result<()> {
    if redis::skip("redis_down_at_start_gives_503_until_it_comes_up_then_serves") {
        return Ok(());
    }
    let port = keyward_testkit::process::free_port()?;
    let url = format!("redis://127.0.0.1:{port}/0");
    let keyward = crate::keyward(&url).start_listening().await?;
    let api = &keyward.api;
    api.healthz().await?.expect(200);
    api.readyz().await?.expect_error(503, "unavailable");
    api.generate_keys("down", 1)
        .await?
        .expect_error(503, "unavailable");
    api.lease("default").await?.expect_error(503, "unavailable");
    api.issue_token("default")
        .await?
        .expect_error(503, "unavailable");
    let compat = api.random_api_key(Method::POST, true, None).await?;
    assert_eq!(compat.status, 503, "{}", compat.text);
    // Let the retry task fail a few backoff steps.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let warnings = keyward
        .lines()
        .iter()
        .filter(|l| l.contains("Redis store not ready"))
        .count();
    assert!(
        warnings >= 2,
        "one warning per retry: {:?}",
        keyward.lines()
    );
    assert!(
        warnings <= 10,
        "backoff, not a busy loop: {:?}",
        keyward.lines()
    );

    let _redis = tokio::task::spawn_blocking(move || RedisServer::start_on(port, false)).await??;
    let took = wait_ready(api, 200, Duration::from_secs(5)).await?;
    eprintln!("ready {took:?} after Redis came up");
    let keys = api.new_keys("down", 2).await?;
    let leased = api.lease("down").await?;
    assert!(keys.contains(&leased.expect(200)["key"].as_str().unwrap_or("").to_owned()));
    api.compat_get_token().await?.expect(200);
    api.get_pool("default").await?.expect(200);
    keyward.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_gives_503_json_then_service_resumes_after_restart() -> Result<()> {
    if redis::skip("redis_killed_mid_run_gives_503_json_then_service_resumes_after_restart") {
        return Ok(());
    }
    let mut redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    let keyward = crate::keyward(&redis.url()).start_listening().await?;
    let api = &keyward.api;
    api.new_keys("fault", 3).await?;
    api.lease("fault").await?.expect(200);

    redis.kill();
    for _ in 0..3 {
        api.lease("fault").await?.expect_error(503, "unavailable");
        api.generate_keys("fault", 1)
            .await?
            .expect_error(503, "unavailable");
        api.get_pool("fault")
            .await?
            .expect_error(503, "unavailable");
        api.issue_token("default")
            .await?
            .expect_error(503, "unavailable");
    }
    api.readyz().await?.expect_error(503, "unavailable");

    // Back on the same port, empty (no persistence in tests): the defaults
    // are created again and new work succeeds.
    let mut redis = tokio::task::spawn_blocking(move || {
        redis.restart()?;
        anyhow::Ok(redis)
    })
    .await??;
    wait_ready(api, 200, Duration::from_secs(5)).await?;
    let keys = api.new_keys("fault", 2).await?;
    assert_eq!(keys.len(), 2);
    api.lease("fault").await?.expect(200);
    api.compat_get_token().await?.expect(200);
    api.get_pool("default").await?.expect(200);
    redis.kill();
    keyward.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_hiccup_does_not_reapply_the_flags_over_runtime_settings() -> Result<()> {
    if redis::skip("a_redis_hiccup_does_not_reapply_the_flags_over_runtime_settings") {
        return Ok(());
    }
    let redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    let keyward = crate::keyward(&redis.url()).start_listening().await?;
    let api = &keyward.api;
    api.put_pool("default", serde_json::json!({"lease_ttl_ms": 1234}))
        .await?
        .expect(200);
    // Pause every client longer than keyward's 3 s command timeout: the
    // next request fails, which makes the store initialise again.
    let reply = redis::command(redis.port, "CLIENT PAUSE 3500 ALL");
    assert!(reply.is_some_and(|r| r.starts_with("+OK")));
    api.lease("default").await?.expect_error(503, "unavailable");
    wait_ready(api, 200, Duration::from_secs(5)).await?;
    let pool = api.get_pool("default").await?;
    assert_eq!(pool.expect(200)["lease_ttl_ms"], 1234, "{}", pool.text);
    keyward.stop().await
}
