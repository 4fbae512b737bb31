//! Unit tests of the pool, one behaviour each, and the helpers the model
//! test shares.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::slots::Slot;
use super::*;

pub(super) const LEASE_MS: u64 = 50;
pub(super) const KEEPALIVE_MS: u64 = 120;
/// An arbitrary start, far from 0 so `now - x` never underflows.
pub(super) const T0: u64 = 1_700_000_000_000;

pub(super) fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn ttl(ms: u64) -> Ttl {
    Ttl::from_millis(ms).expect("test TTLs are positive")
}

pub(super) fn settings(lease_ms: u64, keepalive_ms: u64) -> PoolSettings {
    PoolSettings {
        lease_ttl: ttl(lease_ms),
        keepalive_ttl: ttl(keepalive_ms),
        key_length: KeyLength::DEFAULT,
        recovery: Recovery::default(),
        no_keepalive: false,
    }
}

pub(super) fn expired(leases: u64, keys: u64) -> Expired {
    Expired {
        leases,
        keys,
        recovered: 0,
    }
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// A pool with the test TTLs holding `n` keys generated at `T0`.
fn pool_with(n: usize, record: bool) -> (Pool, Vec<String>) {
    let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), record);
    let keys = pool.generate(n, at(T0)).unwrap();
    (pool, keys.into_iter().map(|v| v.key).collect())
}

pub(super) fn stats(total: u64, free: u64, leased: u64) -> PoolStats {
    PoolStats {
        total,
        free,
        leased,
        ..PoolStats::default()
    }
}

/// Every live key among `keys`, as `get` shows it at `now`.
fn live_views(pool: &mut Pool, keys: &[String], now: Timestamp) -> BTreeMap<String, KeyView> {
    keys.iter()
        .filter_map(|k| pool.get(k, now).ok())
        .map(|v| (v.key.clone(), v))
        .collect()
}

pub(super) fn replay(map: &mut BTreeMap<String, KeyView>, changes: Vec<KeyChange>) {
    for change in changes {
        match change {
            KeyChange::Put(view) | KeyChange::Lease(view) => {
                map.insert(view.key.clone(), view);
            }
            KeyChange::Remove(key) => {
                assert!(map.remove(&key).is_some(), "{key} removed but never put");
            }
        }
    }
}

#[test]
fn generate_gives_distinct_keys_of_the_configured_length_from_a_z_a_z_0_9() {
    let mut chars_seen = HashSet::new();
    for (length, count) in [(8, 2000), (20, 500), (128, 50)] {
        let mut s = settings(LEASE_MS, KEEPALIVE_MS);
        s.key_length = KeyLength::new(length as u64).unwrap();
        let mut pool = Pool::new(s, false);
        let keys = pool.generate(count, at(T0)).unwrap();
        assert_eq!(keys.len(), count);
        let distinct: HashSet<&str> = keys.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(distinct.len(), count);
        for view in &keys {
            assert_eq!(view.key.len(), length, "{}", view.key);
            assert!(view.key.bytes().all(|b| b.is_ascii_alphanumeric()));
            chars_seen.extend(view.key.bytes());
            assert_eq!(view.created_at, at(T0));
            assert_eq!(view.alive_until, at(T0 + KEEPALIVE_MS));
            assert_eq!(view.lease, None);
            assert_eq!(pool.get(&view.key, at(T0)).as_ref(), Ok(view));
        }
        let n = count as u64;
        assert_eq!(pool.stats(), stats(n, n, 0));
    }
    assert_eq!(
        chars_seen.len(),
        62,
        "every character of A-Za-z0-9 shows up"
    );
    assert_eq!(KeyLength::DEFAULT.get(), 20);
    assert_eq!(KeyLength::new(7), None);
    assert_eq!(KeyLength::new(129), None);
    assert_eq!(KeyLength::new(8).map(KeyLength::get), Some(8));
    assert_eq!(KeyLength::new(128).map(KeyLength::get), Some(128));
}

#[test]
fn a_slot_with_a_default_key_fits_in_64_bytes_with_no_heap_block() {
    assert!(std::mem::size_of::<Option<Slot>>() <= 64);
    let (pool, _) = pool_with(1, false);
    let slot = pool.slots[0].as_ref().unwrap();
    assert!(!slot.key.is_heap_allocated());
}

#[test]
fn a_burst_of_due_keys_costs_one_request_at_most_a_lazy_step() {
    let n = 4 * Pool::LAZY_STEP;
    let (mut pool, keys) = pool_with(n, false);
    let mut rng = rng();
    let later = at(T0 + KEEPALIVE_MS);
    // The touched key is settled exactly, the rest only in part.
    assert_eq!(pool.get(&keys[0], later), Err(PoolError::KeyNotFound));
    let left = pool.stats().total;
    assert!(left >= (n - Pool::LAZY_STEP - 1) as u64, "{left}");
    assert!(left < n as u64);
    // Every due key is gone to every operation, whether popped or not.
    for key in &keys[1..] {
        assert_eq!(pool.get(key, later), Err(PoolError::KeyNotFound));
    }
    let (mut pool, keys) = pool_with(n, false);
    assert_eq!(pool.lease(later, &mut rng), Err(PoolError::NoFreeKey));
    assert_eq!(
        pool.release(&keys[1], None, later),
        Err(PoolError::KeyNotFound)
    );
    assert_eq!(
        pool.keepalive(&keys[2], None, later),
        Err(PoolError::KeyNotFound)
    );
    assert_eq!(pool.delete(&keys[3], later), Err(PoolError::KeyNotFound));
    pool.expire(later);
    assert_eq!(pool.stats(), stats(0, 0, 0));
    assert_eq!(pool.expired_total().keys, n as u64);
}

#[test]
fn lease_skips_due_keys_and_takes_a_live_one_among_them() {
    let (mut pool, _) = pool_with(40 * Pool::LAZY_STEP, false);
    let fresh = pool.generate(1, at(T0 + 10)).unwrap().remove(0);
    let mut rng = rng();
    let later = at(T0 + KEEPALIVE_MS);
    let view = pool.lease(later, &mut rng).unwrap();
    assert_eq!(view.key, fresh.key);
    assert_eq!(pool.lease(later, &mut rng), Err(PoolError::NoFreeKey));
}

#[test]
fn with_no_free_key_lease_takes_a_due_lease_behind_a_burst_of_due_keys() {
    let (mut pool, _) = pool_with(1, false);
    let mut rng = rng();
    let first = pool.lease(at(T0), &mut rng).unwrap();
    // Keys that fall due before the lease and stay leased, ahead of it
    // in the expiry order.
    pool.set_settings(settings(10 * LEASE_MS, LEASE_MS));
    pool.generate(2 * Pool::LAZY_STEP, at(T0)).unwrap();
    for _ in 0..2 * Pool::LAZY_STEP {
        pool.lease(at(T0), &mut rng).unwrap();
    }
    let later = at(T0 + LEASE_MS);
    let again = pool.lease(later, &mut rng).unwrap();
    assert_eq!(again.key, first.key);
    assert!(again.lease.unwrap().id > first.lease.unwrap().id);
}

#[test]
fn a_due_lease_of_the_touched_key_ends_even_when_others_are_due_first() {
    let (mut pool, keys) = pool_with(2 * Pool::LAZY_STEP, false);
    let mut rng = rng();
    let mut leased = Vec::new();
    for _ in 0..keys.len() {
        leased.push(pool.lease(at(T0), &mut rng).unwrap());
    }
    let last = leased.last().unwrap();
    let view = pool.get(&last.key, at(T0 + LEASE_MS)).unwrap();
    assert_eq!(view.lease, None);
    assert_eq!(
        pool.release(&last.key, Some(last.lease.unwrap().id), at(T0 + LEASE_MS)),
        Err(PoolError::NotLeased)
    );
}

#[test]
fn generate_refuses_an_impossible_count_instead_of_panicking() {
    let (mut pool, _) = pool_with(1, false);
    assert_eq!(pool.generate(usize::MAX, at(T0)), Err(PoolError::Full));
    assert_eq!(pool.stats(), stats(1, 1, 0));
}

#[test]
fn lease_hands_out_every_free_key_once_then_no_free_key() {
    let (mut pool, keys) = pool_with(5, false);
    let mut rng = rng();
    let mut leased = HashSet::new();
    for i in 0..5u64 {
        let view = pool.lease(at(T0 + i), &mut rng).unwrap();
        assert!(keys.contains(&view.key));
        assert!(leased.insert(view.key.clone()), "{} leased twice", view.key);
        assert_eq!(
            view.lease,
            Some(Lease {
                id: i + 1,
                until: at(T0 + i + LEASE_MS)
            })
        );
        // Leasing does not extend the key's life.
        assert_eq!(view.alive_until, at(T0 + KEEPALIVE_MS));
        assert_eq!(pool.stats(), stats(5, 4 - i, i + 1));
    }
    assert_eq!(pool.lease(at(T0 + 5), &mut rng), Err(PoolError::NoFreeKey));
    assert_eq!(pool.last_lease_id(), 5);

    let mut empty = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), false);
    assert_eq!(empty.lease(at(T0), &mut rng), Err(PoolError::NoFreeKey));
    assert_eq!(empty.last_lease_id(), 0);
}

#[test]
fn lease_picks_free_keys_uniformly() {
    let (mut pool, keys) = pool_with(10, false);
    let mut rng = rng();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..20_000 {
        let view = pool.lease(at(T0), &mut rng).unwrap();
        *counts.entry(view.key.clone()).or_default() += 1;
        pool.release(&view.key, None, at(T0)).unwrap();
    }
    assert_eq!(counts.len(), keys.len());
    // Expected 2000 each, sd ~42: 10 sd either way is a broken sampler.
    for (key, n) in counts {
        assert!((1580..=2420).contains(&n), "{key} leased {n} times");
    }
}

#[test]
fn release_with_the_current_lease_id_or_without_one_frees_the_key() {
    let (mut pool, _) = pool_with(2, false);
    let mut rng = rng();
    for lease_id in [None, Some(())] {
        let view = pool.lease(at(T0 + 1), &mut rng).unwrap();
        let id = lease_id.map(|()| view.lease.unwrap().id);
        let released = pool.release(&view.key, id, at(T0 + 2)).unwrap();
        assert_eq!(released.lease, None);
        assert_eq!(released.created_at, view.created_at);
        // Releasing does not extend the key's life either.
        assert_eq!(released.alive_until, view.alive_until);
        assert_eq!(pool.get(&view.key, at(T0 + 2)), Ok(released));
        assert_eq!(pool.stats(), stats(2, 2, 0));
    }
}

#[test]
fn release_of_a_free_key_is_not_leased() {
    let (mut pool, keys) = pool_with(1, false);
    assert_eq!(
        pool.release(&keys[0], None, at(T0)),
        Err(PoolError::NotLeased)
    );
    assert_eq!(
        pool.release(&keys[0], Some(1), at(T0)),
        Err(PoolError::NotLeased)
    );
    assert_eq!(pool.stats(), stats(1, 1, 0));
}

#[test]
fn release_with_another_lease_id_is_lease_mismatch_and_keeps_the_lease() {
    let (mut pool, _) = pool_with(1, false);
    let view = pool.lease(at(T0), &mut rng()).unwrap();
    let id = view.lease.unwrap().id;
    for wrong in [0, id - 1, id + 1, u64::MAX] {
        assert_eq!(
            pool.release(&view.key, Some(wrong), at(T0 + 1)),
            Err(PoolError::LeaseMismatch)
        );
    }
    assert_eq!(pool.get(&view.key, at(T0 + 1)), Ok(view));
    assert_eq!(pool.stats(), stats(1, 0, 1));
}

#[test]
fn lease_ids_strictly_grow_and_an_expired_lease_id_is_refused_after_re_lease() {
    let (mut pool, keys) = pool_with(1, false);
    let mut rng = rng();
    let mut now = T0;
    let mut last = 0;
    for _ in 0..3 {
        let view = pool.lease(at(now), &mut rng).unwrap();
        let id = view.lease.unwrap().id;
        assert!(id > last, "lease id {id} after {last}");
        last = id;
        pool.release(&keys[0], Some(id), at(now)).unwrap();
    }

    let first = pool.lease(at(now), &mut rng).unwrap().lease.unwrap();
    now += LEASE_MS;
    let second = pool.lease(at(now), &mut rng).unwrap().lease.unwrap();
    assert!(second.id > first.id);
    assert_eq!(
        pool.release(&keys[0], Some(first.id), at(now)),
        Err(PoolError::LeaseMismatch)
    );
    assert_eq!(
        pool.keepalive(&keys[0], Some(first.id), at(now)),
        Err(PoolError::LeaseMismatch)
    );
    assert_eq!(pool.get(&keys[0], at(now)).unwrap().lease, Some(second));
    assert!(pool.release(&keys[0], Some(second.id), at(now)).is_ok());
}

#[test]
fn keepalive_with_the_current_lease_id_extends_the_lease_and_the_life() {
    let (mut pool, keys) = pool_with(1, false);
    let leased = pool.lease(at(T0), &mut rng()).unwrap();
    let id = leased.lease.unwrap().id;
    let now = T0 + 30;
    let kept = pool.keepalive(&keys[0], Some(id), at(now)).unwrap();
    assert_eq!(
        kept.lease,
        Some(Lease {
            id,
            until: at(now + LEASE_MS)
        })
    );
    assert_eq!(kept.alive_until, at(now + KEEPALIVE_MS));
    assert_eq!(kept.created_at, at(T0));
    // The old lease deadline no longer applies...
    let after_old_deadline = at(T0 + LEASE_MS);
    assert_eq!(pool.get(&keys[0], after_old_deadline), Ok(kept.clone()));
    // ...the new one does.
    let freed = pool.get(&keys[0], at(now + LEASE_MS)).unwrap();
    assert_eq!(freed.lease, None);
    assert_eq!(freed.alive_until, at(now + KEEPALIVE_MS));
}

#[test]
fn keepalive_without_a_lease_id_extends_only_the_life() {
    let (mut pool, keys) = pool_with(1, false);
    let leased = pool.lease(at(T0), &mut rng()).unwrap();
    let kept = pool.keepalive(&keys[0], None, at(T0 + 30)).unwrap();
    assert_eq!(kept.lease, leased.lease);
    assert_eq!(kept.alive_until, at(T0 + 30 + KEEPALIVE_MS));

    let (mut pool, keys) = pool_with(1, false);
    let kept = pool.keepalive(&keys[0], None, at(T0 + 100)).unwrap();
    assert_eq!(kept.lease, None);
    assert_eq!(kept.alive_until, at(T0 + 100 + KEEPALIVE_MS));
    // Alive past the first deadline, gone at the second.
    assert!(pool.get(&keys[0], at(T0 + KEEPALIVE_MS)).is_ok());
    assert_eq!(
        pool.get(&keys[0], at(T0 + 100 + KEEPALIVE_MS)),
        Err(PoolError::KeyNotFound)
    );
}

#[test]
fn keepalive_with_a_wrong_lease_id_changes_nothing() {
    let (mut pool, keys) = pool_with(2, false);
    let leased = pool.lease(at(T0), &mut rng()).unwrap();
    let id = leased.lease.unwrap().id;
    let free_key = keys.iter().find(|k| **k != leased.key).unwrap();
    let free = pool.get(free_key, at(T0)).unwrap();

    for wrong in [0, id + 1, u64::MAX] {
        assert_eq!(
            pool.keepalive(&leased.key, Some(wrong), at(T0 + 40)),
            Err(PoolError::LeaseMismatch)
        );
        assert_eq!(
            pool.keepalive(free_key, Some(wrong), at(T0 + 40)),
            Err(PoolError::LeaseMismatch)
        );
    }
    assert_eq!(
        pool.keepalive(free_key, Some(id), at(T0 + 40)),
        Err(PoolError::LeaseMismatch)
    );
    assert_eq!(pool.get(&leased.key, at(T0 + 40)), Ok(leased.clone()));
    assert_eq!(pool.get(free_key, at(T0 + 40)), Ok(free));
    // The deadlines did not move either.
    assert_eq!(pool.next_deadline(), Some(at(T0 + LEASE_MS)));
    assert_eq!(pool.expire(at(T0 + KEEPALIVE_MS)), expired(0, 2));
}

#[test]
fn a_deleted_key_is_not_found_everywhere() {
    let (mut pool, keys) = pool_with(2, false);
    let mut rng = rng();
    let leased = pool.lease(at(T0), &mut rng).unwrap();
    let id = leased.lease.unwrap().id;
    for key in &keys {
        pool.delete(key, at(T0 + 1)).unwrap();
    }
    assert_eq!(pool.stats(), stats(0, 0, 0));
    assert_eq!(pool.next_deadline(), None);
    for key in &keys {
        let now = at(T0 + 2);
        assert_eq!(pool.get(key, now), Err(PoolError::KeyNotFound));
        assert_eq!(pool.delete(key, now), Err(PoolError::KeyNotFound));
        assert_eq!(pool.release(key, None, now), Err(PoolError::KeyNotFound));
        assert_eq!(
            pool.release(key, Some(id), now),
            Err(PoolError::KeyNotFound)
        );
        assert_eq!(pool.keepalive(key, None, now), Err(PoolError::KeyNotFound));
        assert_eq!(
            pool.keepalive(key, Some(id), now),
            Err(PoolError::KeyNotFound)
        );
    }
    assert_eq!(pool.lease(at(T0 + 2), &mut rng), Err(PoolError::NoFreeKey));
    assert_eq!(pool.expire(at(T0 + 10 * KEEPALIVE_MS)), Expired::default());
}

#[test]
fn a_lease_expires_exactly_at_lease_ttl_and_returns_the_key_to_the_free_set() {
    let (mut pool, keys) = pool_with(1, false);
    let mut rng = rng();
    let leased = pool.lease(at(T0 + 10), &mut rng).unwrap();
    assert_eq!(pool.next_deadline(), Some(at(T0 + 10 + LEASE_MS)));
    let just_before = at(T0 + 10 + LEASE_MS - 1);
    assert_eq!(pool.get(&keys[0], just_before), Ok(leased.clone()));
    assert_eq!(pool.lease(just_before, &mut rng), Err(PoolError::NoFreeKey));

    let deadline = at(T0 + 10 + LEASE_MS);
    assert_eq!(pool.expire(deadline), expired(1, 0));
    assert_eq!(pool.stats(), stats(1, 1, 0));
    let freed = pool.get(&keys[0], deadline).unwrap();
    assert_eq!(freed.lease, None);
    assert_eq!(freed.alive_until, leased.alive_until);
    assert_eq!(
        pool.release(&keys[0], None, deadline),
        Err(PoolError::NotLeased)
    );
    assert_eq!(pool.next_deadline(), Some(leased.alive_until));

    // Lazily too: the next lease at the deadline finds the key free.
    let (mut pool, keys) = pool_with(1, false);
    pool.lease(at(T0), &mut rng).unwrap();
    let again = pool.lease(at(T0 + LEASE_MS), &mut rng).unwrap();
    assert_eq!(again.key, keys[0]);
    assert_eq!(again.lease.unwrap().until, at(T0 + 2 * LEASE_MS));
}

#[test]
fn a_key_without_keepalive_is_purged_at_keepalive_ttl_even_when_leased() {
    let (mut pool, keys) = pool_with(3, true);
    let mut rng = rng();
    let now = T0 + KEEPALIVE_MS - 5;
    // Keep one key's lease going past the key's life.
    let leased = pool.lease(at(T0 + 70), &mut rng).unwrap();
    let id = leased.lease.unwrap().id;
    pool.keepalive(&leased.key, Some(id), at(now)).unwrap();
    let survivor = keys.iter().find(|k| **k != leased.key).unwrap();
    pool.keepalive(survivor, None, at(now)).unwrap();
    pool.drain_changes();

    let just_before = at(now + KEEPALIVE_MS - 1);
    assert_eq!(pool.expire(at(T0 + KEEPALIVE_MS - 1)), Expired::default());
    assert_eq!(pool.expire(at(T0 + KEEPALIVE_MS)), expired(0, 1));
    assert_eq!(pool.stats(), stats(2, 1, 1));
    assert_eq!(pool.expire(just_before), expired(1, 0));
    assert_eq!(pool.expire(at(now + KEEPALIVE_MS)), expired(0, 2));
    assert_eq!(pool.stats(), stats(0, 0, 0));
    assert_eq!(pool.next_deadline(), None);
    for key in &keys {
        assert_eq!(
            pool.get(key, at(now + KEEPALIVE_MS)),
            Err(PoolError::KeyNotFound)
        );
    }
    let removed: HashSet<String> = pool
        .drain_changes()
        .into_iter()
        .filter_map(|c| match c {
            KeyChange::Remove(k) => Some(k),
            KeyChange::Put(_) | KeyChange::Lease(_) => None,
        })
        .collect();
    assert_eq!(removed, keys.iter().cloned().collect());

    // A leased key whose life ends before its lease is purged as a key;
    // its lease is not counted as expired.
    let mut pool = Pool::new(settings(1_000, 100), false);
    pool.generate(1, at(T0)).unwrap();
    let leased = pool.lease(at(T0), &mut rng).unwrap();
    assert_eq!(pool.expire(at(T0 + 5_000)), expired(0, 1));
    assert_eq!(
        pool.get(&leased.key, at(T0 + 5_000)),
        Err(PoolError::KeyNotFound)
    );
}

#[test]
fn expire_some_respects_its_limit() {
    let (mut pool, _) = pool_with(10, false);
    let mut rng = rng();
    for _ in 0..4 {
        pool.lease(at(T0), &mut rng).unwrap();
    }
    let late = at(T0 + LEASE_MS);
    assert_eq!(pool.expire_some(late, 0), Expired::default());
    assert_eq!(pool.expire_some(late, 3), expired(3, 0));
    assert_eq!(pool.stats(), stats(10, 9, 1));
    assert_eq!(pool.expire_some(late, 3), expired(1, 0));
    assert_eq!(pool.expire_some(late, 3), Expired::default());

    let later = at(T0 + KEEPALIVE_MS);
    let mut total = Expired::default();
    for expected_total in [7, 4, 1, 0] {
        let step = pool.expire_some(later, 3);
        assert!(step.keys + step.leases <= 3);
        total.add(step);
        assert_eq!(pool.stats().total, expected_total);
    }
    assert_eq!(total, expired(0, 10));
}

#[test]
fn a_settings_change_applies_only_to_new_deadlines() {
    let (mut pool, keys) = pool_with(2, false);
    let mut rng = rng();
    let old_lease = pool.lease(at(T0), &mut rng).unwrap();
    let new_settings = PoolSettings {
        lease_ttl: ttl(500),
        keepalive_ttl: ttl(1_000),
        key_length: KeyLength::new(8).unwrap(),
        ..settings(LEASE_MS, KEEPALIVE_MS)
    };
    pool.set_settings(new_settings);
    assert_eq!(pool.settings(), new_settings);
    // Old deadlines stand.
    assert_eq!(pool.get(&old_lease.key, at(T0)), Ok(old_lease.clone()));
    let freed = pool.get(&old_lease.key, at(T0 + LEASE_MS)).unwrap();
    assert_eq!(freed.lease, None);
    assert_eq!(freed.alive_until, at(T0 + KEEPALIVE_MS));
    // New deadlines follow the new settings.
    let new_lease = pool.lease(at(T0 + 60), &mut rng).unwrap();
    assert_eq!(new_lease.lease.unwrap().until, at(T0 + 60 + 500));
    let kept = pool.keepalive(&keys[0], None, at(T0 + 60)).unwrap();
    assert_eq!(kept.alive_until, at(T0 + 60 + 1_000));
    let fresh = pool.generate(1, at(T0 + 60)).unwrap();
    assert_eq!(fresh[0].key.len(), 8);
    assert_eq!(fresh[0].alive_until, at(T0 + 60 + 1_000));
    // Keys made before the change keep their length.
    assert!(keys.iter().all(|k| k.len() == 20));
}

#[test]
fn stats_always_add_up() {
    let (mut pool, keys) = pool_with(6, false);
    let mut rng = rng();
    let check = |pool: &Pool| {
        let s = pool.stats();
        assert_eq!(s.total, s.free + s.leased, "{s:?}");
    };
    check(&pool);
    let a = pool.lease(at(T0), &mut rng).unwrap();
    let b = pool.lease(at(T0), &mut rng).unwrap();
    check(&pool);
    assert_eq!(pool.stats(), stats(6, 4, 2));
    pool.release(&a.key, None, at(T0 + 1)).unwrap();
    assert_eq!(pool.stats(), stats(6, 5, 1));
    pool.delete(&b.key, at(T0 + 1)).unwrap();
    assert_eq!(pool.stats(), stats(5, 5, 0));
    let free = keys.iter().find(|k| **k != b.key).unwrap();
    pool.delete(free, at(T0 + 1)).unwrap();
    assert_eq!(pool.stats(), stats(4, 4, 0));
    pool.lease(at(T0 + 2), &mut rng).unwrap();
    pool.generate(3, at(T0 + 2)).unwrap();
    assert_eq!(pool.stats(), stats(7, 6, 1));
    pool.expire(at(T0 + KEEPALIVE_MS));
    assert_eq!(pool.stats(), stats(3, 3, 0));
    check(&pool);
}

#[test]
fn restore_rebuilds_an_equal_pool() {
    let (mut pool, mut keys) = pool_with(8, false);
    let mut rng = rng();
    let a = pool.lease(at(T0), &mut rng).unwrap();
    let b = pool.lease(at(T0 + 10), &mut rng).unwrap();
    pool.release(&a.key, None, at(T0 + 11)).unwrap();
    let c = pool.lease(at(T0 + 12), &mut rng).unwrap();
    pool.keepalive(&c.key, c.lease.map(|l| l.id), at(T0 + 20))
        .unwrap();
    pool.keepalive(&keys[0], None, at(T0 + 30)).unwrap();
    pool.delete(&b.key, at(T0 + 31)).unwrap();
    keys.extend(
        pool.generate(2, at(T0 + 40))
            .unwrap()
            .into_iter()
            .map(|v| v.key),
    );

    let now = at(T0 + 40);
    let views = live_views(&mut pool, &keys, now);
    assert_eq!(views.len(), 9);
    let mut restored = Pool::restore(
        pool.settings(),
        pool.last_lease_id(),
        views.into_values(),
        true,
    );
    assert_eq!(restored.drain_changes(), []);
    assert_eq!(restored.settings(), pool.settings());
    assert_eq!(restored.stats(), pool.stats());
    assert_eq!(restored.last_lease_id(), pool.last_lease_id());
    assert_eq!(restored.next_deadline(), pool.next_deadline());
    // Both expire the same way from here on.
    for later in [
        40,
        LEASE_MS + 12,
        LEASE_MS + 20,
        KEEPALIVE_MS,
        KEEPALIVE_MS + 20,
        200,
    ] {
        let now = at(T0 + later);
        assert_eq!(restored.expire(now), pool.expire(now), "at +{later}");
        assert_eq!(
            live_views(&mut restored, &keys, now),
            live_views(&mut pool, &keys, now),
            "at +{later}"
        );
        assert_eq!(restored.stats(), pool.stats());
        assert_eq!(restored.next_deadline(), pool.next_deadline());
    }
}

#[test]
fn restore_raises_the_last_lease_id_to_the_highest_one_seen() {
    let view = KeyView::new(
        "restoredkey0000000001".to_owned(),
        at(T0),
        at(T0 + KEEPALIVE_MS),
        Some(Lease {
            id: 41,
            until: at(T0 + LEASE_MS),
        }),
    );
    let pool = Pool::restore(settings(LEASE_MS, KEEPALIVE_MS), 7, [view.clone()], false);
    assert_eq!(pool.last_lease_id(), 41);
    let mut pool = Pool::restore(settings(LEASE_MS, KEEPALIVE_MS), 99, [view.clone()], false);
    assert_eq!(pool.last_lease_id(), 99);
    assert_eq!(pool.stats(), stats(1, 0, 1));
    assert_eq!(pool.get(&view.key, at(T0)), Ok(view.clone()));
    // A lease that fell due while down ends on the next call with `now`.
    assert_eq!(pool.expire(at(T0 + LEASE_MS)), expired(1, 0));
    let next = pool.lease(at(T0 + LEASE_MS), &mut rng()).unwrap();
    assert_eq!(next.lease.unwrap().id, 100);
}

#[test]
fn restore_keeps_the_last_record_of_a_duplicate_key() {
    let older = KeyView::new(
        "duplicatekey000000001".to_owned(),
        at(T0),
        at(T0 + KEEPALIVE_MS),
        None,
    );
    let newer = KeyView {
        state: KeyState::Leased,
        alive_until: at(T0 + 10 + KEEPALIVE_MS),
        lease: Some(Lease {
            id: 3,
            until: at(T0 + 10 + LEASE_MS),
        }),
        ..older.clone()
    };
    let mut pool = Pool::restore(
        settings(LEASE_MS, KEEPALIVE_MS),
        3,
        [older, newer.clone()],
        false,
    );
    assert_eq!(pool.stats(), stats(1, 0, 1));
    assert_eq!(pool.get(&newer.key, at(T0 + 10)), Ok(newer));
}

/// Replays the pool's recorded changes into `map` and checks it
/// against the live keys.
fn check(pool: &mut Pool, map: &mut BTreeMap<String, KeyView>, keys: &[String], now: u64) {
    replay(map, pool.drain_changes());
    assert_eq!(*map, live_views(pool, keys, at(now)), "at {now}");
    // `get` records nothing.
    assert_eq!(pool.drain_changes(), []);
}

#[test]
fn recorded_changes_replayed_into_a_map_equal_the_live_keys() {
    let (mut pool, mut keys) = pool_with(6, true);
    let mut rng = rng();
    let mut map = BTreeMap::new();
    let mut now = T0;
    check(&mut pool, &mut map, &keys, now);
    let a = pool.lease(at(now), &mut rng).unwrap();
    let b = pool.lease(at(now), &mut rng).unwrap();
    check(&mut pool, &mut map, &keys, now);
    now += 10;
    pool.release(&a.key, a.lease.map(|l| l.id), at(now))
        .unwrap();
    pool.keepalive(&b.key, b.lease.map(|l| l.id), at(now))
        .unwrap();
    check(&mut pool, &mut map, &keys, now);
    let free = keys.iter().find(|k| **k != b.key).unwrap().clone();
    pool.delete(&free, at(now)).unwrap();
    // `free` is one of the first two keys, so keys[5] is alive.
    pool.keepalive(&keys[5], None, at(now)).unwrap();
    check(&mut pool, &mut map, &keys, now);
    // Refusals record nothing.
    assert!(pool.release(&free, None, at(now)).is_err());
    assert!(pool.keepalive(&b.key, Some(0), at(now)).is_err());
    assert_eq!(pool.drain_changes(), []);
    keys.extend(
        pool.generate(2, at(now))
            .unwrap()
            .into_iter()
            .map(|v| v.key),
    );
    check(&mut pool, &mut map, &keys, now);
    // Expiry of leases and keys, lazily and by `expire`.
    now = T0 + 10 + LEASE_MS;
    pool.get(&b.key, at(now)).unwrap();
    check(&mut pool, &mut map, &keys, now);
    now = T0 + KEEPALIVE_MS;
    pool.expire(at(now));
    check(&mut pool, &mut map, &keys, now);
    now += 1_000;
    pool.expire(at(now));
    check(&mut pool, &mut map, &keys, now);
    assert!(map.is_empty());
}

#[test]
fn next_deadline_is_the_earliest_lease_end_or_purge() {
    let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), false);
    assert_eq!(pool.next_deadline(), None);
    pool.generate(1, at(T0)).unwrap();
    assert_eq!(pool.next_deadline(), Some(at(T0 + KEEPALIVE_MS)));
    pool.lease(at(T0 + 5), &mut rng()).unwrap();
    assert_eq!(pool.next_deadline(), Some(at(T0 + 5 + LEASE_MS)));
    pool.set_settings(settings(10_000, KEEPALIVE_MS));
    pool.generate(1, at(T0 + 6)).unwrap();
    assert_eq!(pool.next_deadline(), Some(at(T0 + 5 + LEASE_MS)));
    pool.expire(at(T0 + 5 + LEASE_MS));
    assert_eq!(pool.next_deadline(), Some(at(T0 + KEEPALIVE_MS)));
}

// --- Key states: cooldown, quarantine, disable, import, labels, listing.

fn reason(s: &str) -> Option<Reason> {
    Some(Reason::parse(s).unwrap())
}

/// Leases `key` (the only free key of `pool`) at `now`; its lease id.
fn lease_only(pool: &mut Pool, key: &str, now: u64) -> u64 {
    let view = pool.lease(at(now), &mut rng()).unwrap();
    assert_eq!(view.key, key);
    view.lease.unwrap().id
}

/// A pool with one key, with quarantine `q` ms and `max` failures.
fn one_key_pool(max: u64, q: u64) -> (Pool, String) {
    let mut s = settings(LEASE_MS, 10 * 24 * 3600 * 1000);
    s.recovery = Recovery {
        cooldown: ttl(30),
        max_failures: MaxFailures::new(max).unwrap(),
        quarantine: ttl(q),
    };
    let mut pool = Pool::new(s, true);
    let key = pool.generate(1, at(T0)).unwrap().remove(0).key;
    (pool, key)
}

#[test]
fn rate_limited_release_cools_the_key_for_retry_after_or_else_the_pool_cooldown() {
    let (mut pool, key) = one_key_pool(3, 100);
    let id = lease_only(&mut pool, &key, T0);
    let after = Outcome::RateLimited {
        retry_after: Some(ttl(500)),
    };
    let view = pool
        .release_with(&key, Some(id), after, reason("429"), at(T0))
        .unwrap();
    assert_eq!(view.state, KeyState::Cooling);
    assert_eq!(view.available_at, Some(at(T0 + 500)));
    assert_eq!(view.lease, None);
    assert_eq!(view.failures, 0);
    pool.enable(&key, at(T0)).unwrap();
    lease_only(&mut pool, &key, T0);
    let default = Outcome::RateLimited { retry_after: None };
    let view = pool
        .release_with(&key, None, default, None, at(T0))
        .unwrap();
    assert_eq!(view.available_at, Some(at(T0 + 30)));
}

#[test]
fn a_cooling_key_is_never_leased_and_is_free_again_at_its_available_at() {
    let (mut pool, key) = one_key_pool(3, 100);
    lease_only(&mut pool, &key, T0);
    let cool = Outcome::RateLimited { retry_after: None };
    pool.release_with(&key, None, cool, reason("slow down"), at(T0))
        .unwrap();
    assert_eq!(
        pool.lease(at(T0 + 29), &mut rng()),
        Err(PoolError::NoFreeKey)
    );
    assert_eq!(pool.stats().cooling, 1);
    let view = pool.get(&key, at(T0 + 30)).unwrap();
    assert_eq!(view.state, KeyState::Free);
    assert_eq!((view.available_at, view.reason), (None, None));
    assert_eq!(pool.expired_total().recovered, 1);
    lease_only(&mut pool, &key, T0 + 30);
}

#[test]
fn failed_releases_quarantine_the_key_only_when_failures_reach_max_failures() {
    let (mut pool, key) = one_key_pool(3, 100);
    for failures in 1..=2 {
        lease_only(&mut pool, &key, T0);
        let view = pool.release_with(&key, None, Outcome::Failed, reason("500"), at(T0));
        let view = view.unwrap();
        assert_eq!(
            (view.state, view.failures, view.reason),
            (KeyState::Free, failures, None)
        );
    }
    lease_only(&mut pool, &key, T0);
    let view = pool.release_with(&key, None, Outcome::Failed, reason("500"), at(T0));
    let view = view.unwrap();
    assert_eq!(view.state, KeyState::Quarantined);
    assert_eq!(view.available_at, Some(at(T0 + 100)));
    assert_eq!((view.failures, view.quarantines), (3, 1));
    assert_eq!(view.reason, reason("500"));
    assert_eq!(
        pool.lease(at(T0 + 99), &mut rng()),
        Err(PoolError::NoFreeKey)
    );
}

#[test]
fn a_key_back_from_quarantine_is_on_probation_and_quarantined_again_for_twice_as_long() {
    let (mut pool, key) = one_key_pool(2, 100);
    let mut now = T0;
    for (n, length) in [(1, 100), (2, 200), (3, 400), (4, 800)] {
        for _ in 0..if n == 1 { 2 } else { 1 } {
            lease_only(&mut pool, &key, now);
            pool.release_with(&key, None, Outcome::Failed, None, at(now))
                .unwrap();
        }
        let view = pool.get(&key, at(now)).unwrap();
        assert_eq!(view.state, KeyState::Quarantined, "quarantine {n}");
        assert_eq!(view.quarantines, n);
        assert_eq!(view.available_at, Some(at(now + length)));
        now += length;
        assert_eq!(pool.get(&key, at(now)).unwrap().state, KeyState::Free);
    }
    // An `ok` ends probation: failures and the doubling start again.
    lease_only(&mut pool, &key, now);
    let view = pool.release(&key, None, at(now)).unwrap();
    assert_eq!((view.failures, view.quarantines), (0, 0));
    lease_only(&mut pool, &key, now);
    let view = pool
        .release_with(&key, None, Outcome::Failed, None, at(now))
        .unwrap();
    assert_eq!(
        view.state,
        KeyState::Free,
        "one failure is below max_failures again"
    );
}

#[test]
fn quarantine_doubling_stops_at_24_hours() {
    let day = Recovery::MAX_QUARANTINE_MS;
    let r = Recovery {
        quarantine: ttl(3_600_000),
        ..Recovery::default()
    };
    assert_eq!(r.quarantine_end(1, at(0)), at(3_600_000));
    assert_eq!(r.quarantine_end(5, at(0)), at(16 * 3_600_000));
    assert_eq!(r.quarantine_end(6, at(0)), at(day));
    assert_eq!(r.quarantine_end(u32::MAX, at(0)), at(day));
    let long = Recovery {
        quarantine: ttl(2 * day),
        ..Recovery::default()
    };
    assert_eq!(
        long.quarantine_end(3, at(0)),
        at(2 * day),
        "never below the base"
    );
}

#[test]
fn disable_ends_a_lease_now_and_the_old_holders_lease_id_is_refused() {
    let (mut pool, key) = one_key_pool(3, 100);
    let id = lease_only(&mut pool, &key, T0);
    let view = pool.disable(&key, reason("leaked"), at(T0)).unwrap();
    assert_eq!((view.state, view.lease), (KeyState::Disabled, None));
    assert_eq!(view.reason, reason("leaked"));
    assert_eq!(
        pool.release(&key, Some(id), at(T0)),
        Err(PoolError::NotLeased)
    );
    assert_eq!(
        pool.keepalive(&key, Some(id), at(T0)),
        Err(PoolError::LeaseMismatch)
    );
    assert_eq!(
        pool.lease(at(T0 + 1_000_000), &mut rng()),
        Err(PoolError::NoFreeKey)
    );
    assert_eq!(
        pool.next_free_at(),
        None,
        "a disabled key never frees itself"
    );
    assert_eq!(pool.next_deadline(), Some(at(T0 + 10 * 24 * 3600 * 1000)));
}

#[test]
fn enable_frees_a_cooling_quarantined_or_disabled_key_with_failures_reset() {
    let (mut pool, key) = one_key_pool(1, 100);
    lease_only(&mut pool, &key, T0);
    pool.release_with(&key, None, Outcome::Failed, reason("x"), at(T0))
        .unwrap();
    let view = pool.enable(&key, at(T0)).unwrap();
    assert_eq!(view.state, KeyState::Free);
    assert_eq!((view.failures, view.quarantines, view.reason), (0, 0, None));
    assert_eq!(pool.next_deadline(), Some(at(T0 + 10 * 24 * 3600 * 1000)));
    pool.disable(&key, None, at(T0)).unwrap();
    assert_eq!(pool.enable(&key, at(T0)).unwrap().state, KeyState::Free);
    // A leased key stays leased.
    let id = lease_only(&mut pool, &key, T0);
    assert_eq!(
        pool.enable(&key, at(T0)).unwrap().lease.map(|l| l.id),
        Some(id)
    );
    assert_eq!(
        pool.enable("nosuchkey", at(T0)),
        Err(PoolError::KeyNotFound)
    );
}

#[test]
fn with_no_free_key_next_free_at_is_the_earliest_lease_cooldown_or_quarantine_end() {
    let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), false);
    pool.generate(3, at(T0)).unwrap();
    let a = pool.lease(at(T0), &mut rng()).unwrap().key;
    let b = pool.lease(at(T0), &mut rng()).unwrap().key;
    let c = pool.lease(at(T0 + 5), &mut rng()).unwrap().key;
    let cool = Outcome::RateLimited {
        retry_after: Some(ttl(10)),
    };
    pool.release_with(&a, None, cool, None, at(T0)).unwrap();
    pool.disable(&b, None, at(T0)).unwrap();
    assert_eq!(
        pool.lease(at(T0 + 5), &mut rng()),
        Err(PoolError::NoFreeKey)
    );
    assert_eq!(
        pool.next_free_at(),
        Some(at(T0 + 10)),
        "the cooldown ends first"
    );
    assert_eq!(pool.lease(at(T0 + 10), &mut rng()).unwrap().key, a);
    assert_eq!(
        pool.next_free_at(),
        Some(at(T0 + 5 + LEASE_MS)),
        "c's lease ends first"
    );
    pool.delete(&a, at(T0 + 10)).unwrap();
    pool.delete(&c, at(T0 + 10)).unwrap();
    assert_eq!(pool.next_free_at(), None);
}

#[test]
fn cooldown_and_quarantine_ends_expire_in_bounded_steps_and_are_counted() {
    let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), false);
    pool.generate(5, at(T0)).unwrap();
    for _ in 0..5 {
        let key = pool.lease(at(T0), &mut rng()).unwrap().key;
        let cool = Outcome::RateLimited {
            retry_after: Some(ttl(20)),
        };
        pool.release_with(&key, None, cool, None, at(T0)).unwrap();
    }
    assert_eq!(pool.next_deadline(), Some(at(T0 + 20)));
    let step = pool.expire_some(at(T0 + 20), 3);
    assert_eq!((step.recovered, step.leases, step.keys), (3, 0, 0));
    assert_eq!(pool.stats().cooling, 2);
    assert_eq!(pool.expire(at(T0 + 20)).recovered, 2);
    assert_eq!(pool.stats().free, 5);
    assert_eq!(pool.expired_total().recovered, 5);
}

#[test]
fn import_adds_new_keys_with_labels_and_reports_existing_ones_unchanged() {
    let (mut pool, keys) = pool_with(1, true);
    pool.drain_changes();
    let gold = Labels::parse([("tier", "gold")]).unwrap();
    let given = ["sk-live-1", &keys[0], "sk-live-1", "~!{}"];
    let parsed = given.iter().map(|k| PoolKey::parse(k).unwrap());
    let done = pool.import(parsed, &gold, at(T0 + 1)).unwrap();
    let added: Vec<_> = done.added.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(added, ["sk-live-1", "~!{}"]);
    assert!(
        done.added
            .iter()
            .all(|v| v.labels == gold && v.created_at == at(T0 + 1))
    );
    assert_eq!(done.existing, [keys[0].clone(), "sk-live-1".to_owned()]);
    assert_eq!(
        pool.get(&keys[0], at(T0 + 1)).unwrap().labels,
        Labels::default()
    );
    assert_eq!(pool.stats().total, 3);
    assert_eq!(
        pool.drain_changes().len(),
        2,
        "existing keys are not rewritten"
    );
}

#[test]
fn a_pool_key_is_1_to_256_visible_ascii_characters() {
    assert!(PoolKey::parse("a").is_ok());
    assert!(PoolKey::parse(&"~".repeat(256)).is_ok());
    for bad in ["", " leading", "tab\tkey", "é", &"x".repeat(257)] {
        assert_eq!(PoolKey::parse(bad), Err(InvalidPoolKey), "{bad:?}");
    }
}

#[test]
fn keys_sharing_a_label_set_hold_one_copy_until_the_last_is_gone() {
    let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), false);
    let gold = Labels::parse([("tier", "gold")]).unwrap();
    let keys = pool.generate_labelled(100, &gold, at(T0)).unwrap();
    pool.generate(10, at(T0)).unwrap();
    assert_eq!(pool.label_sets(), 1);
    assert!(keys.iter().all(|v| v.labels == gold));
    for view in &keys {
        pool.delete(&view.key, at(T0)).unwrap();
    }
    assert_eq!(pool.label_sets(), 0);
}

#[test]
fn a_pool_without_keepalive_gives_keys_no_deadline_and_never_purges_them() {
    let mut s = settings(LEASE_MS, KEEPALIVE_MS);
    s.no_keepalive = true;
    let mut pool = Pool::new(s, false);
    let key = pool.generate(1, at(T0)).unwrap().remove(0);
    assert!(key.no_keepalive);
    assert_eq!(key.alive_deadline(), None);
    assert_eq!(pool.next_deadline(), None);
    let far = T0 + 1_000 * KEEPALIVE_MS;
    assert_eq!(pool.expire(at(far)), Expired::default());
    assert_eq!(pool.get(&key.key, at(far)).unwrap().alive_deadline(), None);
    // Back to a keep-alive TTL: the next keep-alive sets a deadline again.
    s.no_keepalive = false;
    pool.set_settings(s);
    let view = pool.keepalive(&key.key, None, at(far)).unwrap();
    assert_eq!(view.alive_deadline(), Some(at(far + KEEPALIVE_MS)));
    assert_eq!(pool.next_deadline(), Some(at(far + KEEPALIVE_MS)));
}

#[test]
fn listing_a_state_lists_each_key_that_stays_in_it_exactly_once_while_others_change() {
    let (mut pool, keys) = pool_with(50, false);
    let mut r = rng();
    for key in &keys[..20] {
        pool.disable(key, None, at(T0)).unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = KeyCursor::START;
    let mut pages = 0;
    loop {
        let page = pool.list(Some(KeyState::Free), cursor, 7, at(T0));
        assert!(page.keys.len() <= 7);
        assert!(page.keys.iter().all(|v| v.state == KeyState::Free));
        seen.extend(page.keys.into_iter().map(|v| v.key));
        // Meanwhile: new keys, leases, deletions and state changes.
        pool.generate(3, at(T0)).unwrap();
        pool.lease(at(T0), &mut r).unwrap();
        pool.enable(&keys[pages], at(T0)).unwrap();
        pages += 1;
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no key is listed twice");
    // Every key that was free throughout is in the listing.
    for key in &keys[20..] {
        let view = pool.get(key, at(T0)).unwrap();
        if view.state == KeyState::Free {
            assert!(unique.contains(key), "{key} missing");
        }
    }
    let all = pool.list(None, KeyCursor::START, usize::MAX, at(T0));
    assert_eq!(all.keys.len() as u64, pool.stats().total);
    assert_eq!(all.next, None);
    let disabled = pool.list(Some(KeyState::Disabled), KeyCursor::START, 100, at(T0));
    assert_eq!(disabled.keys.len() as u64, pool.stats().disabled);
}

#[test]
fn restore_brings_back_states_labels_failures_and_reasons() {
    let mut s = settings(LEASE_MS, KEEPALIVE_MS);
    s.recovery.max_failures = MaxFailures::new(1).unwrap();
    let mut pool = Pool::new(s, true);
    let gold = Labels::parse([("tier", "gold")]).unwrap();
    pool.generate_labelled(4, &gold, at(T0)).unwrap();
    let mut r = rng();
    let a = pool.lease(at(T0), &mut r).unwrap().key;
    let b = pool.lease(at(T0), &mut r).unwrap().key;
    let c = pool.lease(at(T0), &mut r).unwrap().key;
    pool.release_with(&a, None, Outcome::Failed, reason("5xx"), at(T0))
        .unwrap();
    let cool = Outcome::RateLimited { retry_after: None };
    pool.release_with(&b, None, cool, reason("429"), at(T0))
        .unwrap();
    pool.disable(&c, reason("leaked"), at(T0)).unwrap();
    let mut journal = BTreeMap::new();
    replay(&mut journal, pool.drain_changes());
    let mut restored = Pool::restore(s, pool.last_lease_id(), journal.values().cloned(), false);
    assert_eq!(restored.stats(), pool.stats());
    assert_eq!(restored.next_deadline(), pool.next_deadline());
    for key in journal.keys() {
        assert_eq!(restored.get(key, at(T0)), pool.get(key, at(T0)));
    }
    assert_eq!(restored.label_sets(), 1);
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
#[ignore = "builds 10^7 keys (about 1.3 GB); run with --release -- --ignored --nocapture"]
fn memory_per_key_at_ten_million_keys_stays_within_128_bytes() {
    const N: usize = 10_000_000;
    let gold = Labels::parse([("tier", "gold")]).unwrap();
    let before = rss_bytes();
    let mut pool = Pool::new(settings(LEASE_MS, 3_600_000), false);
    while (pool.stats().total as usize) < N {
        let batch = (N - pool.stats().total as usize).min(100_000);
        // Half the keys share one label set: it is stored once.
        let labels = match pool.stats().total % 200_000 {
            0 => Labels::default(),
            _ => gold.clone(),
        };
        pool.generate_labelled(batch, &labels, at(T0)).unwrap();
    }
    let generated = rss_bytes();
    // A realistic mix: 10% leased, 1% cooling, 0.1% quarantined/disabled.
    let mut r = rng();
    for i in 0..N / 10 {
        let key = pool.lease(at(T0), &mut r).unwrap().key;
        match i % 100 {
            0 => {
                let cool = Outcome::RateLimited { retry_after: None };
                pool.release_with(&key, None, cool, None, at(T0)).unwrap();
            }
            1 if i % 1000 == 1 => {
                pool.disable(&key, Reason::parse("leaked").ok(), at(T0))
                    .unwrap();
            }
            _ => {}
        }
    }
    let mixed = rss_bytes();
    let per_key = |rss: u64| (rss - before) as f64 / N as f64;
    println!(
        "{N} keys: {:.1} B/key all free, {:.1} B/key mixed ({:?}); size_of Option<Slot> = {}",
        per_key(generated),
        per_key(mixed),
        pool.stats(),
        std::mem::size_of::<Option<Slot>>()
    );
    assert!(per_key(mixed) <= 128.0, "{:.1} B per key", per_key(mixed));
    // For the record: what an ordered tree of slot ids per state (the
    // alternative to the bitsets) would add per key.
    let tree_before = rss_bytes();
    let tree: std::collections::BTreeSet<u32> = (0..N as u32).collect();
    println!(
        "a BTreeSet<u32> of every slot id: {:.1} B/key",
        (rss_bytes() - tree_before) as f64 / tree.len() as f64
    );
}
