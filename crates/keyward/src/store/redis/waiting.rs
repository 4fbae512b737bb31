//! Waiting leases (`wait_ms`) on Redis: first come first served per pool
//! within a process, woken through Redis, never by a polling timer.
//!
//! A request that finds no free key joins this process's FIFO of the pool
//! ([`Waiters`]). The first waiter of a pool starts the pool's *watcher*,
//! one task per pool and process, which:
//!
//! 1. opens a RESP3 connection and `SUBSCRIBE`s to `{kw:p:NAME}:wake`;
//! 2. sets the marker `{kw:p:NAME}:waiting` (`PX` [`MARKER_TTL`], renewed
//!    every [`MARKER_REFRESH`], so a crashed process leaves it for
//!    seconds, not forever);
//! 3. serves: leases with the normal lease script and hands each key to
//!    the oldest waiter, until a lease answers `no_free_key`, whose
//!    `retry_after` is the pool's next lease, cooldown or quarantine end;
//! 4. sleeps until a message, a new waiter, that deadline (a known next
//!    event, not polling: expiry wakes waiters at the deadline, not at the
//!    reaper's tick) or the marker's renewal; then serves again. Another
//!    process may win the key: the lease answers `no_free_key` and the
//!    watcher sleeps again.
//!
//! The subscription and the marker are in place before step 3's first
//! lease, so a key freed after that lease is announced, and one freed
//! before it is found by it: no wake-up is lost.
//!
//! The scripts that free a key or move a deadline (release, enable, add,
//! the reaper's expiry step) run `wake()` (`pool_common.lua`): one
//! `EXISTS` of the marker, and a `PUBLISH` only while some process waits
//! for the pool. Lease and release get no extra round trip.
//!
//! On Redis Cluster this is a plain `PUBLISH`, which the cluster bus
//! broadcasts to every node, so a watcher subscribes on any one seed node.
//! Sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`) would keep the message on the
//! pool's shard, but the subscriber would have to follow the slot's owner
//! through failovers and resharding; the broadcast costs only while some
//! process waits (the marker), so the simpler, move-proof path wins.
//!
//! A waiter that leaves (timed out, or its request future dropped when its
//! client went away) leaves the FIFO under the lock; a key handed to it in
//! that instant goes to the next waiter, or back to free by a release with
//! its lease id in a spawned task (fencing makes a late release harmless).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use redis::{PushInfo, PushKind};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::scripts::{self, Call, Family, POOL_WAITING, POOL_WAKE};
use super::{Ctx, Inner, lock};
use crate::core::{KeyView, Name};
use crate::store::backoff::Backoff;
use crate::store::waiters::{Ticket, Waiters};
use crate::store::{ErrorChain, MAX_WAIT, StoreError};

/// How long a process's waiting marker outlives its last renewal.
const MARKER_TTL: Duration = Duration::from_secs(15);
/// How often a watcher renews the marker while its pool has waiters.
const MARKER_REFRESH: Duration = Duration::from_secs(5);
/// Most leases one serving round makes before the watcher looks at its
/// wake-ups again.
const SERVE_BOUND: usize = 1024;
/// Retry waits after a failed subscription or lease (Redis down).
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// This process's waiters and the watcher of each pool they wait for,
/// under one lock so a watcher never leaves while a waiter joins.
#[derive(Debug, Default)]
pub(super) struct WaitState {
    waiters: Waiters,
    watchers: HashMap<Name, Watch>,
}

#[derive(Debug)]
struct Watch {
    /// Wakes the watcher: a waiter joined or left, or shutdown.
    kick: Arc<Notify>,
    /// When the pool's first key frees by itself, as the watcher's last
    /// lease learnt; a timed-out waiter answers with it.
    next_free: Option<Instant>,
}

impl WaitState {
    /// Queues a waiter and makes sure a watcher serves the pool (kicking
    /// it, or spawning one). `None` after `stop_waiting`. O(log w).
    fn join(
        &mut self,
        inner: &Arc<Inner>,
        pool: &Name,
    ) -> Option<(Ticket, oneshot::Receiver<KeyView>)> {
        let queued = self.waiters.push(pool, None)?;
        if let Some(watch) = self.watchers.get(pool) {
            watch.kick.notify_one();
        } else {
            let kick = Arc::new(Notify::new());
            self.watchers.insert(
                pool.clone(),
                Watch {
                    kick: Arc::clone(&kick),
                    next_free: None,
                },
            );
            tokio::spawn(watch(Arc::clone(inner), pool.clone(), kick));
        }
        Some(queued)
    }

    fn kick(&self, pool: &Name) {
        if let Some(watch) = self.watchers.get(pool) {
            watch.kick.notify_one();
        }
    }

    /// Answers every waiter `ShuttingDown` (their channels close) and
    /// refuses new ones; watchers see no waiters and end. O(w + pools).
    pub(super) fn close(&mut self) {
        self.waiters.close();
        for watch in self.watchers.values() {
            watch.kick.notify_one();
        }
    }

    /// A deleted pool's waiters answer `no_free_key` now. O(w).
    pub(super) fn forget(&mut self, pool: &Name) {
        self.waiters.forget(pool);
        self.kick(pool);
    }
}

/// `lease_key_waiting`: leases now if a key is free and nobody of this
/// process waits before; else joins the pool's FIFO until handed a key
/// or `wait` (at most [`MAX_WAIT`]) is over. One lease script when a key
/// is free; O(log w) locally per hand-over.
pub(super) async fn lease_waiting(
    inner: &Arc<Inner>,
    pool: &Name,
    wait: Duration,
    ctx: &Ctx<'_>,
) -> Result<KeyView, StoreError> {
    if wait.is_zero() {
        return inner
            .key_op_in(pool, &scripts::LeaseKey {}, Some(ctx))
            .await;
    }
    let until = Instant::now() + wait.min(MAX_WAIT);
    // Waiters of this process come first: join behind them.
    if !lock(&inner.waiting).waiters.waiting(pool) {
        match lease_detached(inner, pool, ctx).await {
            Err(StoreError::NoFreeKey { .. }) => {}
            other => return other,
        }
    }
    let (ticket, rx) = lock(&inner.waiting)
        .join(inner, pool)
        .ok_or(StoreError::ShuttingDown)?;
    let mut guard = WaitGuard {
        inner,
        pool,
        ticket,
        rx,
    };
    let handed = tokio::select! {
        handed = &mut guard.rx => match handed {
            Ok(view) => view,
            Err(_) => return Err(guard.closed()),
        },
        () = tokio::time::sleep_until(until) => match guard.give_up(ctx).await? {
            GaveUp::Handed(view) => view,
            GaveUp::Leased(view) => return Ok(view),
        },
    };
    match ctx.idem {
        None => Ok(handed),
        Some(_) => claim_detached(inner, pool, handed, ctx).await,
    }
}

/// Records a key the watcher leased for a waiting request under the
/// request's idempotency key, in a task of its own (see [`detached`]): if
/// an earlier request with that key was recorded meanwhile (another
/// process), that answer is the one given and this key goes back; a
/// request dropped meanwhile gives its key back with its record. One
/// script. A crash between the watcher's lease and this claim leaves the
/// key leased, unrecorded, until its lease ends.
async fn claim_detached(
    inner: &Arc<Inner>,
    pool: &Name,
    view: KeyView,
    ctx: &Ctx<'_>,
) -> Result<KeyView, StoreError> {
    let args = scripts::ClaimKey {
        key: view.key.clone(),
        lease_id: view.lease.map_or(0, |l| l.id),
    };
    detached(inner, pool, ctx, args, move |inner, pool, got, replayed| {
        if replayed || got.is_err() {
            // Ours is not the answer: free the key this process leased.
            give_back(inner, pool, view, None);
        }
    })
    .await
}

/// Leases in a task of its own (see [`detached`]). One lease script.
async fn lease_detached(
    inner: &Arc<Inner>,
    pool: &Name,
    ctx: &Ctx<'_>,
) -> Result<KeyView, StoreError> {
    detached(inner, pool, ctx, scripts::LeaseKey {}, |_, _, _, _| {}).await
}

/// Runs the key script `args`, with the request's idempotency key, in a
/// task of its own, so a request dropped while the script runs (its
/// client went away) cannot leave a key leased to nobody: a key nobody
/// takes goes to this process's next waiter of the pool, or back to free
/// with its record. `answered` sees the answer in the task first, and
/// whether it was replayed (a replay leased nothing now).
async fn detached<A: Call + Send + Sync + 'static>(
    inner: &Arc<Inner>,
    pool: &Name,
    ctx: &Ctx<'_>,
    args: A,
    answered: impl FnOnce(&Arc<Inner>, &Name, &Result<KeyView, StoreError>, bool) + Send + 'static,
) -> Result<KeyView, StoreError> {
    let (tx, rx) = oneshot::channel();
    let busy = Busy::new(inner);
    let (task_inner, task_pool, idem) = (Arc::clone(inner), pool.clone(), ctx.idem.cloned());
    tokio::spawn(async move {
        let _busy = busy;
        let call = Ctx {
            idem: idem.as_ref(),
            replayed: AtomicBool::new(false),
        };
        let got = task_inner.key_op_in(&task_pool, &args, Some(&call)).await;
        let replayed = call.replayed.load(Ordering::Acquire);
        answered(&task_inner, &task_pool, &got, replayed);
        if let Err(Ok((view, false))) = tx.send(got.map(|v| (v, replayed))) {
            let forget = idem.map(|i| i.key.as_str().to_owned());
            unclaimed(&task_inner, &task_pool, view, forget);
        }
    });
    detached_answer(inner, pool, rx, ctx).await
}

/// What a detached task sends: the key, and whether it is an answer
/// recorded earlier for the idempotency key.
type Detached = Result<(KeyView, bool), StoreError>;

/// Waits for a detached task's answer, noting a replay in `ctx`.
async fn detached_answer(
    inner: &Arc<Inner>,
    pool: &Name,
    rx: oneshot::Receiver<Detached>,
    ctx: &Ctx<'_>,
) -> Result<KeyView, StoreError> {
    let mut answer = Answer {
        inner,
        pool,
        rx,
        forget: ctx.idem.map(|i| i.key.as_str().to_owned()),
    };
    let (view, replayed) = (&mut answer.rx)
        .await
        .unwrap_or_else(|_| Err(super::unavailable("the lease task ended without an answer")))?;
    if replayed {
        ctx.replayed.store(true, Ordering::Release);
    }
    Ok(view)
}

/// The answer of a detached task; a key that arrived after its request
/// was dropped is not lost with it (nor is its idempotency record kept).
struct Answer<'a> {
    inner: &'a Arc<Inner>,
    pool: &'a Name,
    rx: oneshot::Receiver<Detached>,
    forget: Option<String>,
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Ok((view, false))) = self.rx.try_recv() {
            unclaimed(self.inner, self.pool, view, self.forget.take());
        }
    }
}

/// A key leased for a request that went away: this process's next waiter
/// of the pool takes it, else it is released. A key recorded for the
/// request's idempotency key (`forget`) is released with its record
/// instead, so a retry leases anew and no record names a key another
/// request holds.
fn unclaimed(inner: &Arc<Inner>, pool: &Name, view: KeyView, forget: Option<String>) {
    if forget.is_some() {
        give_back(inner, pool, view, forget);
        return;
    }
    let back = lock(&inner.waiting).waiters.hand(pool, view);
    if let Err(view) = back {
        give_back(inner, pool, view, None);
    }
}

/// Work of this process that may still hold a key nobody will answer
/// with (a lease for a waiter, a give-back): `flush` waits for it, so a
/// caller that dropped a waiter then reads the pool sees it settled.
#[derive(Debug, Default)]
pub(super) struct Inflight {
    count: AtomicUsize,
    idle: Notify,
}

/// One unit of [`Inflight`] work, ended on drop.
struct Busy(Arc<Inner>);

impl Busy {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.inflight.count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(inner))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.inflight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inflight.idle.notify_waiters();
        }
    }
}

/// Until no [`Inflight`] work is left, at most `within` (each unit is
/// one or two script calls, each bounded by the response timeout).
pub(super) async fn settle(inner: &Inner, within: Duration) {
    let until = Instant::now() + within;
    // Bounded by `until`: each pass waits for a notification or the end.
    while inner.inflight.count.load(Ordering::Acquire) > 0 {
        let idle = inner.inflight.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if inner.inflight.count.load(Ordering::Acquire) == 0 {
            return;
        }
        if tokio::time::timeout_at(until, idle).await.is_err() {
            return;
        }
    }
}

/// How a wait that ran out ended with a key: handed by the watcher at the
/// last moment (to be claimed), or leased (and recorded) by a last try.
enum GaveUp {
    Handed(KeyView),
    Leased(KeyView),
}

/// A queued waiter. Dropped before it took its key (timed out, or its
/// request future dropped), it leaves the FIFO; a key handed to it in that
/// instant goes to the next waiter or back to free.
struct WaitGuard<'a> {
    inner: &'a Arc<Inner>,
    pool: &'a Name,
    ticket: Ticket,
    rx: oneshot::Receiver<KeyView>,
}

impl WaitGuard<'_> {
    /// Why the channel closed without a key: shutdown, or the pool was
    /// deleted.
    fn closed(&self) -> StoreError {
        if lock(&self.inner.waiting).waiters.is_closed() {
            StoreError::ShuttingDown
        } else {
            StoreError::NoFreeKey { retry_after: None }
        }
    }

    /// The wait is over: a key handed at the last moment, else what a
    /// lease gives now (unless other waiters of this process come first:
    /// then `no_free_key` with the watcher's last known deadline).
    async fn give_up(&mut self, ctx: &Ctx<'_>) -> Result<GaveUp, StoreError> {
        let next_free = {
            let mut state = lock(&self.inner.waiting);
            if !state.waiters.remove(self.pool, self.ticket) {
                drop(state);
                return self
                    .rx
                    .try_recv()
                    .map(GaveUp::Handed)
                    .map_err(|_| self.closed());
            }
            state.kick(self.pool);
            if !state.waiters.waiting(self.pool) {
                None
            } else {
                Some(state.watchers.get(self.pool).and_then(|w| w.next_free))
            }
        };
        match next_free {
            None => lease_detached(self.inner, self.pool, ctx)
                .await
                .map(GaveUp::Leased),
            Some(at) => Err(StoreError::NoFreeKey {
                retry_after: at.and_then(|at| {
                    let left = at.saturating_duration_since(Instant::now());
                    crate::core::Ttl::from_millis(left.as_millis().max(1) as u64)
                }),
            }),
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.waiting);
        if state.waiters.remove(self.pool, self.ticket) {
            state.kick(self.pool);
            return;
        }
        // Handed a key it will not answer with (hand-overs happen under
        // this lock, so it is in the channel now): the next waiter's, or
        // free again.
        self.rx.close();
        let Ok(view) = self.rx.try_recv() else {
            return;
        };
        if let Err(view) = state.waiters.hand(self.pool, view) {
            drop(state);
            give_back(self.inner, self.pool, view, None);
        }
    }
}

/// Releases a key leased for a waiter that left, in a task (a drop cannot
/// wait). Its lease id fences it: if the lease ended meanwhile, nothing
/// happens. Without a runtime the lease simply runs out.
fn give_back(inner: &Arc<Inner>, pool: &Name, view: KeyView, forget: Option<String>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let busy = Busy::new(inner);
    let (inner, pool) = (Arc::clone(inner), pool.clone());
    runtime.spawn(async move {
        let _busy = busy;
        if let Err(e) = release(&inner, &pool, view, forget).await {
            tracing::warn!(pool = %pool, error = %ErrorChain(&e), "could not free a key a waiter left");
        }
    });
}

/// Ends the lease of `view` (outcome ok), with its lease id. One script.
async fn release(
    inner: &Inner,
    pool: &Name,
    view: KeyView,
    forget: Option<String>,
) -> Result<(), StoreError> {
    let args = scripts::ReportKey {
        key: view.key,
        lease_id: view.lease.map(|l| l.id),
        outcome: "ok",
        retry_after_ms: None,
        reason: None,
        forget,
    };
    inner.key_op(pool, &args).await.map(drop)
}

/// Whether the watcher of `pool` (`kick`) still has waiters; if not it is
/// unregistered, under the lock, so the next waiter starts a new one.
fn still_needed(inner: &Inner, pool: &Name, kick: &Arc<Notify>) -> bool {
    let mut state = lock(&inner.waiting);
    if state.waiters.waiting(pool) {
        return true;
    }
    if state
        .watchers
        .get(pool)
        .is_some_and(|w| Arc::ptr_eq(&w.kick, kick))
    {
        state.watchers.remove(pool);
    }
    false
}

/// The watcher of one pool in this process: see the module docs. Ends
/// when the pool has no waiters left here; its connection (and so its
/// subscription) ends with it.
async fn watch(inner: Arc<Inner>, pool: Name, kick: Arc<Notify>) {
    let prefix = Family::Pool.prefix(&pool);
    let channel = format!("{prefix}{POOL_WAKE}");
    let marker = format!("{prefix}{POOL_WAITING}");
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    while still_needed(&inner, &pool, &kick) {
        let (tx, mut pushes) = mpsc::unbounded_channel();
        let subscribed = inner.connector.subscribe(&channel, &tx).await;
        let _conn = match subscribed {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(pool = %pool, error = %ErrorChain(&e), "waiting leases cannot subscribe to wake-ups");
                pause(&kick, backoff.next_wait()).await;
                continue;
            }
        };
        let mut renew_at = Instant::now();
        // Bounded by the waiters: each pass serves or sleeps until an
        // event; it ends with them, or with the connection.
        while still_needed(&inner, &pool, &kick) {
            if Instant::now() >= renew_at {
                if let Err(e) = set_marker(&inner, &marker).await {
                    tracing::warn!(pool = %pool, error = %ErrorChain(&e), "waiting leases cannot mark the pool");
                    pause(&kick, backoff.next_wait()).await;
                    break;
                }
                renew_at = Instant::now() + MARKER_REFRESH;
            }
            // Wake-ups that arrived meanwhile are answered by this round.
            let mut gone = drain(&mut pushes);
            let next = serve(&inner, &pool, &mut backoff).await;
            if gone {
                break;
            }
            let deadline = next.map_or(renew_at, |at| at.min(renew_at));
            tokio::select! {
                push = pushes.recv() => gone = is_gone(push.as_ref()),
                () = kick.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            if gone {
                break;
            }
        }
    }
}

/// Sleeps `wait`, or less if kicked (shutdown, the last waiter left).
async fn pause(kick: &Notify, wait: Duration) {
    tokio::select! {
        () = kick.notified() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

/// `SET marker 1 PX MARKER_TTL`. O(1).
async fn set_marker(inner: &Inner, marker: &str) -> Result<(), StoreError> {
    inner
        .query(
            redis::cmd("SET")
                .arg(marker)
                .arg(1)
                .arg("PX")
                .arg(MARKER_TTL.as_millis() as u64),
        )
        .await
        .map(drop)
}

/// Empties the wake-ups queued so far; whether the connection ended.
fn drain(pushes: &mut mpsc::UnboundedReceiver<PushInfo>) -> bool {
    let mut gone = false;
    // At most what is queued now.
    for _ in 0..pushes.len() {
        match pushes.try_recv() {
            Ok(push) => gone |= is_gone(Some(&push)),
            Err(_) => break,
        }
    }
    gone
}

fn is_gone(push: Option<&PushInfo>) -> bool {
    push.is_none_or(|p| p.kind == PushKind::Disconnection)
}

/// Leases keys for the pool's waiters, oldest first, until a lease
/// answers `no_free_key` or nobody waits; returns when to look again by
/// itself: the pool's next lease, cooldown or quarantine end, or a retry
/// after a failure. O(log n) in Redis per key handed.
async fn serve(inner: &Arc<Inner>, pool: &Name, backoff: &mut Backoff) -> Option<Instant> {
    for _ in 0..SERVE_BOUND {
        // Before the check: a waiter dropped after it finds this lease in
        // flight when it settles.
        let _busy = Busy::new(inner);
        if !lock(&inner.waiting).waiters.waiting(pool) {
            return None;
        }
        match inner.key_op(pool, &scripts::LeaseKey {}).await {
            Ok(view) => {
                backoff.reset();
                let back = lock(&inner.waiting).waiters.hand(pool, view);
                if let Err(view) = back {
                    // Every waiter left meanwhile.
                    give_back(inner, pool, view, None);
                    return None;
                }
            }
            Err(StoreError::NoFreeKey { retry_after }) => {
                backoff.reset();
                let at = retry_after.map(|t| Instant::now() + Duration::from_millis(t.as_millis()));
                if let Some(watch) = lock(&inner.waiting).watchers.get_mut(pool) {
                    watch.next_free = at;
                }
                return at;
            }
            Err(e) => {
                tracing::warn!(pool = %pool, error = %ErrorChain(&e), "waiting leases cannot lease");
                return Some(Instant::now() + backoff.next_wait());
            }
        }
    }
    Some(Instant::now())
}
