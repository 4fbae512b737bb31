//! The waiting-lease cases (P2.2): a waiter is served by each event that
//! frees a key, first come first served; one that timed out or whose
//! future was dropped holds no key; `stop_waiting` answers it
//! `ShuttingDown`.
//!
//! Pool deadlines are on the store's clock (a `ManualClock` here), which
//! never moves by itself: an expiry-driven case advances it and then
//! triggers the pool with `expire_due`, so the waiter is served by that
//! trigger, not by a wake of its own. Real time is spent only to let a
//! waiter queue ([`SETTLE`]) and, if a case fails, up to [`WAIT`]; no case
//! asserts on wall-clock time.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;

use keyward::core::{KeyState, Labels, MaxFailures, Outcome, PoolKey};
use keyward::store::NewKeys;

use super::*;

/// How long a waiter waits: an upper bound, reached only when the event
/// under test fails to serve it.
const WAIT: Duration = Duration::from_millis(1_500);
/// Real time given to a waiter to queue before the event that serves it.
const SETTLE: Duration = Duration::from_millis(100);
/// Lease TTL of the cases' pools: longer than any cooldown or quarantine
/// they wait out, so only the event under test frees a key.
const LEASE_MS: u64 = 60_000;
/// Keep-alive TTL: 30 days, longer than any case runs.
const KEEPALIVE_MS: u64 = 30 * 24 * 3_600_000;

/// Creates `pool`, empty, with long leases and keep-alive, a cooldown of
/// 30 s, and quarantine after one failure for 40 s.
async fn waiting_pool(store: &dyn Store, pool: &Name) {
    let patch = PoolPatch {
        lease_ttl: Some(ttl(LEASE_MS)),
        keepalive_ttl: Some(Some(ttl(KEEPALIVE_MS))),
        cooldown: Some(ttl(30_000)),
        max_failures: Some(MaxFailures::new(1).expect("a valid count")),
        quarantine: Some(ttl(40_000)),
        ..PoolPatch::default()
    };
    let (_, upsert) = store.put_pool(pool, patch).await.unwrap();
    assert_eq!(upsert, Upsert::Created, "{pool} should be new");
}

fn import_of(texts: &[&str]) -> NewKeys {
    NewKeys::Import(
        texts
            .iter()
            .map(|t| PoolKey::parse(t).expect("a valid key"))
            .collect(),
    )
}

/// Creates `pool` holding the keys `texts`, all free.
async fn pool_of(store: &dyn Store, pool: &Name, texts: &[&str]) {
    waiting_pool(store, pool).await;
    let done = store
        .add_keys(pool, import_of(texts), &Labels::default())
        .await
        .unwrap();
    assert_eq!(done.added.len(), texts.len());
}

/// Runs a waiting lease on `pool` (which has no free key) beside `event`:
/// checks the waiter is still waiting when the event starts, then that
/// it was handed a key. The waiter is answered only after the event, so
/// the event is what served it.
async fn served_by(store: &dyn Store, pool: &Name, event: impl Future<Output = ()>) -> KeyView {
    let answered = Cell::new(false);
    let waiter = async {
        let result = store.lease_key_waiting(pool, WAIT).await;
        answered.set(true);
        result
    };
    let driver = async {
        tokio::time::sleep(SETTLE).await;
        assert!(
            !answered.get(),
            "with no free key the waiter should still wait"
        );
        event.await;
    };
    let (result, ()) = tokio::join!(waiter, driver);
    let view = result.unwrap_or_else(|e| panic!("the waiter should be served, got {e:?}"));
    assert_eq!(view.state, KeyState::Leased, "{view:?}");
    assert!(view.lease.is_some(), "{view:?}");
    view
}

/// Checks the waiter's key is leased to it and the only leased key.
async fn assert_holds(store: &dyn Store, pool: &Name, view: &KeyView, key: &str, total: u64) {
    assert_eq!(view.key, key);
    let now = store.get_key(pool, key).await.unwrap();
    assert_eq!(now.lease, view.lease, "the waiter's lease is the key's");
    let s = counts(store, pool).await;
    assert_eq!((s.total, s.leased), (total, 1), "{s:?}");
}

pub async fn a_waiting_lease_is_served_by_a_release(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("w-release");
    pool_of(store, &pool, &["wr-key"]).await;
    let mine = lease_only(store, &pool, "wr-key").await;
    let got = served_by(store, &pool, async {
        let freed = store
            .release_key(&pool, "wr-key", Some(lease_of(&mine).id))
            .await
            .unwrap();
        assert_eq!(freed.lease, None, "the release ended my lease");
    })
    .await;
    assert_holds(store, &pool, &got, "wr-key", 1).await;
    assert!(lease_of(&got).id > lease_of(&mine).id, "a new lease");
    // My old lease id no longer releases it.
    assert_err!(
        store
            .release_key(&pool, "wr-key", Some(lease_of(&mine).id))
            .await,
        StoreError::Pool(_)
    );
}

pub async fn a_waiting_lease_is_served_when_a_cooldown_ends(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("w-cool");
    pool_of(store, &pool, &["wc-key"]).await;
    let mine = lease_only(store, &pool, "wc-key").await;
    let got = served_by(store, &pool, async {
        let cooling = store
            .report_key(
                &pool,
                "wc-key",
                Some(lease_of(&mine).id),
                Outcome::RateLimited {
                    retry_after: Some(ttl(20_000)),
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(cooling.state, KeyState::Cooling, "not handed while cooling");
        advance(clock, 19_999);
        store.expire_due().await.unwrap();
        assert_eq!(
            store.get_key(&pool, "wc-key").await.unwrap().state,
            KeyState::Cooling,
            "still cooling 1 ms before its end"
        );
        advance(clock, 1);
        store.expire_due().await.unwrap();
    })
    .await;
    assert_holds(store, &pool, &got, "wc-key", 1).await;
}

pub async fn a_waiting_lease_is_served_when_a_quarantine_ends(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("w-quar");
    pool_of(store, &pool, &["wq-key"]).await;
    let mine = lease_only(store, &pool, "wq-key").await;
    let got = served_by(store, &pool, async {
        let quarantined = store
            .report_key(
                &pool,
                "wq-key",
                Some(lease_of(&mine).id),
                Outcome::Failed,
                None,
            )
            .await
            .unwrap();
        assert_eq!(quarantined.state, KeyState::Quarantined);
        advance(clock, 40_000);
        store.expire_due().await.unwrap();
    })
    .await;
    assert_holds(store, &pool, &got, "wq-key", 1).await;
}

pub async fn a_waiting_lease_is_served_by_an_enable(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("w-enable");
    pool_of(store, &pool, &["we-key"]).await;
    store.disable_key(&pool, "we-key", None).await.unwrap();
    let got = served_by(store, &pool, async {
        store.enable_key(&pool, "we-key").await.unwrap();
    })
    .await;
    assert_holds(store, &pool, &got, "we-key", 1).await;
}

pub async fn a_waiting_lease_is_served_by_imported_keys(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("w-import");
    waiting_pool(store, &pool).await;
    let got = served_by(store, &pool, async {
        let done = store
            .add_keys(&pool, import_of(&["wi-key"]), &Labels::default())
            .await
            .unwrap();
        assert_eq!(done.added.len(), 1);
    })
    .await;
    assert_holds(store, &pool, &got, "wi-key", 1).await;
}

pub async fn a_waiting_lease_is_served_by_generated_keys(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("w-gen");
    let generated = RefCell::new(Vec::new());
    // The waiter may also wait on a pool that does not exist yet.
    let got = served_by(store, &pool, async {
        *generated.borrow_mut() = store.generate_keys(&pool, 1).await.unwrap();
    })
    .await;
    let generated = generated.into_inner();
    assert_eq!(generated.len(), 1);
    assert_holds(store, &pool, &got, &generated[0].key, 1).await;
}

pub async fn a_waiting_lease_is_served_by_an_expired_lease(store: &dyn Store, clock: &ManualClock) {
    let pool = name("w-expiry");
    pool_of(store, &pool, &["wx-key"]).await;
    let mine = lease_only(store, &pool, "wx-key").await;
    let got = served_by(store, &pool, async {
        advance(clock, LEASE_MS);
        store.expire_due().await.unwrap();
    })
    .await;
    assert_holds(store, &pool, &got, "wx-key", 1).await;
    assert!(lease_of(&got).id > lease_of(&mine).id, "a new lease");
}

/// Waits (boundedly, ~2 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

pub async fn waiters_are_served_first_come_first_served(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("w-fifo");
    let keys = ["wf-a", "wf-b", "wf-c"];
    pool_of(store, &pool, &keys).await;
    let mut mine = BTreeMap::new();
    for _ in 0..3 {
        let view = store.lease_key(&pool).await.unwrap();
        mine.insert(view.key.clone(), lease_of(&view).id);
    }
    // (waiter, key) in the order the waiters were answered.
    let served = RefCell::new(Vec::new());
    let waiter = |i: u32| {
        let served = &served;
        let pool = &pool;
        async move {
            // Queue in order: waiter i arrives i settles after the first.
            tokio::time::sleep(SETTLE * i).await;
            let view = store.lease_key_waiting(pool, WAIT).await.unwrap();
            served.borrow_mut().push((i, view.key));
        }
    };
    let driver = async {
        tokio::time::sleep(SETTLE * 3).await;
        assert!(served.borrow().is_empty(), "no key is free yet");
        for (n, key) in keys.iter().enumerate() {
            store
                .release_key(&pool, key, Some(mine[*key]))
                .await
                .unwrap();
            until("a waiter is served", || served.borrow().len() > n).await;
            assert_eq!(served.borrow().len(), n + 1, "one key, one waiter");
        }
    };
    tokio::join!(waiter(0), waiter(1), waiter(2), driver);
    let want: Vec<(u32, String)> = (0..3).map(|i| (i, keys[i as usize].into())).collect();
    assert_eq!(*served.borrow(), want, "the oldest waiter first");
    let s = counts(store, &pool).await;
    assert_eq!((s.total, s.leased), (3, 3));
}

pub async fn a_waiter_that_timed_out_holds_no_key(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("w-timeout");
    pool_of(store, &pool, &["wt-key"]).await;
    let mine = lease_only(store, &pool, "wt-key").await;
    let answer = store
        .lease_key_waiting(&pool, Duration::from_millis(200))
        .await;
    // As lease_key answers it: when my lease ends.
    assert_no_free_key(answer, Some(ttl(LEASE_MS)));
    let s = counts(store, &pool).await;
    assert_eq!((s.total, s.free, s.leased), (1, 0, 1));
    assert_eq!(
        store.get_key(&pool, "wt-key").await.unwrap().lease,
        mine.lease,
        "still my lease"
    );
    // Released, the key is not handed to the waiter that gave up.
    store
        .release_key(&pool, "wt-key", Some(lease_of(&mine).id))
        .await
        .unwrap();
    let s = counts(store, &pool).await;
    assert_eq!((s.total, s.free, s.leased), (1, 1, 0));
    lease_only(store, &pool, "wt-key").await;
}

pub async fn a_dropped_waiter_holds_no_key(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("w-drop");
    pool_of(store, &pool, &["wd-key"]).await;
    let mine = lease_only(store, &pool, "wd-key").await;
    let gone = tokio::time::timeout(SETTLE * 2, store.lease_key_waiting(&pool, WAIT)).await;
    assert!(gone.is_err(), "no key was free: {gone:?}");
    store
        .release_key(&pool, "wd-key", Some(lease_of(&mine).id))
        .await
        .unwrap();
    let s = counts(store, &pool).await;
    assert_eq!((s.total, s.free, s.leased), (1, 1, 0));
    lease_only(store, &pool, "wd-key").await;
}

/// Rounds of [`a_waiter_dropped_as_its_key_is_released_never_holds_it`].
const RACE_ROUNDS: usize = 2000;

pub async fn a_waiter_dropped_as_its_key_is_released_never_holds_it(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("w-race");
    pool_of(store, &pool, &["wz-key"]).await;
    let mut taken = 0;
    for round in 0..RACE_ROUNDS {
        // Free at each round's start: nobody else holds it.
        let mine = store
            .lease_key(&pool)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the key should be free: {e:?}"));
        // Boxed, so `drop` below really drops it (a `tokio::pin!`ned
        // future lives to the end of the scope).
        let mut waiter = Box::pin(store.lease_key_waiting(&pool, WAIT));
        // Let the waiter queue: poll it a few times.
        for _ in 0..(1 + round % 3) {
            tokio::select! {
                biased;
                early = &mut waiter => panic!("round {round}: answered with no free key: {early:?}"),
                () = tokio::task::yield_now() => {}
            }
        }
        let release = store.release_key(&pool, "wz-key", Some(lease_of(&mine).id));
        let answer = match round % 3 {
            // Dropped right after the release handed it the key.
            0 => {
                release.await.unwrap();
                None
            }
            // Release and waiter polled together, release first.
            1 => tokio::select! {
                biased;
                released = release => { released.unwrap(); None }
                answer = &mut waiter => Some(answer),
            },
            // One more poll of the waiter after the release, then dropped.
            _ => {
                release.await.unwrap();
                tokio::time::timeout(Duration::ZERO, &mut waiter).await.ok()
            }
        };
        drop(waiter);
        // A store may give a dropped waiter's key back in the background
        // (Redis: a release task); `flush` waits for what is in flight.
        store.flush().await.unwrap();
        let s = counts(store, &pool).await;
        assert_eq!(s.total, 1, "round {round}: {s:?}");
        match answer {
            Some(Ok(view)) => {
                // It answered: it holds the key, and only it.
                taken += 1;
                assert_eq!((s.free, s.leased), (0, 1), "round {round}");
                let now = store.get_key(&pool, "wz-key").await.unwrap();
                assert_eq!(now.lease, view.lease, "round {round}");
                store
                    .release_key(&pool, "wz-key", Some(lease_of(&view).id))
                    .await
                    .unwrap();
            }
            Some(Err(e)) => panic!("round {round}: the waiter failed: {e:?}"),
            None => assert_eq!(
                (s.free, s.leased),
                (1, 0),
                "round {round} (variant {}): the dropped waiter must hold no key",
                round % 3
            ),
        }
    }
    eprintln!("{taken} of {RACE_ROUNDS} waiters answered before they were dropped");
}

pub async fn stop_waiting_answers_waiters_shutting_down_and_refuses_new_waits(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("w-stop");
    pool_of(store, &pool, &["ws-key"]).await;
    let mine = lease_only(store, &pool, "ws-key").await;
    let answered = Cell::new(false);
    let waiter = async {
        let result = store.lease_key_waiting(&pool, WAIT).await;
        answered.set(true);
        result
    };
    let driver = async {
        tokio::time::sleep(SETTLE).await;
        assert!(!answered.get(), "the waiter should still wait");
        store.stop_waiting();
        // Answered at once: well before its wait ends.
        until("the waiter is answered", || answered.get()).await;
    };
    let (result, ()) = tokio::join!(waiter, driver);
    assert_err!(result, StoreError::ShuttingDown);
    assert_err!(
        store
            .lease_key_waiting(&pool, Duration::from_millis(200))
            .await,
        StoreError::ShuttingDown
    );
    // Nothing changed: the key is still mine.
    let s = counts(store, &pool).await;
    assert_eq!((s.total, s.free, s.leased), (1, 0, 1));
    assert_eq!(
        store.get_key(&pool, "ws-key").await.unwrap().lease,
        mine.lease
    );
}
