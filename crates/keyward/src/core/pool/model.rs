//! A property test of the pool against the obvious implementation: a
//! sorted map of keys, scanned on every expiry, driven by random operations.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tests::{KEEPALIVE_MS, LEASE_MS, T0, at, replay, settings, stats};
use super::*;

/// One key as the model sees it; times in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelKey {
    created: u64,
    alive_until: u64,
    /// `(lease id, leased until)`.
    lease: Option<(u64, u64)>,
}

/// The obvious implementation: a sorted map, scanned on every expiry.
#[derive(Debug)]
struct Model {
    keys: BTreeMap<String, ModelKey>,
    last_lease_id: u64,
    lease_ttl: u64,
    keepalive_ttl: u64,
}

impl Model {
    fn expire(&mut self, now: u64) -> Expired {
        let before = self.keys.len();
        self.keys.retain(|_, k| k.alive_until > now);
        let mut done = Expired {
            leases: 0,
            keys: (before - self.keys.len()) as u64,
        };
        for k in self.keys.values_mut() {
            if k.lease.is_some_and(|(_, until)| until <= now) {
                k.lease = None;
                done.leases += 1;
            }
        }
        done
    }

    fn view(&self, key: &str) -> Result<KeyView, PoolError> {
        let k = self.keys.get(key).ok_or(PoolError::KeyNotFound)?;
        Ok(KeyView {
            key: key.to_owned(),
            created_at: at(k.created),
            alive_until: at(k.alive_until),
            lease: k.lease.map(|(id, until)| Lease {
                id,
                until: at(until),
            }),
        })
    }

    fn views(&self) -> BTreeMap<String, KeyView> {
        self.keys
            .keys()
            .map(|k| (k.clone(), self.view(k).unwrap()))
            .collect()
    }

    fn stats(&self) -> PoolStats {
        let total = self.keys.len() as u64;
        let leased = self.keys.values().filter(|k| k.lease.is_some()).count() as u64;
        stats(total, total - leased, leased)
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.keys
            .values()
            .flat_map(|k| [Some(k.alive_until), k.lease.map(|(_, until)| until)])
            .flatten()
            .min()
            .map(at)
    }

    fn lease_id(&self, key: &str, arg: &LeaseArg) -> Option<u64> {
        match arg {
            LeaseArg::Absent => None,
            LeaseArg::Current => Some(
                self.keys
                    .get(key)
                    .and_then(|k| k.lease)
                    .map_or(self.last_lease_id, |(id, _)| id),
            ),
            LeaseArg::Older(back) => Some(self.last_lease_id.saturating_sub(*back)),
        }
    }
}

#[derive(Clone, Debug)]
enum Pick {
    /// A key the model holds now.
    Live(Index),
    /// Any key ever generated, dead or alive.
    Ever(Index),
    /// A key the pool never had.
    Unknown,
}

#[derive(Clone, Debug)]
enum LeaseArg {
    Absent,
    /// The key's current lease id (the last one handed out if free).
    Current,
    /// The last lease id handed out, minus this.
    Older(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Generate(usize),
    Lease,
    Release(Pick, LeaseArg),
    Keepalive(Pick, LeaseArg),
    Delete(Pick),
    Get(Pick),
    Advance(u64),
    Expire,
    ChangeTtls(u64, u64),
    Restore,
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<Index>().prop_map(Pick::Live),
        3 => any::<Index>().prop_map(Pick::Ever),
        1 => Just(Pick::Unknown),
    ]
}

fn lease_arg() -> impl Strategy<Value = LeaseArg> {
    prop_oneof![
        Just(LeaseArg::Absent),
        Just(LeaseArg::Current),
        (0..3u64).prop_map(LeaseArg::Older),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize).prop_map(Op::Generate),
        4 => Just(Op::Lease),
        3 => (pick(), lease_arg()).prop_map(|(p, a)| Op::Release(p, a)),
        3 => (pick(), lease_arg()).prop_map(|(p, a)| Op::Keepalive(p, a)),
        1 => pick().prop_map(Op::Delete),
        2 => pick().prop_map(Op::Get),
        4 => (0..2 * LEASE_MS).prop_map(Op::Advance),
        1 => (0..2 * KEEPALIVE_MS).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        1 => (1..2 * LEASE_MS, 1..2 * KEEPALIVE_MS).prop_map(|(l, k)| Op::ChangeTtls(l, k)),
        1 => Just(Op::Restore),
    ]
}

fn key_of(pick: &Pick, model: &Model, ever: &[String]) -> String {
    match pick {
        Pick::Live(i) if !model.keys.is_empty() => model
            .keys
            .keys()
            .nth(i.index(model.keys.len()))
            .cloned()
            .expect("the index is in range"),
        Pick::Ever(i) if !ever.is_empty() => i.get(ever).clone(),
        _ => "neverGeneratedKey000".to_owned(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn pool_behaves_like_a_map_of_keys_under_random_operations(
        ops in prop::collection::vec(op(), 1..200),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pool = Pool::new(settings(LEASE_MS, KEEPALIVE_MS), true);
        let mut model = Model {
            keys: BTreeMap::new(),
            last_lease_id: 0,
            lease_ttl: LEASE_MS,
            keepalive_ttl: KEEPALIVE_MS,
        };
        let mut journal = BTreeMap::new();
        let mut ever: Vec<String> = Vec::new();
        let mut now = T0;

        for op in ops {
            match &op {
                Op::Generate(n) => {
                    model.expire(now);
                    let views = pool.generate(*n, at(now)).unwrap();
                    prop_assert_eq!(views.len(), *n);
                    for view in views {
                        prop_assert!(!model.keys.contains_key(&view.key), "{} is not new", view.key);
                        model.keys.insert(view.key.clone(), ModelKey {
                            created: now,
                            alive_until: now + model.keepalive_ttl,
                            lease: None,
                        });
                        prop_assert_eq!(Ok(view.clone()), model.view(&view.key));
                        ever.push(view.key);
                    }
                }
                Op::Lease => {
                    model.expire(now);
                    match pool.lease(at(now), &mut rng) {
                        Ok(view) => {
                            let k = model.keys.get_mut(&view.key);
                            prop_assert!(k.as_ref().is_some_and(|k| k.lease.is_none()),
                                "{} was not free: {:?}", view.key, k);
                            model.last_lease_id += 1;
                            k.expect("checked above").lease =
                                Some((model.last_lease_id, now + model.lease_ttl));
                            prop_assert_eq!(Ok(view.clone()), model.view(&view.key));
                        }
                        Err(e) => {
                            prop_assert_eq!(e, PoolError::NoFreeKey);
                            prop_assert_eq!(model.stats().free, 0);
                        }
                    }
                }
                Op::Release(p, arg) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let lease_id = model.lease_id(&key, arg);
                    let expected = match model.keys.get_mut(&key) {
                        None => Err(PoolError::KeyNotFound),
                        Some(ModelKey { lease: None, .. }) => Err(PoolError::NotLeased),
                        Some(ModelKey { lease: Some((id, _)), .. })
                            if lease_id.is_some_and(|given| given != *id) =>
                        {
                            Err(PoolError::LeaseMismatch)
                        }
                        Some(k) => {
                            k.lease = None;
                            model.view(&key)
                        }
                    };
                    prop_assert_eq!(pool.release(&key, lease_id, at(now)), expected);
                }
                Op::Keepalive(p, arg) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let lease_id = model.lease_id(&key, arg);
                    let (lease_ttl, keepalive_ttl) = (model.lease_ttl, model.keepalive_ttl);
                    let expected = match model.keys.get_mut(&key) {
                        None => Err(PoolError::KeyNotFound),
                        Some(k) => match (lease_id, k.lease) {
                            (Some(given), Some((id, _))) if given == id => {
                                k.lease = Some((id, now + lease_ttl));
                                k.alive_until = now + keepalive_ttl;
                                model.view(&key)
                            }
                            (Some(_), _) => Err(PoolError::LeaseMismatch),
                            (None, _) => {
                                k.alive_until = now + keepalive_ttl;
                                model.view(&key)
                            }
                        },
                    };
                    prop_assert_eq!(pool.keepalive(&key, lease_id, at(now)), expected);
                }
                Op::Delete(p) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let expected = model.keys.remove(&key).map(|_| ()).ok_or(PoolError::KeyNotFound);
                    prop_assert_eq!(pool.delete(&key, at(now)), expected);
                }
                Op::Get(p) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    prop_assert_eq!(pool.get(&key, at(now)), model.view(&key));
                }
                Op::Advance(ms) => now += ms,
                Op::Expire => prop_assert_eq!(pool.expire(at(now)), model.expire(now)),
                Op::ChangeTtls(lease, keepalive) => {
                    model.lease_ttl = *lease;
                    model.keepalive_ttl = *keepalive;
                    pool.set_settings(settings(*lease, *keepalive));
                }
                Op::Restore => {
                    replay(&mut journal, pool.drain_changes());
                    pool = Pool::restore(
                        pool.settings(),
                        pool.last_lease_id(),
                        journal.values().cloned(),
                        true,
                    );
                }
            }
            replay(&mut journal, pool.drain_changes());
            prop_assert_eq!(&journal, &model.views(), "journal after {:?}", op);
            prop_assert_eq!(pool.stats(), model.stats(), "stats after {:?}", op);
            prop_assert_eq!(pool.last_lease_id(), model.last_lease_id);
            prop_assert_eq!(pool.next_deadline(), model.next_deadline(), "after {:?}", op);
        }
    }
}
