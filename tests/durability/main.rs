//! Process-level durability tests of keyward's `sqlite:` store: every test
//! runs the real binary (`CARGO_BIN_EXE_keyward`) on a file in a fresh
//! temp dir, stops it with `kill -9` or SIGTERM, starts it again on the
//! same file and checks what a client was told against what is there.
//!
//! - `restart`: one kind of state per test survives `kill -9`;
//! - `credentials`: labels, cooling, quarantined and disabled keys and the
//!   pools' recovery settings survive `kill -9` exactly;
//! - `delete`: deleted pools and keyspaces stay deleted, their rows are
//!   reclaimed after a restart too;
//! - `expiry`: deadlines are wall-clock instants across a restart;
//! - `crash`: `kill -9` (and SIGTERM) in the middle of concurrent load;
//! - `idempotency`: requests with an `Idempotency-Key` retried after a
//!   `kill -9` mid-load take effect exactly once;
//! - `startup`: refusals at start (changed default keyspace; foreign,
//!   corrupt, too new or unopenable files; hand-edited rows that make no
//!   sense);
//! - `lock`: one process per database file, and a killed one frees it;
//! - `vanished`: the database or its WAL deleted or replaced under a
//!   running server;
//! - `shutdown`: SIGTERM with a client stuck mid-request;
//! - `disk`: a full disk gives 503s and the server recovers; a read-only
//!   one stops the start (needs root to mount a small tmpfs; skipped
//!   otherwise unless `KEYWARD_REQUIRE_ALL_BACKENDS=1`).

mod crash;
mod credentials;
mod delete;
mod disk;
mod expiry;
mod idempotency;
mod lock;
mod restart;
mod shutdown;
mod startup;
mod vanished;

use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};
use keyward_testkit::process::{Launch, Server, TempDir};

/// `keyward serve` on `dir`'s database (`sqlite:<dir>/k.db`), logs in `dir`:
/// the same `Launch` starts it again on the same file.
fn launch(dir: &TempDir) -> Launch {
    launch_at(&dir.db(), dir.path())
}

/// `keyward serve --store sqlite:<db>`, logs in `logs`.
fn launch_at(db: &Path, logs: &Path) -> Launch {
    Launch::sqlite(env!("CARGO_BIN_EXE_keyward"), db, logs)
}

/// A server started by [`launch`] on `dir` with ten keys made in pool
/// `p`, and the `Launch` that starts it again on the same file.
async fn started_with_keys(dir: &TempDir) -> Result<(Launch, Server)> {
    let launch = launch(dir);
    let server = launch.start().await?;
    server.api.generate_keys("p", 10).await?.expect(201);
    Ok((launch, server))
}

/// The single value `sql` selects from `db`, with the `sqlite3` shell;
/// `None` if the shell is missing (the caller skips that check).
pub(crate) fn sqlite3(db: &Path, sql: &str) -> Result<Option<String>> {
    match Command::new("sqlite3").arg(db).arg(sql).output() {
        Ok(out) => {
            ensure!(
                out.status.success(),
                "sqlite3 {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
        }
        Err(e) => {
            eprintln!("SKIP: the sqlite3 shell is not available ({e})");
            Ok(None)
        }
    }
}
