//! Durable file operations, in one place: the side files of a database, fsync of a file
//! and of its directory, hashing, ownership, and advisory locks.
//!
//! A file is durable only when it AND the directory entry naming it are on disk: every
//! rename that installs something is followed by [`fsync_dir`].

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The files SQLite keeps beside a database: a rollback journal, a write-ahead log and
/// its shared-memory index.
pub const SIDE_SUFFIXES: [&str; 3] = ["-journal", "-wal", "-shm"];

/// `sqlite.db` + `-wal` = `sqlite.db-wal`.
pub fn side_path(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Removes the side files of a database we own (a temp copy); missing ones are fine.
pub fn remove_side_files(db: &Path) {
    for side in SIDE_SUFFIXES {
        let _ = std::fs::remove_file(side_path(db, side));
    }
}

/// Removes a temp database's side files when dropped.
pub struct RemoveSideFiles(pub PathBuf);

impl Drop for RemoveSideFiles {
    fn drop(&mut self) {
        remove_side_files(&self.0);
    }
}

/// fsyncs `dir`, so that the names created, renamed or removed in it are on disk.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "cannot fsync the directory", e))
}

/// fsyncs the file at `path`.
pub fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "cannot fsync", e))
}

/// fsyncs (data only) the write-ahead log beside `db` (`O_NOFOLLOW`: it is in a
/// connector's directory), while a write transaction of ours that spilled into it still
/// runs: frames not yet committed are ignored by SQLite's recovery, so writing them early
/// is safe, and the commit's own sync then waits for little. SQLite takes no POSIX lock
/// on the `-wal` file, so closing this descriptor drops none.
pub fn sync_wal_early(db: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let wal = side_path(db, "-wal");
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&wal)
        .and_then(|f| f.sync_data())
        .map_err(|e| Error::io(&wal, "cannot fsync", e))
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// sha256 (hex) and size of a local file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    sha256_of(&mut f, path)
}

/// sha256 (hex) and size of what `f` holds from its current position; `path` names it
/// in errors.
pub fn sha256_of(f: &mut impl Read, path: &Path) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Starts writing `f`'s dirty pages to disk and returns without waiting for them
/// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`): the kernel writes while the
/// caller goes on reading (checks, a sha256), so the fsync that follows waits for what
/// is left, not for the whole file. Durability still comes from that fsync alone; an
/// error here only means nothing was started.
pub fn start_writeback(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we hold open; it reads no memory of ours.
    let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// An exclusive, non-blocking advisory lock (`flock`), independent of SQLite's own
/// POSIX locks; let go when the file is closed or the process dies.
pub fn try_lock(f: &std::fs::File) -> std::io::Result<()> {
    match f.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "locked by another process",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The early WAL sync opens the connector's `-wal` without following a link: a link
    /// planted there is an error naming the file (the open's ELOOP); a plain file syncs.
    #[test]
    fn the_early_wal_sync_refuses_a_link_in_place_of_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sqlite.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(dir.path().join("elsewhere"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), side_path(&db, "-wal")).unwrap();
        let err = sync_wal_early(&db).unwrap_err().to_string();
        assert!(err.contains("sqlite.db-wal"), "{err}");
        std::fs::remove_file(side_path(&db, "-wal")).unwrap();
        std::fs::write(side_path(&db, "-wal"), b"frames").unwrap();
        sync_wal_early(&db).unwrap();
    }
}
