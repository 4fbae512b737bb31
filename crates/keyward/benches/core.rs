//! Cost of the core state machines, without HTTP or a store around them.
//!
//! `cargo bench --bench core` (add a filter such as `lease_release` to run
//! one group). The claims checked by eye here: lease+release does not grow
//! with the pool (O(log n) deadline index only), issuing costs the same at
//! the end of a keyspace as at its start, and expiry costs O(log n) per due
//! entry, never a scan of the rest. `generate` gives the cost of a new
//! key, random draw included; `cooldown` and `quarantine` the cost of a
//! lease ending in a cooldown (and its end) or a quarantine (and enable).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keyward::config::{DEFAULT_TOKEN_ALPHABET, DEFAULT_TOKEN_LENGTH};
use keyward::core::keyspace::Format;
use keyward::core::{
    KeyLength, Keyspace, KeyspaceSpec, MaxActivations, Name, OsRandom, Outcome, Pool, PoolSettings,
    Recovery, Secret, Timestamp, TokenCodec, Ttl, random_key,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const T0: u64 = 1_700_000_000_000;
const LEASE_TTL_MS: u64 = 60_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// Settings where keys never purge during a run, so only leases expire.
fn settings(keepalive_ms: u64) -> PoolSettings {
    PoolSettings {
        lease_ttl: Ttl::from_millis(LEASE_TTL_MS).unwrap(),
        keepalive_ttl: Ttl::from_millis(keepalive_ms).unwrap(),
        key_length: KeyLength::DEFAULT,
        recovery: Recovery::default(),
        no_keepalive: false,
    }
}

fn pool_of(n: usize) -> Pool {
    let mut pool = Pool::new(settings(Ttl::MAX_MILLIS), false);
    for _ in 0..n.div_ceil(100_000) {
        let batch = (n - pool.stats().total as usize).min(100_000);
        pool.generate(batch, at(T0)).unwrap();
    }
    pool
}

fn lease_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("lease_release");
    group.throughput(Throughput::Elements(1));
    for n in [1_000, 100_000, 1_000_000, 10_000_000] {
        let mut pool = pool_of(n);
        let mut rng = StdRng::seed_from_u64(1);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let key = pool.lease(at(T0), &mut rng).unwrap();
                black_box(pool.release(&key.key, key.lease.map(|l| l.id), at(T0)))
            })
        });
    }
    group.finish();
}

fn codec(alphabet: &str, length: u32) -> TokenCodec {
    TokenCodec::new(
        KeyspaceSpec::new(alphabet, length).unwrap(),
        Secret::from_bytes([7; 32]),
    )
}

/// Issuing at the start and in the last 10 % of a space: the same work
/// (one encryption, no retries), whichever permutation the capacity picks.
fn issue(c: &mut Criterion) {
    let mut group = c.benchmark_group("issue");
    group.throughput(Throughput::Elements(1));
    let spaces = [
        ("digits^6 (FF1)", "0123456789", 6),
        (
            "default 52^4 (FF1)",
            DEFAULT_TOKEN_ALPHABET,
            DEFAULT_TOKEN_LENGTH,
        ),
        ("cyrillic^12 (FF1)", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя", 12),
        ("a-z^3 (Feistel)", "abcdefghijklmnopqrstuvwxyz", 3),
    ];
    for (label, alphabet, length) in spaces {
        let capacity = codec(alphabet, length).spec().capacity();
        for (phase, start) in [("first 10%", 0), ("last 10%", capacity / 10 * 9)] {
            let mut ks = Keyspace::restore(
                codec(alphabet, length),
                start,
                MaxActivations::DEFAULT,
                [],
                [],
            )
            .unwrap();
            let mut issued = 0u128;
            group.bench_function(BenchmarkId::new(label, phase), |b| {
                b.iter(|| {
                    // Stay inside the phase: start over before leaving it.
                    if issued == capacity / 10 {
                        ks = Keyspace::restore(
                            codec(alphabet, length),
                            start,
                            MaxActivations::DEFAULT,
                            [],
                            [],
                        )
                        .unwrap();
                        issued = 0;
                    }
                    issued += 1;
                    black_box(ks.issue().unwrap())
                })
            });
        }
    }
    group.finish();
}

/// Status of an issued token (decrypt + one hash lookup).
fn status(c: &mut Criterion) {
    let mut group = c.benchmark_group("status");
    group.throughput(Throughput::Elements(1));
    for (label, alphabet, length) in [
        ("digits^6 (FF1)", "0123456789", 6),
        ("a-z^3 (Feistel)", "abcdefghijklmnopqrstuvwxyz", 3),
    ] {
        let mut ks = Keyspace::new(codec(alphabet, length));
        let tokens: Vec<String> = (0..1_000).map(|_| ks.issue().unwrap().token).collect();
        for token in tokens.iter().step_by(2) {
            ks.activate(token, None, at(T0)).unwrap();
        }
        status_of(&mut group, label, &ks, &tokens);
    }
    group.finish();
}

/// Expiring m due leases in a pool of n keys: the cost follows m, not n.
fn expiry(c: &mut Criterion) {
    let mut group = c.benchmark_group("expire_leases");
    for n in [100_000, 1_000_000] {
        let mut pool = pool_of(n);
        let mut rng = StdRng::seed_from_u64(2);
        for m in [10u64, 1_000] {
            group.throughput(Throughput::Elements(m));
            let mut now = T0;
            group.bench_function(BenchmarkId::new(format!("n={n}"), m), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        // Untimed: lease m keys; their leases fall due
                        // together one TTL later.
                        now += LEASE_TTL_MS;
                        for _ in 0..m {
                            pool.lease(at(now), &mut rng).unwrap();
                        }
                        let start = Instant::now();
                        let done = pool.expire(at(now + LEASE_TTL_MS));
                        spent += start.elapsed();
                        assert_eq!(done.leases, m);
                    }
                    spent
                })
            });
        }
    }
    group.finish();
}

/// A rate-limited release and the cooldown's end: each round leases,
/// releases `rate_limited` for 1 ms and moves the clock 1 ms, so the next
/// lease's bounded expiry ends the cooldown from the deadline index. Flat
/// in n: no scan of the cooling keys.
fn cooldown(c: &mut Criterion) {
    let mut group = c.benchmark_group("cooldown");
    group.throughput(Throughput::Elements(1));
    let one_ms = Outcome::RateLimited {
        retry_after: Ttl::from_millis(1),
    };
    for n in [1_000, 100_000, 1_000_000] {
        let mut pool = pool_of(n);
        let mut rng = StdRng::seed_from_u64(1);
        let mut now = T0;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                now += 1;
                let key = pool.lease(at(now), &mut rng).unwrap();
                black_box(pool.release_with(&key.key, None, one_ms, None, at(now)))
            })
        });
    }
    group.finish();
}

/// Quarantine transitions: lease, release `failed` with `max_failures` 1
/// (into quarantine: out of the free vector, into the deadline index and
/// the health table), then enable (back, counters reset).
fn quarantine(c: &mut Criterion) {
    let mut group = c.benchmark_group("quarantine");
    group.throughput(Throughput::Elements(1));
    for n in [1_000, 100_000, 1_000_000] {
        let mut pool = pool_of(n);
        let mut s = pool.settings();
        s.recovery = Recovery {
            max_failures: keyward::core::MaxFailures::new(1).unwrap(),
            ..Recovery::default()
        };
        pool.set_settings(s);
        let mut rng = StdRng::seed_from_u64(1);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let key = pool.lease(at(T0), &mut rng).unwrap();
                pool.release_with(&key.key, None, Outcome::Failed, None, at(T0))
                    .unwrap();
                black_box(pool.enable(&key.key, at(T0)))
            })
        });
    }
    group.finish();
}

/// Generating keys: per key, the draw from the OS CSPRNG (read in blocks),
/// the uniqueness check and the insert; and the draw alone.
fn generate(c: &mut Criterion) {
    const BATCH: usize = 1_000;
    let mut group = c.benchmark_group("generate");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("pool, 1000 keys of 20", |b| {
        // A fresh pool per batch, dropped untimed, so the pool size is fixed.
        b.iter_batched_ref(
            || Pool::new(settings(Ttl::MAX_MILLIS), false),
            |pool| black_box(pool.generate(BATCH, at(T0)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("random_key of 20", |b| {
        let mut rng = OsRandom::default();
        b.iter(|| black_box(random_key(&mut rng, KeyLength::DEFAULT.get())))
    });
    group.finish();
}

/// Status of `tokens`, round robin.
fn status_of(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    label: &str,
    ks: &Keyspace,
    tokens: &[String],
) {
    let mut i = 0;
    group.bench_function(label, |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            black_box(ks.status(&tokens[i]).unwrap())
        })
    });
}

/// Status of a readable code against a bare token of the same space
/// (crockford^12, FF1): the format adds grouping, a check character to
/// verify and input folding. Tokens are issued in 100 batches, half of
/// them hold a slot.
fn status_formatted(c: &mut Criterion) {
    let mut group = c.benchmark_group("status_formatted");
    group.throughput(Throughput::Elements(1));
    let bare = KeyspaceSpec::named("crockford", 12).unwrap();
    let format = Format::new(bare.alphabet(), Some(4), None, Some("LIC-"), true).unwrap();
    let formatted = bare.clone().with_format(format);
    let typed = |t: &String| t.trim_start_matches("LIC-").replace('-', "").to_lowercase();
    for (label, spec, retype) in [
        ("bare", bare, false),
        ("formatted, shown form", formatted.clone(), false),
        ("formatted, typed lower case bare", formatted, true),
    ] {
        let mut ks = Keyspace::new(TokenCodec::new(spec, Secret::from_bytes([7; 32])));
        let mut tokens = Vec::new();
        for b in 0..100 {
            let batch = Name::parse(&format!("batch-{b}")).unwrap();
            tokens.extend(ks.issue_many_in(10, Some(&batch)).unwrap().tokens);
        }
        for token in tokens.iter().step_by(2) {
            ks.activate(token, None, at(T0)).unwrap();
        }
        if retype {
            tokens = tokens.iter().map(typed).collect();
        }
        status_of(&mut group, label, &ks, &tokens);
    }
    group.finish();
}

criterion_group!(
    benches,
    lease_release,
    cooldown,
    quarantine,
    issue,
    status,
    status_formatted,
    expiry,
    generate
);
criterion_main!(benches);
