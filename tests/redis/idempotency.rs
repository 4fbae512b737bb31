//! Idempotency records in Redis: where they live (the pool's hash tag),
//! that their keys carry a TTL as long as their newest record, that
//! expired records are popped by later calls in bounded steps (that one
//! is never replayed before is a conformance case), that `/metrics`'
//! count reads them, and that a record is MessagePack while one in the
//! text form of earlier versions still replays.

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

/// A lease of `pool` that does not wait.
fn lease(pool: &Name) -> Change {
    Change::Lease {
        pool: pool.clone(),
        wait: Duration::ZERO,
    }
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
    for i in 0..20 {
        store
            .apply(lease(&pool), Some(&idem(&format!("k{i}"), 10_000)?))
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
    let fresh = store
        .apply(lease(&pool), Some(&idem("late", 60_000)?))
        .await?;
    assert!(
        matches!(fresh, Applied::Done(_)),
        "an expired key runs anew"
    );
    assert_eq!(int_reply(port, "ZCARD {kw:p:p}:idem:at")?, 20 - 16 + 1);
    store
        .apply(lease(&pool), Some(&idem("later", 60_000)?))
        .await?;
    assert_eq!(int_reply(port, "ZCARD {kw:p:p}:idem:at")?, 2);
    assert_eq!(int_reply(port, "HLEN {kw:p:p}:idem")?, 2);
    let left = int_reply(port, "PTTL {kw:p:p}:idem")?;
    assert!(
        left > 10_000,
        "lengthened to the newest record's TTL: {left}"
    );
    Ok(())
}

/// What a replay of `key` answers: the body recorded, or an error if the
/// change ran anew.
async fn replay(store: &dyn Store, change: Change, key: &str) -> Result<Vec<u8>> {
    match store.apply(change, Some(&idem(key, 60_000)?)).await? {
        Applied::Recorded {
            recorded,
            replayed: true,
        } => Ok(recorded.body.to_vec()),
        other => anyhow::bail!("{key} ran anew: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_messagepack_and_one_in_the_older_text_form_still_replays() -> Result<()> {
    if redis::skip("a_record_is_messagepack_and_one_in_the_older_text_form_still_replays") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let store =
        backends::redis_store(&server, Arc::new(ManualClock::default()), Limits::DEFAULT).await?;
    let port = server.port;
    let pool = Name::parse("p")?;
    store.generate_keys(&pool, 4).await?;
    let first = match store.apply(lease(&pool), Some(&idem("a", 60_000)?)).await? {
        Applied::Done(effect) => render(&effect).body.to_vec(),
        other => anyhow::bail!("the first lease answers its effect: {other:?}"),
    };
    // After the digest's 64 hex digits: MessagePack (an array, 0x90 up).
    let packed =
        "EVAL \"return string.byte(redis.call('HGET', KEYS[1], 'a'), 65)\" 1 {kw:p:p}:idem";
    assert!(int_reply(port, packed)? >= 0x90);
    assert_eq!(replay(&store, lease(&pool), "a").await?, first);

    // The same record as an older keyward wrote it: each element as
    // LEN:TEXT, numbers in decimal.
    let to_text = "EVAL \"local r = redis.call('HGET', KEYS[1], 'a') local parts = {} \
        for i, v in ipairs(cmsgpack.unpack(string.sub(r, 65))) do \
        local s = type(v) == 'number' and string.format('%d', v) or tostring(v) \
        parts[i] = #s .. ':' .. s end \
        return redis.call('HSET', KEYS[1], 'a', string.sub(r, 1, 64) .. table.concat(parts))\" 1 {kw:p:p}:idem";
    assert_eq!(int_reply(port, to_text)?, 0, "the record was replaced");
    assert_eq!(
        int_reply(port, packed)?,
        i64::from(b'1'),
        "now in the text form"
    );
    assert_eq!(replay(&store, lease(&pool), "a").await?, first);
    Ok(())
}
