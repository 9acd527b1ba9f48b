//! A consistent copy of a live connector database, taken while the connector writes.
//!
//! SQLite's online backup API copies the database as of one read transaction, so the
//! copy holds exactly a committed prefix of the writer's transactions, including rows
//! that so far live only in the `-wal` file (a raw file copy would miss those, or tear
//! pages). It is driven in ONE pass (`step(-1)`): a backup in small steps restarts
//! whenever another connection commits, and was measured never to finish under a busy
//! writer (shared/docs/FINDINGS.md). A pass that meets a lock is retried a bounded
//! number of times.
//!
//! The copy is switched to `journal_mode=DELETE` so the uploaded object is one
//! self-contained file that opens read-only anywhere (a WAL-mode file needs a writable
//! directory for its `-shm`); the source's mode is recorded and put back on restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};

use crate::error::{Error, Result};
use crate::sqlite::db::{self, ConnectorInfo};
use crate::sqlite::fsio::{self, RemoveSideFiles};

/// How many times a pass that met a lock is retried, and the pause between.
const LOCK_RETRIES: u32 = 200;
const LOCK_PAUSE: Duration = Duration::from_millis(50);

/// A checked snapshot in a temp file, removed when dropped.
#[derive(Debug)]
pub struct Snapshot {
    pub file: tempfile::TempPath,
    /// Holds an exclusive `flock` on `file` while the snapshot lives, so a later run can
    /// tell a killed run's leftover (lock free) from a live snapshot. Declared after
    /// `file`: the file is removed before the lock is let go.
    pub owner: std::fs::File,
    pub info: ConnectorInfo,
    pub size: u64,
    pub sha256: String,
    pub page_size: u64,
    pub page_count: u64,
    /// The live database's journal mode (the snapshot itself is in `delete` mode).
    pub source_journal_mode: String,
    pub rows: BTreeMap<String, u64>,
    /// `integrity_check` or `quick_check`.
    pub check: &'static str,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    pub took: Duration,
}

/// A consistent copy of the live database in a temp file (removed when dropped), not
/// yet checked.
#[derive(Debug)]
pub struct Copy {
    pub file: tempfile::TempPath,
    /// Holds an exclusive `flock` on `file` while the copy lives, so a later run can
    /// tell a killed run's leftover (lock free) from a live copy. Declared after
    /// `file`: the file is removed before the lock is let go.
    pub owner: std::fs::File,
    /// The live database's journal mode (the copy itself is in `delete` mode).
    pub source_journal_mode: String,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    pub size: u64,
    pub took: Duration,
    db: PathBuf,
}

/// What the checks read from a copy.
#[derive(Clone, Debug)]
pub struct Checked {
    pub info: ConnectorInfo,
    pub rows: BTreeMap<String, u64>,
    pub page_size: u64,
    pub page_count: u64,
    /// `integrity_check` or `quick_check`.
    pub check: &'static str,
}

/// Takes a snapshot of `db` into a temp file in `tmp_dir`, checks it, and reads the
/// connector's ids and row counts from the snapshot (not the live file).
pub fn take(db: &Path, tmp_dir: &Path) -> Result<Snapshot> {
    let started = Instant::now();
    let copy = copy(db, tmp_dir)?;
    let checked = copy.check()?;
    let (sha256, size) = fsio::sha256_file(&copy.file)?;
    Ok(Snapshot {
        file: copy.file,
        owner: copy.owner,
        info: checked.info,
        size,
        sha256,
        page_size: checked.page_size,
        page_count: checked.page_count,
        source_journal_mode: copy.source_journal_mode,
        rows: checked.rows,
        check: checked.check,
        taken_at: copy.taken_at,
        took: started.elapsed(),
    })
}

/// Copies `db` into a temp file in `tmp_dir`, consistently, without checking it.
pub fn copy(db: &Path, tmp_dir: &Path) -> Result<Copy> {
    let started = Instant::now();
    db::check_is_sqlite(db)?;
    // Opening a WAL database can create its -wal and -shm. Run as root, SQLite gives
    // them to the database file's owner itself (fchown on the new descriptor, in
    // os_unix.c), so a connector is never locked out of its own files.
    copy_inner(db, tmp_dir, started)
}

fn copy_inner(db: &Path, tmp_dir: &Path, started: Instant) -> Result<Copy> {
    sweep_dead_snapshots(tmp_dir);
    let (owner, tmp) = locked_temp_file(tmp_dir)
        .map_err(|e| Error::io(tmp_dir, "cannot create a temp file for the snapshot", e))?;
    // Dropped after the copy's connection (declared later, dropped earlier): a failed
    // write (a full disk) can leave a hot journal beside the temp file otherwise.
    let _side_files = RemoveSideFiles(tmp.to_path_buf());
    let src = db::open_read_only(db)?;
    let source_journal_mode = db::page_info(&src, db)?.2;
    // The copy is a private temp file that is checked and hashed before anything is
    // done with it: a crash simply loses it, so it needs no journal and no fsync.
    let mut dst = db::open_scratch(&tmp)?;
    let fast = |e| map_snapshot_error(db, &tmp, e);
    let taken_at = chrono::Utc::now();
    {
        let backup = Backup::new(&src, &mut dst)
            .map_err(|e| Error::sqlite(db, "cannot start the snapshot", e))?;
        let mut retries = 0;
        loop {
            match backup.step(-1) {
                Ok(StepResult::Done) => break,
                Ok(StepResult::More) => continue,
                Ok(StepResult::Busy | StepResult::Locked) if retries < LOCK_RETRIES => {
                    retries += 1;
                    std::thread::sleep(LOCK_PAUSE);
                }
                Ok(_) => {
                    return Err(Error::db(
                        db,
                        format!(
                            "stayed locked for {:?} during the snapshot",
                            LOCK_PAUSE * LOCK_RETRIES
                        ),
                        "another process holds an exclusive lock on the database; try again later",
                    ));
                }
                Err(e) => return Err(map_snapshot_error(db, &tmp, e)),
            }
        }
    }
    drop(src);
    tracing::debug!(elapsed = ?started.elapsed(), "snapshot copied");
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(fast)?;
    dst.close()
        .map_err(|(_, e)| Error::sqlite(db, "cannot close the snapshot", e))?;
    let size = std::fs::metadata(&tmp)
        .map_err(|e| Error::io(&*tmp, "cannot stat the snapshot", e))?
        .len();
    Ok(Copy {
        file: tmp,
        owner,
        source_journal_mode,
        taken_at,
        size,
        took: started.elapsed(),
        db: db.to_path_buf(),
    })
}

impl Copy {
    /// Integrity and foreign-key checks, ids and row counts, all read from the copy:
    /// what is uploaded is what was checked. Errors name the live database.
    pub fn check(&self) -> Result<Checked> {
        check_copy(&self.file, &self.db, self.size)
    }

    /// The live database this is a copy of.
    pub fn db(&self) -> &Path {
        &self.db
    }
}

/// [`Copy::check`] on paths, for running on another thread while the copy is read.
pub fn check_copy(file: &Path, db: &Path, size: u64) -> Result<Checked> {
    let started = Instant::now();
    let conn = db::open_read_only(file)?;
    let check = db::check_integrity(&conn, db, size)?;
    let info = db::read_info(&conn, db)?;
    let rows = db::table_counts(&conn, db)?;
    let (page_size, page_count, _) = db::page_info(&conn, db)?;
    tracing::debug!(elapsed = ?started.elapsed(), check, "snapshot checked");
    Ok(Checked {
        info,
        rows,
        page_size,
        page_count,
        check,
    })
}

/// Snapshot temp files are `.hubvault-snapshot-*.db`. Each is locked (`flock`) right
/// after it is created and before anything is written to it, so a sweeper that finds a
/// non-empty one whose lock is free knows its owner is dead. An empty one may be a
/// live run's between creation and locking: it is left for a minute (and costs nothing).
const SNAPSHOT_PREFIX: &str = ".hubvault-snapshot-";

fn locked_temp_file(tmp_dir: &Path) -> std::io::Result<(std::fs::File, tempfile::TempPath)> {
    let tmp = tempfile::Builder::new()
        .prefix(SNAPSHOT_PREFIX)
        .suffix(".db")
        .tempfile_in(tmp_dir)?;
    fsio::try_lock(tmp.as_file())?;
    Ok(tmp.into_parts())
}

/// Removes what killed runs left in `tmp_dir`: a `kill -9` gives no chance to clean up,
/// and each leftover is as large as a database. A snapshot file whose lock is free has
/// no live owner; it goes with its journal. Best effort: errors are ignored.
fn sweep_dead_snapshots(tmp_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(".db") {
            let Ok(f) = std::fs::File::open(&path) else {
                continue;
            };
            let dead = f.metadata().is_ok_and(|m| {
                m.len() > 0
                    || m.modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(60))
            });
            if dead && fsio::try_lock(&f).is_ok() {
                tracing::info!(
                    "removing {}, left by a backup that was killed",
                    path.display()
                );
                fsio::remove_side_files(&path);
                let _ = std::fs::remove_file(&path);
            }
        } else if name.starts_with(SNAPSHOT_PREFIX) {
            // A journal whose snapshot is gone.
            let base = fsio::SIDE_SUFFIXES
                .iter()
                .find_map(|s| name.strip_suffix(s));
            if let Some(base) = base
                && !tmp_dir.join(base).exists()
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn map_snapshot_error(db: &Path, tmp: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ffi;
    // The source is opened read-only: a failed write is the temp file's (a file-size
    // limit gives EFBIG, which SQLite reports as an I/O error, not as a full disk).
    let write_failed = e.sqlite_error().is_some_and(|f| {
        [
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_TRUNCATE,
        ]
        .contains(&f.extended_code)
    });
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => Error::Io {
            path: tmp.to_path_buf(),
            message: format!(
                "the disk filled up while writing the snapshot of {}",
                db.display()
            ),
            hint: "free space in the temp directory (TMPDIR or --tmp-dir) and try again".into(),
            source: std::io::Error::new(std::io::ErrorKind::StorageFull, e.to_string()),
        },
        _ if write_failed => Error::Io {
            path: tmp.to_path_buf(),
            message: format!(
                "cannot write the snapshot of {} (disk full or file size limit?)",
                db.display()
            ),
            hint: "free space in the temp directory (TMPDIR or --tmp-dir), check `ulimit -f`, and try again".into(),
            source: std::io::Error::other(e.to_string()),
        },
        _ => Error::sqlite(db, "snapshot failed", e),
    }
}
