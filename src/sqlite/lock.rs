//! One backup of a connector at a time, across processes.
//!
//! An advisory lock (`flock`) on `<db>.hubvault-lock` beside the database: the agent and
//! a `hubvault backup` from the connector's start-up take the same lock, so they never
//! both snapshot and upload. The second one waits, then applies the rule itself (and
//! usually skips: the first just made the backup fresh). The kernel drops the lock when
//! the holder dies, so a crash never leaves a connector locked.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Debug)]
pub struct ConnectorLock {
    _file: File,
    path: PathBuf,
}

impl ConnectorLock {
    pub fn path_for(db: &Path) -> PathBuf {
        crate::sqlite::fsio::side_path(db, ".hubvault-lock")
    }

    /// Waits up to `wait` for the lock.
    pub async fn acquire(db: &Path, wait: Duration) -> Result<ConnectorLock> {
        let path = Self::path_for(db);
        let file = {
            let path = path.clone();
            crate::blocking::blocking(move || {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, "cannot open the connector's lock file", e))
            })
            .await?
        };
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
                            "another hubvault has been backing up this connector for over {wait:?}"
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
