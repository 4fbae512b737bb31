//! Database files deleted or replaced under a running server. SQLite keeps
//! writing into the unlinked file without an error, so without a check
//! every reply would be a 201 for a change that dies with the process. The
//! server must notice, answer writes and `/readyz` with 503, and say which
//! file vanished.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use keyward_testkit::client::{str_field, u64_field};
use keyward_testkit::process::{Server, TempDir};

/// The writer checks at least once a second when idle; this leaves room
/// for a loaded machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(5);

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

/// Polls `/readyz` until it answers 503; fails after [`NOTICED_WITHIN`].
async fn wait_not_ready(server: &Server) -> Result<()> {
    let api = &server.api;
    let deadline = Instant::now() + NOTICED_WITHIN;
    while Instant::now() < deadline {
        if api.readyz().await?.status == 503 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "/readyz still answers 200 {NOTICED_WITHIN:?} after the file vanished\n{}",
        server.output()
    )
}

/// Writes of both kinds answer 503 `unavailable`, and `/readyz` 503.
async fn ensure_writes_refused(server: &Server) -> Result<()> {
    let api = &server.api;
    api.issue_token("default")
        .await?
        .expect_error(503, "unavailable");
    api.generate_keys("p", 1)
        .await?
        .expect_error(503, "unavailable");
    api.readyz().await?.expect(503);
    Ok(())
}

#[tokio::test]
async fn deleting_the_wal_under_a_running_server_turns_writes_and_readyz_to_503() -> Result<()> {
    let dir = TempDir::new("wal-deleted")?;
    let (launch, server) = crate::started_with_keys(&dir).await?;
    let api = &server.api;
    let mut tokens = HashSet::new();
    for _ in 0..5 {
        tokens.insert(str_field(
            api.issue_token("default").await?.expect(201),
            "token",
        ));
    }
    let wal = with_suffix(&dir.db(), "-wal");
    std::fs::remove_file(&wal)?;

    // The first write after the deletion is already refused.
    ensure_writes_refused(&server).await?;
    let message = format!("{} was deleted", wal.display());
    ensure!(
        server.stderr().contains(&message),
        "the log says {message:?}:\n{}",
        server.output()
    );

    // What was acknowledged before is still there after a kill: the main
    // file was in place, and the server folded the WAL into it.
    let log = server.output();
    server.kill()?;
    let server = launch.start().await?;
    let api = &server.api;
    let info = api.get_keyspace("default").await?.expect(200).clone();
    ensure!(
        u64_field(&info, "issued") >= tokens.len() as u64,
        "acknowledged tokens were lost: {info}\nthe first server's log:\n{log}"
    );
    for token in &tokens {
        let status = api
            .token_status("default", token)
            .await?
            .expect(200)
            .clone();
        assert_eq!(status["state"], "issued", "{status}");
    }
    let pool = api.get_pool("p").await?.expect(200).clone();
    ensure!(u64_field(&pool, "total") >= 10, "keys were lost: {pool}");
    let next = str_field(api.issue_token("default").await?.expect(201), "token");
    ensure!(!tokens.contains(&next), "token {next} issued twice");
    Ok(())
}

#[tokio::test]
async fn deleting_the_database_under_an_idle_server_turns_readyz_to_503() -> Result<()> {
    let dir = TempDir::new("db-deleted")?;
    let (_, server) = crate::started_with_keys(&dir).await?;
    std::fs::remove_file(dir.db())?;

    // No write comes: the idle check notices it by itself.
    wait_not_ready(&server).await?;
    ensure_writes_refused(&server).await?;
    let message = format!("{} was deleted", dir.db().display());
    ensure!(
        server.stderr().contains(&message),
        "the log says {message:?}:\n{}",
        server.output()
    );
    Ok(())
}

#[tokio::test]
async fn replacing_the_database_under_a_running_server_turns_writes_to_503() -> Result<()> {
    let dir = TempDir::new("db-replaced")?;
    let (_, server) = crate::started_with_keys(&dir).await?;
    // A copy moved over the original: same name, another file.
    let copy = with_suffix(&dir.db(), ".copy");
    std::fs::copy(dir.db(), &copy)?;
    std::fs::rename(&copy, dir.db())?;

    ensure_writes_refused(&server).await?;
    let message = format!("{} was replaced", dir.db().display());
    ensure!(
        server.stderr().contains(&message),
        "the log says {message:?}:\n{}",
        server.output()
    );
    Ok(())
}
