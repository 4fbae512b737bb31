//! Criterion bench of the waiting-lease hand-over on the memory store: two
//! tasks share a pool of one key; each leases it waiting, releases it, and
//! leases again, so every release hands the key to the other task, which
//! is queued. One iteration is one hand-over: a release that finds a
//! waiter, the key leased to it in the same change, and the waiter woken.
//! On a single-threaded runtime, so it measures the store and the channel,
//! not thread wake-ups.
//!
//! Run: `cargo bench -p keyward --bench handover`.

use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward::clock::SystemClock;
use keyward::config::Config;
use keyward::core::Name;
use keyward::store::local::{LocalSettings, LocalStore};
use keyward::store::{Limits, Store};

/// Lease the one key waiting, let the other task queue for it, release
/// it (a hand-over), `rounds` times. Returns how many leases were handed
/// over rather than found free.
async fn ping_pong(store: Arc<LocalStore>, pool: Name, rounds: u64) -> u64 {
    let mut handed = 0;
    for _ in 0..rounds {
        // The memory store answers a free key on the first poll; a lease
        // that is pending has queued and is then handed its key.
        let mut lease = pin!(store.lease_key_waiting(&pool, Duration::from_secs(10)));
        let mut queued = false;
        let key = poll_fn(|cx| {
            let poll = lease.as_mut().poll(cx);
            queued |= poll.is_pending();
            poll
        })
        .await
        .expect("the other task releases the key within the wait");
        handed += u64::from(queued);
        // Runs the other task until it waits for the key.
        tokio::task::yield_now().await;
        store
            .release_key(&pool, &key.key, key.lease.map(|l| l.id))
            .await
            .expect("release of a held key");
    }
    handed
}

fn handover(c: &mut Criterion) {
    let mut group = c.benchmark_group("waiting lease hand-over");
    group.throughput(Throughput::Elements(1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    group.bench_function("release to a queued waiter, memory store", |b| {
        b.iter_custom(|iters| {
            let config = Config::default();
            let settings = LocalSettings {
                pool_defaults: config.pool_defaults,
                default_keyspace: config.default_keyspace,
                limits: Limits::DEFAULT,
            };
            let store = Arc::new(LocalStore::new(settings, Arc::new(SystemClock)));
            let pool = Name::parse("bench").expect("a name");
            runtime.block_on(async {
                store
                    .generate_keys(&pool, 1)
                    .await
                    .expect("one key in a new pool");
                // Two tasks, `iters` hand-overs in all (each round of a
                // task is one lease it was handed, after the first).
                let half = iters.div_ceil(2);
                let start = Instant::now();
                let a = tokio::spawn(ping_pong(store.clone(), pool.clone(), half));
                let b = tokio::spawn(ping_pong(store.clone(), pool.clone(), half));
                let handed = a.await.expect("task a") + b.await.expect("task b");
                let elapsed = start.elapsed();
                // Every lease but the first was handed over.
                assert!(
                    handed + 1 >= 2 * half,
                    "{handed} of {} leases handed over",
                    2 * half
                );
                black_box(elapsed)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, handover);
criterion_main!(benches);
