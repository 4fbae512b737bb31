//! The timed part: one worker task per connection, each sending one
//! request at a time until the deadline, on a runtime of the load's own.
//!
//! One multi-thread runtime rather than a single-threaded runtime per
//! thread (the `wrk -t` shape): on this 2-core machine, shared with the
//! server, an A/B of the two (5 × 3 s each, 64 connections) gave the
//! shared runtime ~12 % more `/healthz` throughput at ~14 % less client
//! CPU per request; its idle worker sleeps and leaves the core to the
//! server. A worker owns everything it touches on the hot path — its
//! connection, its [`Script`], its [`Tally`] — and shares only a
//! cache-line-padded counter that the progress bar reads. At the deadline
//! the request in flight is abandoned and not counted, so a run lasts
//! exactly its duration whatever the server does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::time::Instant;

use super::conn::{Conn, Endpoint};
use super::report::Tally;
use super::workload::Script;

/// After a failed connect, wait this long before the next try, so a dead
/// server is not hammered with SYNs in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Responses a worker got so far, on a cache line of its own (workers on
/// different cores must not invalidate each other's counters).
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// The count so far.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        // Only this worker writes it; readers want an approximate count.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The runtime the load runs on: `threads` workers of its own, apart from
/// the caller's runtime (which may host the server under test). Dropping
/// it stops its threads without blocking, so it may be dropped in async
/// code.
pub(crate) struct LoadRuntime(Option<Runtime>);

impl LoadRuntime {
    /// A multi-thread runtime with `threads` workers.
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("keyward-bench")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// The handle to spawn on.
    pub(crate) fn handle(&self) -> &Handle {
        self.0
            .as_ref()
            .expect("the runtime is only taken on drop")
            .handle()
    }
}

impl Drop for LoadRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `script` on `conn` until `deadline`; replaces the connection if it
/// breaks. Returns the worker's tally.
pub(crate) async fn drive(
    ep: Endpoint,
    conn: Conn,
    mut script: Script,
    deadline: Instant,
    counter: Arc<Counter>,
) -> Tally {
    let mut tally = Tally::new();
    let stop = tokio::time::sleep_until(deadline);
    tokio::pin!(stop);
    let mut conn = Some(conn);
    loop {
        if conn.as_ref().is_none_or(Conn::is_closed) {
            conn = None;
            let opened = tokio::select! {
                biased;
                _ = &mut stop => break,
                opened = ep.open() => opened,
            };
            match opened {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tally.transport_error(&e);
                    tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(RECONNECT_PAUSE) => continue,
                    }
                }
            }
        }
        if let Some(pause) = script.take_pause() {
            // `wait`: hold the leased key (off the clock of any request).
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let (kind, uri, body) = script.next();
        let req = ep.request(kind.method(), uri, body);
        let sent = std::time::Instant::now();
        script.on_send(kind, sent);
        let result = tokio::select! {
            biased;
            _ = &mut stop => break,
            result = c.exchange(req) => result,
        };
        match result {
            Ok((status, body)) => {
                let replied = std::time::Instant::now();
                let ok = tally.response(kind, status, replied - sent);
                match script.on_response(kind, ok, &body) {
                    Ok(true) => tally.operation(),
                    Ok(false) => {}
                    Err(e) => tally.bad_response(&e),
                }
                if let Some(h) = script.take_hand_over(replied) {
                    tally.hand_over(h);
                }
                counter.bump();
            }
            Err(e) => {
                tally.transport_error(&e);
                script.on_transport_error(kind);
            }
        }
    }
    tally
}
