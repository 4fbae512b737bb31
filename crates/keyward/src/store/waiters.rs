//! Lease requests waiting for a key (`wait_ms`), first come first served
//! per pool, within one process.
//!
//! Each waiter is a oneshot channel the store hands a leased key into.
//! A queue is a `BTreeMap` by arrival number, so the oldest waiter is the
//! first entry and a waiter that leaves (timed out, client gone) is
//! removed in O(log w) without a scan. The store keeps this under the same
//! lock as the pools (local stores), so handing a freed key to a waiter is
//! part of the state change that freed it.
//!
//! Nobody waiting costs one comparison: [`Waiters::waiting`].

use std::collections::{BTreeMap, HashMap};

use tokio::sync::oneshot;

use super::Idem;
use crate::core::{KeyView, Name};

/// Where a waiter is in its pool's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// What a waiter receives: a key leased for it.
pub(crate) type Handed = KeyView;

/// One queued lease: where its key goes, and its idempotency key, so the
/// hand-over records the answer in the same change (local stores).
#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Handed>,
    idem: Option<Idem>,
}

/// The waiters of every pool.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    queues: HashMap<Name, BTreeMap<u64, Waiter>>,
    next: u64,
    count: usize,
    closed: bool,
}

impl Waiters {
    /// Whether anyone waits for `pool`. O(1).
    pub(crate) fn waiting(&self, pool: &Name) -> bool {
        self.count > 0 && self.queues.contains_key(pool)
    }

    /// Whether [`Waiters::close`] ran. O(1).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Queues a waiter at the back; `None` once [`Waiters::close`] ran
    /// (the server is shutting down). O(log w).
    pub(crate) fn push(
        &mut self,
        pool: &Name,
        idem: Option<Idem>,
    ) -> Option<(Ticket, oneshot::Receiver<Handed>)> {
        if self.closed {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.queues
            .entry(pool.clone())
            .or_default()
            .insert(self.next, Waiter { tx, idem });
        self.count += 1;
        Some((Ticket(self.next), rx))
    }

    /// Takes a waiter out of the queue; `false` if it was no longer there
    /// (it was handed a key, or the queues were closed). O(log w).
    pub(crate) fn remove(&mut self, pool: &Name, ticket: Ticket) -> bool {
        let Some(queue) = self.queues.get_mut(pool) else {
            return false;
        };
        let removed = queue.remove(&ticket.0).is_some();
        if removed {
            self.count -= 1;
            if queue.is_empty() {
                self.queues.remove(pool);
            }
        }
        removed
    }

    /// Hands `key` to the oldest waiter of `pool` whose receiver is still
    /// there, and returns that waiter's idempotency key. Returns the key
    /// back if every waiter has gone (or there were none), so the caller
    /// frees it again. O(log w) per waiter tried; a waiter found gone is
    /// removed for good.
    pub(crate) fn hand(&mut self, pool: &Name, key: Handed) -> Result<Option<Idem>, Handed> {
        let mut key = key;
        loop {
            let Some(queue) = self.queues.get_mut(pool) else {
                return Err(key);
            };
            let Some((_, waiter)) = queue.pop_first() else {
                self.queues.remove(pool);
                return Err(key);
            };
            self.count -= 1;
            if queue.is_empty() {
                self.queues.remove(pool);
            }
            match waiter.tx.send(key) {
                Ok(()) => return Ok(waiter.idem),
                Err(back) => key = back,
            }
        }
    }

    /// Drops every waiter (each sees its channel closed) and refuses new
    /// ones: for shutdown. O(w).
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.queues.clear();
        self.count = 0;
    }

    /// Drops the queue of a deleted pool: its waiters see their channel
    /// closed and answer `no_free_key`. O(w) for its w waiters.
    pub(crate) fn forget(&mut self, pool: &Name) {
        if let Some(queue) = self.queues.remove(pool) {
            self.count -= queue.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Handed {
        KeyView {
            key: k.into(),
            ..KeyView::default()
        }
    }

    fn pool() -> Name {
        Name::parse("p").expect("a valid name")
    }

    #[test]
    fn keys_go_to_the_oldest_waiter_first() {
        let mut w = Waiters::default();
        let (_, mut first) = w.push(&pool(), None).expect("open");
        let (_, mut second) = w.push(&pool(), None).expect("open");
        assert!(w.hand(&pool(), key("a")).is_ok());
        assert_eq!(first.try_recv().expect("handed").key, "a");
        assert!(second.try_recv().is_err());
        assert!(w.hand(&pool(), key("b")).is_ok());
        assert_eq!(second.try_recv().expect("handed").key, "b");
        assert!(!w.waiting(&pool()));
    }

    #[test]
    fn a_waiter_that_left_is_skipped_and_the_key_comes_back_when_none_is_left() {
        let mut w = Waiters::default();
        let (_, gone) = w.push(&pool(), None).expect("open");
        let (ticket, _kept) = w.push(&pool(), None).expect("open");
        drop(gone);
        assert!(w.remove(&pool(), ticket));
        assert_eq!(
            w.hand(&pool(), key("a")).map(|_| ()).map_err(|k| k.key),
            Err("a".into())
        );
        assert!(!w.waiting(&pool()));
    }

    #[test]
    fn a_removed_waiter_is_not_handed_anything_and_close_refuses_new_ones() {
        let mut w = Waiters::default();
        let (ticket, mut rx) = w.push(&pool(), None).expect("open");
        assert!(w.remove(&pool(), ticket));
        assert!(!w.remove(&pool(), ticket));
        assert!(w.hand(&pool(), key("a")).is_err());
        assert!(rx.try_recv().is_err());
        let (_, mut rx) = w.push(&pool(), None).expect("open");
        w.close();
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(w.push(&pool(), None).is_none());
    }
}
