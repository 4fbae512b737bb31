//! The conformance cases: what every `Store` backend must do.
//!
//! Each case takes the store and the clock it reads, uses pool and keyspace
//! names of its own (so cases may share one store), and moves time only by
//! advancing the clock.

use std::collections::HashSet;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward::clock::{Clock, ManualClock};
use keyward::core::{
    KeyLength, KeyView, KeyspaceError, KeyspaceInfo, KeyspaceSpec, Lease, MaxActivations, Name,
    PoolError, PoolSettings, PoolStats, Timestamp, Ttl,
};
use keyward::store::{Limit, PageLimit, PageRequest, PoolPatch, Store, StoreError, Upsert};

use keyward_testkit::backends::{LIMITS, default_keyspace, pool_defaults};

/// Asserts that `$result` is `Err` matching `$pattern`, showing what it was
/// otherwise (`StoreError` is not `PartialEq`).
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {{
        let result = $result;
        assert!(
            matches!(result, Err($pattern)),
            "expected Err({}), got {:?}",
            stringify!($pattern),
            result
        );
    }};
}

/// Asserts that `result` is `NoFreeKey` with exactly `retry_after`.
fn assert_no_free_key(result: Result<KeyView, StoreError>, retry_after: Option<Ttl>) {
    match result {
        Err(StoreError::NoFreeKey { retry_after: got }) if got == retry_after => {}
        other => panic!("expected NoFreeKey {{ retry_after: {retry_after:?} }}, got {other:?}"),
    }
}

// The credential-pool cases (P2.1) live in their own file; they use the
// macro and helpers above.
mod credentials;
pub use credentials::*;

// The waiting-lease cases (P2.2).
mod waiting;
pub use waiting::*;

// The idempotency cases (P2.3).
mod idempotency;
pub use idempotency::*;

// The shop keyspace cases (P2.4): activation slots, revocation, batches.
mod shop;
pub use shop::*;

/// A name of this run's own: `tag` plus a per-process suffix, so reruns
/// against a persistent backend never meet old state.
fn name(tag: &str) -> Name {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
    });
    Name::parse(&format!("{tag}-{run}")).expect("tags are short and use only name characters")
}

fn ttl(ms: u64) -> Ttl {
    Ttl::from_millis(ms).expect("test TTLs are positive")
}

fn after(t: Timestamp, ms: u64) -> Timestamp {
    Timestamp::from_millis(t.as_millis() + ms)
}

fn advance(clock: &ManualClock, ms: u64) {
    clock.advance(Duration::from_millis(ms));
}

fn stats(total: u64, free: u64, leased: u64) -> PoolStats {
    PoolStats {
        total,
        free,
        leased,
        ..PoolStats::default()
    }
}

fn lease_of(view: &KeyView) -> Lease {
    view.lease
        .unwrap_or_else(|| panic!("{} should be leased", view.key))
}

/// Polls every future until all are done, so they run at once (the cases
/// borrow the store, so they cannot be spawned); their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(&mut outputs) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future is done"))
        .collect()
}

/// Creates pool `pool` with the given TTLs and `count` keys in it.
async fn pool_with(
    store: &dyn Store,
    pool: &Name,
    lease_ms: u64,
    keepalive_ms: u64,
    count: usize,
) -> Vec<KeyView> {
    let patch = PoolPatch {
        lease_ttl: Some(ttl(lease_ms)),
        keepalive_ttl: Some(Some(ttl(keepalive_ms))),
        ..PoolPatch::default()
    };
    let (_, upsert) = store.put_pool(pool, patch).await.unwrap();
    assert_eq!(upsert, Upsert::Created, "{pool} should be new");
    store.generate_keys(pool, count).await.unwrap()
}

/// The pool's counts, once checked that the five states add up to total.
async fn counts(store: &dyn Store, pool: &Name) -> PoolStats {
    let s = pool_stats(store, pool).await;
    assert_eq!(
        s.free + s.leased + s.cooling + s.quarantined + s.disabled,
        s.total,
        "the five counts add up to total: {s:?}"
    );
    s
}

/// Leases the pool's only free key, which must be `key`.
async fn lease_only(store: &dyn Store, pool: &Name, key: &str) -> KeyView {
    let view = store.lease_key(pool).await.unwrap();
    assert_eq!(view.key, key, "{key} is the only free key");
    assert_eq!(view.state, keyward::core::KeyState::Leased);
    view
}

async fn pool_stats(store: &dyn Store, pool: &Name) -> PoolStats {
    store.pool_info(pool).await.unwrap().stats
}

pub async fn put_pool_creates_then_changes_only_the_given_fields(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("put-pool");
    let patch = PoolPatch {
        lease_ttl: Some(ttl(1_500)),
        ..PoolPatch::default()
    };
    let (info, upsert) = store.put_pool(&pool, patch).await.unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert_eq!(info.name, pool);
    let created = PoolSettings {
        lease_ttl: ttl(1_500),
        ..pool_defaults()
    };
    assert_eq!(info.settings, created);
    assert_eq!(info.stats, PoolStats::default());

    let patch = PoolPatch {
        keepalive_ttl: Some(Some(ttl(9_000))),
        key_length: KeyLength::new(8),
        ..PoolPatch::default()
    };
    let (info, upsert) = store.put_pool(&pool, patch).await.unwrap();
    assert_eq!(upsert, Upsert::Existed);
    let changed = PoolSettings {
        lease_ttl: ttl(1_500),
        keepalive_ttl: ttl(9_000),
        key_length: KeyLength::new(8).unwrap(),
        ..pool_defaults()
    };
    assert_eq!(info.settings, changed);

    let keys = store.generate_keys(&pool, 3).await.unwrap();
    assert!(keys.iter().all(|v| v.key.len() == 8), "{keys:?}");
    let (info, upsert) = store.put_pool(&pool, PoolPatch::default()).await.unwrap();
    assert_eq!(upsert, Upsert::Existed);
    assert_eq!(info.settings, changed);
    assert_eq!(info.stats, stats(3, 3, 0));
    assert_eq!(store.pool_info(&pool).await.unwrap(), info);
}

pub async fn pool_info_of_an_unknown_pool_is_pool_not_found(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    assert_err!(
        store.pool_info(&name("no-such-pool")).await,
        StoreError::PoolNotFound
    );
}

pub async fn generate_keys_creates_a_missing_pool_with_the_defaults(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("generate");
    assert_err!(store.pool_info(&pool).await, StoreError::PoolNotFound);
    let now = clock.now();
    let keys = store.generate_keys(&pool, 5).await.unwrap();
    assert_eq!(keys.len(), 5);
    for view in &keys {
        assert_eq!(view.key.len(), KeyLength::DEFAULT.get(), "{}", view.key);
        assert!(view.key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(view.created_at, now);
        assert_eq!(
            view.alive_until,
            now.after(pool_defaults().keepalive_ttl),
            "{view:?}"
        );
        assert_eq!(view.lease, None);
    }
    let info = store.pool_info(&pool).await.unwrap();
    assert_eq!(info.name, pool);
    assert_eq!(info.settings, pool_defaults());
    assert_eq!(info.stats, stats(5, 5, 0));

    let more = store.generate_keys(&pool, 3).await.unwrap();
    let distinct: HashSet<&str> = keys.iter().chain(&more).map(|v| v.key.as_str()).collect();
    assert_eq!(distinct.len(), 8);
    assert_eq!(pool_stats(store, &pool).await, stats(8, 8, 0));
}

pub async fn lease_key_on_an_empty_or_unknown_pool_is_no_free_key(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let unknown = name("lease-unknown");
    assert_no_free_key(store.lease_key(&unknown).await, None);
    // A refused lease does not create the pool.
    assert_err!(store.pool_info(&unknown).await, StoreError::PoolNotFound);

    let empty = name("lease-empty");
    store.put_pool(&empty, PoolPatch::default()).await.unwrap();
    assert_no_free_key(store.lease_key(&empty).await, None);
    assert_eq!(pool_stats(store, &empty).await, PoolStats::default());
}

pub async fn lease_key_hands_out_each_free_key_once_with_growing_lease_ids(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("lease-all");
    let keys = pool_with(store, &pool, 10_000, 60_000, 4).await;
    let generated: HashSet<&str> = keys.iter().map(|v| v.key.as_str()).collect();
    let mut leased = HashSet::new();
    let mut last_id = 0;
    for i in 0..4 {
        advance(clock, 5);
        let now = clock.now();
        let view = store.lease_key(&pool).await.unwrap();
        assert!(generated.contains(view.key.as_str()), "{}", view.key);
        assert!(leased.insert(view.key.clone()), "{} leased twice", view.key);
        let lease = lease_of(&view);
        assert!(lease.id > last_id, "lease id {} after {last_id}", lease.id);
        last_id = lease.id;
        assert_eq!(lease.until, after(now, 10_000));
        let original = keys.iter().find(|v| v.key == view.key).unwrap();
        // Leasing does not extend the key's life.
        assert_eq!(view.alive_until, original.alive_until);
        assert_eq!(view.created_at, original.created_at);
        assert_eq!(pool_stats(store, &pool).await, stats(4, 3 - i, i + 1));
    }
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(9_985)));
}

pub async fn release_key_frees_the_key_with_or_without_its_lease_id(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("release");
    pool_with(store, &pool, 10_000, 60_000, 1).await;
    for with_id in [false, true] {
        let leased = store.lease_key(&pool).await.unwrap();
        advance(clock, 10);
        let lease_id = with_id.then(|| lease_of(&leased).id);
        let released = store
            .release_key(&pool, &leased.key, lease_id)
            .await
            .unwrap();
        assert_eq!(released.key, leased.key);
        assert_eq!(released.lease, None);
        assert_eq!(released.created_at, leased.created_at);
        // Releasing does not extend the key's life.
        assert_eq!(released.alive_until, leased.alive_until);
        assert_eq!(pool_stats(store, &pool).await, stats(1, 1, 0));
        assert_eq!(store.get_key(&pool, &leased.key).await.unwrap(), released);
    }
}

pub async fn release_key_refuses_unknown_keys_free_keys_and_other_leases(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("release-refused");
    let keys = pool_with(store, &pool, 10_000, 60_000, 2).await;
    let key = &keys[0].key;
    assert_err!(
        store.release_key(&name("release-nopool"), key, None).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_err!(
        store
            .release_key(&pool, "noSuchKey0000000000000", None)
            .await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_err!(
        store.release_key(&pool, key, None).await,
        StoreError::Pool(PoolError::NotLeased)
    );
    assert_err!(
        store.release_key(&pool, key, Some(1)).await,
        StoreError::Pool(PoolError::NotLeased)
    );

    let leased = store.lease_key(&pool).await.unwrap();
    let id = lease_of(&leased).id;
    for wrong in [0, id + 1, u64::MAX] {
        assert_err!(
            store.release_key(&pool, &leased.key, Some(wrong)).await,
            StoreError::Pool(PoolError::LeaseMismatch)
        );
    }
    assert_eq!(store.get_key(&pool, &leased.key).await.unwrap(), leased);
    assert_eq!(pool_stats(store, &pool).await, stats(2, 1, 1));
}

pub async fn keepalive_key_extends_the_life_and_with_the_lease_id_the_lease(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("keepalive");
    let keys = pool_with(store, &pool, 1_000, 10_000, 2).await;
    advance(clock, 400);
    let leased = store.lease_key(&pool).await.unwrap();
    let id = lease_of(&leased).id;
    let free_key = &keys.iter().find(|v| v.key != leased.key).unwrap().key;

    advance(clock, 300);
    let now = clock.now();
    let kept = store
        .keepalive_key(&pool, &leased.key, Some(id))
        .await
        .unwrap();
    assert_eq!(
        kept.lease,
        Some(Lease {
            id,
            until: after(now, 1_000)
        })
    );
    assert_eq!(kept.alive_until, after(now, 10_000));
    assert_eq!(kept.created_at, leased.created_at);

    // Past the first lease's end, still leased under the extension.
    advance(clock, 900);
    let now = clock.now();
    assert_eq!(store.get_key(&pool, &leased.key).await.unwrap(), kept);
    let kept_again = store.keepalive_key(&pool, &leased.key, None).await.unwrap();
    assert_eq!(kept_again.lease, kept.lease, "no lease id, no extension");
    assert_eq!(kept_again.alive_until, after(now, 10_000));

    let free = store.keepalive_key(&pool, free_key, None).await.unwrap();
    assert_eq!(free.lease, None);
    assert_eq!(free.alive_until, after(now, 10_000));
    assert_eq!(pool_stats(store, &pool).await, stats(2, 1, 1));
}

pub async fn keepalive_key_refuses_unknown_keys_and_wrong_lease_ids(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("keepalive-refused");
    let keys = pool_with(store, &pool, 10_000, 60_000, 2).await;
    assert_err!(
        store
            .keepalive_key(&name("keepalive-nopool"), &keys[0].key, None)
            .await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_err!(
        store
            .keepalive_key(&pool, "noSuchKey0000000000000", None)
            .await,
        StoreError::Pool(PoolError::KeyNotFound)
    );

    let leased = store.lease_key(&pool).await.unwrap();
    let id = lease_of(&leased).id;
    let free = keys.iter().find(|v| v.key != leased.key).unwrap();
    advance(clock, 1_000);
    for wrong in [0, id + 1, u64::MAX] {
        assert_err!(
            store.keepalive_key(&pool, &leased.key, Some(wrong)).await,
            StoreError::Pool(PoolError::LeaseMismatch)
        );
    }
    // A lease id on a free key matches no lease.
    assert_err!(
        store.keepalive_key(&pool, &free.key, Some(id)).await,
        StoreError::Pool(PoolError::LeaseMismatch)
    );
    // Nothing changed: neither the lease nor the life.
    assert_eq!(store.get_key(&pool, &leased.key).await.unwrap(), leased);
    assert_eq!(store.get_key(&pool, &free.key).await.unwrap(), *free);
}

pub async fn get_key_shows_the_key_and_refuses_unknown_keys(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("get");
    let keys = pool_with(store, &pool, 10_000, 60_000, 1).await;
    assert_eq!(store.get_key(&pool, &keys[0].key).await.unwrap(), keys[0]);
    let leased = store.lease_key(&pool).await.unwrap();
    assert_eq!(store.get_key(&pool, &keys[0].key).await.unwrap(), leased);
    assert_err!(
        store.get_key(&name("get-nopool"), &keys[0].key).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_err!(
        store.get_key(&pool, "noSuchKey0000000000000").await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
}

pub async fn delete_key_purges_the_key_for_good(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("delete");
    let keys = pool_with(store, &pool, 10_000, 60_000, 3).await;
    let leased = store.lease_key(&pool).await.unwrap();
    let id = lease_of(&leased).id;
    let free = &keys.iter().find(|v| v.key != leased.key).unwrap().key;
    store.delete_key(&pool, &leased.key).await.unwrap();
    store.delete_key(&pool, free).await.unwrap();
    assert_eq!(pool_stats(store, &pool).await, stats(1, 1, 0));

    for key in [&leased.key, free] {
        assert_err!(
            store.get_key(&pool, key).await,
            StoreError::Pool(PoolError::KeyNotFound)
        );
        assert_err!(
            store.delete_key(&pool, key).await,
            StoreError::Pool(PoolError::KeyNotFound)
        );
        assert_err!(
            store.release_key(&pool, key, Some(id)).await,
            StoreError::Pool(PoolError::KeyNotFound)
        );
        assert_err!(
            store.keepalive_key(&pool, key, None).await,
            StoreError::Pool(PoolError::KeyNotFound)
        );
    }
    let last = store.lease_key(&pool).await.unwrap();
    assert!(last.key != leased.key && last.key != *free);
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(10_000)));
    assert_err!(
        store.delete_key(&name("delete-nopool"), &last.key).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
}

pub async fn an_expired_lease_returns_the_key_to_the_free_set_on_the_next_touch(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("lease-expiry");
    let keys = pool_with(store, &pool, 100, 60_000, 1).await;
    let leased = store.lease_key(&pool).await.unwrap();
    advance(clock, 99);
    assert_eq!(store.get_key(&pool, &keys[0].key).await.unwrap(), leased);
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(1)));

    // The lease ends when its deadline is reached, not after.
    advance(clock, 1);
    let freed = store.get_key(&pool, &keys[0].key).await.unwrap();
    assert_eq!(freed.lease, None);
    assert_eq!(freed.alive_until, keys[0].alive_until);
    assert_eq!(pool_stats(store, &pool).await, stats(1, 1, 0));
    assert_err!(
        store.release_key(&pool, &keys[0].key, None).await,
        StoreError::Pool(PoolError::NotLeased)
    );
    let again = store.lease_key(&pool).await.unwrap();
    assert_eq!(again.key, keys[0].key);

    // A lease that ran out also frees its key for the next `lease_key`.
    advance(clock, 100);
    let third = store.lease_key(&pool).await.unwrap();
    assert_eq!(third.key, keys[0].key);
    assert!(lease_of(&third).id > lease_of(&again).id);
}

pub async fn a_key_without_keepalive_is_purged_on_the_next_touch_even_when_leased(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("purge");
    let keys = pool_with(store, &pool, 60_000, 200, 2).await;
    let leased = store.lease_key(&pool).await.unwrap();
    let other = &keys.iter().find(|v| v.key != leased.key).unwrap().key;
    advance(clock, 100);
    store.keepalive_key(&pool, other, None).await.unwrap();

    advance(clock, 99);
    assert_eq!(store.get_key(&pool, &leased.key).await.unwrap(), leased);
    advance(clock, 1);
    assert_err!(
        store.get_key(&pool, &leased.key).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_err!(
        store
            .release_key(&pool, &leased.key, Some(lease_of(&leased).id))
            .await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_eq!(pool_stats(store, &pool).await, stats(1, 1, 0));

    advance(clock, 100);
    assert_no_free_key(store.lease_key(&pool).await, None);
    assert_err!(
        store.keepalive_key(&pool, other, None).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_eq!(pool_stats(store, &pool).await, PoolStats::default());
}

pub async fn expire_due_ends_due_leases_and_purges_due_keys(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("expire-due");
    pool_with(store, &pool, 100, 300, 3).await;
    store.lease_key(&pool).await.unwrap();
    store.lease_key(&pool).await.unwrap();
    store.expire_due().await.unwrap();
    assert_eq!(pool_stats(store, &pool).await, stats(3, 1, 2));

    advance(clock, 100);
    let expired = store.expire_due().await.unwrap();
    // At least ours: other cases may share the store.
    assert!(expired.leases >= 2, "{expired:?}");
    assert_eq!(pool_stats(store, &pool).await, stats(3, 3, 0));

    advance(clock, 200);
    let expired = store.expire_due().await.unwrap();
    assert!(expired.keys >= 3, "{expired:?}");
    assert_eq!(pool_stats(store, &pool).await, PoolStats::default());
}

pub async fn a_stale_lease_id_is_refused_after_the_key_is_leased_again(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("fencing");
    let keys = pool_with(store, &pool, 100, 60_000, 1).await;
    let first = lease_of(&store.lease_key(&pool).await.unwrap());
    advance(clock, 100);
    let second_view = store.lease_key(&pool).await.unwrap();
    assert_eq!(second_view.key, keys[0].key);
    let second = lease_of(&second_view);
    assert!(second.id > first.id);

    assert_err!(
        store.release_key(&pool, &keys[0].key, Some(first.id)).await,
        StoreError::Pool(PoolError::LeaseMismatch)
    );
    assert_err!(
        store
            .keepalive_key(&pool, &keys[0].key, Some(first.id))
            .await,
        StoreError::Pool(PoolError::LeaseMismatch)
    );
    assert_eq!(
        store.get_key(&pool, &keys[0].key).await.unwrap(),
        second_view
    );
    let released = store
        .release_key(&pool, &keys[0].key, Some(second.id))
        .await
        .unwrap();
    assert_eq!(released.lease, None);
}

pub async fn new_pool_settings_apply_only_to_new_deadlines(store: &dyn Store, clock: &ManualClock) {
    let pool = name("settings");
    let keys = pool_with(store, &pool, 1_000, 10_000, 2).await;
    let leased = store.lease_key(&pool).await.unwrap();
    let patch = PoolPatch {
        lease_ttl: Some(ttl(5_000)),
        keepalive_ttl: Some(Some(ttl(20_000))),
        ..PoolPatch::default()
    };
    let (info, upsert) = store.put_pool(&pool, patch).await.unwrap();
    assert_eq!(upsert, Upsert::Existed);
    assert_eq!(info.settings.lease_ttl, ttl(5_000));
    assert_eq!(store.get_key(&pool, &leased.key).await.unwrap(), leased);

    advance(clock, 1_000);
    let now = clock.now();
    let freed = store.get_key(&pool, &leased.key).await.unwrap();
    assert_eq!(freed.lease, None, "the old lease ends on its old deadline");
    let relet = store.lease_key(&pool).await.unwrap();
    assert_eq!(lease_of(&relet).until, after(now, 5_000));
    let kept = store
        .keepalive_key(&pool, &keys[0].key, None)
        .await
        .unwrap();
    assert_eq!(kept.alive_until, after(now, 20_000));
    let fresh = store.generate_keys(&pool, 1).await.unwrap();
    assert_eq!(fresh[0].alive_until, after(now, 20_000));

    // The other old key still dies on its old deadline.
    let untouched = &keys[1].key;
    advance(clock, 9_000);
    assert_err!(
        store.get_key(&pool, untouched).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
}

pub async fn put_keyspace_creates_accepts_the_same_spec_and_refuses_another(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = name("put-keyspace");
    let spec = KeyspaceSpec::new("abc", 2).unwrap();
    let (view, upsert) = store.put_keyspace(&ks, spec.clone()).await.unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert_eq!(view.name, ks);
    assert_eq!(view.spec, spec);
    assert_eq!(
        view.info,
        KeyspaceInfo {
            capacity: 9,
            issued: 0,
            activated: 0,
            revoked: 0,
            remaining: 9,
            max_activations: MaxActivations::DEFAULT,
        }
    );
    store.issue_token(&ks).await.unwrap();

    let (view, upsert) = store.put_keyspace(&ks, spec.clone()).await.unwrap();
    assert_eq!(upsert, Upsert::Existed);
    assert_eq!(view.spec, spec);
    assert_eq!((view.info.issued, view.info.remaining), (1, 8));

    for other in [
        KeyspaceSpec::new("abc", 3).unwrap(),
        KeyspaceSpec::new("abd", 2).unwrap(),
        KeyspaceSpec::new("cba", 2).unwrap(),
    ] {
        assert_err!(
            store.put_keyspace(&ks, other).await,
            StoreError::KeyspaceImmutable
        );
    }
    assert_eq!(store.keyspace_info(&ks).await.unwrap(), view);
}

pub async fn keyspace_info_of_an_unknown_keyspace_is_keyspace_not_found(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = name("no-such-keyspace");
    assert_err!(store.keyspace_info(&ks).await, StoreError::KeyspaceNotFound);
    assert_err!(store.issue_token(&ks).await, StoreError::KeyspaceNotFound);
    assert_err!(
        store.token_status(&ks, "abcd").await,
        StoreError::KeyspaceNotFound
    );
    assert_err!(
        store.activate_token(&ks, "abcd").await,
        StoreError::KeyspaceNotFound
    );
}

pub async fn issue_token_issues_every_token_of_a_small_space_once_then_is_exhausted(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = name("exhaust");
    let alphabet = "abcdefghijklmnopqrstuvwxyz";
    store
        .put_keyspace(&ks, KeyspaceSpec::new(alphabet, 2).unwrap())
        .await
        .unwrap();
    let mut issued = Vec::new();
    for index in 0..676u128 {
        let token = store.issue_token(&ks).await.unwrap();
        assert_eq!(token.index, index);
        assert_eq!(token.remaining, 675 - index);
        issued.push(token.token);
    }
    let every: Vec<String> = alphabet
        .chars()
        .flat_map(|a| alphabet.chars().map(move |b| format!("{a}{b}")))
        .collect();
    let distinct: HashSet<&String> = issued.iter().collect();
    assert_eq!(distinct, every.iter().collect(), "every token exactly once");
    assert_ne!(issued, every, "tokens must not come in counting order");

    for _ in 0..2 {
        assert_err!(
            store.issue_token(&ks).await,
            StoreError::Keyspace(KeyspaceError::Exhausted)
        );
    }
    let info = store.keyspace_info(&ks).await.unwrap().info;
    assert_eq!(
        info,
        KeyspaceInfo {
            capacity: 676,
            issued: 676,
            activated: 0,
            revoked: 0,
            remaining: 0,
            max_activations: MaxActivations::DEFAULT,
        }
    );
}

pub async fn token_status_and_activate_token_follow_the_token_lifecycle(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let ks = name("tokens");
    store
        .put_keyspace(&ks, KeyspaceSpec::new("abc", 3).unwrap())
        .await
        .unwrap();
    let mut issued = Vec::new();
    for _ in 0..5 {
        issued.push(store.issue_token(&ks).await.unwrap().token);
    }
    for token in &issued {
        let status = store.token_status(&ks, token).await.unwrap();
        assert_eq!(
            (status.token.as_str(), status.activated_at()),
            (&**token, None)
        );
    }
    let alphabet = ['a', 'b', 'c'];
    for a in alphabet {
        for b in alphabet {
            for c in alphabet {
                let token = format!("{a}{b}{c}");
                if !issued.contains(&token) {
                    assert_err!(
                        store.token_status(&ks, &token).await,
                        StoreError::Keyspace(KeyspaceError::NotIssued)
                    );
                    assert_err!(
                        store.activate_token(&ks, &token).await,
                        StoreError::Keyspace(KeyspaceError::NotIssued)
                    );
                }
            }
        }
    }
    for bad in ["", "ab", "abca", "abd", "ab/", "abC"] {
        assert_err!(
            store.token_status(&ks, bad).await,
            StoreError::Keyspace(KeyspaceError::InvalidToken)
        );
        assert_err!(
            store.activate_token(&ks, bad).await,
            StoreError::Keyspace(KeyspaceError::InvalidToken)
        );
    }

    advance(clock, 1_000);
    let first_at = clock.now();
    let activated = store.activate_token(&ks, &issued[0]).await.unwrap();
    assert_eq!(activated.token, issued[0]);
    assert_eq!(activated.activated_at(), Some(first_at));
    advance(clock, 1_000);
    assert_eq!(
        store.token_status(&ks, &issued[0]).await.unwrap(),
        activated
    );
    assert_err!(
        store.activate_token(&ks, &issued[0]).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );
    assert_eq!(
        store.token_status(&ks, &issued[0]).await.unwrap(),
        activated
    );

    let second = store.activate_token(&ks, &issued[1]).await.unwrap();
    assert_eq!(second.activated_at(), Some(clock.now()));
    assert_eq!(
        store
            .token_status(&ks, &issued[2])
            .await
            .unwrap()
            .activated_at(),
        None
    );
    assert_eq!(
        store.keyspace_info(&ks).await.unwrap().info,
        KeyspaceInfo {
            capacity: 27,
            issued: 5,
            activated: 2,
            revoked: 0,
            remaining: 22,
            max_activations: MaxActivations::DEFAULT,
        }
    );
}

pub async fn the_default_pool_and_keyspace_exist_from_the_start(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let default = Name::default_name();
    let pool = store.pool_info(&default).await.unwrap();
    assert_eq!(pool.name, default);
    assert_eq!(pool.settings, pool_defaults());
    let ks = store.keyspace_info(&default).await.unwrap();
    assert_eq!(ks.name, default);
    assert_eq!(ks.spec, default_keyspace());
    assert_eq!(ks.info.capacity, 52u128.pow(4));
    assert_eq!(ks.info.remaining, ks.info.capacity - ks.info.issued);
}

pub async fn ping_answers(store: &dyn Store, _clock: &ManualClock) {
    store.ping().await.unwrap();
}

pub async fn flush_returns_once_everything_is_durable(store: &dyn Store, _clock: &ManualClock) {
    let pool = Name::parse(&format!("flush-{}", std::process::id())).unwrap();
    store.generate_keys(&pool, 3).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.pool_info(&pool).await.unwrap().stats.total, 3);
}

/// Asserts `result` is the `LimitReached` error of `limit` with its value.
fn assert_limit<T: std::fmt::Debug>(result: Result<T, StoreError>, limit: Limit) {
    match result {
        Err(StoreError::LimitReached { limit: l, max }) if l == limit => {
            let want = match limit {
                Limit::Pools => LIMITS.max_pools,
                Limit::Keyspaces => LIMITS.max_keyspaces,
                Limit::KeysPerPool => LIMITS.max_keys_per_pool,
            };
            assert_eq!(max, want, "{limit:?}");
        }
        other => panic!("expected the {limit:?} limit, got {other:?}"),
    }
}

pub async fn a_pool_past_max_pools_is_refused_and_nothing_is_created(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    // The `default` pool counts: it takes one place.
    for i in 1..LIMITS.max_pools {
        let pool = name(&format!("max-pools-{i}"));
        if i % 2 == 0 {
            store.put_pool(&pool, PoolPatch::default()).await.unwrap();
        } else {
            store.generate_keys(&pool, 1).await.unwrap();
        }
    }
    let over = name("max-pools-over");
    assert_limit(
        store.put_pool(&over, PoolPatch::default()).await,
        Limit::Pools,
    );
    assert_limit(store.generate_keys(&over, 1).await, Limit::Pools);
    assert_err!(store.pool_info(&over).await, StoreError::PoolNotFound);
    assert_eq!(store.snapshot().await.unwrap().pool_count, LIMITS.max_pools);

    // Existing pools still change and grow.
    let first = name("max-pools-1");
    let (_, upsert) = store.put_pool(&first, PoolPatch::default()).await.unwrap();
    assert_eq!(upsert, Upsert::Existed);
    store.generate_keys(&first, 2).await.unwrap();
    assert_eq!(pool_stats(store, &first).await, stats(3, 3, 0));
}

pub async fn a_keyspace_past_max_keyspaces_is_refused_and_nothing_is_created(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let spec = KeyspaceSpec::new("abc", 3).unwrap();
    for i in 1..LIMITS.max_keyspaces {
        let ks = name(&format!("max-ks-{i}"));
        store.put_keyspace(&ks, spec.clone()).await.unwrap();
    }
    let over = name("max-ks-over");
    assert_limit(
        store.put_keyspace(&over, spec.clone()).await,
        Limit::Keyspaces,
    );
    assert_err!(
        store.keyspace_info(&over).await,
        StoreError::KeyspaceNotFound
    );
    assert_err!(store.issue_token(&over).await, StoreError::KeyspaceNotFound);
    // An existing one is still accepted again, and still refuses another
    // definition for what it is, not for the limit.
    let first = name("max-ks-1");
    let (_, upsert) = store.put_keyspace(&first, spec).await.unwrap();
    assert_eq!(upsert, Upsert::Existed);
    assert_err!(
        store
            .put_keyspace(&first, KeyspaceSpec::new("abcd", 3).unwrap())
            .await,
        StoreError::KeyspaceImmutable
    );
    assert_eq!(
        store.snapshot().await.unwrap().keyspace_count,
        LIMITS.max_keyspaces
    );
}

pub async fn a_generate_past_max_keys_per_pool_is_refused_whole(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let max = LIMITS.max_keys_per_pool as usize;
    // Too many for a new pool: refused before the pool exists.
    let fresh = name("max-keys-fresh");
    assert_limit(
        store.generate_keys(&fresh, max + 1).await,
        Limit::KeysPerPool,
    );
    assert_err!(store.pool_info(&fresh).await, StoreError::PoolNotFound);

    let pool = name("max-keys");
    let keys = pool_with(store, &pool, 60_000, 1_000, max - 3).await;
    assert_limit(store.generate_keys(&pool, 4).await, Limit::KeysPerPool);
    assert_eq!(
        pool_stats(store, &pool).await,
        stats(max as u64 - 3, max as u64 - 3, 0)
    );
    store.generate_keys(&pool, 3).await.unwrap();
    assert_limit(store.generate_keys(&pool, 1).await, Limit::KeysPerPool);

    // A deleted key frees its place; leased keys still count.
    store.delete_key(&pool, &keys[0].key).await.unwrap();
    store.lease_key(&pool).await.unwrap();
    store.generate_keys(&pool, 1).await.unwrap();
    assert_limit(store.generate_keys(&pool, 1).await, Limit::KeysPerPool);
    assert_eq!(
        pool_stats(store, &pool).await,
        stats(max as u64, max as u64 - 1, 1)
    );

    // Purged keys free theirs: due keys do not count.
    advance(clock, 1_000);
    store.generate_keys(&pool, max).await.unwrap();
    assert_eq!(
        pool_stats(store, &pool).await,
        stats(max as u64, max as u64, 0)
    );
}

pub async fn expire_due_reaches_a_lease_taken_after_its_pool_was_reaped(
    store: &dyn Store,
    clock: &ManualClock,
) {
    // Reaping a pool moves the reaper's interest to its next deadline (the
    // keys' purge, far away); a lease taken afterwards ends sooner and must
    // bring the pool back to the reaper's attention.
    let pool = name("reindex");
    pool_with(store, &pool, 100, 60_000, 2).await;
    store.lease_key(&pool).await.unwrap();
    advance(clock, 100);
    let expired = store.expire_due().await.unwrap();
    assert!(expired.leases >= 1, "{expired:?}");

    store.lease_key(&pool).await.unwrap();
    advance(clock, 50);
    store.lease_key(&pool).await.unwrap();
    advance(clock, 50);
    let expired = store.expire_due().await.unwrap();
    assert!(
        expired.leases >= 1,
        "the first of the two leases: {expired:?}"
    );
    advance(clock, 50);
    let expired = store.expire_due().await.unwrap();
    assert!(expired.leases >= 1, "the second lease: {expired:?}");

    // A keep-alive under a shorter keep-alive TTL brings the purge forward.
    let keys = store.generate_keys(&pool, 1).await.unwrap();
    let patch = PoolPatch {
        keepalive_ttl: Some(Some(ttl(30))),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await.unwrap();
    store
        .keepalive_key(&pool, &keys[0].key, None)
        .await
        .unwrap();
    advance(clock, 30);
    let expired = store.expire_due().await.unwrap();
    assert!(expired.keys >= 1, "the kept-alive key: {expired:?}");
    assert_err!(
        store.get_key(&pool, &keys[0].key).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
}

pub async fn snapshot_counts_every_pool_and_keyspace_and_names_them(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let a = name("snap-a");
    let b = name("snap-b");
    store.generate_keys(&a, 3).await.unwrap();
    store.generate_keys(&b, 2).await.unwrap();
    store.lease_key(&b).await.unwrap();
    let ks = name("snap-ks");
    store
        .put_keyspace(&ks, KeyspaceSpec::new("xyz", 2).unwrap())
        .await
        .unwrap();
    store.issue_token(&ks).await.unwrap();

    let snapshot = store.snapshot().await.unwrap();
    // `default`, a, b; `default`, ks.
    assert_eq!((snapshot.pool_count, snapshot.keyspace_count), (3, 2));
    let pool_of = |n: &Name| snapshot.pools.iter().find(|p| &p.name == n).cloned();
    assert_eq!(pool_of(&a).map(|p| p.stats), Some(stats(3, 3, 0)));
    assert_eq!(pool_of(&b).map(|p| p.stats), Some(stats(2, 1, 1)));
    let view = snapshot.keyspaces.iter().find(|k| k.name == ks);
    assert_eq!(view.map(|k| k.info.issued), Some(1));
    if let Some(totals) = snapshot.totals {
        let default_total = pool_stats(store, &Name::default_name()).await.total;
        assert_eq!(totals.stats, stats(5 + default_total, 4 + default_total, 1));
    }
}

/// Every pool name, paging with `limit` and calling `between` after each
/// page (with the page's number) until the last page. Bounded: at most 100
/// pages.
async fn all_pool_names(
    store: &dyn Store,
    limit: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<String> {
    let limit = PageLimit::new(limit).expect("a limit in range");
    let (mut names, mut after) = (Vec::new(), None);
    for page_no in 0..100 {
        let page = store
            .list_pools(&PageRequest {
                after: after.clone(),
                limit,
            })
            .await
            .unwrap();
        assert!(page.items.len() <= limit.get());
        names.extend(page.items.iter().map(|p| p.name.as_str().to_owned()));
        match page.next {
            Some(next) => {
                assert_eq!(Some(next.as_str()), names.last().map(String::as_str));
                after = Some(next);
            }
            None => return names,
        }
        between(page_no).await;
    }
    panic!("more than 100 pages")
}

pub async fn list_pools_visits_every_lasting_name_once_while_others_come_and_go(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    // Names that last, and names that come and go between pages, spread
    // before and after wherever the cursor stands. 8 pools + `default`.
    let lasting: Vec<Name> = ["b", "d", "f", "h", "j"]
        .iter()
        .map(|t| name(&format!("list-{t}")))
        .collect();
    for pool in &lasting {
        store.put_pool(pool, PoolPatch::default()).await.unwrap();
    }
    let going: Vec<Name> = ["a", "e", "i"]
        .iter()
        .map(|t| name(&format!("list-{t}")))
        .collect();
    for pool in &going {
        store.generate_keys(pool, 2).await.unwrap();
    }
    let coming: Vec<Name> = ["c", "g", "k"]
        .iter()
        .map(|t| name(&format!("list-{t}")))
        .collect();
    let seen = all_pool_names(store, 2, async |page_no| {
        if let Some(pool) = going.get(page_no) {
            store.delete_pool(pool).await.unwrap();
        }
        if let Some(pool) = coming.get(page_no) {
            store.put_pool(pool, PoolPatch::default()).await.unwrap();
        }
    })
    .await;
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages are in order and never repeat a name");
    for pool in &lasting {
        assert!(seen.iter().any(|n| n == pool.as_str()), "{pool} skipped");
    }
    assert!(seen.iter().any(|n| n == "default"));

    // Once nothing changes, one page of the largest size holds them all.
    let all = store
        .list_pools(&PageRequest {
            after: None,
            limit: PageLimit::new(PageLimit::MAX).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(all.next, None);
    let names: Vec<&str> = all.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 1 + lasting.len() + coming.len());
    for pool in going.iter() {
        assert!(!names.contains(&pool.as_str()), "{pool} was deleted");
    }
    // The items are the pool objects `pool_info` gives.
    let first = &all.items[0];
    assert_eq!(
        *first,
        store.pool_info(&first.name).await.unwrap(),
        "a listed pool is its pool_info"
    );
}

pub async fn list_pools_honours_the_limit_and_the_cursor(store: &dyn Store, _clock: &ManualClock) {
    assert_eq!(PageLimit::new(0), None);
    assert_eq!(PageLimit::new(PageLimit::MAX + 1), None);
    assert_eq!(PageLimit::default().get(), 100);
    for t in ["x", "y", "z"] {
        store
            .put_pool(&name(&format!("limit-{t}")), PoolPatch::default())
            .await
            .unwrap();
    }
    let one = PageLimit::new(1).unwrap();
    let page = store
        .list_pools(&PageRequest {
            after: None,
            limit: one,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name.as_str(), "default");
    assert_eq!(page.next.as_deref(), Some("default"));
    // Strictly after the cursor, even a cursor that names no pool.
    let page = store
        .list_pools(&PageRequest {
            after: Some(name("limit-x").as_str().to_owned()),
            limit: PageLimit::new(5).unwrap(),
        })
        .await
        .unwrap();
    let names: Vec<&str> = page.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [name("limit-y").as_str(), name("limit-z").as_str()]);
    assert_eq!(page.next, None);
    let page = store
        .list_pools(&PageRequest {
            after: Some("limit-xx".into()),
            limit: one,
        })
        .await
        .unwrap();
    assert_eq!(page.items[0].name, name("limit-y"));
    let page = store
        .list_pools(&PageRequest {
            after: Some("zzz".into()),
            limit: one,
        })
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.next, None);
}

pub async fn list_keyspaces_pages_by_name(store: &dyn Store, _clock: &ManualClock) {
    let spec = KeyspaceSpec::new("abc", 3).unwrap();
    let made: Vec<Name> = ["a", "b", "c"]
        .iter()
        .map(|t| name(&format!("ks-list-{t}")))
        .collect();
    for ks in &made {
        store.put_keyspace(ks, spec.clone()).await.unwrap();
    }
    store.issue_token(&made[1]).await.unwrap();
    let (mut seen, mut after) = (Vec::new(), None);
    for _ in 0..10 {
        let page = store
            .list_keyspaces(&PageRequest {
                after: after.clone(),
                limit: PageLimit::new(2).unwrap(),
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items);
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    let names: Vec<&str> = seen.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "default",
            made[0].as_str(),
            made[1].as_str(),
            made[2].as_str()
        ]
    );
    assert_eq!(seen[2], store.keyspace_info(&made[1]).await.unwrap());
    assert_eq!(seen[2].info.issued, 1);
}

pub async fn a_deleted_pool_is_gone_at_once_and_comes_back_empty(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("delete-pool");
    let keys = store.generate_keys(&pool, 5).await.unwrap();
    let leased = store.lease_key(&pool).await.unwrap();
    store.delete_pool(&pool).await.unwrap();

    assert_err!(store.pool_info(&pool).await, StoreError::PoolNotFound);
    assert_no_free_key(store.lease_key(&pool).await, None);
    assert_err!(
        store.get_key(&pool, &keys[0].key).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_err!(
        store.release_key(&pool, &leased.key, None).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_err!(store.delete_pool(&pool).await, StoreError::PoolNotFound);
    // Its deadlines fall due: the reaper must not bring it back.
    advance(clock, 10 * pool_defaults().keepalive_ttl.as_millis());
    store.expire_due().await.unwrap();
    assert_err!(store.pool_info(&pool).await, StoreError::PoolNotFound);
    let snapshot = store.snapshot().await.unwrap();
    assert!(snapshot.pools.iter().all(|p| p.name != pool));
    assert_eq!(snapshot.pool_count, 1);
    if let Some(totals) = snapshot.totals {
        assert_eq!(totals.stats.total, 0, "the totals forget its keys");
    }

    // The same name again is a new, empty pool.
    let (info, upsert) = store.put_pool(&pool, PoolPatch::default()).await.unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert_eq!(info.stats, stats(0, 0, 0));
    assert_err!(
        store.get_key(&pool, &keys[1].key).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    let fresh = store.generate_keys(&pool, 2).await.unwrap();
    assert_eq!(pool_stats(store, &pool).await, stats(2, 2, 0));
    let lease = store.lease_key(&pool).await.unwrap();
    assert!(fresh.iter().any(|k| k.key == lease.key));
}

pub async fn a_deleted_keyspace_is_gone_at_once_and_comes_back_empty(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = name("delete-ks");
    store
        .put_keyspace(&ks, KeyspaceSpec::new("abc", 3).unwrap())
        .await
        .unwrap();
    let issued = store.issue_token(&ks).await.unwrap();
    store.activate_token(&ks, &issued.token).await.unwrap();
    store.delete_keyspace(&ks).await.unwrap();
    assert_err!(store.keyspace_info(&ks).await, StoreError::KeyspaceNotFound);
    assert_err!(store.issue_token(&ks).await, StoreError::KeyspaceNotFound);
    assert_err!(
        store.token_status(&ks, &issued.token).await,
        StoreError::KeyspaceNotFound
    );
    assert_err!(
        store.delete_keyspace(&ks).await,
        StoreError::KeyspaceNotFound
    );
    // A new one of that name may even have another alphabet.
    let (view, upsert) = store
        .put_keyspace(&ks, KeyspaceSpec::new("xyz", 4).unwrap())
        .await
        .unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert_eq!((view.info.issued, view.info.activated), (0, 0));
    assert!(
        store
            .snapshot()
            .await
            .unwrap()
            .keyspaces
            .iter()
            .any(|k| k.name == ks)
    );
}

pub async fn the_default_pool_and_keyspace_cannot_be_deleted(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let default = Name::default_name();
    assert_err!(
        store.delete_pool(&default).await,
        StoreError::CannotDeleteDefault
    );
    assert_err!(
        store.delete_keyspace(&default).await,
        StoreError::CannotDeleteDefault
    );
    store.pool_info(&default).await.unwrap();
    store.keyspace_info(&default).await.unwrap();
    assert_err!(
        store.delete_pool(&name("never-made")).await,
        StoreError::PoolNotFound
    );
    assert_err!(
        store.delete_keyspace(&name("never-made")).await,
        StoreError::KeyspaceNotFound
    );
}

pub async fn deleting_frees_a_place_under_the_limits(store: &dyn Store, _clock: &ManualClock) {
    for i in 1..LIMITS.max_pools {
        store
            .generate_keys(&name(&format!("free-place-{i}")), 1)
            .await
            .unwrap();
    }
    let over = name("free-place-over");
    assert_limit(
        store.put_pool(&over, PoolPatch::default()).await,
        Limit::Pools,
    );
    store.delete_pool(&name("free-place-3")).await.unwrap();
    let (_, upsert) = store.put_pool(&over, PoolPatch::default()).await.unwrap();
    assert_eq!(upsert, Upsert::Created);
    assert_limit(
        store.generate_keys(&name("free-place-3"), 1).await,
        Limit::Pools,
    );
    assert_eq!(store.snapshot().await.unwrap().pool_count, LIMITS.max_pools);

    let spec = KeyspaceSpec::new("abc", 3).unwrap();
    for i in 1..LIMITS.max_keyspaces {
        store
            .put_keyspace(&name(&format!("free-ks-{i}")), spec.clone())
            .await
            .unwrap();
    }
    let over = name("free-ks-over");
    assert_limit(
        store.put_keyspace(&over, spec.clone()).await,
        Limit::Keyspaces,
    );
    store.delete_keyspace(&name("free-ks-2")).await.unwrap();
    store.put_keyspace(&over, spec).await.unwrap();
}

/// A keyspace of readable codes (P2.4 formats): tokens come out in the
/// display form, are read back in any typed form, a wrong check character
/// is refused before any lookup, and the format is part of what cannot
/// change.
pub async fn a_keyspace_of_readable_codes_shows_and_reads_its_format(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    use keyward::core::keyspace::Format;
    let ks = name("readable");
    let plain = KeyspaceSpec::named("crockford", 6).unwrap();
    let format = Format::new(plain.alphabet(), Some(3), None, Some("GIFT-"), true).unwrap();
    let spec = plain.clone().with_format(format);
    let (view, upsert) = store.put_keyspace(&ks, spec.clone()).await.unwrap();
    assert_eq!((upsert, &view.spec), (Upsert::Created, &spec));
    let issued = store.issue_token(&ks).await.unwrap();
    let token = issued.token.clone();
    // Six characters in groups of three, then the check character.
    assert!(
        token.starts_with("GIFT-") && token.len() == 5 + 6 + 1 + 1,
        "{token}"
    );
    let typed = token
        .trim_start_matches("GIFT-")
        .replace('-', "")
        .to_lowercase();
    let status = store.token_status(&ks, &typed).await.unwrap();
    assert_eq!(
        (status.token.as_str(), status.activated_at()),
        (token.as_str(), None)
    );
    // A wrong check character: the last one changed.
    let last = token.chars().last().unwrap();
    let other = if last == '0' { '1' } else { '0' };
    let typo = format!("{}{other}", &token[..token.len() - 1]);
    assert_err!(
        store.token_status(&ks, &typo).await,
        StoreError::Keyspace(KeyspaceError::CheckMismatch)
    );
    let activated = store
        .activate_token(&ks, &typed.to_uppercase())
        .await
        .unwrap();
    assert_eq!(activated.token, token);
    assert_err!(
        store.activate_token(&ks, &token).await,
        StoreError::Keyspace(KeyspaceError::AlreadyActivated)
    );
    let (again, upsert) = store.put_keyspace(&ks, spec.clone()).await.unwrap();
    assert_eq!((upsert, again.spec), (Upsert::Existed, spec));
    assert_err!(
        store.put_keyspace(&ks, plain).await,
        StoreError::KeyspaceImmutable
    );
    assert_eq!(store.keyspace_info(&ks).await.unwrap().info.activated, 1);
}

/// A bulk issue (P2.4) takes contiguous counters, all or nothing: the
/// tokens are distinct and issued, and a count over what is left issues
/// nothing.
pub async fn issue_tokens_issues_contiguous_counters_all_or_nothing(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = name("bulk");
    store
        .put_keyspace(&ks, KeyspaceSpec::new("abcd", 3).unwrap())
        .await
        .unwrap();
    let one = store.issue_token(&ks).await.unwrap();
    let many = store.issue_tokens(&ks, 40).await.unwrap();
    assert_eq!(
        (many.first, many.tokens.len(), many.remaining),
        (1, 40, 64 - 41)
    );
    let distinct: HashSet<&String> = many.tokens.iter().chain([&one.token]).collect();
    assert_eq!(distinct.len(), 41);
    for token in &many.tokens {
        assert_eq!(
            store.token_status(&ks, token).await.unwrap().activated_at(),
            None
        );
    }
    assert_err!(
        store.issue_tokens(&ks, 24).await,
        StoreError::Keyspace(KeyspaceError::Exhausted)
    );
    assert_eq!(
        store.keyspace_info(&ks).await.unwrap().info.issued,
        41,
        "nothing issued"
    );
    let rest = store.issue_tokens(&ks, 23).await.unwrap();
    assert_eq!((rest.first, rest.remaining), (41, 0));
}
