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
    assert_eq!(
        pool.expire(at(T0 + KEEPALIVE_MS)),
        Expired { leases: 0, keys: 2 }
    );
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
    assert_eq!(pool.expire(deadline), Expired { leases: 1, keys: 0 });
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
    assert_eq!(
        pool.expire(at(T0 + KEEPALIVE_MS)),
        Expired { leases: 0, keys: 1 }
    );
    assert_eq!(pool.stats(), stats(2, 1, 1));
    assert_eq!(pool.expire(just_before), Expired { leases: 1, keys: 0 });
    assert_eq!(
        pool.expire(at(now + KEEPALIVE_MS)),
        Expired { leases: 0, keys: 2 }
    );
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
    assert_eq!(pool.expire(at(T0 + 5_000)), Expired { leases: 0, keys: 1 });
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
    assert_eq!(pool.expire_some(late, 3), Expired { leases: 3, keys: 0 });
    assert_eq!(pool.stats(), stats(10, 9, 1));
    assert_eq!(pool.expire_some(late, 3), Expired { leases: 1, keys: 0 });
    assert_eq!(pool.expire_some(late, 3), Expired::default());

    let later = at(T0 + KEEPALIVE_MS);
    let mut total = Expired::default();
    for expected_total in [7, 4, 1, 0] {
        let step = pool.expire_some(later, 3);
        assert!(step.keys + step.leases <= 3);
        total.add(step);
        assert_eq!(pool.stats().total, expected_total);
    }
    assert_eq!(
        total,
        Expired {
            leases: 0,
            keys: 10
        }
    );
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
    let view = KeyView {
        key: "restoredkey0000000001".to_owned(),
        created_at: at(T0),
        alive_until: at(T0 + KEEPALIVE_MS),
        lease: Some(Lease {
            id: 41,
            until: at(T0 + LEASE_MS),
        }),
    };
    let pool = Pool::restore(settings(LEASE_MS, KEEPALIVE_MS), 7, [view.clone()], false);
    assert_eq!(pool.last_lease_id(), 41);
    let mut pool = Pool::restore(settings(LEASE_MS, KEEPALIVE_MS), 99, [view.clone()], false);
    assert_eq!(pool.last_lease_id(), 99);
    assert_eq!(pool.stats(), stats(1, 0, 1));
    assert_eq!(pool.get(&view.key, at(T0)), Ok(view.clone()));
    // A lease that fell due while down ends on the next call with `now`.
    assert_eq!(
        pool.expire(at(T0 + LEASE_MS)),
        Expired { leases: 1, keys: 0 }
    );
    let next = pool.lease(at(T0 + LEASE_MS), &mut rng()).unwrap();
    assert_eq!(next.lease.unwrap().id, 100);
}

#[test]
fn restore_keeps_the_last_record_of_a_duplicate_key() {
    let older = KeyView {
        key: "duplicatekey000000001".to_owned(),
        created_at: at(T0),
        alive_until: at(T0 + KEEPALIVE_MS),
        lease: None,
    };
    let newer = KeyView {
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
