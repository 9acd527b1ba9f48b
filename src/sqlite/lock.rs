//! One backup or restore of a connector at a time, across processes.
//!
//! An advisory lock (`flock`) on `<db>.hubvault-lock` beside the database: the agent, a
//! `hubvault backup` from the connector's start-up and a restore take the same lock, so
//! they never run on one connector at once. The second one waits, then goes on (a backup
//! usually skips: the first just made the backup fresh). The kernel drops the lock when
//! the holder dies, so a crash never leaves a connector locked.
//!
//! The lock file lives in the connector's directory, which its own user controls: it is
//! opened relative to the directory, never through a link (see [`crate::sqlite::safedir`]),
//! only read (a `flock` needs no write access, so a lock file left by another user still
//! works), and when root creates it, it is given to the database's owner at once: the
//! connector's own `hubvault backup` must keep working after a root run.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sqlite::fsio;
use crate::sqlite::safedir::{self, Kind, SafeDir};

#[derive(Debug)]
pub struct ConnectorLock {
    _file: File,
    path: PathBuf,
}

impl ConnectorLock {
    pub fn path_for(db: &Path) -> PathBuf {
        fsio::side_path(db, LOCK_SUFFIX)
    }

    /// The lock file's name for the database named `db_name`.
    pub fn name_for(db_name: &OsStr) -> OsString {
        let mut n = db_name.to_os_string();
        n.push(LOCK_SUFFIX);
        n
    }

    /// Waits up to `wait` for the lock of the database at `db`.
    pub async fn acquire(db: &Path, wait: Duration) -> Result<ConnectorLock> {
        let db = db.to_path_buf();
        let file = crate::blocking::blocking(move || {
            let dir = SafeDir::open(fsio::parent_dir(&db))?;
            open_lock_file(&dir, db.file_name().unwrap_or_default())
        })
        .await?;
        Self::wait_for(file, wait).await
    }

    /// As [`ConnectorLock::acquire`], for the database `db_name` in the open directory
    /// `dir`.
    pub async fn acquire_in(
        dir: &SafeDir,
        db_name: &OsStr,
        wait: Duration,
    ) -> Result<ConnectorLock> {
        let (dir, db_name) = (dir.try_clone()?, db_name.to_os_string());
        let opened = crate::blocking::blocking(move || open_lock_file(&dir, &db_name)).await?;
        Self::wait_for(opened, wait).await
    }

    async fn wait_for((file, path): (File, PathBuf), wait: Duration) -> Result<ConnectorLock> {
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(ConnectorLock { _file: file, path }),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Io {
                        path,
                        message: format!(
                            "another hubvault (a backup or a restore of this connector) has held its lock for over {wait:?}"
                        ),
                        hint: "wait for it to finish (see `hubvault agent` logs) and try again"
                            .into(),
                        source: std::io::Error::new(std::io::ErrorKind::WouldBlock, "locked"),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(&path, "cannot lock", e));
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

const LOCK_SUFFIX: &str = ".hubvault-lock";

/// Opens (or creates) the lock file of `db_name` in `dir`, never through a link, and
/// gives it to the database's owner (or the directory's, when there is no database yet)
/// if we run as root.
fn open_lock_file(dir: &SafeDir, db_name: &OsStr) -> Result<(File, PathBuf)> {
    let name = ConnectorLock::name_for(db_name);
    let path = dir.shown(&name);
    let (file, _created) = dir.open_or_create(&name, 0o644)?;
    if safedir::is_root() {
        let owner = match dir.entry(db_name)? {
            Some(e) if e.kind == Kind::File => e,
            _ => dir.stat()?,
        };
        if let Err(e) = safedir::give_to(&file, owner.uid, owner.gid) {
            tracing::warn!(
                "{}: cannot give the lock file to uid {} ({e}); the connector's user may not be able to take it",
                path.display(),
                owner.uid
            );
        }
    }
    Ok((file, path))
}
