//! One process per database file: a second `keyward serve` on a file
//! another one serves is refused before it touches the file, and the lock
//! dies with its holder, so a `kill -9` never leaves the file locked.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, ensure};

use keyward_testkit::client::str_field;
use keyward_testkit::process::TempDir;

const STOP_WITHIN: Duration = Duration::from_secs(5);

/// The bytes of the database and its WAL (empty when absent).
fn files_of(db: &std::path::Path) -> Vec<Vec<u8>> {
    ["", "-wal"]
        .iter()
        .map(|suffix| std::fs::read(format!("{}{suffix}", db.display())).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_second_server_on_the_same_file_is_refused_and_the_first_keeps_working() -> Result<()> {
    let dir = TempDir::new("second-process")?;
    let launch = crate::launch(&dir);
    let first = launch.start().await?;
    let mut tokens = HashSet::new();
    for _ in 0..3 {
        let issued = first.api.issue_token("default").await?.expect(201).clone();
        tokens.insert(str_field(&issued, "token"));
    }
    first.api.generate_keys("p", 10).await?.expect(201);
    let before = files_of(&dir.db());

    let exited = launch.start_expecting_exit().await?;
    ensure!(
        !exited.status.success(),
        "the second process must exit non-zero, got {}",
        exited.status
    );
    let db = dir.db().display().to_string();
    ensure!(
        exited.stderr.contains(&db)
            && exited.stderr.contains("in use by another process")
            && exited.stderr.contains(&format!("pid {}", first.pid())),
        "stderr names the file and says which process holds it (pid {}): {}",
        first.pid(),
        exited.stderr
    );
    ensure!(
        files_of(&dir.db()) == before,
        "the refused process changed the database or its WAL"
    );

    // The first one is undisturbed: still ready, still issuing new tokens.
    first.api.readyz().await?.expect(200);
    for _ in 0..3 {
        let issued = first.api.issue_token("default").await?.expect(201).clone();
        let token = str_field(&issued, "token");
        ensure!(tokens.insert(token.clone()), "token {token} issued twice");
    }
    first.api.generate_keys("p", 1).await?.expect(201);
    first.terminate(STOP_WITHIN).await
}

#[tokio::test]
async fn a_server_killed_with_sigkill_leaves_the_file_free_for_the_next_one() -> Result<()> {
    let dir = TempDir::new("killed-holder")?;
    let launch = crate::launch(&dir);
    let first = launch.start().await?;
    let issued = first.api.issue_token("default").await?.expect(201).clone();
    let token = str_field(&issued, "token");
    first.kill()?;

    // At once: the kernel dropped the lock with the process.
    let second = launch.start().await?;
    let status = second
        .api
        .token_status("default", &token)
        .await?
        .expect(200)
        .clone();
    assert_eq!(status["state"], "issued", "{status}");
    let next = str_field(
        second.api.issue_token("default").await?.expect(201),
        "token",
    );
    ensure!(next != token, "token {token} issued twice across the kill");
    // And the lock is held again: a third process is refused.
    let exited = launch.start_expecting_exit().await?;
    ensure!(
        !exited.status.success() && exited.stderr.contains("in use by another process"),
        "the new holder locks the file too: {}",
        exited.stderr
    );
    second.terminate(STOP_WITHIN).await
}
