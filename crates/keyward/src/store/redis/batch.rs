//! Leases and releases of one pool, batched: the way the SQLite journal
//! shares one commit, calls that arrive while the pool's previous batch is
//! in Redis wait for it and then go together, in one `EVALSHA` of the
//! batch script (`scripts::batch_source`, `lua/batch.lua`).
//!
//! A script call costs Redis a fixed head (the command, the prelude, the
//! clock, the pool's settings) and keyward a round trip; a batch pays them
//! once for all its calls. With one call at a time nothing waits: the
//! batch holds that call alone and goes at once.
//!
//! At most one batch per pool is in flight from this process, run by a
//! task of its own, so a caller that goes away (a timeout, a closed
//! connection) never strands the calls queued behind it. A call's outcome
//! is the same as a script of its own: the same bodies, wrapped the same
//! way for idempotency records; only the order among calls that were all
//! unanswered is the batch's, and any such order is one they could have
//! run in.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use redis::{RedisError, Script, Value};
use tokio::sync::oneshot;

use super::connection::Handle;
use super::lock;

/// Most calls in one batch: bounds how long one script holds Redis (each
/// call is O(log n) plus the bounded lazy expiry). The rest go next.
const MAX_BATCH: usize = 64;

/// A call waiting for its batch: its ARGV entries (see
/// `scripts::batch_argv`), its `now` argument, and where its reply goes.
struct Queued {
    argv: Vec<String>,
    now: String,
    reply: oneshot::Sender<Result<Value, RedisError>>,
}

/// The calls waiting per pool, by the pool's routing key. A pool is in the
/// map while its batch task runs: the task removes it when nothing waits.
#[derive(Default)]
pub(super) struct Batches {
    queues: Mutex<HashMap<String, Vec<Queued>>>,
}

impl Batches {
    /// Runs one call (`argv` from `scripts::batch_argv`) of the pool with
    /// routing key `routing` and key prefix `prefix` in the next batch, and
    /// returns its reply. Starts the pool's batch task if none runs, with
    /// `handle` and `script`. O(1) here besides the batch itself.
    pub(super) async fn run(
        self: &Arc<Self>,
        handle: Handle,
        script: &Arc<Script>,
        routing: &str,
        prefix: String,
        now: String,
        argv: Vec<String>,
    ) -> Result<Value, RedisError> {
        let (reply, answer) = oneshot::channel();
        let call = Queued { argv, now, reply };
        let first = match lock(&self.queues).entry(routing.to_owned()) {
            Entry::Occupied(mut queue) => {
                queue.get_mut().push(call);
                None
            }
            Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                Some(call)
            }
        };
        if let Some(first) = first {
            tokio::spawn(Arc::clone(self).drain(
                handle,
                Arc::clone(script),
                routing.to_owned(),
                prefix,
                first,
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                redis::ErrorKind::Client,
                "the batch of this call ended without a reply",
            )))
        })
    }

    /// The pool's batch task: runs `first`, then whatever queued meanwhile,
    /// [`MAX_BATCH`] at a time, until nothing waits.
    async fn drain(
        self: Arc<Self>,
        mut handle: Handle,
        script: Arc<Script>,
        routing: String,
        prefix: String,
        first: Queued,
    ) {
        let mut batch = vec![first];
        loop {
            let mut invocation = script.key(&routing);
            invocation.arg(&prefix).arg(&batch[0].now);
            for call in &batch {
                for arg in &call.argv {
                    invocation.arg(arg);
                }
            }
            let result = handle.eval(&invocation).await;
            answer(batch, result);
            let mut queues = lock(&self.queues);
            let Some(queue) = queues.get_mut(&routing) else {
                return;
            };
            if queue.is_empty() {
                queues.remove(&routing);
                return;
            }
            let n = queue.len().min(MAX_BATCH);
            batch = queue.drain(..n).collect();
        }
    }
}

/// Hands each call of `batch` its own reply, or the batch's error.
fn answer(batch: Vec<Queued>, result: Result<Value, RedisError>) {
    let replies = match result {
        Ok(Value::Array(replies)) if replies.len() == batch.len() => Ok(replies),
        Ok(other) => Err(RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected reply to a batch",
            format!("{other:?}"),
        ))),
        Err(e) => Err(e),
    };
    match replies {
        // A caller may have gone; its call ran all the same, as a script
        // of its own would have.
        Ok(replies) => {
            for (call, reply) in batch.into_iter().zip(replies) {
                let _ = call.reply.send(Ok(reply));
            }
        }
        Err(e) => {
            for call in batch {
                let _ = call.reply.send(Err(e.clone()));
            }
        }
    }
}
