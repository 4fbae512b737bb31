//! The disk under the database misbehaves. Full while running: the
//! requests whose changes cannot be committed get 503 `unavailable`,
//! `/readyz` says 503, and once space returns the server carries on by
//! itself with nothing acknowledged lost. Read-only at start: the server
//! refuses to start instead of serving what it could never record.
//!
//! The disk is a small tmpfs, so these need root and `mount`; without them
//! a test says SKIP loudly and passes, unless
//! `KEYWARD_REQUIRE_ALL_BACKENDS=1` makes it fail.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use keyward_testkit::client::{Api, keys_of};
use keyward_testkit::process::TempDir;

const POOL: &str = "p";
/// Generate requests of 1000 keys sent on the full disk before giving up.
const MAX_FULL_ATTEMPTS: usize = 20;
/// How long the server may take to recover once space is back.
const RECOVER_WITHIN: Duration = Duration::from_secs(10);

/// A tmpfs mounted on a directory; unmounted when dropped, even when the
/// test fails. Declare it before the server so the server stops first.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`, or says SKIP and returns `None`
    /// when that is impossible here (not root, no `mount`).
    fn mount_or_skip(dir: &Path, size: &str, test: &str) -> Result<Option<Self>> {
        match Self::mount(dir, size) {
            Ok(t) => Ok(Some(t)),
            Err(e) if std::env::var("KEYWARD_REQUIRE_ALL_BACKENDS").as_deref() == Ok("1") => {
                Err(e.context("KEYWARD_REQUIRE_ALL_BACKENDS=1 but no tmpfs"))
            }
            Err(e) => {
                eprintln!(
                    "\n*** SKIP {test}: cannot mount a tmpfs ({e:#}); it needs root and mount. \
                     Set KEYWARD_REQUIRE_ALL_BACKENDS=1 to make this a failure. ***\n"
                );
                Ok(None)
            }
        }
    }

    fn mount(dir: &Path, size: &str) -> Result<Self> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .context("run mount")?;
        ensure!(
            out.status.success(),
            "mount -t tmpfs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Makes the mounted file system read-only.
    fn remount_read_only(&self) -> Result<()> {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .output()
            .context("run mount -o remount,ro")?;
        ensure!(
            out.status.success(),
            "mount -o remount,ro failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it open: detach it so it cannot linger.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Writes `path` until the file system has no room left; returns the bytes
/// written.
fn fill(path: &Path) -> Result<u64> {
    let mut file = File::create(path).context("create the filler file")?;
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut written = 0u64;
    // Big writes first, then smaller ones for the last partial pages.
    for size in [64 * 1024, 4096, 512] {
        for _ in 0..100_000 {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) => return Err(e).context("write the filler file"),
            }
        }
    }
    Ok(written)
}

/// Polls until a 1-key generate is 201 and `/readyz` is 200; returns the
/// key.
async fn wait_recovered(api: &Api) -> Result<String> {
    let deadline = Instant::now() + RECOVER_WITHIN;
    let mut last = String::new();
    while Instant::now() < deadline {
        let reply = api.generate_keys(POOL, 1).await?;
        if reply.status == 201 {
            let ready = api.readyz().await?;
            if ready.status == 200 {
                let keys = keys_of(&reply.body);
                return keys.into_iter().next().context("one key");
            }
            last = format!("generate 201 but /readyz {}", ready.status);
        } else {
            last = format!("generate {} {}", reply.status, reply.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("not recovered {RECOVER_WITHIN:?} after space returned; last: {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_and_the_server_recovers_when_space_returns() -> Result<()> {
    let dir = TempDir::new("disk-full")?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let Some(_tmpfs) = Tmpfs::mount_or_skip(
        &mnt,
        "2m",
        "a_full_disk_gets_503_and_the_server_recovers_when_space_returns",
    )?
    else {
        return Ok(());
    };
    // The logs stay outside the tmpfs: only the database may fill it.
    let launch = crate::launch_at(&mnt.join("k.db"), dir.path());
    let server = launch.start().await?;
    let api = server.api.clone();
    let mut acked = Vec::new();
    for _ in 0..3 {
        acked.extend(api.new_keys(POOL, 5).await?);
    }

    let filler = mnt.join("filler");
    let filled = fill(&filler)?;
    ensure!(filled > 0, "the filler wrote nothing");
    let mut refused = None;
    for _ in 0..MAX_FULL_ATTEMPTS {
        let reply = api.generate_keys(POOL, 1000).await?;
        match reply.status {
            // Room left in the journal's existing pages: acknowledged, so
            // it must survive like the rest.
            201 => acked.extend(keys_of(&reply.body)),
            503 => {
                refused = Some(reply);
                break;
            }
            _ => bail!("generate on a full disk: {reply:?}"),
        }
    }
    let refused = refused.with_context(|| {
        format!("no 503 after {MAX_FULL_ATTEMPTS} generates of 1000 keys on a full disk")
    })?;
    // A failed commit is a 503 JSON error.
    refused.expect_error(503, "unavailable");
    let ready = api.readyz().await?;
    ensure!(
        ready.status == 503,
        "/readyz on a full disk: {} {}",
        ready.status,
        ready.body
    );

    std::fs::remove_file(&filler).context("remove the filler")?;
    acked.push(
        wait_recovered(&api)
            .await
            .with_context(|| server.output())?,
    );
    for key in &acked {
        let reply = api.get_key(POOL, key).await?;
        ensure!(
            reply.status == 200,
            "acknowledged key {key} after recovery: {} {}",
            reply.status,
            reply.text
        );
    }
    server.terminate(Duration::from_secs(5)).await?;

    let server = launch.start().await?;
    for key in &acked {
        let reply = server.api.get_key(POOL, key).await?;
        ensure!(
            reply.status == 200,
            "acknowledged key {key} after a restart: {} {}",
            reply.status,
            reply.text
        );
    }
    server.terminate(Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_read_only_disk_is_refused_at_start() -> Result<()> {
    let dir = TempDir::new("read-only")?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let Some(tmpfs) = Tmpfs::mount_or_skip(&mnt, "4m", "a_read_only_disk_is_refused_at_start")?
    else {
        return Ok(());
    };
    let db = mnt.join("k.db");
    let launch = crate::launch_at(&db, dir.path());
    let server = launch.start().await?;
    server.api.generate_keys(POOL, 10).await?.expect(201);
    server.terminate(Duration::from_secs(5)).await?;
    tmpfs.remount_read_only()?;

    let exited = launch.start_expecting_exit().await?;
    ensure!(
        !exited.status.success(),
        "a database that cannot be written must stop the start, got {}",
        exited.status
    );
    ensure!(
        exited.stderr.contains(&db.display().to_string()),
        "stderr names the file: {}",
        exited.stderr
    );
    Ok(())
}
