//! The database's files as the file system sees them: the lock file that
//! keeps a second process off a database, and the watch that notices when
//! the files the server opened are deleted or replaced under it.
//!
//! Two processes on one file would both load the same counters and hand
//! out the same tokens and lease ids, and SQLite's own locks only order
//! their transactions. So [`DbLock`] takes an exclusive `flock` on
//! `PATH.lock` before the database is opened, and holds it for the life of
//! the store. The kernel drops it when the process ends, `kill -9`
//! included, so a crash never leaves a stale lock behind. The lock file is
//! never deleted: deleting it would let a third process lock a new file of
//! the same name while the second still holds the old one.
//!
//! An open file that is unlinked stays writable: SQLite commits into it
//! without error, and the data is lost when the process ends. [`Watch`]
//! remembers the (device, inode) of the database, its WAL and the lock file
//! at start, and compares them with what the paths name now.
//! This costs one `stat` per file; the writer runs it after every group
//! commit, before acknowledging it, and once a second when idle.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::OpenError;

/// The lock file beside the database at `db`: `PATH.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The WAL file SQLite keeps beside the database at `db`: `PATH-wal`.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// An exclusive advisory lock on a database's lock file, held until
/// dropped (or the process ends).
#[derive(Debug)]
pub struct DbLock {
    file: File,
    path: PathBuf,
}

impl DbLock {
    /// Creates `db`'s lock file if absent (mode 0600) and locks it without
    /// waiting; writes this process's id into it for the error another
    /// process gets. [`OpenError::Locked`] if another process holds it.
    /// Changes nothing else on disk.
    pub fn acquire(db: &Path) -> Result<Self, OpenError> {
        let path = lock_path(db);
        let io = |source| OpenError::LockFile {
            path: db.to_owned(),
            lock: path.clone(),
            source,
        };
        // A directory would give a lock file beside it and then an SQLite
        // error: refuse it before anything is created.
        if db.is_dir() {
            return Err(OpenError::Directory {
                path: db.to_owned(),
            });
        }
        let mut options = OpenOptions::new();
        // No truncation: the holder's pid must survive a refused open.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(OpenError::Locked {
                    path: db.to_owned(),
                    lock: path,
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Only informational (the lock is what counts), so a failure to
        // write it is not worth refusing the start.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { file, path })
    }
}

/// A file's identity: device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    // Without inode numbers there is nothing to compare: every file looks
    // like itself.
    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Self {
        Self { dev: 0, ino: 0 }
    }
}

/// What happened to a watched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The path names no file any more.
    Deleted,
    /// The path names another file than the one opened.
    Replaced,
}

/// A watched file that is no longer the one the server opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vanished {
    /// The path.
    pub path: PathBuf,
    /// Deleted or replaced.
    pub change: Change,
}

impl fmt::Display for Vanished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.change {
            Change::Deleted => "was deleted",
            Change::Replaced => "was replaced by another file",
        };
        write!(
            f,
            "{} {how} while the server had it open",
            self.path.display()
        )
    }
}

/// The identities of a database's files when the store opened them.
#[derive(Debug)]
pub struct Watch {
    files: Vec<(PathBuf, FileId)>,
}

impl Watch {
    /// Records the database `db` (first: [`Watch::check`] looks at it
    /// before the others) and its WAL as they are now (both must
    /// exist: call it after the database was opened in WAL mode and read),
    /// and the lock file as held through `lock`.
    pub fn new(db: &Path, lock: &DbLock) -> Result<Self, OpenError> {
        let stat = |path: PathBuf| match std::fs::metadata(&path) {
            Ok(meta) => Ok((path, FileId::of(&meta))),
            Err(source) => Err(OpenError::Stat { path, source }),
        };
        let held = lock.file.metadata().map_err(|source| OpenError::Stat {
            path: lock.path.clone(),
            source,
        })?;
        Ok(Self {
            files: vec![
                stat(db.to_owned())?,
                stat(wal_path(db))?,
                (lock.path.clone(), FileId::of(&held)),
            ],
        })
    }

    /// The database's main file.
    pub fn db(&self) -> &Path {
        &self.files[0].0
    }

    /// The first watched file whose path no longer names it, if any. One
    /// `stat` per file (three). A `stat` that fails for another reason
    /// than absence (permissions, I/O) proves nothing and counts as
    /// unchanged: the next commit reports a real disk error on its own.
    pub fn check(&self) -> Option<Vanished> {
        self.files.iter().find_map(|(path, id)| {
            let change = match std::fs::metadata(path) {
                Ok(meta) if FileId::of(&meta) == *id => return None,
                Ok(_) => Change::Replaced,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Change::Deleted,
                Err(_) => return None,
            };
            Some(Vanished {
                path: path.clone(),
                change,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keyward-files-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        dir.join("k.db")
    }

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_dropped() {
        let db = temp_db("lock");
        let first = DbLock::acquire(&db).expect("the first lock");
        match DbLock::acquire(&db) {
            Err(OpenError::Locked { holder, lock, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
                assert_eq!(lock, lock_path(&db));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        DbLock::acquire(&db).expect("the lock is free again");
        let _ = std::fs::remove_dir_all(db.parent().expect("a parent"));
    }

    #[test]
    fn the_watch_tells_a_deleted_file_from_a_replaced_one() {
        let db = temp_db("watch");
        std::fs::write(&db, b"db").expect("write db");
        std::fs::write(wal_path(&db), b"wal").expect("write wal");
        let lock = DbLock::acquire(&db).expect("lock");
        let watch = Watch::new(&db, &lock).expect("watch");
        assert_eq!(watch.check(), None);

        // Held open as SQLite holds it, so the inode number is not reused.
        let _open_wal = File::open(wal_path(&db)).expect("open wal");
        std::fs::remove_file(wal_path(&db)).expect("delete wal");
        assert_eq!(
            watch.check(),
            Some(Vanished {
                path: wal_path(&db),
                change: Change::Deleted
            })
        );

        std::fs::write(wal_path(&db), b"wal").expect("write wal");
        assert_eq!(
            watch.check().map(|v| v.change),
            Some(Change::Replaced),
            "a new file of the same name is not the one opened"
        );
        let _ = std::fs::remove_dir_all(db.parent().expect("a parent"));
    }
}
