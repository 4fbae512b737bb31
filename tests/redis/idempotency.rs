//! Idempotency records in Redis: where they live (the pool's hash tag),
//! that their keys carry a TTL as long as their newest record, that
//! expired records are popped by later calls in bounded steps, and that
//! `/metrics`' count reads them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use keyward::clock::ManualClock;
use keyward::core::{Name, Ttl};
use keyward::store::{Applied, Change, Digest, Effect, Idem, IdemKey, Limits, Recorded, Store};
use keyward_testkit::backends;
use keyward_testkit::redis::{self, RedisServer};

use crate::states::int_reply;

fn render(effect: &Effect) -> Recorded {
    Recorded {
        status: 200,
        body: format!("{effect:?}").into(),
    }
}

fn idem(key: &str, ttl_ms: u64) -> Result<Idem> {
    Ok(Idem {
        key: IdemKey::parse(key.as_bytes()).context("a valid key")?,
        digest: Digest::of("POST", "/v1/pools/p/lease", b""),
        ttl: Ttl::from_millis(ttl_ms).context("a valid TTL")?,
        render,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_live_under_the_pools_tag_with_a_ttl_and_expire_in_bounded_steps() -> Result<()> {
    if redis::skip("records_live_under_the_pools_tag_with_a_ttl_and_expire_in_bounded_steps") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let clock = Arc::new(ManualClock::default());
    let store = backends::redis_store(&server, clock.clone(), Limits::DEFAULT).await?;
    let port = server.port;
    let pool = Name::parse("p")?;
    store.generate_keys(&pool, 40).await?;
    let lease = || Change::Lease {
        pool: pool.clone(),
        wait: Duration::ZERO,
    };
    for i in 0..20 {
        store
            .apply(lease(), Some(&idem(&format!("k{i}"), 10_000)?))
            .await?;
    }
    assert_eq!(int_reply(port, "HLEN {kw:p:p}:idem")?, 20);
    assert_eq!(int_reply(port, "ZCARD {kw:p:p}:idem:at")?, 20);
    for key in ["{kw:p:p}:idem", "{kw:p:p}:idem:at"] {
        let left = int_reply(port, &format!("PTTL {key}"))?;
        assert!(
            (1..=10_000).contains(&left),
            "{key} expires with its newest record: {left}"
        );
    }
    assert_eq!(store.snapshot().await?.idempotency_records, 20);

    // Past their TTL: each later call with a key pops at most 16.
    clock.advance(Duration::from_millis(10_000));
    let fresh = store.apply(lease(), Some(&idem("late", 60_000)?)).await?;
    assert!(
        matches!(fresh, Applied::Done(_)),
        "an expired key runs anew"
    );
    assert_eq!(int_reply(port, "ZCARD {kw:p:p}:idem:at")?, 20 - 16 + 1);
    store.apply(lease(), Some(&idem("later", 60_000)?)).await?;
    assert_eq!(int_reply(port, "ZCARD {kw:p:p}:idem:at")?, 2);
    assert_eq!(int_reply(port, "HLEN {kw:p:p}:idem")?, 2);
    let left = int_reply(port, "PTTL {kw:p:p}:idem")?;
    assert!(
        left > 10_000,
        "lengthened to the newest record's TTL: {left}"
    );
    Ok(())
}
