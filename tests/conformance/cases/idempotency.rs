//! The idempotency cases (P2.3): every change run with an idempotency key
//! takes effect once; its retry gets the first answer back, replayed;
//! the key used for another request is refused and changes nothing; a
//! refused change is not recorded; records are scoped to their pool or
//! keyspace and expire after their TTL.
//!
//! The answer is rendered by [`render`], the `Debug` text of the effect:
//! a local store records that text, Redis records its script's reply and
//! renders it again on a replay, so an equal text also shows that a
//! replayed reply reads back as the same effect.

use std::pin::pin;

use keyward::core::{KeyState, Labels, Outcome, PoolKey};
use keyward::store::{Applied, Change, Digest, Effect, Idem, IdemKey, NewKeys, Recorded};

use super::*;

/// Records live a minute in these cases, unless one says otherwise.
const RECORD_MS: u64 = 60_000;

fn render(effect: &Effect) -> Recorded {
    Recorded {
        status: 200,
        body: format!("{effect:?}").into(),
    }
}

/// The key `key` for a request whose digest input is `request`.
fn idem(key: &str, request: &str) -> Idem {
    idem_for(key, request, RECORD_MS)
}

fn idem_for(key: &str, request: &str, ttl_ms: u64) -> Idem {
    Idem {
        key: IdemKey::parse(key.as_bytes()).expect("a valid key"),
        digest: Digest::of("POST", request, b""),
        ttl: ttl(ttl_ms),
        render,
    }
}

/// The answer's body and whether it was replayed.
fn answer(applied: Applied) -> (String, bool) {
    match applied {
        Applied::Done(effect) => (format!("{effect:?}"), false),
        Applied::Recorded { recorded, replayed } => (
            String::from_utf8(recorded.body.to_vec()).expect("Debug text"),
            replayed,
        ),
    }
}

/// Runs `change` with `idem` twice: the first runs, the second replays the
/// same answer. Returns the answer.
async fn twice(store: &dyn Store, change: Change, idem: &Idem) -> String {
    let (first, replayed) = answer(store.apply(change.clone(), Some(idem)).await.unwrap());
    assert!(!replayed, "the first {change:?} runs");
    let (second, replayed) = answer(store.apply(change.clone(), Some(idem)).await.unwrap());
    assert!(replayed, "the retry of {change:?} is replayed");
    assert_eq!(
        first, second,
        "the retry of {change:?} answers as the first"
    );
    first
}

async fn import_one(store: &dyn Store, pool: &Name, key: &str) {
    let keys = NewKeys::Import(vec![PoolKey::parse(key).expect("a valid key")]);
    store
        .add_keys(pool, keys, &Labels::default())
        .await
        .unwrap();
}

pub async fn every_pool_change_retried_with_its_key_takes_effect_once(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("idem-pool");
    let put = Change::PutPool {
        pool: pool.clone(),
        patch: PoolPatch {
            lease_ttl: Some(ttl(60_000)),
            ..PoolPatch::default()
        },
    };
    let first = twice(store, put, &idem("put", "put")).await;
    assert!(
        first.contains("Created"),
        "the replay still says created: {first}"
    );

    let generate = Change::AddKeys {
        pool: pool.clone(),
        keys: NewKeys::Generate(3),
        labels: Labels::default(),
    };
    twice(store, generate, &idem("gen", "gen")).await;
    let import = Change::AddKeys {
        pool: pool.clone(),
        keys: NewKeys::Import(vec![PoolKey::parse("imported-1").expect("a key")]),
        labels: Labels::default(),
    };
    twice(store, import, &idem("imp", "imp")).await;
    assert_eq!(
        counts(store, &pool).await.total,
        4,
        "3 generated, 1 imported"
    );

    let lease = Change::Lease {
        pool: pool.clone(),
        wait: Duration::ZERO,
    };
    twice(store, lease, &idem("lease", "lease")).await;
    assert_eq!(
        counts(store, &pool).await.leased,
        1,
        "one lease for two requests"
    );
    // The imported key from here on, made free whoever held it.
    store.disable_key(&pool, "imported-1", None).await.unwrap();
    store.enable_key(&pool, "imported-1").await.unwrap();
    let mut view = store.lease_key(&pool).await.unwrap();
    while view.key != "imported-1" {
        view = store.lease_key(&pool).await.unwrap();
    }
    let lease_id = view.lease.map(|l| l.id);
    let key = "imported-1".to_owned();

    let keepalive = Change::Keepalive {
        pool: pool.clone(),
        key: key.clone(),
        lease_id,
    };
    twice(store, keepalive, &idem("ka", "ka")).await;
    let release = Change::Report {
        pool: pool.clone(),
        key: key.clone(),
        lease_id,
        outcome: Outcome::RateLimited { retry_after: None },
        reason: None,
    };
    twice(store, release, &idem("rel", "rel")).await;
    let state = store.get_key(&pool, &key).await.unwrap().state;
    assert_eq!(state, KeyState::Cooling, "released once, cooling");
    let disable = Change::Disable {
        pool: pool.clone(),
        key: key.clone(),
        reason: None,
    };
    twice(store, disable, &idem("dis", "dis")).await;
    let enable = Change::Enable {
        pool: pool.clone(),
        key: key.clone(),
    };
    twice(store, enable, &idem("en", "en")).await;
    let delete = Change::DeleteKey {
        pool: pool.clone(),
        key: key.clone(),
    };
    twice(store, delete, &idem("del", "del")).await;
    assert_err!(
        store.get_key(&pool, &key).await,
        StoreError::Pool(PoolError::KeyNotFound)
    );

    let drop = Change::DeletePool { pool: pool.clone() };
    twice(store, drop, &idem("drop", "drop")).await;
    assert_err!(store.pool_info(&pool).await, StoreError::PoolNotFound);
}

pub async fn every_keyspace_change_retried_with_its_key_takes_effect_once(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let ks = name("idem-ks");
    let spec = KeyspaceSpec::new("abcdefghij", 6).unwrap();
    let put = Change::PutKeyspace {
        keyspace: ks.clone(),
        spec,
        max_activations: None,
    };
    twice(store, put, &idem("put", "put")).await;
    let issue = Change::Issue {
        keyspace: ks.clone(),
        batch: None,
    };
    let first = twice(store, issue.clone(), &idem("issue", "issue")).await;
    let (second, _) = answer(
        store
            .apply(issue, Some(&idem("issue-2", "issue")))
            .await
            .unwrap(),
    );
    assert_ne!(first, second, "another key issues another token");
    assert_eq!(store.keyspace_info(&ks).await.unwrap().info.issued, 2);

    let token = store.issue_token(&ks).await.unwrap().token;
    let activate = Change::Activate {
        keyspace: ks.clone(),
        token: token.clone(),
        fingerprint: None,
    };
    twice(store, activate, &idem("act", "act")).await;
    let status = store.token_status(&ks, &token).await.unwrap();
    assert!(status.activated_at().is_some());

    let drop = Change::DeleteKeyspace {
        keyspace: ks.clone(),
    };
    twice(store, drop, &idem("drop", "drop")).await;
    assert_err!(store.keyspace_info(&ks).await, StoreError::KeyspaceNotFound);
}

pub async fn a_key_used_for_another_request_is_refused_and_changes_nothing(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("idem-reuse");
    store.generate_keys(&pool, 3).await.unwrap();
    let lease = Change::Lease {
        pool: pool.clone(),
        wait: Duration::ZERO,
    };
    store
        .apply(lease.clone(), Some(&idem("k", "lease")))
        .await
        .unwrap();
    assert_err!(
        store
            .apply(lease, Some(&idem("k", "lease with a body")))
            .await,
        StoreError::IdempotencyKeyReused
    );
    let generate = Change::AddKeys {
        pool: pool.clone(),
        keys: NewKeys::Generate(1),
        labels: Labels::default(),
    };
    assert_err!(
        store.apply(generate, Some(&idem("k", "generate"))).await,
        StoreError::IdempotencyKeyReused
    );
    assert_eq!(
        counts(store, &pool).await,
        stats(3, 2, 1),
        "nothing more changed"
    );
}

pub async fn a_refused_change_is_not_recorded(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("idem-refused");
    store.put_pool(&pool, PoolPatch::default()).await.unwrap();
    let lease = Change::Lease {
        pool: pool.clone(),
        wait: Duration::ZERO,
    };
    let key = idem("k", "lease");
    assert_err!(
        store.apply(lease.clone(), Some(&key)).await,
        StoreError::NoFreeKey { .. }
    );
    import_one(store, &pool, "only-key").await;
    let (body, replayed) = answer(store.apply(lease, Some(&key)).await.unwrap());
    assert!(!replayed, "the refusal was not recorded, so the retry runs");
    assert!(body.contains("only-key"), "{body}");
}

pub async fn idempotency_keys_are_scoped_to_their_pool_or_keyspace(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let (a, b) = (name("idem-scope-a"), name("idem-scope-b"));
    for pool in [&a, &b] {
        store.generate_keys(pool, 1).await.unwrap();
        let lease = Change::Lease {
            pool: pool.clone(),
            wait: Duration::ZERO,
        };
        let (_, replayed) = answer(store.apply(lease, Some(&idem("k", "lease"))).await.unwrap());
        assert!(!replayed, "the same key runs in another pool");
        assert_eq!(counts(store, pool).await.leased, 1);
    }
    let issue = Change::Issue {
        keyspace: Name::default_name(),
        batch: None,
    };
    let (_, replayed) = answer(store.apply(issue, Some(&idem("k", "lease"))).await.unwrap());
    assert!(!replayed, "and in a keyspace");
}

/// Makes `pool`, of `keys` keys, whose leases and keys outlive every
/// record of these cases, and a lease of it that does not wait.
async fn outliving_pool(store: &dyn Store, pool: &Name, keys: usize) -> Change {
    store.generate_keys(pool, keys).await.unwrap();
    store
        .put_pool(
            pool,
            PoolPatch {
                lease_ttl: Some(ttl(3_600_000)),
                keepalive_ttl: Some(None),
                ..PoolPatch::default()
            },
        )
        .await
        .unwrap();
    Change::Lease {
        pool: pool.clone(),
        wait: Duration::ZERO,
    }
}

pub async fn a_record_expires_after_its_ttl_and_the_key_runs_anew(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("idem-expiry");
    let lease = outliving_pool(store, &pool, 2).await;
    let key = idem_for("k", "lease", 1_000);
    store.apply(lease.clone(), Some(&key)).await.unwrap();
    advance(clock, 999);
    let (_, replayed) = answer(store.apply(lease.clone(), Some(&key)).await.unwrap());
    assert!(replayed, "alive until its TTL is over");
    advance(clock, 1);
    store.expire_due().await.unwrap();
    let (_, replayed) = answer(store.apply(lease, Some(&key)).await.unwrap());
    assert!(!replayed, "expired: the key runs anew");
    assert_eq!(counts(store, &pool).await.leased, 2);
}

/// Many records past their TTL at once: none is replayed, whatever its
/// store has popped yet (Redis pops at most 16 per call).
pub async fn records_past_their_ttl_all_run_anew_before_they_are_popped(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("idem-expired");
    let lease = outliving_pool(store, &pool, 40).await;
    let mut names: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for name in &names {
        let key = idem_for(name, "lease", 1_000);
        store.apply(lease.clone(), Some(&key)).await.unwrap();
    }
    advance(clock, 1_000);
    // Retried last name first: what pops records of one end in name order
    // reaches these last.
    names.sort_unstable_by(|a, b| b.cmp(a));
    for name in &names {
        let key = idem_for(name, "lease", 1_000);
        let (_, replayed) = answer(store.apply(lease.clone(), Some(&key)).await.unwrap());
        assert!(!replayed, "{name} expired: it runs anew");
    }
    assert_eq!(counts(store, &pool).await.leased, 40);
}

/// Two identical requests at once: one effect, one answer for both.
pub async fn two_identical_requests_at_once_take_effect_once(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("idem-race");
    store.generate_keys(&pool, 5).await.unwrap();
    for round in 0..20 {
        let key = idem_for(&format!("k{round}"), "lease", RECORD_MS);
        let lease = || Change::Lease {
            pool: pool.clone(),
            wait: Duration::ZERO,
        };
        let (a, b) = tokio::join!(
            store.apply(lease(), Some(&key)),
            store.apply(lease(), Some(&key))
        );
        let (a, b) = (answer(a.unwrap()), answer(b.unwrap()));
        assert_eq!(a.0, b.0, "both answered with the one lease");
        assert!(a.1 != b.1, "one ran, one was replayed");
        let leased = counts(store, &pool).await.leased;
        assert_eq!(leased, 1, "round {round}: one key leased");
        for v in store
            .list_keys(&pool, Some(KeyState::Leased), &PageRequest::default())
            .await
            .unwrap()
            .items
        {
            store.release_key(&pool, &v.key, None).await.unwrap();
        }
    }
}

/// A waiting lease with a key records the key it is handed, in the change
/// that hands it over (or, on Redis, right after); a retry gets that key.
pub async fn a_waiting_lease_records_the_key_it_was_handed(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("idem-wait");
    store.generate_keys(&pool, 1).await.unwrap();
    let held = store.lease_key(&pool).await.unwrap();
    let change = Change::Lease {
        pool: pool.clone(),
        wait: Duration::from_millis(2_000),
    };
    let key = idem("k", "wait");
    let waiter = store.apply(change.clone(), Some(&key));
    let release = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store
            .release_key(&pool, &held.key, held.lease.map(|l| l.id))
            .await
            .unwrap();
    };
    let (first, ()) = tokio::join!(waiter, release);
    let (first, replayed) = answer(first.unwrap());
    assert!(!replayed && first.contains(&held.key), "{first}");
    let (second, replayed) = answer(store.apply(change, Some(&key)).await.unwrap());
    assert!(replayed, "the retry replays the hand-over");
    assert_eq!(first, second);
    assert_eq!(counts(store, &pool).await.leased, 1);
}

/// A waiting lease dropped before it answers leaves no record: its retry
/// runs anew.
pub async fn a_dropped_waiting_lease_leaves_no_record(store: &dyn Store, _clock: &ManualClock) {
    let pool = name("idem-wait-drop");
    store.put_pool(&pool, PoolPatch::default()).await.unwrap();
    let change = Change::Lease {
        pool: pool.clone(),
        wait: Duration::from_millis(2_000),
    };
    let key = idem("k", "wait");
    {
        let waiter = pin!(store.apply(change.clone(), Some(&key)));
        let gone = tokio::time::timeout(Duration::from_millis(100), waiter).await;
        assert!(gone.is_err(), "nothing to lease yet");
    }
    import_one(store, &pool, "late-key").await;
    store.flush().await.unwrap();
    let (body, replayed) = answer(store.apply(change, Some(&key)).await.unwrap());
    assert!(!replayed, "no record was left: {body}");
    assert_eq!(counts(store, &pool).await.leased, 1);
}

/// Leases and releases of one pool at once (on Redis they share a batch
/// script): each key is leased once, under a lease id of its own; every
/// outcome applies; a lease sent three times at once with one idempotency
/// key leases one key, answered to all three. Only the order among calls
/// in flight together is the store's to choose.
pub async fn concurrent_leases_and_releases_each_take_effect_once(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    type Call<'a> = Pin<Box<dyn Future<Output = Result<KeyView, StoreError>> + 'a>>;
    let pool = name("race-lease");
    pool_with(store, &pool, 60_000, 600_000, 12).await;
    let leases: Vec<Call<'_>> = (0..14)
        .map(|_| Box::pin(store.lease_key(&pool)) as Call<'_>)
        .collect();
    let mut views = Vec::new();
    for result in join_all(leases).await {
        match result {
            Ok(view) => views.push(view),
            Err(StoreError::NoFreeKey { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(views.len(), 12, "every key, and no more");
    let keys: HashSet<&str> = views.iter().map(|v| v.key.as_str()).collect();
    let ids: HashSet<u64> = views.iter().map(|v| lease_of(v).id).collect();
    assert_eq!((keys.len(), ids.len()), (12, 12), "distinct keys and ids");
    assert_eq!(counts(store, &pool).await, stats(12, 0, 12));

    // Half released fine, a quarter rate limited, a quarter failed, while
    // four more leases run: those that run after a release get its key.
    let mut calls: Vec<Call<'_>> = Vec::new();
    for (i, view) in views.iter().enumerate() {
        let outcome = match i % 4 {
            0 | 1 => Outcome::Ok,
            2 => Outcome::RateLimited {
                retry_after: Some(ttl(5_000)),
            },
            _ => Outcome::Failed,
        };
        let id = Some(lease_of(view).id);
        calls.push(Box::pin(
            store.report_key(&pool, &view.key, id, outcome, None),
        ));
    }
    for _ in 0..4 {
        calls.push(Box::pin(store.lease_key(&pool)));
    }
    let mut results = join_all(calls).await;
    let leased = results.split_off(12);
    let mut freed = HashSet::new();
    for (i, result) in results.into_iter().enumerate() {
        let view = result.unwrap();
        assert_eq!(view.key, views[i].key);
        let want = if i % 4 == 2 {
            KeyState::Cooling
        } else {
            freed.insert(view.key.clone());
            KeyState::Free
        };
        assert_eq!(view.state, want, "{i}");
    }
    let mut again = HashSet::new();
    for result in leased {
        match result {
            Ok(view) => {
                assert!(freed.contains(&view.key), "{} was not freed", view.key);
                assert!(again.insert(view.key), "leased twice");
            }
            Err(StoreError::NoFreeKey { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    let n = again.len() as u64;
    let after = counts(store, &pool).await;
    assert_eq!((after.free, after.leased, after.cooling), (9 - n, n, 3));

    let lease = Change::Lease {
        pool: pool.clone(),
        wait: Duration::ZERO,
    };
    let key = idem("race", "lease");
    let answers = join_all(
        (0..3)
            .map(|_| store.apply(lease.clone(), Some(&key)))
            .collect(),
    )
    .await;
    let answers: Vec<(String, bool)> = answers.into_iter().map(|a| answer(a.unwrap())).collect();
    assert_eq!(answers.iter().filter(|(_, replayed)| !replayed).count(), 1);
    assert!(
        answers.iter().all(|(body, _)| *body == answers[0].0),
        "{answers:?}"
    );
    assert_eq!(counts(store, &pool).await.leased, n + 1);
}
