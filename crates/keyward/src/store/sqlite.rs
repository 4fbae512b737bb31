//! The durable record of the local engine: SQLite in WAL mode with
//! `synchronous=FULL`, written by one thread in group commits.
//!
//! The engine applies each operation to RAM under its lock and, still under
//! the lock, hands the resulting rows to the `Journal` with a sequence
//! number. The writer thread drains whatever is queued (up to
//! `MAX_BATCH` entries), writes it in one transaction, commits, and only
//! then publishes the new durable sequence number. Every reply waits for
//! the sequence number of the state it saw, so no reply reveals a change a
//! crash could still undo, and 64 clients share one fsync.
//!
//! A failed commit (disk full, I/O error) makes the waiting requests fail
//! with `Unavailable`; the batch stays queued and is retried with backoff,
//! so RAM and disk agree again once the disk recovers.
//!
//! One process per database: `open` takes the lock file's lock first
//! (`files::DbLock`) and the writer holds it until the database is
//! closed. The writer also checks, after each commit and before
//! acknowledging it, that the database, its WAL and the lock file are
//! still the files on disk (`files::Watch`); once one was deleted or
//! replaced nothing more can be made durable, so every write fails from
//! then on.
//!
//! Reading back, and refusing rows that make no sense, is `load`'s job.
//!
//! Deleting a pool or keyspace must answer at once whatever its size, and
//! its name must be free for a new, empty one at once. So a pool's rows
//! in `keys` and `leases` (a keyspace's in `marks` and `batches`) are filed under
//! its `rows_key`: its name, or `NAME/N` for one created while an older
//! pool of that name is still being reclaimed (`/` cannot occur in a
//! name). The deletion removes the `pools` (`keyspaces`) row and files the
//! `rows_key` in `reclaim` in the transaction that acknowledges it; the
//! writer then deletes the filed rows `RECLAIM_STEP` at a time while it
//! has nothing else to do, and `load` ignores rows filed there, so a
//! restart in the middle neither resurrects the pool nor stops on its
//! rows, and the writer carries on.
//!
//! A key's row in `keys` holds everything about it but its lease: its
//! state apart from a lease (`free`, `cooling`, `quarantined`,
//! `disabled`), labels, cooldown or quarantine end (`available_at_ms`,
//! as durable as a lease deadline), reason, failures and quarantines in a
//! row; `alive_until_ms` is NULL for a key with no keep-alive. A key with
//! a `leases` row is leased, and its `state` is `free` (the state it
//! leaves when the lease begins and returns to when it ends `ok`). So a
//! lease or a plain release (`KeyChange::Lease`) writes only the small
//! `leases` table, never a page of `keys`, as in schema 2; the view
//! `key_states` shows each key with its whole state (`leased` included).
//!
//! Label sets are stored once each, in `label_sets` (canonical JSON text,
//! unique), and a key refers to its set by `labels_id` (NULL: no labels):
//! 10^6 keys imported with one set cost one row of text, not 10^6. Sets no
//! key refers to any more are removed when the database is opened
//! (`open`), so they never outgrow the distinct sets in use since the last
//! start.
//!
//! Idempotency records (`idempotency`) are rows of their own, written in
//! the transaction of the change they answer and deleted by the reaper
//! when they expire; they are not filed under a pool's `rows_key`, so a
//! deletion's record outlives the pool it deleted.
//!
//! A keyspace's row holds its definition, issue counter and
//! `max_activations`. Issued tokens have no rows: `batches` holds the
//! counter ranges issued under a batch name (`first`, `end` as decimal
//! text), and `marks` one row per token that was ever activated or revoked
//! (its display form; `activations` a JSON array of `[fingerprint or null,
//! at_ms]`, oldest first; `revoked_at_ms` and `reason`), rewritten whole
//! on each change to the token (at most 1000 activations) and deleted when
//! its last activation goes and it is not revoked.
//!
//! Tables (readable with the `sqlite3` shell): `pools`, `keys`, `leases`,
//! `label_sets`, `keyspaces`, `batches`, `marks`, `reclaim`,
//! `idempotency`, `schema_version`; view `key_states`.

mod files;
mod load;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use super::StoreError;
use super::backoff::Backoff;
use super::idempotency::{Entry, IdemKey, Records, Scope};
use crate::core::{
    BatchRange, KeyChange, KeyState, Keyspace, KeyspaceSpec, Labels, Marks, MaxActivations, Name,
    Pool, PoolSettings, Secret,
};
use files::{DbLock, Vanished, Watch};

/// Most journal entries written in one transaction.
pub(crate) const MAX_BATCH: usize = 4096;
/// How often an idle writer checks that the database files are still there,
/// so `/readyz` notices a deleted file without waiting for a write.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Waits between retries of a failed commit: from the first to the longest.
const COMMIT_RETRY_MIN: Duration = Duration::from_millis(50);
const COMMIT_RETRY_MAX: Duration = Duration::from_secs(2);
/// `PRAGMA application_id` of a keyward database ("KWRD").
const APPLICATION_ID: i32 = 0x4B57_5244;
/// Schema version this build writes; older files are migrated forward.
const SCHEMA_VERSION: i64 = 7;
/// Most rows of a deleted pool or keyspace removed per reclaim commit, so
/// reclaiming 10^6 keys never holds the writer for long.
const RECLAIM_STEP: i64 = 10_000;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE pools (
        name TEXT PRIMARY KEY,
        lease_ttl_ms INTEGER NOT NULL,
        keepalive_ttl_ms INTEGER NOT NULL,
        key_length INTEGER NOT NULL,
        last_lease_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE keys (
        pool TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        alive_until_ms INTEGER NOT NULL,
        lease_id INTEGER,
        leased_until_ms INTEGER,
        PRIMARY KEY (pool, key)
    ) WITHOUT ROWID;
    CREATE TABLE keyspaces (
        name TEXT PRIMARY KEY,
        alphabet TEXT NOT NULL,
        length INTEGER NOT NULL,
        secret BLOB NOT NULL,
        issued TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE activations (
        keyspace TEXT NOT NULL,
        token TEXT NOT NULL,
        activated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (keyspace, token)
    ) WITHOUT ROWID;",
    // 2: leases in a table of their own. Lease and release are the hot
    // path; in `keys` each one rewrote a page of a table as big as the
    // pool, here it touches a table as small as the number of leases.
    "CREATE TABLE leases (
        pool TEXT NOT NULL,
        key TEXT NOT NULL,
        lease_id INTEGER NOT NULL,
        leased_until_ms INTEGER NOT NULL,
        PRIMARY KEY (pool, key)
    ) WITHOUT ROWID;
    INSERT INTO leases (pool, key, lease_id, leased_until_ms)
        SELECT pool, key, lease_id, leased_until_ms FROM keys
        WHERE lease_id > 0 AND leased_until_ms IS NOT NULL;
    ALTER TABLE keys DROP COLUMN lease_id;
    ALTER TABLE keys DROP COLUMN leased_until_ms;",
    // 3: deletion. `rows_key` (NULL: the name) is what the pool's rows in
    // `keys`/`leases` (the keyspace's in `activations`) are filed under;
    // `reclaim` lists the row sets of deleted ones still to be removed.
    // AUTOINCREMENT: its ids never repeat, so `NAME/id` names a new row
    // set once.
    "ALTER TABLE pools ADD COLUMN rows_key TEXT;
    ALTER TABLE keyspaces ADD COLUMN rows_key TEXT;
    CREATE TABLE reclaim (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('pool', 'keyspace')),
        rows_key TEXT NOT NULL
    );",
    // 4: credential pools (see the module doc). Pools gain their recovery
    // settings (the defaults are `Recovery::default()`, checked by a test)
    // and the no-keep-alive flag; keys gain their state apart from a
    // lease, labels, deadline, reason and counters, and `alive_until_ms`
    // becomes nullable, which SQLite allows only by rebuilding the table
    // (once, O(rows)). Existing keys are free (or leased, by their
    // `leases` row) with no labels and no failures. A later migration
    // that rebuilds `keys` must drop the view first.
    "ALTER TABLE pools ADD COLUMN cooldown_ms INTEGER NOT NULL DEFAULT 60000;
    ALTER TABLE pools ADD COLUMN max_failures INTEGER NOT NULL DEFAULT 3;
    ALTER TABLE pools ADD COLUMN quarantine_ms INTEGER NOT NULL DEFAULT 300000;
    ALTER TABLE pools ADD COLUMN no_keepalive INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE label_sets (
        id INTEGER PRIMARY KEY,
        labels TEXT NOT NULL UNIQUE
    );
    CREATE TABLE keys_v4 (
        pool TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        alive_until_ms INTEGER,
        state TEXT NOT NULL DEFAULT 'free',
        available_at_ms INTEGER,
        reason TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        quarantines INTEGER NOT NULL DEFAULT 0,
        labels_id INTEGER,
        PRIMARY KEY (pool, key)
    ) WITHOUT ROWID;
    INSERT INTO keys_v4 (pool, key, created_at_ms, alive_until_ms)
        SELECT pool, key, created_at_ms, alive_until_ms FROM keys;
    DROP TABLE keys;
    ALTER TABLE keys_v4 RENAME TO keys;
    CREATE VIEW key_states AS
        SELECT k.pool, k.key,
            CASE WHEN l.key IS NULL THEN k.state ELSE 'leased' END AS state,
            k.created_at_ms, k.alive_until_ms, l.lease_id, l.leased_until_ms,
            k.available_at_ms, k.reason, k.failures, k.quarantines, s.labels
        FROM keys k
        LEFT JOIN leases l ON l.pool = k.pool AND l.key = k.key
        LEFT JOIN label_sets s ON s.id = k.labels_id;",
    // 5: idempotency records, the answer of a request with an
    // `Idempotency-Key` (scope `p:POOL` or `ks:KEYSPACE`; digest: the 32
    // bytes of SHA-256) kept until `expires_at_ms`. Rows are numbered by
    // the engine in the order it makes them, so each insert appends at
    // the end of the table and no other index is kept up (RAM holds the
    // lookup by key; a row is deleted by its number).
    "CREATE TABLE idempotency (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        digest BLOB NOT NULL,
        status INTEGER NOT NULL,
        body BLOB NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );",
    // 6: a keyspace's alphabet preset and token format, as one JSON object
    // (NULL: bare tokens of listed characters, as before).
    "ALTER TABLE keyspaces ADD COLUMN shape TEXT;",
    // 7: shop keyspaces. `max_activations` per keyspace; batches as counter
    // ranges; a token's activations (now several, with fingerprints) and
    // revocation in one `marks` row. Each old activation becomes one slot
    // without a fingerprint.
    "ALTER TABLE keyspaces ADD COLUMN max_activations INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE batches (
        keyspace TEXT NOT NULL,
        first TEXT NOT NULL,
        end TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (keyspace, first)
    ) WITHOUT ROWID;
    CREATE TABLE marks (
        keyspace TEXT NOT NULL,
        token TEXT NOT NULL,
        activations TEXT NOT NULL,
        revoked_at_ms INTEGER,
        reason TEXT,
        PRIMARY KEY (keyspace, token)
    ) WITHOUT ROWID;
    INSERT INTO marks (keyspace, token, activations)
        SELECT keyspace, token, json_array(json_array(NULL, activated_at_ms))
        FROM activations;
    DROP TABLE activations;",
];

/// One row-level change to write.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    /// A pool's settings and lease-id high-water mark.
    Pool {
        /// The pool.
        name: Name,
        /// Its settings.
        settings: PoolSettings,
        /// Highest lease id handed out.
        last_lease_id: u64,
    },
    /// A key was written or removed.
    Key {
        /// The pool.
        pool: Name,
        /// The change.
        change: KeyChange,
    },
    /// A keyspace's definition and counter.
    Keyspace {
        /// The keyspace.
        name: Name,
        /// Alphabet and length.
        spec: KeyspaceSpec,
        /// Its secret.
        secret: Secret,
        /// Tokens issued so far.
        issued: u128,
        /// Activation slots per token.
        max_activations: MaxActivations,
    },
    /// A keyspace's counter moved.
    Issued {
        /// The keyspace.
        name: Name,
        /// Tokens issued so far.
        issued: u128,
    },
    /// A batch range was opened or extended.
    Batch {
        /// The keyspace.
        keyspace: Name,
        /// The range as it now stands.
        range: BatchRange,
    },
    /// A token's activations or revocation changed.
    Marks {
        /// The keyspace.
        keyspace: Name,
        /// The token, in its display form.
        token: String,
        /// Its marks as they now stand (empty: the row goes).
        marks: Marks,
    },
    /// A pool was deleted: its row goes, its keys are reclaimed later.
    DropPool {
        /// The pool.
        name: Name,
    },
    /// A keyspace was deleted: its row goes, its batches and marks later.
    DropKeyspace {
        /// The keyspace.
        name: Name,
    },
    /// An idempotency record was written (with the change it answers).
    Idem {
        /// The pool or keyspace it is scoped to.
        scope: Scope,
        /// The `Idempotency-Key`.
        key: IdemKey,
        /// Digest, answer and expiry.
        entry: Entry,
    },
    /// An idempotency record expired, was replaced or was undone.
    IdemGone {
        /// Its number.
        id: u64,
    },
}

/// What each pool's and keyspace's rows are filed under (see the module
/// doc), kept by the writer; and whether deleted row sets remain.
#[derive(Debug, Default)]
pub(crate) struct RowKeys {
    pub(crate) pools: HashMap<Name, String>,
    pub(crate) keyspaces: HashMap<Name, String>,
    pub(crate) reclaiming: bool,
}

/// `reclaim.kind` of a pool's and a keyspace's row sets.
const POOL: &str = "pool";
const KEYSPACE: &str = "keyspace";

/// The changes one batch makes to [`RowKeys`], applied only once it is
/// committed, so a failed commit retried later sees the map as it was.
struct RowOverlay<'a> {
    base: &'a RowKeys,
    pools: HashMap<Name, Option<String>>,
    keyspaces: HashMap<Name, Option<String>>,
    dropped: bool,
}

impl<'a> RowOverlay<'a> {
    fn new(base: &'a RowKeys) -> Self {
        Self {
            base,
            pools: HashMap::new(),
            keyspaces: HashMap::new(),
            dropped: false,
        }
    }

    fn get(&self, kind: &str, name: &Name) -> Option<String> {
        let (overlay, base) = if kind == POOL {
            (&self.pools, &self.base.pools)
        } else {
            (&self.keyspaces, &self.base.keyspaces)
        };
        match overlay.get(name) {
            Some(rows) => rows.clone(),
            None => base.get(name).cloned(),
        }
    }

    /// The row key of `name`, choosing one if it is new: its name unless
    /// rows of that key are still being reclaimed, else `NAME/N` with `N`
    /// the last reclaim id (ids only grow, and a name is deleted between
    /// two creations, so no `NAME/N` is chosen twice). O(log n).
    fn assign(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        kind: &'static str,
        name: &Name,
    ) -> rusqlite::Result<String> {
        if let Some(rows) = self.get(kind, name) {
            return Ok(rows);
        }
        let pending: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM reclaim WHERE kind = ?1 AND rows_key = ?2)",
            )?
            .query_row(params![kind, name.as_str()], |r| r.get(0))?;
        let rows = if pending {
            let last: i64 = tx
                .prepare_cached(
                    "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'reclaim'",
                )?
                .query_row([], |r| r.get(0))?;
            format!("{name}/{last}")
        } else {
            name.as_str().to_owned()
        };
        let map = if kind == POOL {
            &mut self.pools
        } else {
            &mut self.keyspaces
        };
        map.insert(name.clone(), Some(rows.clone()));
        Ok(rows)
    }

    /// Files `name`'s rows for reclaiming; it has none from now on.
    fn drop_rows(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        kind: &'static str,
        name: &Name,
    ) -> rusqlite::Result<()> {
        if let Some(rows) = self.get(kind, name) {
            tx.prepare_cached("INSERT INTO reclaim (kind, rows_key) VALUES (?1, ?2)")?
                .execute(params![kind, rows])?;
            self.dropped = true;
        }
        let map = if kind == POOL {
            &mut self.pools
        } else {
            &mut self.keyspaces
        };
        map.insert(name.clone(), None);
        Ok(())
    }

    /// The batch's changes, to apply once it is committed.
    fn into_changes(self) -> RowChanges {
        RowChanges {
            pools: self.pools,
            keyspaces: self.keyspaces,
            dropped: self.dropped,
        }
    }
}

/// What a committed batch changed in [`RowKeys`].
struct RowChanges {
    pools: HashMap<Name, Option<String>>,
    keyspaces: HashMap<Name, Option<String>>,
    dropped: bool,
}

impl RowChanges {
    /// Makes the committed batch's changes the writer's map.
    fn apply(self, base: &mut RowKeys) {
        for (name, rows) in self.pools {
            match rows {
                Some(rows) => base.pools.insert(name, rows),
                None => base.pools.remove(&name),
            };
        }
        for (name, rows) in self.keyspaces {
            match rows {
                Some(rows) => base.keyspaces.insert(name, rows),
                None => base.keyspaces.remove(&name),
            };
        }
        base.reclaiming |= self.dropped;
    }
}

/// How far the writer got: entries up to `durable` are committed; entries
/// up to `failed` (and above `durable`) met an error on their last try.
/// `lost`: a database file was deleted or replaced, so nothing after
/// `durable` will ever be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    durable: u64,
    failed: u64,
    lost: bool,
}

/// The engine's end of the journal. Lives under the engine lock, so the
/// order of sequence numbers is the order of changes. Dropping it lets the
/// writer finish what is queued and close the database (checkpointing the
/// WAL into the main file), and waits for that.
#[derive(Debug)]
pub(crate) struct Journal {
    tx: mpsc::Sender<(u64, Vec<Record>)>,
    last_seq: u64,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Closing the channel is the writer's signal to finish.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the journal writer panicked");
        }
    }
}

impl Journal {
    /// Queues `records` (if any) and returns the sequence number a reply
    /// must wait for: the new entry's, or the last one queued. O(1).
    pub(crate) fn append(&mut self, records: Vec<Record>) -> u64 {
        if !records.is_empty() {
            self.last_seq += 1;
            // The writer only stops after every sender is gone, and the
            // engine owns this one, so a send failure cannot happen while
            // we run; if it did, `wait` would report the store unavailable.
            let _ = self.tx.send((self.last_seq, records));
        }
        self.last_seq
    }
}

/// The waiting end: resolves when a sequence number is durable.
#[derive(Debug, Clone)]
pub(crate) struct Durability {
    rx: watch::Receiver<Progress>,
    metrics: CommitMetrics,
}

/// How long commits take and how many entries each carries.
#[derive(Debug, Clone)]
struct CommitMetrics {
    seconds: Histogram,
    entries: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            // 50 µs .. ~1.6 s
            seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 .. 4096 entries
            entries: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        }
    }
}

impl Durability {
    /// Waits until `seq` is committed. `Unavailable` if its commit failed
    /// (it will be retried, but this caller gets no acknowledgement). O(1)
    /// besides the wait for the writer.
    pub(crate) async fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.rx.clone();
        loop {
            let p = *rx.borrow_and_update();
            if p.durable >= seq {
                return Ok(());
            }
            if p.lost {
                return Err(unavailable(
                    "the database file was deleted or replaced while the server ran",
                ));
            }
            if p.failed >= seq {
                return Err(unavailable("the change could not be written to disk"));
            }
            if rx.changed().await.is_err() {
                return Err(unavailable("the journal writer has stopped"));
            }
        }
    }

    /// Adds the commit latency and batch size histograms.
    pub(crate) fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "keyward_store_commit_seconds",
            "Time to write and commit one journal batch",
            self.metrics.seconds.clone(),
        );
        registry.register(
            "keyward_store_batch_entries",
            "Journal entries (requests' changes) per commit",
            self.metrics.entries.clone(),
        );
    }

    /// Why new work is refused now, if it is: the last commit failed (it
    /// is retried in the background) or a database file vanished (for
    /// good). O(1).
    pub(crate) fn refusal(&self) -> Option<StoreError> {
        let p = *self.rx.borrow();
        if p.lost {
            Some(unavailable(
                "a database file was deleted or replaced; restart keyward",
            ))
        } else if p.failed > p.durable {
            Some(unavailable(
                "the database cannot be written; retrying in the background",
            ))
        } else {
            None
        }
    }
}

fn unavailable(msg: &'static str) -> StoreError {
    StoreError::Unavailable(msg.into())
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite refused (cannot create, not a database, corrupt, read-only).
    #[error("cannot open database {path}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is an SQLite database of something else.
    #[error(
        "{path} is not a keyward database (application_id {found:#x}); pass another --store sqlite:PATH"
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The id found.
        found: i32,
    },
    /// Written by a newer keyward.
    #[error(
        "{path} has schema version {found}, newer than this keyward ({SCHEMA_VERSION}); upgrade keyward"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// A row does not make sense.
    #[error("{path} holds an invalid row: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which row and why.
        what: String,
    },
    /// The default keyspace has tokens and the flags define another one.
    #[error(transparent)]
    DefaultKeyspaceChanged(#[from] Box<super::DefaultKeyspaceChanged>),
    /// The writer thread could not be started.
    #[error("cannot start the journal writer")]
    Thread(#[source] std::io::Error),
    /// Another process holds the database's lock file.
    #[error(
        "{path} is in use by another process{} holding the lock on {lock}; \
         stop it first, or pass another --store sqlite:PATH",
        pid_note(.holder)
    )]
    Locked {
        /// The database.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// The process id the holder wrote into the lock file, if readable.
        holder: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot open or lock {lock}, the lock file of {path}")]
    LockFile {
        /// The database.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The WAL is there but the main file is not: SQLite would replay the
    /// WAL's pages into a new, empty file, giving a fragment of the
    /// database.
    #[error(
        "{wal} exists but {path} does not: the database was deleted and its WAL alone would \
         restore a fragment of it; restore {path}, or move {wal} away to start empty"
    )]
    WalWithoutDatabase {
        /// The missing database.
        path: PathBuf,
        /// Its WAL.
        wal: PathBuf,
    },
    /// The path names a directory.
    #[error("{path} is a directory; pass --store sqlite:DIR/keyward.db")]
    Directory {
        /// The path.
        path: PathBuf,
    },
    /// A file of the database could not be looked at after opening it.
    #[error("cannot stat {path}")]
    Stat {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// ` (pid N)` when the holder of a lock is known.
fn pid_note(holder: &Option<u32>) -> String {
    holder
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default()
}

/// An open database with everything that must live as long as it: the
/// connection, the identities of its files, and the lock file's lock.
/// Fields drop in order, so the connection is closed (and the WAL folded
/// into the main file) before the lock is released.
#[derive(Debug)]
pub(crate) struct Database {
    conn: Connection,
    rows: RowKeys,
    watch: Watch,
    _lock: DbLock,
}

/// Everything read back from a database at start-up.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Pools with their keys, not yet expired.
    pub(crate) pools: HashMap<Name, Pool>,
    /// Keyspaces with their counters and activations.
    pub(crate) keyspaces: HashMap<Name, Keyspace>,
    /// Idempotency records.
    pub(crate) idem: Records,
    /// Rows of idempotency records a later one of the same key replaced.
    pub(crate) idem_replaced: Vec<u64>,
}

/// Locks the database at `path` for this process ([`OpenError::Locked`]
/// if another one holds it; nothing is changed then), opens it (creating
/// it if needed), migrates it (once, O(rows)), reads every table back and
/// drops label sets no key uses. O(rows).
pub(crate) fn open(path: &Path) -> Result<(Database, Loaded), OpenError> {
    let sql = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    // Before anything is created or migrated: a second process must find
    // the file exactly as the first one left it.
    let lock = DbLock::acquire(path)?;
    let wal = files::wal_path(path);
    if !path.exists() && wal.exists() {
        return Err(OpenError::WalWithoutDatabase {
            path: path.to_owned(),
            wal,
        });
    }
    create_private(path);
    let mut conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    // Any read fails here on a file that is not SQLite or is corrupt.
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(sql)?;
    if app_id != APPLICATION_ID && !(app_id == 0 && tables == 0) {
        return Err(OpenError::Foreign {
            path: path.to_owned(),
            found: app_id,
        });
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    migrate(&mut conn, path)?;
    let (loaded, rows, unused) = load::load(&conn, path)?;
    drop_label_sets(&mut conn, &unused).map_err(sql)?;
    // The WAL exists now: the migration wrote through it.
    let watch = Watch::new(path, &lock)?;
    Ok((
        Database {
            conn,
            rows,
            watch,
            _lock: lock,
        },
        loaded,
    ))
}

/// Removes the `label_sets` rows no live key refers to (`load` found
/// them), in one transaction. O(unused · log sets).
fn drop_label_sets(conn: &mut Connection, unused: &[i64]) -> rusqlite::Result<()> {
    if unused.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM label_sets WHERE id = ?1")?;
        for id in unused {
            delete.execute([id])?;
        }
    }
    tx.commit()
}

/// Creates a missing database file readable by this user only: it holds
/// every keyspace's secret. SQLite gives its `-wal`/`-shm` files the same
/// mode. Failures are left to `Connection::open` to report.
fn create_private(path: &Path) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let _ = options.open(path);
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sql = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(sql)?;
    let version: i64 = tx
        .query_row("SELECT max(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map_err(sql)?
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found: version,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration).map_err(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )
        .map_err(sql)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sql)?;
    tx.commit().map_err(sql)
}

/// Starts the writer thread on `db`; returns the engine's end and the
/// waiting end of the journal. The thread owns `db` and closes it (and
/// releases its lock) when the [`Journal`] is dropped.
pub(crate) fn start_writer(db: Database) -> Result<(Journal, Durability), OpenError> {
    let (tx, rx) = mpsc::channel();
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let metrics = CommitMetrics::default();
    let writer_metrics = metrics.clone();
    let writer = thread::Builder::new()
        .name("keyward-journal".into())
        .spawn(move || write_loop(db, rx, progress_tx, writer_metrics))
        .map_err(OpenError::Thread)?;
    Ok((
        Journal {
            tx,
            last_seq: 0,
            writer: Some(writer),
        },
        Durability {
            rx: progress_rx,
            metrics,
        },
    ))
}

/// Drains the queue in batches until every sender is gone and all is
/// written (or the last retries fail, or a database file vanished).
fn write_loop(
    mut db: Database,
    rx: mpsc::Receiver<(u64, Vec<Record>)>,
    progress: watch::Sender<Progress>,
    metrics: CommitMetrics,
) {
    let mut pending: Vec<(u64, Vec<Record>)> = Vec::new();
    let mut backoff = Backoff::new(COMMIT_RETRY_MIN, COMMIT_RETRY_MAX);
    let mut closed = false;
    let mut failures_when_closed = 0;
    loop {
        if pending.is_empty() && db.rows.reclaiming {
            // Reclaiming only while nothing else waits: one bounded step,
            // then look at the queue again.
            match rx.try_recv() {
                Ok(entry) => pending.push(entry),
                Err(mpsc::TryRecvError::Empty) => {
                    match reclaim_step(&mut db.conn) {
                        Ok(more) => db.rows.reclaiming = more,
                        Err(e) => {
                            // Picked up again after the next deletion or
                            // restart; a failing disk shows in commits too.
                            tracing::warn!(error = %e, "reclaiming a deleted pool's rows failed");
                            db.rows.reclaiming = false;
                        }
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if pending.is_empty() {
            match rx.recv_timeout(IDLE_CHECK) {
                Ok(entry) => pending.push(entry),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(vanished) = db.watch.check() {
                        return lost(&db, &vanished, &rx, &progress);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(entry) => pending.push(entry),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let last = pending.last().map_or(0, |e| e.0);
        let started = Instant::now();
        let written = write_batch(&mut db.conn, &mut db.rows, &pending);
        // A deleted file takes commits without error, and they vanish with
        // the process: acknowledge only what is in the files on disk. Three
        // `stat`s per group commit, next to an fsync.
        if let Some(vanished) = db.watch.check() {
            return lost(&db, &vanished, &rx, &progress);
        }
        match written {
            Ok(()) => {
                metrics.seconds.observe(started.elapsed().as_secs_f64());
                metrics.entries.observe(pending.len() as f64);
                progress.send_modify(|p| p.durable = last);
                pending.clear();
                backoff.reset();
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::error!(error = %e, entries = pending.len(), retry_in = ?wait, "journal commit failed; requests get 503 until it succeeds");
                progress.send_modify(|p| p.failed = last);
                if closed {
                    failures_when_closed += 1;
                    if failures_when_closed >= 3 {
                        tracing::error!("giving up on unacknowledged journal entries at shutdown");
                        return;
                    }
                }
                thread::sleep(wait);
            }
        }
    }
}

/// A database file vanished: nothing written from now on could survive
/// the process, so every waiting and future write fails until the engine
/// closes the journal. If the main file is still in place (the WAL or the
/// lock file vanished), the WAL's committed changes are first folded into
/// it, so what was acknowledged survives even a `kill -9`. Both happen
/// before the first 503, so whoever sees one finds the log line and the
/// folded file.
fn lost(
    db: &Database,
    vanished: &Vanished,
    rx: &mpsc::Receiver<(u64, Vec<Record>)>,
    progress: &watch::Sender<Progress>,
) {
    tracing::error!(
        file = %vanished.path.display(),
        "{vanished}; writes answer 503 and /readyz 503 until keyward is restarted on a database in place"
    );
    if vanished.path != db.watch.db() {
        // `check` looks at the main file first, so it was in place.
        match db
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(0) => tracing::warn!(
                file = %db.watch.db().display(),
                "folded every committed change into the main database file"
            ),
            Ok(_) => tracing::error!("could not fold the WAL into the main database file: busy"),
            Err(e) => {
                tracing::error!(error = %e, "could not fold the WAL into the main database file")
            }
        }
    }
    progress.send_modify(|p| p.lost = true);
    // Nothing is written any more; receiving only keeps the queue empty.
    while rx.recv().is_ok() {}
}

/// One bounded step of reclaiming: removes up to `RECLAIM_STEP` rows of
/// the oldest deleted row set (leases first, then keys; or marks, then
/// batches),
/// and its `reclaim` entry once none are left. Returns whether any entry
/// remains. O(RECLAIM_STEP · log n).
fn reclaim_step(conn: &mut Connection) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let Some((id, kind, rows)) = tx
        .query_row(
            "SELECT id, kind, rows_key FROM reclaim ORDER BY id LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(false);
    };
    let removed = if kind == POOL {
        let leases = tx.execute(
            "DELETE FROM leases WHERE pool = ?1
             AND key IN (SELECT key FROM leases WHERE pool = ?1 LIMIT ?2)",
            params![rows, RECLAIM_STEP],
        )?;
        leases
            + tx.execute(
                "DELETE FROM keys WHERE pool = ?1
                 AND key IN (SELECT key FROM keys WHERE pool = ?1 LIMIT ?2)",
                params![rows, RECLAIM_STEP],
            )?
    } else {
        let marks = tx.execute(
            "DELETE FROM marks WHERE keyspace = ?1
             AND token IN (SELECT token FROM marks WHERE keyspace = ?1 LIMIT ?2)",
            params![rows, RECLAIM_STEP],
        )?;
        marks
            + tx.execute(
                "DELETE FROM batches WHERE keyspace = ?1
                 AND first IN (SELECT first FROM batches WHERE keyspace = ?1 LIMIT ?2)",
                params![rows, RECLAIM_STEP],
            )?
    };
    if removed == 0 {
        tx.execute("DELETE FROM reclaim WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok(true)
}

/// A run of key and pool records between two deletions: only the last
/// state of each key and pool in it is written (a lease and its release in
/// the same batch cost one row write), and a key's own row only if
/// something other than its lease changed. Writing it costs O(log n) per
/// key (a `keys` row only for a `Put`, plus its `leases` row) and
/// O(labels + log sets) per distinct label set, once per batch.
#[derive(Default)]
struct Segment<'a> {
    pools: HashMap<&'a Name, (&'a PoolSettings, u64)>,
    keys: HashMap<(&'a Name, &'a str), (&'a KeyChange, bool)>,
}

impl Segment<'_> {
    fn write(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        rows: &RowOverlay<'_>,
    ) -> rusqlite::Result<()> {
        let rows_of = |pool: &Name| {
            rows.get(POOL, pool)
                .unwrap_or_else(|| pool.as_str().to_owned())
        };
        let mut put_key = tx.prepare_cached(
            "INSERT INTO keys (pool, key, created_at_ms, alive_until_ms, state, available_at_ms,
                reason, failures, quarantines, labels_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (pool, key) DO UPDATE SET created_at_ms = ?3, alive_until_ms = ?4,
                state = ?5, available_at_ms = ?6, reason = ?7, failures = ?8,
                quarantines = ?9, labels_id = ?10",
        )?;
        let mut del_key = tx.prepare_cached("DELETE FROM keys WHERE pool = ?1 AND key = ?2")?;
        let mut put_lease = tx.prepare_cached(
            "INSERT INTO leases (pool, key, lease_id, leased_until_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (pool, key) DO UPDATE SET lease_id = ?3, leased_until_ms = ?4",
        )?;
        let mut del_lease = tx.prepare_cached("DELETE FROM leases WHERE pool = ?1 AND key = ?2")?;
        let mut label_ids = LabelIds::default();
        for ((pool, key), (change, row_changed)) in self.keys.drain() {
            let pool = rows_of(pool);
            match change {
                KeyChange::Put(k) | KeyChange::Lease(k) => {
                    if row_changed {
                        put_key.execute(params![
                            pool,
                            key,
                            k.created_at.as_millis() as i64,
                            k.alive_deadline().map(|t| t.as_millis() as i64),
                            stored_state(k.state),
                            k.available_at.map(|t| t.as_millis() as i64),
                            k.reason.as_ref().map(|r| r.as_str()),
                            k.failures,
                            k.quarantines,
                            label_ids.id(tx, &k.labels)?,
                        ])?;
                    }
                    match k.lease {
                        Some(l) => put_lease.execute(params![
                            pool,
                            key,
                            l.id as i64,
                            l.until.as_millis() as i64,
                        ])?,
                        None => del_lease.execute(params![pool, key])?,
                    };
                }
                KeyChange::Remove(_) => {
                    del_key.execute(params![pool, key])?;
                    del_lease.execute(params![pool, key])?;
                }
            }
        }
        let mut put_pool = tx.prepare_cached(
            "INSERT INTO pools (name, lease_ttl_ms, keepalive_ttl_ms, key_length, last_lease_id,
                rows_key, cooldown_ms, max_failures, quarantine_ms, no_keepalive)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (name) DO UPDATE SET lease_ttl_ms = ?2, keepalive_ttl_ms = ?3,
                key_length = ?4, last_lease_id = max(last_lease_id, ?5), cooldown_ms = ?7,
                max_failures = ?8, quarantine_ms = ?9, no_keepalive = ?10",
        )?;
        for (name, (settings, last)) in self.pools.drain() {
            let recovery = &settings.recovery;
            put_pool.execute(params![
                name.as_str(),
                settings.lease_ttl.as_millis() as i64,
                settings.keepalive_ttl.as_millis() as i64,
                settings.key_length.get() as i64,
                last as i64,
                rows_of(name),
                recovery.cooldown.as_millis() as i64,
                recovery.max_failures.get(),
                recovery.quarantine.as_millis() as i64,
                settings.no_keepalive,
            ])?;
        }
        Ok(())
    }
}

/// `keys.state` of a key in `state`: a leased key's lease is its `leases`
/// row, and it is `free` apart from that (see the module doc). O(1).
fn stored_state(state: KeyState) -> &'static str {
    match state {
        KeyState::Leased => KeyState::Free.as_str(),
        state => state.as_str(),
    }
}

/// The canonical text of a label set in `label_sets.labels`: a JSON
/// object in name order, so one set always has one text. O(labels).
fn labels_text(labels: &Labels) -> String {
    let map: std::collections::BTreeMap<&str, &str> = labels.iter().collect();
    serde_json::to_string(&map).expect("a map of strings serializes")
}

/// The `label_sets` ids one batch has looked up, so 10,000 keys imported
/// with one set cost one lookup, not 10,000.
#[derive(Default)]
struct LabelIds(HashMap<Labels, i64>);

impl LabelIds {
    /// The id of `labels`' row in `label_sets`, adding the row if there is
    /// none; `None` for no labels. O(labels + log sets).
    fn id(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        labels: &Labels,
    ) -> rusqlite::Result<Option<i64>> {
        if labels.is_empty() {
            return Ok(None);
        }
        if let Some(&id) = self.0.get(labels) {
            return Ok(Some(id));
        }
        let text = labels_text(labels);
        let found: Option<i64> = tx
            .prepare_cached("SELECT id FROM label_sets WHERE labels = ?1")?
            .query_row([&text], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO label_sets (labels) VALUES (?1)")?
                    .execute([&text])?;
                tx.last_insert_rowid()
            }
        };
        self.0.insert(labels.clone(), id);
        Ok(Some(id))
    }
}

/// Writes the entries in one transaction, in runs between deletions (see
/// [`Segment`]); keyspace rows keep their order. `rows` changes only if
/// the transaction commits.
fn write_batch(
    conn: &mut Connection,
    rows: &mut RowKeys,
    entries: &[(u64, Vec<Record>)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut overlay = RowOverlay::new(rows);
    let mut segment = Segment::default();
    for record in entries.iter().flat_map(|e| &e.1) {
        match record {
            Record::Pool {
                name,
                settings,
                last_lease_id,
            } => {
                overlay.assign(&tx, POOL, name)?;
                segment.pools.insert(name, (settings, *last_lease_id));
            }
            Record::Key { pool, change } => {
                let (key, row_changed) = match change {
                    KeyChange::Put(k) => (k.key.as_str(), true),
                    KeyChange::Lease(k) => (k.key.as_str(), false),
                    KeyChange::Remove(key) => (key.as_str(), true),
                };
                let entry = segment.keys.entry((pool, key)).or_insert((change, false));
                *entry = (change, entry.1 || row_changed);
            }
            Record::DropPool { name } => {
                segment.write(&tx, &overlay)?;
                tx.prepare_cached("DELETE FROM pools WHERE name = ?1")?
                    .execute([name.as_str()])?;
                overlay.drop_rows(&tx, POOL, name)?;
            }
            Record::Keyspace {
                name,
                spec,
                secret,
                issued,
                max_activations,
            } => {
                let rows_key = overlay.assign(&tx, KEYSPACE, name)?;
                tx.prepare_cached(
                    "INSERT INTO keyspaces
                        (name, alphabet, length, secret, issued, rows_key, shape, max_activations)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (name) DO UPDATE SET alphabet = ?2, length = ?3,
                        secret = ?4, issued = ?5, shape = ?7, max_activations = ?8",
                )?
                .execute(params![
                    name.as_str(),
                    spec.alphabet().as_str(),
                    spec.length(),
                    &secret.as_bytes()[..],
                    issued.to_string(),
                    rows_key,
                    spec.shape_text(),
                    max_activations.get(),
                ])?;
            }
            Record::Issued { name, issued } => {
                tx.prepare_cached("UPDATE keyspaces SET issued = ?2 WHERE name = ?1")?
                    .execute(params![name.as_str(), issued.to_string()])?;
            }
            Record::Batch { keyspace, range } => {
                let rows_key = overlay.assign(&tx, KEYSPACE, keyspace)?;
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO batches (keyspace, first, end, name)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    rows_key,
                    range.first.to_string(),
                    range.end.to_string(),
                    range.name.as_str()
                ])?;
            }
            Record::Marks {
                keyspace,
                token,
                marks,
            } => {
                let rows_key = overlay.assign(&tx, KEYSPACE, keyspace)?;
                if marks.is_empty() {
                    tx.prepare_cached("DELETE FROM marks WHERE keyspace = ?1 AND token = ?2")?
                        .execute(params![rows_key, token])?;
                } else {
                    let revoked = marks.revoked.as_ref();
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO marks
                            (keyspace, token, activations, revoked_at_ms, reason)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        rows_key,
                        token,
                        load::activations_json(&marks.activations),
                        revoked.map(|r| r.at.as_millis() as i64),
                        revoked.and_then(|r| r.reason.as_ref()).map(|r| r.as_str()),
                    ])?;
                }
            }
            Record::DropKeyspace { name } => {
                tx.prepare_cached("DELETE FROM keyspaces WHERE name = ?1")?
                    .execute([name.as_str()])?;
                overlay.drop_rows(&tx, KEYSPACE, name)?;
            }
            Record::Idem { scope, key, entry } => {
                tx.prepare_cached(
                    "INSERT INTO idempotency
                        (id, scope, key, digest, status, body, expires_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    entry.id as i64,
                    scope.text(),
                    key.as_str(),
                    &entry.digest.as_bytes()[..],
                    // Rendered here if its request has not yet.
                    entry.answer.get().status,
                    &entry.answer.get().body[..],
                    entry.expires_at.as_millis() as i64,
                ])?;
            }
            Record::IdemGone { id } => {
                tx.prepare_cached("DELETE FROM idempotency WHERE id = ?1")?
                    .execute([*id as i64])?;
            }
        }
    }
    segment.write(&tx, &overlay)?;
    drop(segment);
    let changes = overlay.into_changes();
    tx.commit()?;
    changes.apply(rows);
    Ok(())
}
