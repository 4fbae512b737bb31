//! What keeps the server's memory and a scrape's cost bounded: the pool,
//! keyspace and per-pool key limits answer 409 with a code naming the
//! limit and change nothing; `/metrics` stays a few KiB with tens of
//! thousands of pools.

use anyhow::Result;
use keyward::config::{Config, Overrides};
use keyward::store::Limits;
use reqwest::Method;

use keyward_testkit::app::{spawn_app, spawn_app_with};

/// A server with these limits.
fn limited(max_pools: u64, max_keyspaces: u64, max_keys_per_pool: u64) -> Config {
    Config {
        limits: Limits {
            max_pools,
            max_keyspaces,
            max_keys_per_pool,
        },
        ..Config::default()
    }
}

#[tokio::test]
async fn a_pool_past_max_pools_is_409_pool_limit_reached_and_not_created() -> Result<()> {
    let app = spawn_app_with(limited(3, 10, 100)).await;
    // `default` is the first of the three.
    app.put_pool("one", serde_json::json!({}))
        .await?
        .expect(201);
    app.generate_keys("two", 1).await?.expect(201);
    app.put_pool("three", serde_json::json!({}))
        .await?
        .expect_error(409, "pool_limit_reached");
    app.generate_keys("three", 1)
        .await?
        .expect_error(409, "pool_limit_reached");
    app.get_pool("three")
        .await?
        .expect_error(404, "pool_not_found");
    let reply = app.put_pool("three", serde_json::json!({})).await?;
    assert!(reply.text.contains("--max-pools"), "{}", reply.text);
    // Existing pools keep working.
    app.put_pool("one", serde_json::json!({}))
        .await?
        .expect(200);
    app.generate_keys("one", 5).await?.expect(201);
    app.stop().await
}

#[tokio::test]
async fn a_keyspace_past_max_keyspaces_is_409_keyspace_limit_reached() -> Result<()> {
    let app = spawn_app_with(limited(10, 2, 100)).await;
    app.put_keyspace("first", "abc", 2).await?.expect(201);
    app.put_keyspace("second", "abc", 2)
        .await?
        .expect_error(409, "keyspace_limit_reached");
    app.get_keyspace("second")
        .await?
        .expect_error(404, "keyspace_not_found");
    app.put_keyspace("first", "abc", 2).await?.expect(200);
    app.stop().await
}

#[tokio::test]
async fn a_generate_past_max_keys_per_pool_is_409_key_limit_reached_and_refused_whole() -> Result<()>
{
    let app = spawn_app_with(limited(10, 10, 100)).await;
    app.generate_keys("fresh", 101)
        .await?
        .expect_error(409, "key_limit_reached");
    app.get_pool("fresh")
        .await?
        .expect_error(404, "pool_not_found");

    app.generate_keys("p", 60).await?.expect(201);
    app.generate_keys("p", 41)
        .await?
        .expect_error(409, "key_limit_reached");
    assert_eq!(app.get_pool("p").await?.u64("total"), 60);
    app.generate_keys("p", 40).await?.expect(201);
    assert_eq!(app.get_pool("p").await?.u64("total"), 100);

    // The compat route generates in the `default` pool, under the same rule.
    app.generate_keys("default", 100).await?.expect(201);
    app.request(Method::POST, "/api/v1/random_api_key/", None)
        .await?
        .expect_error(409, "key_limit_reached");
    app.stop().await
}

#[test]
fn the_limits_default_to_ten_thousand_pools_a_thousand_keyspaces_and_ten_million_keys() {
    let config = Config::load(Overrides::default()).expect("defaults are valid");
    assert_eq!(config.limits, Limits::DEFAULT);
    assert_eq!(
        (
            config.limits.max_pools,
            config.limits.max_keyspaces,
            config.limits.max_keys_per_pool
        ),
        (10_000, 1_000, 10_000_000)
    );
    let args = Overrides {
        max_pools: Some(5),
        max_keyspaces: Some(6),
        max_keys_per_pool: Some(7),
        ..Overrides::default()
    };
    let config = Config::load(args).expect("valid limits");
    assert_eq!(
        config.limits,
        Limits {
            max_pools: 5,
            max_keyspaces: 6,
            max_keys_per_pool: 7
        }
    );
    for args in [
        Overrides {
            max_pools: Some(0),
            ..Overrides::default()
        },
        Overrides {
            max_keyspaces: Some(0),
            ..Overrides::default()
        },
        Overrides {
            max_keys_per_pool: Some(u64::MAX),
            ..Overrides::default()
        },
    ] {
        assert!(Config::load(args).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_under_64_kib_with_twenty_thousand_pools() -> Result<()> {
    const POOLS: usize = 20_000;
    let app = spawn_app_with(limited(30_000, 10, 100)).await;
    let small = app.request(Method::GET, "/metrics", None).await?;
    small.expect(200);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let api = (*app).clone();
        tasks.spawn(async move {
            for i in (worker..POOLS).step_by(8) {
                api.generate_keys(&format!("pool-{i:05}"), 1)
                    .await?
                    .expect(201);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    // A new render (the cache lasts a second).
    tokio::time::sleep(keyward::http::metrics::CACHE_FOR).await;
    let reply = app.request(Method::GET, "/metrics", None).await?;
    reply.expect(200);
    eprintln!(
        "/metrics: {} bytes with 1 pool, {} bytes with {POOLS}",
        small.text.len(),
        reply.text.len()
    );
    assert!(
        reply.text.len() < 64 * 1024,
        "{} bytes with {POOLS} pools",
        reply.text.len()
    );
    assert!(
        reply
            .text
            .contains(&format!("keyward_pools {}\n", POOLS + 1)),
        "every pool counted"
    );
    assert!(
        reply.text.contains(&format!(
            "keyward_all_pools_keys{{state=\"total\"}} {POOLS}\n"
        )),
        "every key counted"
    );
    assert!(
        reply.text.contains("pool=\"pool-00000\""),
        "the first by name"
    );
    assert!(!reply.text.contains("pool=\"pool-19999\""), "not the last");
    app.stop().await
}

#[tokio::test]
async fn a_scrape_within_a_second_of_another_is_served_from_the_cache() -> Result<()> {
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    let first = app.request(Method::GET, "/metrics", None).await?;
    app.generate_keys("cached", 3).await?.expect(201);
    let second = app.request(Method::GET, "/metrics", None).await?;
    // Only meaningful if the machine was not so slow that a second passed.
    if started.elapsed() < keyward::http::metrics::CACHE_FOR {
        assert!(
            !second.text.contains("pool=\"cached\""),
            "a scrape right after another reuses its text"
        );
        assert_eq!(first.text, second.text);
    }
    tokio::time::sleep(keyward::http::metrics::CACHE_FOR).await;
    let third = app.request(Method::GET, "/metrics", None).await?;
    assert!(third.text.contains("pool=\"cached\""), "{}", third.text);
    app.stop().await
}
