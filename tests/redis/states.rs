//! Key states on Redis beyond what the conformance suite sees through the
//! `Store` trait: the reaper ends cooldowns in pools nobody touches, two
//! processes share one view of every key's state, pools written by an
//! older keyward keep working, and keys without keep-alive hold no
//! deadline entry. State is read back with `redis-cli`-style commands
//! where a store call would settle deadlines itself and hide the reaper's
//! work.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use keyward::clock::{Clock, ManualClock};
use keyward::core::{KeyState, Labels, Name, Outcome, PoolKey, Reason, Ttl};
use keyward::store::{Limits, NewKeys, PageLimit, PageRequest, PoolPatch, Store, StoreError};

use keyward_testkit::backends;
use keyward_testkit::redis::{self, RedisServer};

/// An integer reply (`:N`) of one inline command.
pub(crate) fn int_reply(port: u16, cmd: &str) -> Result<i64> {
    let reply = redis::command(port, cmd).with_context(|| format!("{cmd}: no reply"))?;
    reply
        .trim()
        .strip_prefix(':')
        .with_context(|| format!("{cmd}: {reply:?} is not an integer reply"))?
        .parse()
        .with_context(|| format!("{cmd}: {reply:?}"))
}

/// Sends `cmd` and fails unless Redis accepted it.
fn run(port: u16, cmd: &str) -> Result<()> {
    let reply = redis::command(port, cmd).with_context(|| format!("{cmd}: no reply"))?;
    anyhow::ensure!(!reply.starts_with('-'), "{cmd}: {reply}");
    Ok(())
}

fn ttl(ms: u64) -> Result<Ttl> {
    Ttl::from_millis(ms).context("a valid TTL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_recovers_a_cooling_key_in_an_idle_pool() -> Result<()> {
    if redis::skip("the_reaper_recovers_a_cooling_key_in_an_idle_pool") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let clock = Arc::new(ManualClock::default());
    let store = backends::redis_store(&server, clock.clone(), Limits::DEFAULT).await?;
    let port = server.port;
    let pool = Name::parse("idle")?;
    let keys = store.generate_keys(&pool, 1).await?;
    let lease = store.lease_key(&pool).await?;
    let cooling = store
        .report_key(
            &pool,
            &keys[0].key,
            lease.lease.map(|l| l.id),
            Outcome::RateLimited {
                retry_after: Some(ttl(5_000)?),
            },
            Some(Reason::parse("429 from upstream")?),
        )
        .await?;
    assert_eq!(cooling.state, KeyState::Cooling);
    assert_eq!(int_reply(port, "ZCARD {kw:p:idle}:in:free")?, 0);
    // The cooldown end is in the due index: nothing else will visit the
    // pool.
    let due = redis::command(port, "ZSCORE kw:due idle").context("ZSCORE")?;
    let t_end = clock.now().as_millis() + 5_000;
    assert!(due.contains(&t_end.to_string()), "{due}");

    clock.advance(Duration::from_millis(4_999));
    assert_eq!(store.expire_due().await?.recovered, 0, "not yet");
    assert_eq!(int_reply(port, "ZCARD {kw:p:idle}:in:free")?, 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.expire_due().await?.recovered, 1);
    // Free again in Redis itself, before any call could settle it lazily;
    // the reason went with the cooldown.
    assert_eq!(int_reply(port, "ZCARD {kw:p:idle}:in:free")?, 1);
    let key = format!("{{kw:p:idle}}:k:{}", keys[0].key);
    assert_eq!(int_reply(port, &format!("HEXISTS {key} reason"))?, 0);
    assert_eq!(int_reply(port, &format!("HEXISTS {key} state"))?, 0);
    let info = store.pool_info(&pool).await?;
    assert_eq!((info.stats.free, info.stats.cooling), (1, 0));
    assert_eq!(info.expired.recovered, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_ends_a_quarantine_on_a_three_master_cluster() -> Result<()> {
    if redis::skip("the_reaper_ends_a_quarantine_on_a_three_master_cluster") {
        return Ok(());
    }
    let harness = backends::redis_cluster()
        .await
        .context("redis-server is available")?;
    let (store, clock) = (&harness.store, &harness.clock);
    let pool = Name::parse("sick")?;
    let patch = PoolPatch {
        max_failures: keyward::core::MaxFailures::new(1),
        quarantine: Some(ttl(1_000)?),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await?;
    let key = store.generate_keys(&pool, 1).await?.remove(0).key;
    for round in 1..=2u64 {
        let lease = store.lease_key(&pool).await?;
        let view = store
            .report_key(
                &pool,
                &key,
                lease.lease.map(|l| l.id),
                Outcome::Failed,
                None,
            )
            .await?;
        assert_eq!(view.state, KeyState::Quarantined);
        // The second quarantine in a row lasts twice as long.
        let length = 1_000 * (1 << (round - 1));
        assert_eq!(
            view.available_at.map(|t| t.as_millis()),
            Some(clock.now().as_millis() + length)
        );
        match store.lease_key(&pool).await {
            Err(StoreError::NoFreeKey { retry_after }) => {
                assert_eq!(retry_after.map(Ttl::as_millis), Some(length));
            }
            other => panic!("{other:?}"),
        }
        clock.advance(Duration::from_millis(length));
        assert_eq!(store.expire_due().await?.recovered, 1);
    }
    let info = store.pool_info(&pool).await?;
    assert_eq!((info.stats.free, info.stats.quarantined), (1, 0));
    assert_eq!(info.quarantines, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_cooldowns_and_disabled_keys() -> Result<()> {
    if redis::skip("two_processes_share_cooldowns_and_disabled_keys") {
        return Ok(());
    }
    let redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    let a = crate::keyward(&redis.url()).start_listening().await?;
    let b = crate::keyward(&redis.url()).start_listening().await?;
    a.api.readyz().await?.expect(200);
    b.api.readyz().await?.expect(200);

    let keys = a.api.new_keys("shared", 2).await?;
    let first = a.api.lease("shared").await?;
    let first_key = first.str("key");
    a.api
        .release_with(
            "shared",
            &first_key,
            json!({ "lease_id": first.u64("lease_id"), "outcome": "rate_limited",
                    "retry_after_ms": 600_000, "reason": "slow down" }),
        )
        .await?
        .expect(200);
    let other = keys.iter().find(|k| **k != first_key).context("two keys")?;
    b.api
        .disable_key("shared", other, Some("revoked"))
        .await?
        .expect(200);

    // B sees A's cooldown, A sees B's disable: no key can be leased, and
    // both say when the cooling one comes back.
    let seen = b.api.get_key("shared", &first_key).await?;
    assert_eq!(seen.str("state"), "cooling");
    assert_eq!(seen.str("reason"), "slow down");
    assert_eq!(
        a.api.get_key("shared", other).await?.str("state"),
        "disabled"
    );
    for api in [&a.api, &b.api] {
        let ms = api.lease("shared").await?.expect_no_free_key();
        let ms = ms.context("a cooldown ends by itself")?;
        assert!((1..=600_000).contains(&ms), "{ms}");
    }
    let info = b.api.get_pool("shared").await?;
    assert_eq!(
        (info.u64("total"), info.u64("cooling"), info.u64("disabled")),
        (2, 1, 1)
    );

    // A enables the disabled key: B leases it.
    a.api.enable_key("shared", other).await?.expect(200);
    let leased = b.api.lease("shared").await?;
    leased.expect(200);
    assert_eq!(&leased.str("key"), other);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_written_by_an_older_keyward_still_works() -> Result<()> {
    if redis::skip("a_pool_written_by_an_older_keyward_still_works") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let port = server.port;
    let clock = Arc::new(ManualClock::default());
    let now = clock.now().as_millis();
    let alive = now + 3_600_000;
    // The Part 1 layout: no recovery settings or layout in the meta hash,
    // key hashes with the four Part 1 fields, no listing indexes.
    run(port, "ZADD kw:pool-names 0 old")?;
    run(
        port,
        "HSET {kw:p:old}:meta lease_ttl_ms 30000 keepalive_ttl_ms 3600000 key_length 20",
    )?;
    for (key, lease_id, until) in [
        ("oldfree1", 0, 0),
        ("oldfree2", 0, 0),
        ("oldleased", 7, now + 30_000),
    ] {
        run(
            port,
            &format!(
                "HSET {{kw:p:old}}:k:{key} created_at {now} alive_until {alive} lease_id {lease_id} leased_until {until}"
            ),
        )?;
        run(port, &format!("ZADD {{kw:p:old}}:alive {alive} {key}"))?;
        if lease_id == 0 {
            run(port, &format!("SADD {{kw:p:old}}:free {key}"))?;
        } else {
            run(port, &format!("ZADD {{kw:p:old}}:leases {until} {key}"))?;
        }
    }
    run(port, "SET {kw:p:old}:seq 7")?;

    // Start-up brings the pool to the current layout: counts, settings
    // and listing are whole at once.
    let store = backends::redis_store(&server, clock.clone(), Limits::DEFAULT).await?;
    let pool = Name::parse("old")?;
    let info = store.pool_info(&pool).await?;
    assert_eq!(
        (info.stats.total, info.stats.free, info.stats.leased),
        (3, 2, 1)
    );
    assert_eq!(info.settings.recovery, keyward::core::Recovery::default());
    assert!(!info.settings.no_keepalive);
    // Free keys moved to the free index; the old free set is gone.
    assert_eq!(int_reply(port, "EXISTS {kw:p:old}:free")?, 0);
    let page = store
        .list_keys(
            &pool,
            None,
            &PageRequest {
                after: None,
                limit: PageLimit::DEFAULT,
            },
        )
        .await?;
    let mut listed: Vec<&str> = page.items.iter().map(|k| k.key.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["oldfree1", "oldfree2", "oldleased"]);

    // Old keys read with the defaults and take every new transition.
    let view = store.get_key(&pool, "oldleased").await?;
    assert_eq!(view.state, KeyState::Leased);
    assert_eq!(view.lease.map(|l| l.id), Some(7));
    assert_eq!((view.failures, view.labels.clone()), (0, Labels::default()));
    let view = store
        .report_key(&pool, "oldleased", Some(7), Outcome::Failed, None)
        .await?;
    assert_eq!((view.state, view.failures), (KeyState::Free, 1));

    // A key an older process writes after the start-up migration is
    // adopted when it is first touched.
    run(
        port,
        &format!(
            "HSET {{kw:p:old}}:k:latecomer created_at {now} alive_until {alive} lease_id 0 leased_until 0"
        ),
    )?;
    run(port, &format!("ZADD {{kw:p:old}}:alive {alive} latecomer"))?;
    run(port, "SADD {kw:p:old}:free latecomer")?;
    let view = store
        .disable_key(&pool, "latecomer", Some(Reason::parse("old")?))
        .await?;
    assert_eq!(view.state, KeyState::Disabled);
    let info = store.pool_info(&pool).await?;
    assert_eq!(
        (info.stats.total, info.stats.free, info.stats.disabled),
        (4, 3, 1)
    );
    // The next lease id follows the old counter.
    let next = store.lease_key(&pool).await?;
    assert_eq!(next.lease.map(|l| l.id), Some(8));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_keepalive_hold_no_deadline_entry() -> Result<()> {
    if redis::skip("keys_without_keepalive_hold_no_deadline_entry") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let port = server.port;
    let clock = Arc::new(ManualClock::default());
    let store = backends::redis_store(&server, clock.clone(), Limits::DEFAULT).await?;
    let pool = Name::parse("forever")?;
    let patch = PoolPatch {
        keepalive_ttl: Some(None),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await?;
    let labels = Labels::parse([("team", "search")])?;
    let added = store
        .add_keys(
            &pool,
            NewKeys::Import(vec![
                PoolKey::parse("sk-live-1")?,
                PoolKey::parse("sk-live-2")?,
            ]),
            &labels,
        )
        .await?;
    assert_eq!(added.added.len(), 2);
    assert!(
        added
            .added
            .iter()
            .all(|k| k.no_keepalive && k.labels == labels)
    );
    assert_eq!(int_reply(port, "EXISTS {kw:p:forever}:alive")?, 0);
    assert_eq!(
        redis::command(port, "ZSCORE kw:due forever").map(|r| r.trim().to_owned()),
        Some("$-1".to_owned()),
        "nothing will ever be due"
    );
    store.keepalive_key(&pool, "sk-live-1", None).await?;
    assert_eq!(int_reply(port, "EXISTS {kw:p:forever}:alive")?, 0);
    clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    let view = store.get_key(&pool, "sk-live-2").await?;
    assert_eq!((view.state, view.labels), (KeyState::Free, labels));
    assert_eq!(store.pool_info(&pool).await?.stats.total, 2);
    Ok(())
}

/// Commands Redis ran, scripts' own calls included, since the last
/// `CONFIG RESETSTAT`, leaving out the script calls themselves and the
/// commands of this count.
fn commands_run(port: u16) -> Result<u64> {
    let info = redis::command(port, "INFO commandstats").context("INFO commandstats")?;
    let mut total = 0;
    for line in info.lines() {
        let Some((name, stats)) = line.split_once(':') else {
            continue;
        };
        // `cmdstat_config|resetstat`: subcommands carry their name.
        let command = name.split('|').next().unwrap_or(name);
        if ["evalsha", "eval", "info", "config"]
            .iter()
            .any(|skip| command == format!("cmdstat_{skip}"))
        {
            continue;
        }
        if let Some(calls) = stats
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|n| n.parse::<u64>().ok())
        {
            total += calls;
        }
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_release_stay_lean() -> Result<()> {
    if redis::skip("lease_and_release_stay_lean") {
        return Ok(());
    }
    let server = tokio::task::spawn_blocking(RedisServer::start).await??;
    let port = server.port;
    let clock = Arc::new(ManualClock::default());
    let store = backends::redis_store(&server, clock, Limits::DEFAULT).await?;
    let pool = Name::parse("hot")?;
    store.generate_keys(&pool, 10).await?;
    // Warm up: the first lease indexes the pool's lease deadline.
    let lease = store.lease_key(&pool).await?;
    store.release_key(&pool, &lease.key, None).await?;

    run(port, "CONFIG RESETSTAT")?;
    let lease = store.lease_key(&pool).await?;
    let leasing = commands_run(port)?;
    run(port, "CONFIG RESETSTAT")?;
    store
        .release_key(&pool, &lease.key, lease.lease.map(|l| l.id))
        .await?;
    let releasing = commands_run(port)?;
    eprintln!("lease: {leasing} commands, release: {releasing} commands");
    // Part 1 ran 14 and 8; the per-state listing indexes cost two more
    // on each, while reading the settings with the pool check and the O(1)
    // due index check save three on a lease. Waiting leases add one
    // `EXISTS` of the pool's waiting marker to a release (a `PUBLISH`
    // only while some process waits) and nothing to a lease.
    assert!(leasing <= 12, "lease ran {leasing} commands");
    assert!(releasing <= 10, "release ran {releasing} commands");
    assert_eq!(
        int_reply(port, "EXISTS {kw:p:hot}:waiting")?,
        0,
        "nobody waits"
    );
    Ok(())
}
