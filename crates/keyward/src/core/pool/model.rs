//! A property test of the pool against the obvious implementation: a
//! sorted map of keys, scanned on every expiry, driven by random operations
//! — leases, releases with random outcomes, disable/enable, imports,
//! listings, and clock advances that end leases, cooldowns and quarantines.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tests::{KEEPALIVE_MS, LEASE_MS, T0, at, replay, settings};
use super::*;

/// One key as the model sees it; times in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelKey {
    created: u64,
    /// `None`: no keep-alive deadline.
    alive_until: Option<u64>,
    /// `(lease id, leased until)`.
    lease: Option<(u64, u64)>,
    state: KeyState,
    /// End of a cooldown or quarantine.
    until: u64,
    reason: Option<Reason>,
    failures: u32,
    quarantines: u32,
    labels: Labels,
}

impl ModelKey {
    fn new(now: u64, alive_until: Option<u64>, labels: Labels) -> Self {
        Self {
            created: now,
            alive_until,
            lease: None,
            state: KeyState::Free,
            until: 0,
            reason: None,
            failures: 0,
            quarantines: 0,
            labels,
        }
    }

    fn free(&mut self) {
        self.state = KeyState::Free;
        self.lease = None;
        self.reason = None;
    }
}

/// The obvious implementation: a sorted map, scanned on every expiry.
#[derive(Debug)]
struct Model {
    keys: BTreeMap<String, ModelKey>,
    last_lease_id: u64,
    settings: PoolSettings,
}

impl Model {
    fn alive_from(&self, now: u64) -> Option<u64> {
        (!self.settings.no_keepalive).then(|| now + self.settings.keepalive_ttl.as_millis())
    }

    fn expire(&mut self, now: u64) -> Expired {
        let before = self.keys.len();
        self.keys
            .retain(|_, k| k.alive_until.is_none_or(|t| t > now));
        let mut done = Expired {
            keys: (before - self.keys.len()) as u64,
            ..Expired::default()
        };
        for k in self.keys.values_mut() {
            if k.lease.is_some_and(|(_, until)| until <= now) {
                k.free();
                done.leases += 1;
            }
            if matches!(k.state, KeyState::Cooling | KeyState::Quarantined) && k.until <= now {
                k.free();
                done.recovered += 1;
            }
        }
        done
    }

    fn view(&self, key: &str) -> Result<KeyView, PoolError> {
        let k = self.keys.get(key).ok_or(PoolError::KeyNotFound)?;
        Ok(KeyView {
            key: key.to_owned(),
            created_at: at(k.created),
            alive_until: at(k.alive_until.unwrap_or(0)),
            lease: k.lease.map(|(id, until)| Lease {
                id,
                until: at(until),
            }),
            state: k.state,
            labels: k.labels.clone(),
            available_at: matches!(k.state, KeyState::Cooling | KeyState::Quarantined)
                .then_some(at(k.until)),
            reason: k.reason.clone(),
            failures: k.failures,
            quarantines: k.quarantines,
            no_keepalive: k.alive_until.is_none(),
        })
    }

    /// Keys in `state` (all with `None`), in key order.
    fn listed(&self, state: Option<KeyState>) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| state.is_none_or(|s| k.state == s))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn next_free_at(&self) -> Option<Timestamp> {
        self.keys
            .values()
            .filter_map(|k| match k.state {
                KeyState::Leased => k.lease.map(|(_, until)| until),
                KeyState::Cooling | KeyState::Quarantined => Some(k.until),
                _ => None,
            })
            .min()
            .map(at)
    }

    fn views(&self) -> BTreeMap<String, KeyView> {
        self.keys
            .keys()
            .map(|k| (k.clone(), self.view(k).unwrap()))
            .collect()
    }

    fn stats(&self) -> PoolStats {
        let count = |s: KeyState| self.keys.values().filter(|k| k.state == s).count() as u64;
        PoolStats {
            total: self.keys.len() as u64,
            free: count(KeyState::Free),
            leased: count(KeyState::Leased),
            cooling: count(KeyState::Cooling),
            quarantined: count(KeyState::Quarantined),
            disabled: count(KeyState::Disabled),
        }
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        let alive = self
            .keys
            .values()
            .filter_map(|k| k.alive_until)
            .min()
            .map(at);
        match (alive, self.next_free_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
    /// A key the model holds leased now (any live key if none is).
    Leased(Index),
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

/// How a release in the model test ends.
#[derive(Clone, Debug)]
enum End {
    Ok,
    RateLimited(Option<u64>),
    Failed,
}

#[derive(Clone, Debug)]
enum Op {
    Generate(usize, u8),
    Import(Vec<Option<Pick>>, u8),
    Lease,
    Release(Pick, LeaseArg),
    ReleaseWith(Pick, LeaseArg, End, bool),
    Disable(Pick, bool),
    Enable(Pick),
    Keepalive(Pick, LeaseArg),
    Delete(Pick),
    Get(Pick),
    List(Option<KeyState>, usize),
    Advance(u64),
    Expire,
    ChangeSettings(u64, u64, bool, u64, u64, u32),
    Restore,
}

/// Cooldown and quarantine of the test pool, in milliseconds.
const COOLDOWN_MS: u64 = 70;
const QUARANTINE_MS: u64 = 90;

fn test_settings(
    lease: u64,
    keepalive: u64,
    no_keepalive: bool,
    cooldown: u64,
    quarantine: u64,
    max_failures: u32,
) -> PoolSettings {
    PoolSettings {
        recovery: Recovery {
            cooldown: Ttl::from_millis(cooldown).expect("positive"),
            max_failures: MaxFailures::new(u64::from(max_failures)).expect("1 to 3"),
            quarantine: Ttl::from_millis(quarantine).expect("positive"),
        },
        no_keepalive,
        ..settings(lease, keepalive)
    }
}

/// One of three label sets: none, and two shared by many keys.
fn label_set(n: u8) -> Labels {
    match n % 3 {
        0 => Labels::default(),
        1 => Labels::parse([("tier", "gold")]).expect("valid"),
        _ => Labels::parse([("tier", "silver"), ("region", "eu")]).expect("valid"),
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<Index>().prop_map(Pick::Live),
        6 => any::<Index>().prop_map(Pick::Leased),
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

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        1 => Just(End::Ok),
        1 => prop::option::of(1..3 * COOLDOWN_MS).prop_map(End::RateLimited),
        2 => Just(End::Failed),
    ]
}

fn state() -> impl Strategy<Value = Option<KeyState>> {
    prop::option::of(prop::sample::select(KeyState::ALL.to_vec()))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize, any::<u8>()).prop_map(|(n, l)| Op::Generate(n, l)),
        1 => (prop::collection::vec(prop::option::of(pick()), 0..4), any::<u8>())
            .prop_map(|(keys, l)| Op::Import(keys, l)),
        5 => Just(Op::Lease),
        2 => (pick(), lease_arg()).prop_map(|(p, a)| Op::Release(p, a)),
        6 => (pick(), lease_arg(), end(), any::<bool>())
            .prop_map(|(p, a, e, r)| Op::ReleaseWith(p, a, e, r)),
        1 => (pick(), any::<bool>()).prop_map(|(p, r)| Op::Disable(p, r)),
        1 => pick().prop_map(Op::Enable),
        3 => (pick(), lease_arg()).prop_map(|(p, a)| Op::Keepalive(p, a)),
        1 => pick().prop_map(Op::Delete),
        2 => pick().prop_map(Op::Get),
        2 => (state(), 1..5usize).prop_map(|(s, n)| Op::List(s, n)),
        4 => (0..2 * LEASE_MS).prop_map(Op::Advance),
        1 => (0..2 * KEEPALIVE_MS).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        1 => (1..2 * LEASE_MS, 1..2 * KEEPALIVE_MS, prop::bool::weighted(0.2),
              1..2 * COOLDOWN_MS, 1..2 * QUARANTINE_MS, 1..4u32)
            .prop_map(|(l, k, n, c, q, m)| Op::ChangeSettings(l, k, n, c, q, m)),
        1 => Just(Op::Restore),
    ]
}

fn key_of(pick: &Pick, model: &Model, ever: &[String]) -> String {
    let leased: Vec<&String> = model
        .keys
        .iter()
        .filter(|(_, k)| k.state == KeyState::Leased)
        .map(|(key, _)| key)
        .collect();
    match pick {
        Pick::Leased(i) if !leased.is_empty() => i.get(&leased).to_string(),
        Pick::Leased(i) => key_of(&Pick::Live(*i), model, ever),
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

/// The model's side of a release: the expected answer, with the key
/// changed as the pool must change it.
fn model_release(
    model: &mut Model,
    key: &str,
    lease_id: Option<u64>,
    end: &End,
    reason: Option<Reason>,
    now: u64,
) -> Result<KeyView, PoolError> {
    let recovery = model.settings.recovery;
    let k = match model.keys.get_mut(key) {
        None => return Err(PoolError::KeyNotFound),
        Some(k) => k,
    };
    let Some((id, _)) = k.lease else {
        return Err(PoolError::NotLeased);
    };
    if lease_id.is_some_and(|given| given != id) {
        return Err(PoolError::LeaseMismatch);
    }
    k.free();
    match end {
        End::Ok => {
            k.failures = 0;
            k.quarantines = 0;
        }
        End::RateLimited(after) => {
            k.state = KeyState::Cooling;
            k.until = now + after.unwrap_or(recovery.cooldown.as_millis());
            k.reason = reason;
        }
        End::Failed => {
            k.failures += 1;
            if k.failures >= recovery.max_failures.get() {
                k.quarantines += 1;
                let ms = recovery.quarantine.as_millis() << (k.quarantines - 1).min(40);
                k.state = KeyState::Quarantined;
                k.until = now + ms.min(Recovery::MAX_QUARANTINE_MS);
                k.reason = reason;
            }
        }
    }
    model.view(key)
}

fn outcome_of(end: &End) -> Outcome {
    match end {
        End::Ok => Outcome::Ok,
        End::RateLimited(after) => Outcome::RateLimited {
            retry_after: after.and_then(Ttl::from_millis),
        },
        End::Failed => Outcome::Failed,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn pool_behaves_like_a_map_of_keys_under_random_operations(
        ops in prop::collection::vec(op(), 1..200),
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let first = test_settings(LEASE_MS, KEEPALIVE_MS, false, COOLDOWN_MS, QUARANTINE_MS, 1);
        let mut pool = Pool::new(first, true);
        let mut model = Model {
            keys: BTreeMap::new(),
            last_lease_id: 0,
            settings: first,
        };
        let mut journal = BTreeMap::new();
        let mut ever: Vec<String> = Vec::new();
        let mut imported = 0u64;
        let mut now = T0;

        for op in ops {
            match &op {
                Op::Generate(n, l) => {
                    model.expire(now);
                    let labels = label_set(*l);
                    let views = pool.generate_labelled(*n, &labels, at(now)).unwrap();
                    prop_assert_eq!(views.len(), *n);
                    for view in views {
                        prop_assert!(!model.keys.contains_key(&view.key), "{} is not new", view.key);
                        let k = ModelKey::new(now, model.alive_from(now), labels.clone());
                        model.keys.insert(view.key.clone(), k);
                        prop_assert_eq!(Ok(view.clone()), model.view(&view.key));
                        ever.push(view.key);
                    }
                }
                Op::Import(picks, l) => {
                    model.expire(now);
                    let labels = label_set(*l);
                    let keys: Vec<String> = picks.iter().map(|p| match p {
                        Some(p) => key_of(p, &model, &ever),
                        None => {
                            imported += 1;
                            format!("imported~{imported}!")
                        }
                    }).collect();
                    let mut want = Imported::default();
                    for key in &keys {
                        if model.keys.contains_key(key) {
                            want.existing.push(key.clone());
                        } else {
                            let k = ModelKey::new(now, model.alive_from(now), labels.clone());
                            model.keys.insert(key.clone(), k);
                            want.added.push(model.view(key).expect("just added"));
                            ever.push(key.clone());
                        }
                    }
                    let parsed = keys.iter().map(|k| PoolKey::parse(k).expect("valid key"));
                    prop_assert_eq!(pool.import(parsed, &labels, at(now)), Ok(want));
                }
                Op::Lease => {
                    model.expire(now);
                    match pool.lease(at(now), &mut rng) {
                        Ok(view) => {
                            // Only a free key is leased: never one that is
                            // cooling, quarantined or disabled (the model has
                            // already freed those whose end is due).
                            let k = model.keys.get_mut(&view.key);
                            prop_assert!(k.as_ref().is_some_and(|k| k.state == KeyState::Free),
                                "{} was leased while not free: {:?}", view.key, k);
                            model.last_lease_id += 1;
                            let k = k.expect("checked above");
                            k.lease = Some((model.last_lease_id, now + model.settings.lease_ttl.as_millis()));
                            k.state = KeyState::Leased;
                            prop_assert_eq!(Ok(view.clone()), model.view(&view.key));
                        }
                        Err(e) => {
                            prop_assert_eq!(e, PoolError::NoFreeKey);
                            prop_assert_eq!(model.stats().free, 0);
                            prop_assert_eq!(pool.next_free_at(), model.next_free_at());
                            // Nothing due is left behind a refusal: the next
                            // key comes free strictly later.
                            prop_assert!(pool.next_free_at().is_none_or(|t| t > at(now)));
                        }
                    }
                }
                Op::Release(p, arg) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let lease_id = model.lease_id(&key, arg);
                    let expected = model_release(&mut model, &key, lease_id, &End::Ok, None, now);
                    prop_assert_eq!(pool.release(&key, lease_id, at(now)), expected);
                }
                Op::ReleaseWith(p, arg, end, with_reason) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let lease_id = model.lease_id(&key, arg);
                    let reason = with_reason.then(|| Reason::parse("upstream said so").expect("valid"));
                    let expected = model_release(&mut model, &key, lease_id, end, reason.clone(), now);
                    let got = pool.release_with(&key, lease_id, outcome_of(end), reason, at(now));
                    prop_assert_eq!(got, expected);
                }
                Op::Disable(p, with_reason) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let reason = with_reason.then(|| Reason::parse("revoked").expect("valid"));
                    let expected = match model.keys.get_mut(&key) {
                        None => Err(PoolError::KeyNotFound),
                        Some(k) => {
                            k.free();
                            k.state = KeyState::Disabled;
                            k.reason = reason.clone();
                            model.view(&key)
                        }
                    };
                    prop_assert_eq!(pool.disable(&key, reason, at(now)), expected);
                }
                Op::Enable(p) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let expected = match model.keys.get_mut(&key) {
                        None => Err(PoolError::KeyNotFound),
                        Some(k) => {
                            if !matches!(k.state, KeyState::Free | KeyState::Leased) {
                                k.free();
                                k.failures = 0;
                                k.quarantines = 0;
                            }
                            model.view(&key)
                        }
                    };
                    prop_assert_eq!(pool.enable(&key, at(now)), expected);
                }
                Op::Keepalive(p, arg) => {
                    model.expire(now);
                    let key = key_of(p, &model, &ever);
                    let lease_id = model.lease_id(&key, arg);
                    let lease_ttl = model.settings.lease_ttl.as_millis();
                    let alive = model.alive_from(now);
                    let expected = match model.keys.get_mut(&key) {
                        None => Err(PoolError::KeyNotFound),
                        Some(k) => match (lease_id, k.lease) {
                            (Some(given), Some((id, _))) if given == id => {
                                k.lease = Some((id, now + lease_ttl));
                                k.alive_until = alive;
                                model.view(&key)
                            }
                            (Some(_), _) => Err(PoolError::LeaseMismatch),
                            (None, _) => {
                                k.alive_until = alive;
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
                Op::List(state, limit) => {
                    model.expire(now);
                    let mut listed = Vec::new();
                    let mut cursor = KeyCursor::START;
                    for _ in 0..=model.keys.len() {
                        let page = pool.list(*state, cursor, *limit, at(now));
                        prop_assert!(page.keys.len() <= *limit);
                        for view in &page.keys {
                            prop_assert_eq!(Ok(view.clone()), model.view(&view.key));
                        }
                        listed.extend(page.keys.into_iter().map(|v| v.key));
                        match page.next {
                            Some(next) => cursor = next,
                            None => break,
                        }
                    }
                    let unique: std::collections::BTreeSet<_> = listed.iter().cloned().collect();
                    prop_assert_eq!(unique.len(), listed.len(), "a key listed twice: {:?}", listed);
                    prop_assert_eq!(unique.into_iter().collect::<Vec<_>>(), model.listed(*state));
                }
                Op::Advance(ms) => now += ms,
                Op::Expire => prop_assert_eq!(pool.expire(at(now)), model.expire(now)),
                Op::ChangeSettings(lease, keepalive, never, cooldown, quarantine, max) => {
                    let new = test_settings(*lease, *keepalive, *never, *cooldown, *quarantine, *max);
                    model.settings = new;
                    pool.set_settings(new);
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
            let stats = pool.stats();
            prop_assert_eq!(stats, model.stats(), "stats after {:?}", op);
            prop_assert_eq!(
                stats.free + stats.leased + stats.cooling + stats.quarantined + stats.disabled,
                stats.total,
                "the five counts add up to total after {:?}", op
            );
            prop_assert_eq!(pool.last_lease_id(), model.last_lease_id);
            prop_assert_eq!(pool.next_deadline(), model.next_deadline(), "after {:?}", op);
        }
    }
}
