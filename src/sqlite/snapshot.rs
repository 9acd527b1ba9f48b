//! A consistent image of a live connector database, read ONCE, and checked on that same
//! state while it is read: what a backup hashes, uploads and compresses in one pass.
//!
//! - **WAL mode** (connectors' usual mode): a read-only connection of ours begins a read
//!   transaction; the page reader learns which snapshot it took from the `-shm`
//!   (`pages::image::pin_wal`) and streams that snapshot's pages from the database file
//!   and the `-wal` with plain reads, while the same connection runs the checks
//!   (`integrity_check` or `quick_check`, `foreign_key_check`, ids, row counts) inside
//!   the same transaction, on another thread. In WAL mode a reader never blocks a writer;
//!   the transaction only keeps checkpoints from going past it while it lasts (one pass
//!   and the checks), as the online backup API's pass did.
//! - **Rollback-journal mode**: any SHARED lock held while the database is read would
//!   make a writer with a short busy timeout fail (a 1 GiB read takes a second). So the
//!   pages are read ONCE without a lock, between two brief SHARED locks that read the
//!   file change counter, size and time of the last write (`pages::rollback::Stamp`):
//!   lock #1 when pinned, lock #2 when the image reader reaches the end
//!   ([`rollback::confirm_full`]). The same stamp at both, and page 1 re-read under lock
//!   #2 as it was streamed, prove nothing wrote the file between: no commit, and no
//!   transaction that spilled pages into it and rolled back. The bytes read go to the caller (hash, uploads, compressor) and, in the
//!   same read, into a temp copy in `--tmp-dir`, which the checks read once lock #2 has
//!   vouched for it (they wait until then, with no lock on the live file at all). A
//!   commit that raced the read fails it with [`is_raced`]: the caller throws away what
//!   it staged and tries again ([`Retry`]), waiting for a quiet moment.
//!
//! Either way the image starts with a page 1 that says rollback mode (header bytes 18
//! and 19 = 1) when asked ([`Pinned::reader`]): the uploaded object is one self-contained
//! file that opens read-only anywhere, with no `-wal` or `-shm`; the source's journal
//! mode is recorded and put back on restore. Images of an unchanged database are
//! byte-identical (the WAL's frames overlay the file's pages).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::sqlite::db::{self, ConnectorInfo};
use crate::sqlite::fsio;
use crate::sqlite::pages::image::{ImagePlan, ImageReader, pin_wal};
use crate::sqlite::pages::rollback::{self, Locker, Skip};
use crate::sqlite::pages::seam::{self, Point};
use crate::sqlite::pages::{Mode, Source};
use crate::sqlite::twin;

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

/// What the checks read from a snapshot.
#[derive(Clone, Debug)]
pub struct Checked {
    pub info: ConnectorInfo,
    pub rows: BTreeMap<String, u64>,
    pub page_size: u64,
    pub page_count: u64,
    /// `integrity_check` or `quick_check`.
    pub check: &'static str,
}

/// A consistent state of a live database, pinned until dropped: [`Pinned::split`] it
/// into the [`Image`], read once, and the [`Checker`] of the same state, for two threads.
pub struct Pinned {
    held: Arc<Held>,
    plan: Arc<ImagePlan>,
    /// Rollback-journal mode: the copy the pass writes for the checks (removed when
    /// dropped) and the descriptor holding its `flock`.
    copy: Option<(tempfile::TempPath, std::fs::File)>,
    /// Rollback-journal mode: what lock #2 needs, for the copy thread.
    rollback: Option<RollbackStart>,
    db: PathBuf,
    /// The live database's journal mode.
    pub journal_mode: String,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    /// Which connections will check the state.
    pub checks: Checks,
    /// Attempts a rollback-journal copy needed (a commit raced the others); 1 in WAL mode.
    pub attempts: u32,
    /// Time until the state was pinned (a rollback-journal database: copied).
    pub pinned_after: Duration,
}

/// Which connections check a pinned state: two split the checks over two cores when
/// both provably see it (see `twin`); otherwise the first runs every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// A second connection opened on the first one's WAL snapshot (`sqlite3_snapshot_open`).
    TwinBySnapshot,
    /// A second connection whose read transaction the wal-index header, read before and
    /// after it began, proves the same (an empty WAL, for which SQLite has no handle).
    TwinByHeader,
    /// Two connections on the rollback-journal copy, which nothing writes.
    TwinOnCopy,
    /// The first connection alone: SQLite gave no second one on the snapshot (why), and
    /// a commit (or a WAL restart) moved the wal-index header before one could be proven.
    One(twin::NoTwin),
}

/// What pins the state, shared by the [`Image`] and the [`Checker`]: it lasts until BOTH
/// are done, so checks that finish first never end the read transaction under a pass
/// still reading (a checkpoint could then copy newer frames into pages not yet read).
struct Held {
    // Field order is drop order, and it matters: the checking connection (whose read
    // transaction pins a WAL snapshot) goes first; only then may our own descriptors of
    // the database close, since closing any descriptor of a file drops every POSIX lock
    // the process holds on it, the connection's included.
    conn: std::sync::Mutex<Connection>,
    /// A second connection on the same state (`twin`), so the checks split over two
    /// cores; `None` when SQLite could not give one.
    twin: Option<std::sync::Mutex<Connection>>,
    src: Source,
}

/// The image of a [`Pinned`] state, read once.
pub struct Image {
    held: Arc<Held>,
    plan: Arc<ImagePlan>,
    legacy_header: bool,
    /// Rollback-journal mode: lock #2's figures, the copy written in the same read, and
    /// the word to the checker that the copy is a committed state.
    rollback: Option<RollbackPass>,
    /// The rollback-journal copy (removed when the image is dropped; the checking
    /// connections keep their own descriptors).
    _copy: Option<(tempfile::TempPath, std::fs::File)>,
}

/// What a rollback-journal read needs once split: lock #2's locker and figures, and the
/// copy to write.
struct RollbackStart {
    locker: Locker,
    /// What lock #1 saw (counter, size, time of the last write).
    first: rollback::Stamp,
    /// A read-write descriptor of the copy, for the thread (the `flock` is held by
    /// another one), and a read-only one for the image's reader.
    copy: std::fs::File,
    read: std::fs::File,
    copy_path: PathBuf,
}

/// A rollback-journal image in the making. A thread of its own copies the live file,
/// without a lock, into the copy and takes lock #2 as soon as it is done ([`copy_thread`]):
/// the unlocked window is as short as a plain copy, whatever the consumer of the image
/// does with the bytes. The image's reader follows that thread through the copy (the
/// source is read once; the consumer's bytes come from the copy's page cache), so the
/// copy and the hash/upload/compression overlap instead of running one after the other.
struct RollbackPass {
    progress: Arc<CopyProgress>,
    /// The copy, read-only (an error if it could not be had: reads fail with it).
    copy: std::io::Result<std::fs::File>,
    copy_path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RollbackPass {
    fn drop(&mut self) {
        // The copy must not be written after the image (and its temp file) is gone.
        self.progress
            .cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How far the copy thread is, and how it ended.
#[derive(Default)]
struct CopyProgress {
    state: std::sync::Mutex<CopyState>,
    moved: std::sync::Condvar,
    cancel: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct CopyState {
    copied: u64,
    end: Option<CopyEnd>,
}

#[derive(Clone)]
enum CopyEnd {
    /// Lock #2 vouched for the copy.
    Confirmed,
    /// A commit came; the unlocked read took this long.
    Raced(Duration),
    Failed(std::io::ErrorKind, String),
}

impl CopyProgress {
    fn state(&self) -> std::sync::MutexGuard<'_, CopyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut CopyState)) {
        f(&mut self.state());
        self.moved.notify_all();
    }

    /// Waits until `at` bytes are copied or the copy ended; returns the bytes copied and
    /// the end, if any.
    fn wait_for(&self, at: u64) -> (u64, Option<CopyEnd>) {
        let mut st = self.state();
        while st.copied < at && st.end.is_none() {
            st = self.moved.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        (st.copied, st.end.clone())
    }

    /// Waits until the copy ended (lock #2's verdict, or a failure).
    fn wait_end(&self) -> (u64, Option<CopyEnd>) {
        let mut st = self.state();
        while st.end.is_none() {
            st = self.moved.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        (st.copied, st.end.clone())
    }
}

/// The copy thread of a rollback-journal read (see [`RollbackPass`]): the live file as
/// lock #1 sized it, copied in order, then lock #2 ([`rollback::confirm_full`]); tells
/// the checker when the copy is confirmed.
fn copy_thread(
    held: Arc<Held>,
    plan: Arc<ImagePlan>,
    start: RollbackStart,
    progress: Arc<CopyProgress>,
    ready: std::sync::mpsc::Sender<()>,
) {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let started = Instant::now();
    let failed = |e: std::io::Error, what: &str| CopyEnd::Failed(e.kind(), format!("{what}: {e}"));
    let end = (|| {
        let mut reader = plan.reader(&held.src, false);
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            if progress.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return CopyEnd::Failed(std::io::ErrorKind::Interrupted, "stopped".into());
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return failed(e, "cannot read the database"),
            };
            if let Err(e) = start.copy.write_all_at(&buf[..n], at) {
                let what = format!(
                    "cannot write the snapshot copy {}",
                    start.copy_path.display()
                );
                return failed(e, &what);
            }
            if at == 0 && (n as u64) < plan.bytes() {
                seam::at(held.src.path(), Point::Reading);
            }
            at += n as u64;
            progress.update(|st| st.copied = at);
        }
        let ps = start.first.header.page_size as u64;
        let copy = &start.copy;
        let got = rollback::confirm_full(
            &held.src,
            &start.locker,
            &start.first,
            plan.pages,
            &mut |p, b| copy.read_exact_at(b, (p as u64 - 1) * ps),
        );
        match got {
            Ok(Ok(held)) => {
                tracing::debug!(lock_held = ?held, bytes = at, elapsed = ?started.elapsed(),
                    "rollback journal: read once without a lock, confirmed under lock #2");
                // The checker may be gone (a caller that checks nothing): fine.
                let _ = ready.send(());
                CopyEnd::Confirmed
            }
            Ok(Err(why)) => {
                tracing::debug!(?why, "rollback journal: lock #2 refused the read");
                CopyEnd::Raced(started.elapsed())
            }
            Err(e) => CopyEnd::Failed(std::io::ErrorKind::Other, e.to_string()),
        }
    })();
    progress.update(|st| st.end = Some(end));
}

/// A commit came between the two SHARED locks of a rollback-journal read: the image is
/// not a committed state. Carried inside the read's `io::Error` (see [`is_raced`]).
#[derive(Debug)]
struct CommitRaced {
    /// How long the unlocked read took: the quiet moment the next attempt needs.
    read_took: Duration,
}

impl std::fmt::Display for CommitRaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a commit came while the database was read")
    }
}

impl std::error::Error for CommitRaced {}

/// True for the error of an image read that a commit raced (rollback-journal mode): the
/// caller throws away what it built from it and reads again ([`Retry`]).
pub fn is_raced(e: &Error) -> bool {
    raced_read_took(e).is_some()
}

/// For the error of a raced read ([`is_raced`]): how long its unlocked read took, the
/// quiet moment to wait for before the next attempt ([`Retry::again`]).
pub fn raced_read_took(e: &Error) -> Option<Duration> {
    match e {
        Error::Io { source, .. } => source
            .get_ref()
            .and_then(|r| r.downcast_ref::<CommitRaced>())
            .map(|r| r.read_took),
        _ => None,
    }
}

/// The image's bytes in order. In rollback-journal mode they are read from the copy as
/// its thread writes it; at the end of the image lock #2 has confirmed the copy, or the
/// read fails with [`is_raced`].
pub struct ImageRead<'a> {
    inner: ImageReader<'a>,
    rollback: Option<&'a RollbackPass>,
    total: u64,
    at: u64,
}

impl std::io::Read for ImageRead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let Some(rb) = self.rollback else {
            return self.inner.read(out);
        };
        let want = (out.len() as u64).min(self.total - self.at);
        // At the end of the image, the copy's end too: the whole copy may be written
        // before lock #2 has said whether a commit raced it, and EOF means confirmed.
        let (copied, end) = if self.at + want >= self.total {
            rb.progress.wait_end()
        } else {
            rb.progress.wait_for(self.at + want)
        };
        match end {
            Some(CopyEnd::Raced(read_took)) => {
                return Err(std::io::Error::other(CommitRaced { read_took }));
            }
            Some(CopyEnd::Failed(kind, msg)) => return Err(std::io::Error::new(kind, msg)),
            Some(CopyEnd::Confirmed) | None => {}
        }
        let n = (copied.min(self.total) - self.at).min(want) as usize;
        if n == 0 {
            // The end of the image, confirmed (an unconfirmed end returned above).
            return Ok(0);
        }
        let copy = rb
            .copy
            .as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
        copy.read_exact_at(&mut out[..n], self.at).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot read the snapshot copy {}: {e}",
                    rb.copy_path.display()
                ),
            )
        })?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Image {
    /// The image's bytes in order (page 1 saying rollback mode when asked: see
    /// [`Pinned::split`]). Read it to its end: in rollback-journal mode the end is where
    /// the image is proven a committed state (or fails with [`is_raced`]).
    pub fn reader(&self) -> ImageRead<'_> {
        ImageRead {
            inner: self.plan.reader(&self.held.src, self.legacy_header),
            rollback: self.rollback.as_ref(),
            total: self.plan.bytes(),
            at: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.plan.bytes()
    }
}

/// The checks of a [`Pinned`] state, for another thread.
pub struct Checker {
    held: Arc<Held>,
    db: PathBuf,
    size: u64,
    plan: (u32, u32),
    /// Rollback-journal mode: word that the copy the checks read is whole and confirmed.
    ready: Option<std::sync::mpsc::Receiver<()>>,
}

/// How long a rollback-journal copy keeps trying to fit between two commits.
const ROLLBACK_BUDGET: Duration = Duration::from_secs(60);
/// Attempts at a rollback-journal copy, at most.
const ROLLBACK_TRIES: u32 = 50;

/// Pins a consistent state of the live database `db` (see the module's rules); `tmp_dir`
/// receives the copy of a rollback-journal database.
pub fn pin(db: &Path, tmp_dir: &Path) -> Result<Pinned> {
    let started = Instant::now();
    db::check_is_sqlite(db)?;
    let mut src = Source::open(db)?;
    for _ in 0..4 {
        seam::at(db, Point::Opened);
        match src.header()?.mode {
            Mode::Wal => {
                // Opening a WAL database can create its -wal and -shm. Run as root, SQLite
                // gives them to the database file's owner itself (fchown on the new
                // descriptor, in os_unix.c), so a connector is never locked out of them.
                let conn = db::open_live(db)?;
                let q = |e| Error::sqlite(db, "cannot read the database", e);
                // A first read sets up the wal-index if no connection had.
                conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                    .map_err(q)?;
                let taken_at = chrono::Utc::now();
                let plan = pin_wal(
                    &mut src,
                    || {
                        conn.execute_batch("BEGIN").map_err(q)?;
                        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                            .map_err(q)
                    },
                    || {
                        let _ = conn.execute_batch("COMMIT");
                    },
                )?;
                let Some(plan) = plan else { continue };
                if src.replaced() {
                    // Another file was renamed in at the path since the reader opened the
                    // old one: the connection (and the -shm and -wal, opened by name) may
                    // be the new database's, the file's pages the old one's. Start over
                    // on the file there now.
                    drop(conn);
                    src = Source::open(db)?;
                    continue;
                }
                seam::at(db, Point::WalPinned);
                let (twin, checks) = match twin::open_on_snapshot(&conn, db)? {
                    Ok(t) => (Some(t), Checks::TwinBySnapshot),
                    Err(no) => match twin_by_header(&mut src, plan.index, db)? {
                        Some(t) => (Some(t), Checks::TwinByHeader),
                        None => (None, Checks::One(no)),
                    },
                };
                tracing::debug!(?checks, pages = plan.pages, wal_pages = plan.wal_pages(),
                    elapsed = ?started.elapsed(), "snapshot pinned (WAL read transaction)");
                return Ok(Pinned {
                    held: Arc::new(Held {
                        conn: conn.into(),
                        twin: twin.map(Into::into),
                        src,
                    }),
                    plan: Arc::new(plan),
                    copy: None,
                    rollback: None,
                    db: db.to_path_buf(),
                    journal_mode: Mode::Wal.name().to_string(),
                    taken_at,
                    checks,
                    attempts: 1,
                    pinned_after: started.elapsed(),
                });
            }
            Mode::Rollback => match pin_rollback(db, src, tmp_dir, started)? {
                Some(p) => return Ok(p),
                None => src = Source::open(db)?, // switched to WAL meanwhile
            },
        }
    }
    Err(Error::db(
        db,
        "switched journal mode during every attempt at a snapshot",
        "try again",
    ))
}

/// A second connection on the snapshot whose wal-index header `pinned` is, proven the
/// way [`pin_wal`] proves the first: the header read before and after its read
/// transaction began is `pinned` both times (a header only moves forward), so that
/// transaction took it. For an empty WAL, where SQLite has no snapshot handle; with a
/// writer committing meanwhile there is none (`None`: one connection checks).
fn twin_by_header(
    src: &mut Source,
    pinned: Option<crate::sqlite::pages::shm::IndexHeader>,
    db: &Path,
) -> Result<Option<Connection>> {
    let Some(pinned) = pinned else {
        return Ok(None);
    };
    let io = |e| Error::io(db, "cannot read the -shm", e);
    let conn = twin::open_parked(db)?;
    if src.shm_header().map_err(io)? != Some(pinned) {
        return Ok(None);
    }
    twin::begin_read(&conn, db)?;
    // The header does not name the database (a fresh empty WAL's is the same for any):
    // the connection, opened by name, must have opened the file the reader holds.
    let same = src.shm_header().map_err(io)? == Some(pinned) && !src.replaced();
    Ok(same.then_some(conn))
}

/// The rollback-journal route: lock #1 (change counter and size), a temp file for the
/// copy the pass writes, and the checking connections on it (they read nothing before
/// the copy is confirmed). `None`: the database is in WAL mode now.
fn pin_rollback(
    db: &Path,
    src: Source,
    tmp_dir: &Path,
    started: Instant,
) -> Result<Option<Pinned>> {
    sweep_dead_snapshots(tmp_dir);
    let locker = Locker::open(db)?;
    let mut retry = Retry::new();
    let first = loop {
        match rollback::counter(&src, &locker) {
            Ok(first) if first.header.mode == Mode::Wal => return Ok(None),
            Ok(first) => break first,
            Err(Skip::NowWal) => return Ok(None),
            Err(Skip::Raced) => retry.again(db, Duration::ZERO, "a commit came")?,
            Err(Skip::Busy(why)) => retry.again(db, Duration::ZERO, &why)?,
        }
    };
    let taken_at = chrono::Utc::now();
    let (owner, tmp) = locked_temp_file(tmp_dir, ".db")
        .map_err(|e| Error::io(tmp_dir, "cannot create a temp file for the snapshot", e))?;
    let copy = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&tmp)
        .map_err(|e| Error::io(&*tmp, "cannot open the snapshot copy", e))?;
    // The image is the file as lock #1 saw it; lock #2 proves it still is.
    let mut plan = ImagePlan::file(&src)?;
    plan.page_size = first.header.page_size;
    plan.pages = first.pages();
    // Cut to the size page 1 says (a file may be longer than its database); page 1 is
    // re-read under lock #2, so a size read from a page 1 changed meanwhile is a race.
    let plan = plan.sized(&src)?;
    // Opened now, on an empty file: they read nothing until the copy is confirmed, and
    // SQLite reads a file it has never read from scratch.
    let conn = db::open_read_only(&tmp)?;
    let twin = twin::open_on_still_file(&tmp)?;
    tracing::debug!(pages = plan.pages, elapsed = ?started.elapsed(), "snapshot pinned (rollback journal: lock #1)");
    let copy_path = tmp.to_path_buf();
    let read = std::fs::File::open(&tmp)
        .map_err(|e| Error::io(&*tmp, "cannot open the snapshot copy", e))?;
    Ok(Some(Pinned {
        held: Arc::new(Held {
            conn: conn.into(),
            twin: Some(twin.into()),
            src,
        }),
        plan: Arc::new(plan),
        copy: Some((tmp, owner)),
        rollback: Some(RollbackStart {
            locker,
            first,
            copy,
            read,
            copy_path,
        }),
        db: db.to_path_buf(),
        journal_mode: Mode::Rollback.name().to_string(),
        taken_at,
        checks: Checks::TwinOnCopy,
        attempts: retry.attempts + 1,
        pinned_after: started.elapsed(),
    }))
}

/// Attempts at a consistent rollback-journal read, each after a quiet moment: at most
/// [`ROLLBACK_TRIES`] in [`ROLLBACK_BUDGET`].
pub struct Retry {
    started: Instant,
    attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry::new()
    }
}

impl Retry {
    pub fn new() -> Retry {
        Retry {
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// Counts a failed attempt (`why`) and waits for a moment as quiet as the last read
    /// (`pass`) took; an error naming `db` once the attempts or the time are used up.
    pub fn again(&mut self, db: &Path, pass: Duration, why: &str) -> Result<()> {
        self.attempts += 1;
        if self.attempts >= ROLLBACK_TRIES || self.started.elapsed() >= ROLLBACK_BUDGET {
            return Err(Error::db(
                db,
                format!(
                    "changed during each of {} attempts at a consistent copy in {:.0?} ({why})",
                    self.attempts,
                    self.started.elapsed()
                ),
                "the connector commits without a pause long enough to read the database; the backup never holds a lock that could make it fail, so try again when it is quieter",
            ));
        }
        if let Ok(src) = Source::open(db) {
            wait_for_quiet(&src, pass, self.started + ROLLBACK_BUDGET);
        }
        Ok(())
    }
}

/// Waits (bounded by `until`) until the change counter has stayed put for about as long
/// as the last copy took: a copy started then has the best chance to fit.
fn wait_for_quiet(src: &Source, pass: Duration, until: Instant) {
    let want = pass.clamp(Duration::from_millis(5), Duration::from_secs(5));
    let mut last = src.header().ok().map(|h| h.change_counter);
    let mut since = Instant::now();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2).max(want / 10));
        let now = src.header().ok().map(|h| h.change_counter);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= want {
            return;
        }
    }
}

/// A write to a temp file of ours that failed: a full disk, a file-size limit.
pub fn map_tmp_io(db: &Path, tmp: &Path, e: std::io::Error) -> Error {
    let full = e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(libc::EFBIG)
        || e.kind() == std::io::ErrorKind::FileTooLarge;
    if full {
        Error::Io {
            path: tmp.to_path_buf(),
            message: format!(
                "the disk filled up while writing the snapshot of {} (disk full or file size limit)",
                db.display()
            ),
            hint: "free space in the temp directory (TMPDIR or --tmp-dir), check `ulimit -f`, and try again".into(),
            source: e,
        }
    } else {
        Error::io(tmp, "cannot write the snapshot", e)
    }
}

impl Pinned {
    /// Bytes of the image.
    pub fn bytes(&self) -> u64 {
        self.plan.bytes()
    }

    /// Pages taken from the WAL (for logs).
    pub fn wal_pages(&self) -> usize {
        self.plan.wal_pages()
    }

    /// The live database this is a state of.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// The image, and the checks of the same state, to run at the same time on two
    /// threads. With `legacy_header` the image's page 1 says rollback mode (see the
    /// module). Either may be dropped first.
    pub fn split(self, legacy_header: bool) -> (Image, Checker) {
        let size = self.plan.bytes();
        let plan = (self.plan.page_size, self.plan.pages);
        let mut ready = None;
        let rollback = self.rollback.map(|start| {
            let (tx, rx) = std::sync::mpsc::channel();
            ready = Some(rx);
            let progress = Arc::new(CopyProgress::default());
            let copy = start.read.try_clone();
            let copy_path = start.copy_path.clone();
            let (held, plan, p) = (self.held.clone(), self.plan.clone(), progress.clone());
            let thread = std::thread::Builder::new()
                .name("rollback-copy".into())
                .spawn(move || copy_thread(held, plan, start, p, tx))
                .ok();
            if thread.is_none() {
                progress.update(|st| {
                    st.end = Some(CopyEnd::Failed(
                        std::io::ErrorKind::Other,
                        "cannot start the copy thread".into(),
                    ))
                });
            }
            RollbackPass {
                progress,
                copy,
                copy_path,
                thread,
            }
        });
        let checker = Checker {
            held: self.held.clone(),
            db: self.db,
            size,
            plan,
            ready,
        };
        let image = Image {
            held: self.held,
            plan: self.plan,
            legacy_header,
            rollback,
            _copy: self.copy,
        };
        (image, checker)
    }
}

impl Checker {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Only the checker locks it: never poisoned by another thread's panic.
        self.held.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Interrupts the checks from another thread (the upload failed: no need to finish).
    pub fn interrupt_handle(&self) -> Interrupt {
        let mut handles = vec![self.conn().get_interrupt_handle()];
        if let Some(t) = &self.held.twin {
            handles.push(lock(t).get_interrupt_handle());
        }
        Interrupt(handles)
    }

    /// Integrity and foreign-key checks, ids, row counts and page figures of the pinned
    /// state. Errors name the live database. The read transaction lasts until the
    /// [`Image`] is dropped too.
    ///
    /// With a second connection on the same state, `integrity_check` (the longest, about
    /// three quarters of the checks' time) runs on this thread and everything else on
    /// another, so the checks take about as long as `integrity_check` alone.
    pub fn check(self) -> Result<Checked> {
        if let Some(ready) = &self.ready
            && ready.recv().is_err()
        {
            // The image was dropped before its end was confirmed: the caller failed.
            return Err(Error::check(
                format!(
                    "{}: the database was not read to its end, nothing to check",
                    self.db.display()
                ),
                "see the error of the read or the upload",
            ));
        }
        let c = match &self.held.twin {
            None => check_conn(&self.conn(), &self.db, self.size)?,
            Some(twin) => self.check_split(twin)?,
        };
        if (c.page_size, c.page_count) != (self.plan.0 as u64, self.plan.1 as u64) {
            return Err(Error::check(
                format!(
                    "{}: the checks saw {} pages of {} bytes, the image has {} of {}",
                    self.db.display(),
                    c.page_count,
                    c.page_size,
                    self.plan.1,
                    self.plan.0
                ),
                "run the backup again; if it persists, report this as a bug",
            ));
        }
        Ok(c)
    }
}

impl Checker {
    fn check_split(&self, twin: &std::sync::Mutex<Connection>) -> Result<Checked> {
        let started = Instant::now();
        let db = self.db.as_path();
        let conn = self.conn();
        let stop_twin = lock(twin).get_interrupt_handle();
        std::thread::scope(|s| {
            let rest = std::thread::Builder::new()
                .name("check-twin".into())
                .spawn_scoped(s, || {
                    let t = lock(twin);
                    let r = check_rest(&t, db);
                    tracing::debug!(elapsed = ?started.elapsed(), "snapshot checked: foreign keys, ids, counts");
                    r
                })
                .map_err(|e| Error::io(db, "cannot start a check thread", e))?;
            let structure = db::check_structure(&conn, db, self.size);
            if structure.is_err() {
                // Damaged: the other half's verdict no longer matters.
                stop_twin.interrupt();
            }
            let rest = rest.join().map_err(|_| {
                Error::check(
                    format!("{}: a check thread panicked", db.display()),
                    "report this as a bug",
                )
            });
            tracing::debug!(elapsed = ?started.elapsed(), "snapshot checked: structure");
            let check = structure?;
            let (info, rows, page_size, page_count) = rest??;
            Ok(Checked {
                info,
                rows,
                page_size,
                page_count,
                check,
            })
        })
    }
}

/// Stops both connections' checks (see [`Checker::interrupt_handle`]).
pub struct Interrupt(Vec<rusqlite::InterruptHandle>);

impl Interrupt {
    pub fn interrupt(&self) {
        for h in &self.0 {
            h.interrupt();
        }
    }
}

/// A connection's mutex: only the checker's threads lock it, never poisoned for good.
fn lock(m: &std::sync::Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Rest = (ConnectorInfo, BTreeMap<String, u64>, u64, u64);

/// Everything but the structural check: foreign keys, ids, row counts, page figures.
fn check_rest(conn: &Connection, db: &Path) -> Result<Rest> {
    db::check_foreign_keys(conn, db)?;
    let info = db::read_info(conn, db)?;
    let rows = db::table_counts(conn, db)?;
    let (page_size, page_count, _) = db::page_info(conn, db)?;
    Ok((info, rows, page_size, page_count))
}

fn check_conn(conn: &Connection, db: &Path, size: u64) -> Result<Checked> {
    let started = Instant::now();
    let check = db::check_integrity(conn, db, size)?;
    let info = db::read_info(conn, db)?;
    let rows = db::table_counts(conn, db)?;
    let (page_size, page_count, _) = db::page_info(conn, db)?;
    tracing::debug!(elapsed = ?started.elapsed(), check, "snapshot checked");
    Ok(Checked {
        info,
        rows,
        page_size,
        page_count,
        check,
    })
}

/// Copies a consistent state of the live database `db` into `out` (the file at
/// `out_path`, truncated first) with the page reader, in one pass as a backup reads it:
/// in WAL mode the file and the frames the pinned snapshot sees, in rollback-journal mode
/// a copy in `tmp_dir` proven between two SHARED locks. The result is a plain
/// rollback-journal database. A commit that raced the read starts the copy over, within
/// the bounds of [`Retry`]. Returns the source's journal mode and when the state was
/// pinned.
pub fn copy_into(
    db: &Path,
    tmp_dir: &Path,
    out: &mut std::fs::File,
    out_path: &Path,
) -> Result<(String, chrono::DateTime<chrono::Utc>)> {
    let mut retry = Retry::new();
    loop {
        let pinned = pin(db, tmp_dir)?;
        let (journal_mode, taken_at) = (pinned.journal_mode.clone(), pinned.taken_at);
        let (image, checker) = pinned.split(true);
        drop(checker);
        use std::io::Seek;
        out.set_len(0)
            .and_then(|()| out.rewind())
            .map_err(|e| Error::io(out_path, "cannot truncate the copy", e))?;
        match std::io::copy(&mut image.reader(), out) {
            Ok(_) => return Ok((journal_mode, taken_at)),
            Err(e) => {
                let e = map_tmp_io(db, out_path, e);
                let Some(took) = raced_read_took(&e) else {
                    return Err(e);
                };
                retry.again(db, took, "a commit came during the read")?;
            }
        }
    }
}

/// Takes a snapshot of `db` into a temp file in `tmp_dir`, checks it, and reads the
/// connector's ids and row counts from the snapshot (not the live file). The file is a
/// plain rollback-journal database.
pub fn take(db: &Path, tmp_dir: &Path) -> Result<Snapshot> {
    let started = Instant::now();
    let (owner, file) = locked_temp_file(tmp_dir, ".db")
        .map_err(|e| Error::io(tmp_dir, "cannot create a temp file for the snapshot", e))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .map_err(|e| Error::io(&*file, "cannot open the snapshot", e))?;
    let (journal_mode, taken_at) = copy_into(db, tmp_dir, &mut out, &file)?;
    drop(out);
    let size = std::fs::metadata(&file)
        .map_err(|e| Error::io(&*file, "cannot stat the snapshot", e))?
        .len();
    let conn = db::open_read_only(&file)?;
    let checked = check_conn(&conn, db, size)?;
    drop(conn);
    let (sha256, size) = fsio::sha256_file(&file)?;
    Ok(Snapshot {
        file,
        owner,
        info: checked.info,
        size,
        sha256,
        page_size: checked.page_size,
        page_count: checked.page_count,
        source_journal_mode: journal_mode,
        rows: checked.rows,
        check: checked.check,
        taken_at,
        took: started.elapsed(),
    })
}

/// Snapshot temp files are `.hubvault-snapshot-*.db` (a copy) or `*.zst` (a compressed
/// version waiting for its upload). Each is locked (`flock`) right
/// after it is created and before anything is written to it, so a sweeper that finds a
/// non-empty one whose lock is free knows its owner is dead. An empty one may be a
/// live run's between creation and locking: it is left for a minute (and costs nothing).
const SNAPSHOT_PREFIX: &str = ".hubvault-snapshot-";

/// A new snapshot temp file in `tmp_dir` ending in `suffix` (`.db` or `.zst`), locked,
/// and the descriptor that holds the lock.
pub fn locked_temp_file(
    tmp_dir: &Path,
    suffix: &str,
) -> std::io::Result<(std::fs::File, tempfile::TempPath)> {
    let tmp = tempfile::Builder::new()
        .prefix(SNAPSHOT_PREFIX)
        .suffix(suffix)
        .tempfile_in(tmp_dir)?;
    fsio::try_lock(tmp.as_file())?;
    Ok(tmp.into_parts())
}

/// Removes what killed runs left in `tmp_dir`: a `kill -9` gives no chance to clean up,
/// and each leftover is as large as a database. A snapshot file whose lock is free has
/// no live owner; it goes with its journal. Best effort: errors are ignored.
pub fn sweep_dead_snapshots(tmp_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(SNAPSHOT_PREFIX) && (name.ends_with(".db") || name.ends_with(".zst")) {
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

#[cfg(test)]
#[path = "snapshot_races.rs"]
mod races;
