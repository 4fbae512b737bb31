//! The credential-pool cases (P2.1): import and labels, release outcomes
//! (cooldown, failures, doubling quarantine), disable and enable, when a
//! refused lease may retry, the five counts, pools without keep-alive,
//! listing by state, and the reaper's recoveries — one rule per case,
//! through `Store` only, time moved by the clock alone.

use std::collections::{BTreeMap, BTreeSet};

use keyward::core::{Expired, KeyState, Labels, MaxFailures, Outcome, PoolKey, Reason, Recovery};
use keyward::store::{NewKeys, PoolInfo};

use super::*;

/// Lease TTL of the cases' pools: longer than every cooldown and
/// quarantine they wait out, so only the rule under test frees a key.
const LEASE_MS: u64 = 60_000;
/// Keep-alive TTL of the cases' pools: 30 days, longer than any case runs.
const KEEPALIVE_MS: u64 = 30 * 24 * 3_600_000;
const HOUR_MS: u64 = 3_600_000;

/// Creates `pool` with long leases and keep-alive and the given recovery
/// settings.
async fn credential_pool(
    store: &dyn Store,
    pool: &Name,
    cooldown_ms: u64,
    max_failures: u64,
    quarantine_ms: u64,
) -> PoolInfo {
    let patch = PoolPatch {
        lease_ttl: Some(ttl(LEASE_MS)),
        keepalive_ttl: Some(Some(ttl(KEEPALIVE_MS))),
        cooldown: Some(ttl(cooldown_ms)),
        max_failures: Some(MaxFailures::new(max_failures).expect("a valid count")),
        quarantine: Some(ttl(quarantine_ms)),
        ..PoolPatch::default()
    };
    let (info, upsert) = store.put_pool(pool, patch).await.unwrap();
    assert_eq!(upsert, Upsert::Created, "{pool} should be new");
    info
}

fn import_of<S: AsRef<str>>(texts: &[S]) -> NewKeys {
    NewKeys::Import(
        texts
            .iter()
            .map(|t| PoolKey::parse(t.as_ref()).expect("a valid key"))
            .collect(),
    )
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::parse(pairs.iter().copied()).expect("valid labels")
}

fn reason(text: &str) -> Reason {
    Reason::parse(text).expect("a valid reason")
}

/// Imports `texts` with no labels, checking they are all new.
async fn import(store: &dyn Store, pool: &Name, texts: &[&str]) -> Vec<KeyView> {
    let done = store
        .add_keys(pool, import_of(texts), &Labels::default())
        .await
        .unwrap();
    assert!(done.existing.is_empty(), "{:?}", done.existing);
    assert_eq!(done.added.len(), texts.len());
    done.added
}

/// Counts by state `[free, leased, cooling, quarantined, disabled]`.
fn by_state(counts: [u64; 5]) -> PoolStats {
    let [free, leased, cooling, quarantined, disabled] = counts;
    PoolStats {
        total: counts.iter().sum(),
        free,
        leased,
        cooling,
        quarantined,
        disabled,
    }
}

/// Leases `key` (the pool's only free key) and reports `outcome` with its
/// lease id; returns the key as the report left it.
async fn lease_and_report(
    store: &dyn Store,
    pool: &Name,
    key: &str,
    outcome: Outcome,
    why: Option<Reason>,
) -> KeyView {
    let leased = lease_only(store, pool, key).await;
    let id = lease_of(&leased).id;
    let view = store
        .report_key(pool, key, Some(id), outcome, why)
        .await
        .unwrap();
    assert_eq!(view.lease, None, "a report ends the lease");
    assert_eq!(store.get_key(pool, key).await.unwrap(), view);
    view
}

/// Every key a listing shows, paging with `limit`; checks each page's
/// size. Bounded: at most 64 pages.
async fn list_all(
    store: &dyn Store,
    pool: &Name,
    state: Option<KeyState>,
    limit: usize,
) -> Vec<KeyView> {
    let limit = PageLimit::new(limit).expect("a limit in range");
    let (mut keys, mut after) = (Vec::new(), None);
    for _ in 0..64 {
        let page = store
            .list_keys(
                pool,
                state,
                &PageRequest {
                    after: after.clone(),
                    limit,
                },
            )
            .await
            .unwrap();
        assert!(
            page.items.len() <= limit.get(),
            "{} items",
            page.items.len()
        );
        keys.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return keys,
        }
    }
    panic!("more than 64 pages")
}

/// The key texts of `views`, checking none is listed twice.
fn distinct(views: &[KeyView]) -> BTreeSet<String> {
    let set: BTreeSet<String> = views.iter().map(|v| v.key.clone()).collect();
    assert_eq!(set.len(), views.len(), "a key listed twice: {views:?}");
    set
}

fn texts(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

pub async fn add_keys_imports_new_keys_free_with_their_labels_and_leaves_existing_ones_as_they_are(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("import");
    let gold = labels(&[("tier", "gold"), ("team", "a")]);
    let now = clock.now();
    let done = store
        .add_keys(&pool, import_of(&["imp-1", "imp-2", "imp-1"]), &gold)
        .await
        .unwrap();
    let added: Vec<&str> = done.added.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(added, ["imp-1", "imp-2"]);
    assert_eq!(
        done.existing,
        ["imp-1"],
        "a key repeated within one import is added once, then existing"
    );
    for view in &done.added {
        let want = KeyView {
            key: view.key.clone(),
            created_at: now,
            alive_until: now.after(pool_defaults().keepalive_ttl),
            labels: gold.clone(),
            ..KeyView::default()
        };
        assert_eq!(*view, want);
        assert_eq!(store.get_key(&pool, &view.key).await.unwrap(), want);
    }
    // The import made the pool, with the defaults.
    let info = store.pool_info(&pool).await.unwrap();
    assert_eq!(info.settings, pool_defaults());
    assert_eq!(info.stats, stats(2, 2, 0));

    // Importing keys already there changes neither their state nor their
    // labels nor their life.
    let leased = store.lease_key(&pool).await.unwrap();
    let other = if leased.key == "imp-1" {
        "imp-2"
    } else {
        "imp-1"
    };
    let disabled = store
        .disable_key(&pool, other, Some(reason("leaked")))
        .await
        .unwrap();
    advance(clock, 1_000);
    let now = clock.now();
    let silver = labels(&[("tier", "silver")]);
    let again = store
        .add_keys(
            &pool,
            import_of(&[leased.key.as_str(), other, "imp-3"]),
            &silver,
        )
        .await
        .unwrap();
    assert_eq!(again.existing, [leased.key.as_str(), other]);
    assert_eq!(again.added.len(), 1);
    let third = &again.added[0];
    assert_eq!(
        (
            third.key.as_str(),
            third.state,
            &third.labels,
            third.created_at
        ),
        ("imp-3", KeyState::Free, &silver, now)
    );
    assert_eq!(store.get_key(&pool, &leased.key).await.unwrap(), leased);
    assert_eq!(store.get_key(&pool, other).await.unwrap(), disabled);
    assert_eq!(counts(store, &pool).await, by_state([1, 1, 0, 0, 1]));

    // A deleted key is new again; no labels is an empty set.
    store.delete_key(&pool, "imp-3").await.unwrap();
    let back = import(store, &pool, &["imp-3"]).await;
    assert!(back[0].labels.is_empty(), "{back:?}");
    assert_eq!(counts(store, &pool).await, by_state([1, 1, 0, 0, 1]));
}

pub async fn add_keys_generates_labelled_keys_beside_imported_ones(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("import-generate");
    let blue = labels(&[("colour", "blue"), ("env", "prod")]);
    let now = clock.now();
    let generated = store
        .add_keys(&pool, NewKeys::Generate(3), &blue)
        .await
        .unwrap();
    assert!(generated.existing.is_empty());
    assert_eq!(generated.added.len(), 3);
    for view in &generated.added {
        assert_eq!(view.key.len(), KeyLength::DEFAULT.get(), "{}", view.key);
        assert!(view.key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!((view.state, &view.labels), (KeyState::Free, &blue));
        assert_eq!(view.created_at, now);
    }
    let red = labels(&[("colour", "red")]);
    let imported = store
        .add_keys(&pool, import_of(&["gen-imp-1", "gen-imp-2"]), &red)
        .await
        .unwrap();
    assert_eq!(imported.added.len(), 2);
    let plain = store.generate_keys(&pool, 1).await.unwrap();
    assert!(plain[0].labels.is_empty());

    let mut want: BTreeMap<String, Labels> = BTreeMap::new();
    for view in &generated.added {
        want.insert(view.key.clone(), blue.clone());
    }
    for view in &imported.added {
        want.insert(view.key.clone(), red.clone());
    }
    want.insert(plain[0].key.clone(), Labels::default());
    let listed = list_all(store, &pool, None, 100).await;
    let got: BTreeMap<String, Labels> = listed
        .iter()
        .map(|v| (v.key.clone(), v.labels.clone()))
        .collect();
    assert_eq!(got, want, "each key keeps the labels it was added with");
    assert_eq!(counts(store, &pool).await, stats(6, 6, 0));
}

pub async fn an_import_past_max_keys_per_pool_is_refused_whole(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let max = LIMITS.max_keys_per_pool;
    // Too many for a new pool: refused before the pool exists.
    let fresh = name("import-max-fresh");
    let too_many: Vec<String> = (0..=max).map(|i| format!("over-{i}")).collect();
    assert_limit(
        store
            .add_keys(&fresh, import_of(&too_many), &Labels::default())
            .await,
        Limit::KeysPerPool,
    );
    assert_err!(store.pool_info(&fresh).await, StoreError::PoolNotFound);

    let pool = name("import-max");
    store.generate_keys(&pool, max as usize - 2).await.unwrap();
    let three = ["max-imp-1", "max-imp-2", "max-imp-3"];
    let gold = labels(&[("tier", "gold")]);
    assert_limit(
        store.add_keys(&pool, import_of(&three), &gold).await,
        Limit::KeysPerPool,
    );
    assert_eq!(counts(store, &pool).await, stats(max - 2, max - 2, 0));
    for key in three {
        assert_err!(
            store.get_key(&pool, key).await,
            StoreError::Pool(PoolError::KeyNotFound)
        );
    }
    let done = store
        .add_keys(&pool, import_of(&three[..2]), &gold)
        .await
        .unwrap();
    assert_eq!(done.added.len(), 2);
    assert_limit(
        store.add_keys(&pool, import_of(&three[2..]), &gold).await,
        Limit::KeysPerPool,
    );
    assert_limit(
        store.add_keys(&pool, NewKeys::Generate(1), &gold).await,
        Limit::KeysPerPool,
    );
    assert_eq!(counts(store, &pool).await, stats(max, max, 0));
}

pub async fn rate_limited_cools_the_key_until_retry_after_or_the_pool_cooldown(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("cooling");
    credential_pool(store, &pool, 500, 3, 10_000).await;
    let key = "cool-key";
    import(store, &pool, &[key]).await;
    // One failure first, to see that rate limiting leaves it alone.
    let failed = lease_and_report(store, &pool, key, Outcome::Failed, None).await;
    assert_eq!((failed.state, failed.failures), (KeyState::Free, 1));

    let leased = lease_only(store, &pool, key).await;
    let id = lease_of(&leased).id;
    assert_err!(
        store
            .report_key(
                &pool,
                key,
                Some(id + 1),
                Outcome::RateLimited { retry_after: None },
                None
            )
            .await,
        StoreError::Pool(PoolError::LeaseMismatch)
    );
    let now = clock.now();
    let cooling = store
        .report_key(
            &pool,
            key,
            Some(id),
            Outcome::RateLimited {
                retry_after: Some(ttl(2_000)),
            },
            Some(reason("429 from upstream")),
        )
        .await
        .unwrap();
    let want = KeyView {
        state: KeyState::Cooling,
        lease: None,
        available_at: Some(after(now, 2_000)),
        reason: Some(reason("429 from upstream")),
        failures: 1,
        ..leased.clone()
    };
    assert_eq!(cooling, want);
    assert_eq!(store.get_key(&pool, key).await.unwrap(), want);
    assert_eq!(counts(store, &pool).await, by_state([0, 0, 1, 0, 0]));
    // Cooling is not leased: nothing to release, nothing to lease.
    assert_err!(
        store.release_key(&pool, key, None).await,
        StoreError::Pool(PoolError::NotLeased)
    );
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(2_000)));
    advance(clock, 1_999);
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(1)));
    assert_eq!(store.get_key(&pool, key).await.unwrap(), want);

    // Free once the clock reaches available_at, failures as they were.
    advance(clock, 1);
    let freed = store.get_key(&pool, key).await.unwrap();
    let want = KeyView {
        state: KeyState::Free,
        available_at: None,
        reason: None,
        ..want
    };
    assert_eq!(freed, want);
    assert_eq!(counts(store, &pool).await, by_state([1, 0, 0, 0, 0]));

    // Without retry_after, the pool's cooldown; lease_key sees its end by
    // itself.
    let leased = lease_only(store, &pool, key).await;
    let now = clock.now();
    let cooling = store
        .report_key(
            &pool,
            key,
            Some(lease_of(&leased).id),
            Outcome::RateLimited { retry_after: None },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (cooling.state, cooling.available_at, cooling.reason.as_ref()),
        (KeyState::Cooling, Some(after(now, 500)), None)
    );
    assert_eq!(cooling.failures, 1);
    advance(clock, 499);
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(1)));
    advance(clock, 1);
    let again = lease_only(store, &pool, key).await;
    assert_eq!((again.failures, again.available_at), (1, None));
}

pub async fn a_failure_counts_and_max_failures_in_a_row_quarantine_the_key(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("quarantine");
    let info = credential_pool(store, &pool, 500, 3, 1_000).await;
    assert_eq!(info.quarantines, 0);
    let key = "q-key";
    let imported = import(store, &pool, &[key]).await;
    for n in 1..3 {
        let view =
            lease_and_report(store, &pool, key, Outcome::Failed, Some(reason("HTTP 500"))).await;
        let want = KeyView {
            failures: n,
            ..imported[0].clone()
        };
        assert_eq!(view, want, "below max_failures: free, no reason kept");
    }
    let leased = lease_only(store, &pool, key).await;
    let now = clock.now();
    let quarantined = store
        .report_key(
            &pool,
            key,
            Some(lease_of(&leased).id),
            Outcome::Failed,
            Some(reason("timeout")),
        )
        .await
        .unwrap();
    let want = KeyView {
        state: KeyState::Quarantined,
        lease: None,
        available_at: Some(after(now, 1_000)),
        reason: Some(reason("timeout")),
        failures: 3,
        quarantines: 1,
        ..leased
    };
    assert_eq!(quarantined, want);
    let info = store.pool_info(&pool).await.unwrap();
    assert_eq!(info.quarantines, 1);
    assert_eq!(info.stats, by_state([0, 0, 0, 1, 0]));
    assert_err!(
        store.release_key(&pool, key, None).await,
        StoreError::Pool(PoolError::NotLeased)
    );
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(1_000)));

    advance(clock, 999);
    assert_eq!(store.get_key(&pool, key).await.unwrap(), want);
    // Out on probation: failures kept, reason dropped.
    advance(clock, 1);
    let probation = store.get_key(&pool, key).await.unwrap();
    let want = KeyView {
        state: KeyState::Free,
        available_at: None,
        reason: None,
        ..want
    };
    assert_eq!(probation, want);
    assert_eq!(counts(store, &pool).await, by_state([1, 0, 0, 0, 0]));
    assert_eq!(store.pool_info(&pool).await.unwrap().quarantines, 1);
}

pub async fn a_key_on_probation_is_quarantined_again_for_twice_as_long_until_an_ok(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("probation");
    credential_pool(store, &pool, 500, 2, 1_000).await;
    let key = "p-key";
    import(store, &pool, &[key]).await;
    lease_and_report(store, &pool, key, Outcome::Failed, None).await;
    // Quarantine n (n ≥ 1) lasts 1 s × 2^(n−1); each probation ends with
    // one failure.
    for (n, ms) in [(1, 1_000), (2, 2_000), (3, 4_000)] {
        let now = clock.now();
        let view = lease_and_report(store, &pool, key, Outcome::Failed, None).await;
        assert_eq!(view.state, KeyState::Quarantined, "quarantine {n}");
        assert_eq!(view.available_at, Some(after(now, ms)), "quarantine {n}");
        assert_eq!((view.failures, view.quarantines), (n + 1, n));
        advance(clock, ms);
    }
    // An ok resets failures and the doubling.
    let ok = lease_and_report(store, &pool, key, Outcome::Ok, None).await;
    assert_eq!(
        (ok.state, ok.failures, ok.quarantines),
        (KeyState::Free, 0, 0)
    );
    let once = lease_and_report(store, &pool, key, Outcome::Failed, None).await;
    assert_eq!(
        (once.state, once.failures),
        (KeyState::Free, 1),
        "the count starts again"
    );
    let now = clock.now();
    let view = lease_and_report(store, &pool, key, Outcome::Failed, None).await;
    assert_eq!(view.state, KeyState::Quarantined);
    assert_eq!(
        view.available_at,
        Some(after(now, 1_000)),
        "back to the base quarantine"
    );
    assert_eq!(store.pool_info(&pool).await.unwrap().quarantines, 4);
}

pub async fn quarantine_doubling_stops_at_24_hours(store: &dyn Store, clock: &ManualClock) {
    let pool = name("quarantine-cap");
    credential_pool(store, &pool, 500, 1, HOUR_MS).await;
    let key = "cap-key";
    import(store, &pool, &[key]).await;
    for (n, hours) in [1, 2, 4, 8, 16, 24, 24].into_iter().enumerate() {
        let now = clock.now();
        let view = lease_and_report(store, &pool, key, Outcome::Failed, None).await;
        assert_eq!(
            view.available_at,
            Some(after(now, hours * HOUR_MS)),
            "quarantine {}",
            n + 1
        );
        advance(clock, hours * HOUR_MS);
    }
    // A base quarantine longer than the cap is used as it is.
    let patch = PoolPatch {
        quarantine: Some(ttl(30 * HOUR_MS)),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await.unwrap();
    let now = clock.now();
    let view = lease_and_report(store, &pool, key, Outcome::Failed, None).await;
    assert_eq!(view.available_at, Some(after(now, 30 * HOUR_MS)));
    assert_eq!(view.quarantines, 8);
}

pub async fn disable_ends_the_lease_and_keeps_the_key_out_of_use_until_enabled(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("disable");
    credential_pool(store, &pool, 500, 3, 1_000).await;
    let key = "dis-key";
    import(store, &pool, &[key]).await;
    lease_and_report(store, &pool, key, Outcome::Failed, None).await;
    let leased = lease_only(store, &pool, key).await;
    let id = lease_of(&leased).id;
    let disabled = store
        .disable_key(&pool, key, Some(reason("leaked")))
        .await
        .unwrap();
    let want = KeyView {
        state: KeyState::Disabled,
        lease: None,
        reason: Some(reason("leaked")),
        failures: 1,
        ..leased
    };
    assert_eq!(disabled, want);
    assert_eq!(store.get_key(&pool, key).await.unwrap(), want);
    // The old holder's lease is over.
    assert_err!(
        store.release_key(&pool, key, Some(id)).await,
        StoreError::Pool(PoolError::NotLeased)
    );
    assert_err!(
        store.release_key(&pool, key, None).await,
        StoreError::Pool(PoolError::NotLeased)
    );
    assert_err!(
        store
            .report_key(&pool, key, Some(id), Outcome::Failed, None)
            .await,
        StoreError::Pool(PoolError::NotLeased)
    );
    assert_err!(
        store.keepalive_key(&pool, key, Some(id)).await,
        StoreError::Pool(PoolError::LeaseMismatch)
    );
    assert_eq!(counts(store, &pool).await, by_state([0, 0, 0, 0, 1]));
    assert_no_free_key(store.lease_key(&pool).await, None);

    // Never leased, however long it waits; a second disable replaces the
    // reason.
    import(store, &pool, &["dis-other"]).await;
    lease_only(store, &pool, "dis-other").await;
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(LEASE_MS)));
    advance(clock, 2 * LEASE_MS);
    store.expire_due().await.unwrap();
    assert_eq!(store.get_key(&pool, key).await.unwrap(), want);
    lease_only(store, &pool, "dis-other").await;
    let again = store
        .disable_key(&pool, key, Some(reason("rotated")))
        .await
        .unwrap();
    assert_eq!(again.reason, Some(reason("rotated")));
    assert_eq!(again.state, KeyState::Disabled);

    // Enable: free, failures and reason gone.
    let enabled = store.enable_key(&pool, key).await.unwrap();
    let want = KeyView {
        state: KeyState::Free,
        reason: None,
        failures: 0,
        quarantines: 0,
        ..again
    };
    assert_eq!(enabled, want);
    assert_eq!(counts(store, &pool).await, by_state([1, 1, 0, 0, 0]));
    // On a free or leased key, enable changes nothing.
    assert_eq!(store.enable_key(&pool, key).await.unwrap(), want);
    let relet = lease_only(store, &pool, key).await;
    assert_eq!(store.enable_key(&pool, key).await.unwrap(), relet);
    assert_eq!(store.get_key(&pool, key).await.unwrap(), relet);
    assert_eq!(counts(store, &pool).await, by_state([0, 2, 0, 0, 0]));

    for (p, k) in [(&pool, "noSuchKey"), (&name("disable-nopool"), key)] {
        assert_err!(
            store.disable_key(p, k, None).await,
            StoreError::Pool(PoolError::KeyNotFound)
        );
        assert_err!(
            store.enable_key(p, k).await,
            StoreError::Pool(PoolError::KeyNotFound)
        );
    }
}

pub async fn disable_and_enable_take_cooling_and_quarantined_keys_out_and_back(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("disable-held");
    credential_pool(store, &pool, 1_000, 1, 1_000).await;
    import(store, &pool, &["dh-cool"]).await;
    let rate_limited = Outcome::RateLimited { retry_after: None };
    let why = Some(reason("429"));
    lease_and_report(store, &pool, "dh-cool", rate_limited, why).await;
    import(store, &pool, &["dh-quar"]).await;
    lease_and_report(store, &pool, "dh-quar", Outcome::Failed, None).await;
    assert_eq!(counts(store, &pool).await, by_state([0, 0, 1, 1, 0]));

    for key in ["dh-cool", "dh-quar"] {
        let view = store.disable_key(&pool, key, None).await.unwrap();
        assert_eq!(
            (view.state, view.available_at, view.reason),
            (KeyState::Disabled, None, None)
        );
    }
    let quarantined = store.get_key(&pool, "dh-quar").await.unwrap();
    assert_eq!((quarantined.failures, quarantined.quarantines), (1, 1));
    // Their cooldown and quarantine ends do not bring them back.
    advance(clock, 5_000);
    store.expire_due().await.unwrap();
    assert_eq!(counts(store, &pool).await, by_state([0, 0, 0, 0, 2]));
    assert_no_free_key(store.lease_key(&pool).await, None);

    let enabled = store.enable_key(&pool, "dh-quar").await.unwrap();
    assert_eq!(
        (enabled.state, enabled.failures, enabled.quarantines),
        (KeyState::Free, 0, 0)
    );
    store.enable_key(&pool, "dh-cool").await.unwrap();
    assert_eq!(counts(store, &pool).await, by_state([2, 0, 0, 0, 0]));

    // Enable frees a cooling key at once.
    let leased = store.lease_key(&pool).await.unwrap();
    let cooling = store
        .report_key(
            &pool,
            &leased.key,
            None,
            Outcome::RateLimited {
                retry_after: Some(ttl(10_000)),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(cooling.state, KeyState::Cooling);
    let enabled = store.enable_key(&pool, &leased.key).await.unwrap();
    assert_eq!(
        (enabled.state, enabled.available_at),
        (KeyState::Free, None)
    );
    assert_eq!(counts(store, &pool).await, by_state([2, 0, 0, 0, 0]));
}

pub async fn lease_key_with_no_free_key_says_when_the_first_key_comes_free(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("retry-after");
    credential_pool(store, &pool, 3_000, 1, 4_000).await;
    let patch = PoolPatch {
        lease_ttl: Some(ttl(5_000)),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await.unwrap();
    // Three keys leased at t0, until t0 + 5 s.
    for key in ["ra-a", "ra-b", "ra-c"] {
        import(store, &pool, &[key]).await;
        lease_only(store, &pool, key).await;
    }
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(5_000)));
    advance(clock, 1_000);
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(4_000)));
    // At t0 + 1 s: a cools until t0 + 4 s, b is quarantined until t0 + 5 s,
    // c is disabled (its lease gone).
    let rate_limited = Outcome::RateLimited { retry_after: None };
    store
        .report_key(&pool, "ra-a", None, rate_limited, None)
        .await
        .unwrap();
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(3_000)));
    store
        .report_key(&pool, "ra-b", None, Outcome::Failed, None)
        .await
        .unwrap();
    store.disable_key(&pool, "ra-c", None).await.unwrap();
    assert_eq!(counts(store, &pool).await, by_state([0, 0, 1, 1, 1]));
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(3_000)));
    advance(clock, 2_000);
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(1_000)));
    // At t0 + 4 s a is free and leased again, until t0 + 9 s; the first to
    // come free is b, at t0 + 5 s.
    advance(clock, 1_000);
    lease_only(store, &pool, "ra-a").await;
    assert_no_free_key(store.lease_key(&pool).await, Some(ttl(1_000)));
    // All disabled: nothing will come free by itself.
    store.disable_key(&pool, "ra-a", None).await.unwrap();
    store.disable_key(&pool, "ra-b", None).await.unwrap();
    assert_no_free_key(store.lease_key(&pool).await, None);
    // None, too, once the keys are gone.
    for key in ["ra-a", "ra-b", "ra-c"] {
        store.delete_key(&pool, key).await.unwrap();
    }
    assert_no_free_key(store.lease_key(&pool).await, None);
    assert_no_free_key(store.lease_key(&name("retry-nopool")).await, None);
}

/// The pool's keys in `state`, as the listing shows them.
async fn listed_in(store: &dyn Store, pool: &Name, state: KeyState) -> BTreeSet<String> {
    let views = list_all(store, pool, Some(state), 3).await;
    assert!(views.iter().all(|v| v.state == state), "{views:?}");
    distinct(&views)
}

/// Checks the counts are `want`, and that each agrees with the listing of
/// its state.
async fn assert_counts(store: &dyn Store, pool: &Name, want: [u64; 5]) {
    let got = counts(store, pool).await;
    assert_eq!(got, by_state(want));
    for (state, n) in KeyState::ALL.into_iter().zip(want) {
        assert_eq!(
            listed_in(store, pool, state).await.len() as u64,
            n,
            "{state}"
        );
    }
}

pub async fn the_five_counts_add_up_to_total_after_every_step(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("counts");
    credential_pool(store, &pool, 500, 1, 1_000).await;
    let keys = ["c-0", "c-1", "c-2", "c-3", "c-4", "c-5"];
    import(store, &pool, &keys).await;
    assert_counts(store, &pool, [6, 0, 0, 0, 0]).await;
    let mut leased = Vec::new();
    for _ in 0..4 {
        leased.push(store.lease_key(&pool).await.unwrap().key);
    }
    assert_counts(store, &pool, [2, 4, 0, 0, 0]).await;
    let rate_limited = Outcome::RateLimited {
        retry_after: Some(ttl(2_000)),
    };
    store
        .report_key(&pool, &leased[0], None, rate_limited, None)
        .await
        .unwrap();
    assert_counts(store, &pool, [2, 3, 1, 0, 0]).await;
    store
        .report_key(&pool, &leased[1], None, Outcome::Failed, None)
        .await
        .unwrap();
    assert_counts(store, &pool, [2, 2, 1, 1, 0]).await;
    store.disable_key(&pool, &leased[2], None).await.unwrap();
    assert_counts(store, &pool, [2, 1, 1, 1, 1]).await;
    let free = keys
        .iter()
        .find(|k| !leased.iter().any(|l| l == *k))
        .unwrap();
    store.disable_key(&pool, free, None).await.unwrap();
    assert_counts(store, &pool, [1, 1, 1, 1, 2]).await;
    store.delete_key(&pool, &leased[0]).await.unwrap();
    assert_counts(store, &pool, [1, 1, 0, 1, 2]).await;
    // The quarantine ends.
    advance(clock, 1_000);
    assert_counts(store, &pool, [2, 1, 0, 0, 2]).await;
    store.enable_key(&pool, free).await.unwrap();
    assert_counts(store, &pool, [3, 1, 0, 0, 1]).await;
    // The lease ends.
    advance(clock, LEASE_MS);
    assert_counts(store, &pool, [4, 0, 0, 0, 1]).await;
    store.expire_due().await.unwrap();
    assert_counts(store, &pool, [4, 0, 0, 0, 1]).await;
    if let Some(totals) = store.snapshot().await.unwrap().totals {
        let s = totals.stats;
        assert_eq!(
            s.free + s.leased + s.cooling + s.quarantined + s.disabled,
            s.total
        );
        assert_eq!((s.free, s.disabled), (4, 1), "{s:?}");
    }
}

pub async fn pool_info_reports_the_recovery_settings_put_pool_set(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("recovery-settings");
    let patch = PoolPatch {
        cooldown: Some(ttl(1_234)),
        max_failures: Some(MaxFailures::new(7).unwrap()),
        quarantine: Some(ttl(45_678)),
        keepalive_ttl: Some(None),
        ..PoolPatch::default()
    };
    let (info, upsert) = store.put_pool(&pool, patch).await.unwrap();
    assert_eq!(upsert, Upsert::Created);
    let want = PoolSettings {
        recovery: Recovery {
            cooldown: ttl(1_234),
            max_failures: MaxFailures::new(7).unwrap(),
            quarantine: ttl(45_678),
        },
        no_keepalive: true,
        ..pool_defaults()
    };
    assert_eq!(info.settings, want);
    assert_eq!((info.stats, info.quarantines), (PoolStats::default(), 0));
    assert_eq!(store.pool_info(&pool).await.unwrap(), info);

    // A patch of other fields keeps them.
    let patch = PoolPatch {
        lease_ttl: Some(ttl(2_000)),
        ..PoolPatch::default()
    };
    let (info, _) = store.put_pool(&pool, patch).await.unwrap();
    let want = PoolSettings {
        lease_ttl: ttl(2_000),
        ..want
    };
    assert_eq!(info.settings, want);
    // A keep-alive TTL turns keep-alive back on.
    let patch = PoolPatch {
        keepalive_ttl: Some(Some(ttl(9_000))),
        ..PoolPatch::default()
    };
    let (info, _) = store.put_pool(&pool, patch).await.unwrap();
    let want = PoolSettings {
        keepalive_ttl: ttl(9_000),
        no_keepalive: false,
        ..want
    };
    assert_eq!(info.settings, want);
    assert_eq!(store.pool_info(&pool).await.unwrap().settings, want);
    // Each recovery field alone.
    let patch = PoolPatch {
        max_failures: Some(MaxFailures::new(1).unwrap()),
        ..PoolPatch::default()
    };
    let (info, _) = store.put_pool(&pool, patch).await.unwrap();
    assert_eq!(info.settings.recovery.max_failures.get(), 1);
    assert_eq!(info.settings.recovery.cooldown, ttl(1_234));
    assert_eq!(info.settings.recovery.quarantine, ttl(45_678));
    // A pool made by an add has the defaults.
    let implicit = name("recovery-implicit");
    store.generate_keys(&implicit, 1).await.unwrap();
    let info = store.pool_info(&implicit).await.unwrap();
    assert_eq!(info.settings.recovery, pool_defaults().recovery);
}

pub async fn keys_of_a_no_keepalive_pool_are_never_purged(store: &dyn Store, clock: &ManualClock) {
    let pool = name("no-keepalive");
    let patch = PoolPatch {
        lease_ttl: Some(ttl(1_000)),
        keepalive_ttl: Some(None),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await.unwrap();
    let mut keys = store.generate_keys(&pool, 2).await.unwrap();
    keys.extend(import(store, &pool, &["forever-1"]).await);
    for view in &keys {
        assert!(view.no_keepalive, "{view:?}");
        assert_eq!(view.alive_deadline(), None);
    }
    let fifty_years = 50 * 365 * 24 * HOUR_MS;
    advance(clock, fifty_years);
    store.expire_due().await.unwrap();
    assert_eq!(counts(store, &pool).await, stats(3, 3, 0));
    for view in &keys {
        let now = store.get_key(&pool, &view.key).await.unwrap();
        assert_eq!(now, *view, "unchanged after fifty years");
    }
    let leased = store.lease_key(&pool).await.unwrap();
    let kept = store.keepalive_key(&pool, &leased.key, None).await.unwrap();
    assert_eq!(kept.alive_deadline(), None);
    advance(clock, fifty_years);
    store.expire_due().await.unwrap();
    assert_eq!(counts(store, &pool).await, stats(3, 3, 0));

    // Keep-alive turned on: deadlines for new and kept-alive keys only.
    let patch = PoolPatch {
        keepalive_ttl: Some(Some(ttl(1_000))),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await.unwrap();
    let now = clock.now();
    let kept = store.keepalive_key(&pool, "forever-1", None).await.unwrap();
    assert_eq!(kept.alive_deadline(), Some(after(now, 1_000)));
    assert!(!kept.no_keepalive);
    let late = store.generate_keys(&pool, 1).await.unwrap().remove(0);
    assert_eq!(late.alive_deadline(), Some(after(now, 1_000)));
    // And off again: a keep-alive takes the deadline away.
    let patch = PoolPatch {
        keepalive_ttl: Some(None),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await.unwrap();
    let spared = store.keepalive_key(&pool, &late.key, None).await.unwrap();
    assert_eq!(spared.alive_deadline(), None);
    advance(clock, 1_000);
    assert_err!(
        store.get_key(&pool, "forever-1").await,
        StoreError::Pool(PoolError::KeyNotFound)
    );
    assert_eq!(counts(store, &pool).await, stats(3, 3, 0));
    for view in keys.iter().take(2).chain([&late]) {
        let now = store.get_key(&pool, &view.key).await.unwrap();
        assert_eq!(now.alive_deadline(), None, "{now:?}");
    }
}

/// Ten keys `lk-0`..`lk-9` in every state: 3 free, 2 leased, 2 cooling,
/// 1 quarantined, 2 disabled. Returns the keys of each state.
async fn keys_in_every_state(store: &dyn Store, pool: &Name) -> BTreeMap<KeyState, Vec<String>> {
    credential_pool(store, pool, 10_000, 1, 10_000).await;
    let all: Vec<String> = (0..10).map(|i| format!("lk-{i}")).collect();
    store
        .add_keys(pool, import_of(&all), &Labels::default())
        .await
        .unwrap();
    let mut leased = Vec::new();
    for _ in 0..5 {
        leased.push(store.lease_key(pool).await.unwrap().key);
    }
    let rate_limited = Outcome::RateLimited { retry_after: None };
    for key in &leased[..2] {
        store
            .report_key(pool, key, None, rate_limited, None)
            .await
            .unwrap();
    }
    store
        .report_key(pool, &leased[2], None, Outcome::Failed, None)
        .await
        .unwrap();
    let free: Vec<String> = all
        .iter()
        .filter(|k| !leased.contains(k))
        .cloned()
        .collect();
    for key in &free[..2] {
        store.disable_key(pool, key, None).await.unwrap();
    }
    let mut by = BTreeMap::new();
    by.insert(KeyState::Free, free[2..].to_vec());
    by.insert(KeyState::Leased, leased[3..].to_vec());
    by.insert(KeyState::Cooling, leased[..2].to_vec());
    by.insert(KeyState::Quarantined, leased[2..3].to_vec());
    by.insert(KeyState::Disabled, free[..2].to_vec());
    assert_eq!(counts(store, pool).await, by_state([3, 2, 2, 1, 2]));
    by
}

pub async fn list_keys_lists_every_key_exactly_once_whatever_the_page_size(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("list-keys");
    let by = keys_in_every_state(store, &pool).await;
    let all: BTreeSet<String> = by.values().flatten().cloned().collect();
    assert_eq!(all.len(), 10);
    for limit in 1..=3 {
        let listed = list_all(store, &pool, None, limit).await;
        assert_eq!(distinct(&listed), all, "limit {limit}");
        for view in &listed {
            assert_eq!(store.get_key(&pool, &view.key).await.unwrap(), *view);
        }
    }
    let one = store
        .list_keys(
            &pool,
            None,
            &PageRequest {
                after: None,
                limit: PageLimit::new(PageLimit::MAX).unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(distinct(&one.items), all);
    assert_eq!(one.next, None, "one page holds them all");
}

pub async fn list_keys_with_a_state_lists_only_the_keys_in_that_state(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("list-state");
    let by = keys_in_every_state(store, &pool).await;
    for (state, keys) in &by {
        let want: BTreeSet<String> = keys.iter().cloned().collect();
        for limit in 1..=3 {
            let listed = list_all(store, &pool, Some(*state), limit).await;
            assert!(listed.iter().all(|v| v.state == *state), "{listed:?}");
            assert_eq!(distinct(&listed), want, "{state}, limit {limit}");
        }
    }
}

pub async fn list_keys_cursors_round_trip_and_others_are_refused(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("list-cursor");
    let all = ["cur-0", "cur-1", "cur-2", "cur-3", "cur-4"];
    import(store, &pool, &all).await;
    let two = PageLimit::new(2).unwrap();
    let first = store
        .list_keys(
            &pool,
            None,
            &PageRequest {
                after: None,
                limit: two,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let cursor = first.next.clone().expect("more keys follow");
    let page = PageRequest {
        after: Some(cursor.clone()),
        limit: two,
    };
    let second = store.list_keys(&pool, None, &page).await.unwrap();
    assert_eq!(
        store.list_keys(&pool, None, &page).await.unwrap(),
        second,
        "the same cursor gives the same page"
    );
    let mut seen = distinct(&first.items);
    for view in &second.items {
        assert!(seen.insert(view.key.clone()), "{} listed twice", view.key);
    }
    // The rest, from the second page's cursor.
    let mut after = second.next;
    for _ in 0..5 {
        let Some(next) = after else { break };
        let page = store
            .list_keys(
                &pool,
                None,
                &PageRequest {
                    after: Some(next),
                    limit: two,
                },
            )
            .await
            .unwrap();
        for view in &page.items {
            assert!(seen.insert(view.key.clone()), "{} listed twice", view.key);
        }
        after = page.next;
    }
    assert_eq!(seen, texts(&all));

    for state in [None, Some(KeyState::Free)] {
        assert_err!(
            store
                .list_keys(
                    &pool,
                    state,
                    &PageRequest {
                        after: Some("not-a-cursor-\u{1}".into()),
                        limit: two,
                    },
                )
                .await,
            StoreError::InvalidCursor
        );
    }
    assert_err!(
        store
            .list_keys(&name("list-nopool"), None, &PageRequest::default())
            .await,
        StoreError::PoolNotFound
    );
    let empty = name("list-empty");
    store.put_pool(&empty, PoolPatch::default()).await.unwrap();
    let page = store
        .list_keys(&empty, None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next), (0, None));
}

pub async fn list_keys_leaves_out_deleted_and_purged_keys(store: &dyn Store, clock: &ManualClock) {
    let pool = name("list-gone");
    let patch = PoolPatch {
        lease_ttl: Some(ttl(LEASE_MS)),
        keepalive_ttl: Some(Some(ttl(1_000))),
        ..PoolPatch::default()
    };
    store.put_pool(&pool, patch).await.unwrap();
    import(store, &pool, &["gone-0", "gone-1", "gone-2", "gone-3"]).await;
    store.delete_key(&pool, "gone-0").await.unwrap();
    advance(clock, 500);
    for key in ["gone-1", "gone-2"] {
        store.keepalive_key(&pool, key, None).await.unwrap();
    }
    // gone-3 is due for purge; nothing has touched it since.
    advance(clock, 500);
    for limit in 1..=3 {
        let listed = list_all(store, &pool, None, limit).await;
        assert_eq!(distinct(&listed), texts(&["gone-1", "gone-2"]));
        let free = list_all(store, &pool, Some(KeyState::Free), limit).await;
        assert_eq!(distinct(&free), texts(&["gone-1", "gone-2"]));
    }
    assert_eq!(counts(store, &pool).await, stats(2, 2, 0));
}

pub async fn expire_due_recovers_cooling_and_quarantined_keys(
    store: &dyn Store,
    clock: &ManualClock,
) {
    let pool = name("reap-recover");
    credential_pool(store, &pool, 1_000, 1, 2_000).await;
    let rate_limited = Outcome::RateLimited { retry_after: None };
    import(store, &pool, &["rr-cool"]).await;
    lease_and_report(store, &pool, "rr-cool", rate_limited, None).await;
    import(store, &pool, &["rr-quar"]).await;
    lease_and_report(store, &pool, "rr-quar", Outcome::Failed, None).await;
    import(store, &pool, &["rr-off"]).await;
    store.disable_key(&pool, "rr-off", None).await.unwrap();

    advance(clock, 1_000);
    let expired = store.expire_due().await.unwrap();
    assert_eq!(
        (expired.recovered, expired.leases, expired.keys),
        (1, 0, 0),
        "the cooldown ended"
    );
    let info = store.pool_info(&pool).await.unwrap();
    assert_eq!(info.stats, by_state([1, 0, 0, 1, 1]));
    assert_eq!(info.expired.recovered, 1);

    advance(clock, 1_000);
    let expired = store.expire_due().await.unwrap();
    assert_eq!(expired.recovered, 1, "the quarantine ended");
    let probation = store.get_key(&pool, "rr-quar").await.unwrap();
    assert_eq!(
        (probation.state, probation.failures, probation.reason),
        (KeyState::Free, 1, None)
    );
    let info = store.pool_info(&pool).await.unwrap();
    assert_eq!(info.stats, by_state([2, 0, 0, 0, 1]));
    assert_eq!(info.expired.recovered, 2);
    assert_eq!(store.expire_due().await.unwrap(), Expired::default());
}

pub async fn list_keys_visits_every_lasting_key_once_while_others_come_and_go(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let pool = name("list-churn");
    credential_pool(store, &pool, 10_000, 1, 10_000).await;
    let all: Vec<String> = (0..12).map(|i| format!("churn-{i:02}")).collect();
    store
        .add_keys(&pool, import_of(&all), &Labels::default())
        .await
        .unwrap();
    // Even keys stay free throughout; odd ones are deleted, disabled and
    // enabled between pages, and new keys arrive.
    let lasting: BTreeSet<String> = all.iter().step_by(2).cloned().collect();
    let odd: Vec<&String> = all.iter().skip(1).step_by(2).collect();
    store.disable_key(&pool, odd[5], None).await.unwrap();
    for state in [None, Some(KeyState::Free)] {
        let (mut seen, mut after) = (Vec::new(), None);
        for page_no in 0..64 {
            let page = store
                .list_keys(
                    &pool,
                    state,
                    &PageRequest {
                        after: after.clone(),
                        limit: PageLimit::new(2).unwrap(),
                    },
                )
                .await
                .unwrap();
            seen.extend(page.items.into_iter().map(|v| v.key));
            let Some(next) = page.next else { break };
            after = Some(next);
            let tag = if state.is_none() { "all" } else { "free" };
            match page_no % 3 {
                0 => {
                    let key = format!("churn-new-{tag}-{page_no}");
                    import(store, &pool, &[key.as_str()]).await;
                }
                1 => {
                    let key = odd[page_no % odd.len()];
                    match store.get_key(&pool, key).await {
                        Ok(v) if v.state == KeyState::Disabled => {
                            store.enable_key(&pool, key).await.unwrap();
                        }
                        Ok(_) => {
                            store.disable_key(&pool, key, None).await.unwrap();
                        }
                        Err(_) => {}
                    }
                }
                _ => {
                    let key = odd[(page_no + 3) % odd.len()];
                    let _ = store.delete_key(&pool, key).await;
                }
            }
        }
        let listed: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(listed.len(), seen.len(), "a key listed twice: {seen:?}");
        for key in &lasting {
            assert!(listed.contains(key), "{key} skipped ({state:?}): {seen:?}");
        }
    }
}
