//! Rollback-journal databases: commits seen through the file change counter (header
//! offset 24, moved by every commit), pages read without a lock, confirmed under a brief
//! SHARED lock (FINDINGS.md: a full scan under the lock made a `busy_timeout=0` writer
//! fail; this holds it for a few reads).
//!
//! One observation, when the counter moved since the last one:
//! 1. SHARED lock #1 (`BEGIN` + one read of `sqlite_schema` takes it, `COMMIT` drops it):
//!    read the [`Stamp`]: the counter C0, the file size and the time of the file's last
//!    write W0. Under the lock no writer is half-way through a commit, so C0 names a
//!    committed state, and no transaction has pages spilled into the file (spilling needs
//!    the EXCLUSIVE lock, kept until the transaction ends).
//! 2. No lock: read every page, hash it, keep those that differ from the last captured
//!    state (the candidates).
//! 3. SHARED lock #2: the stamp must still be lock #1's (else the file was written: give
//!    up this observation, [`Skip::Raced`], the caller retries), then re-read the
//!    candidates (at most [`RELOCK_PAGES`]) and page 1 under the lock and take those.
//!
//! A commit always moves the counter. A transaction that spills pages into the file
//! (cache overflow) and then ROLLS BACK leaves counter and size as they were, but not the
//! file's write time: the spill and the rollback each write the file. Lock #1 is taken
//! only when the file system's clock is one timestamp step past W0 (else it is dropped and
//! taken again a step later), so every write after it stamps a time other than W0. So
//! "the same stamp at lock #1 and at lock #2" proves nothing wrote the file in between,
//! and the unlocked scan read the file of state C0. What this leans on: the kernel stamps
//! every write with its clock (it does, for local file systems; a network file system is
//! no place for a live SQLite database anyway), and the clock is not set back between
//! the two locks to exactly W0.
//!
//! A hot journal (a crashed writer) is not ours to roll back on a read-only connection:
//! the observation is skipped and retried, as it is when the lock cannot be had within
//! [`LOCK_WAIT`].

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::model::stream::{PageTable, page_hash};
use crate::sqlite::pages::seam::{self, Point};
use crate::sqlite::pages::wal::read_full;
use crate::sqlite::pages::{DbHeader, Diff, DiffSink, Mode, Sink, Source};

/// How long we wait for a SHARED lock while a writer commits; past it the tick is
/// skipped. Waiting does not block the writer (it holds the lock we wait for).
pub const LOCK_WAIT: Duration = Duration::from_millis(50);
/// Candidate pages re-read under lock #2 at most; past it (a first image, a VACUUM) the
/// counter check alone vouches for the scan, so the lock stays short whatever the size.
pub const RELOCK_PAGES: usize = 256;

/// A read-only connection used for nothing but taking and dropping SHARED locks.
pub struct Locker {
    conn: Connection,
    path: std::path::PathBuf,
}

/// Why an observation did not complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// The lock could not be had in time, or a hot journal is waiting for its writer.
    Busy(String),
    /// A commit came between the two locks.
    Raced,
    /// The database is in WAL mode now.
    NowWal,
}

/// A completed observation.
#[derive(Debug)]
pub struct Observed {
    pub change_counter: u32,
    pub diff: Diff,
    /// Time the SHARED locks were held, both together.
    pub lock_held: Duration,
}

impl Locker {
    pub fn open(path: &Path) -> Result<Locker> {
        // Never through a link: the file was opened `O_NOFOLLOW` earlier, and the name
        // may have been replaced by one since.
        let conn = crate::sqlite::db::open_live(path)?;
        conn.busy_timeout(LOCK_WAIT)
            .map_err(|e| Error::sqlite(path, "busy_timeout", e))?;
        Ok(Locker {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Why the lock was refused, in words an operator can act on: a hot journal is named
    /// with its file and what rolls it back (it stays until a writer opens the
    /// database), as every command says it ([`Error::sqlite`]); a lock held is said so.
    fn refusal(&self, e: rusqlite::Error) -> Skip {
        let hot = e
            .sqlite_error()
            .is_some_and(|e| e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK);
        if hot {
            let e = Error::sqlite(&self.path, "cannot take a shared lock", e);
            return Skip::Busy(match e.hint() {
                Some(h) => format!("{e}; {h}"),
                None => e.to_string(),
            });
        }
        let locked = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        if locked {
            return Skip::Busy(format!(
                "a writer keeps the database locked ({e}): a long transaction, or a connection in `PRAGMA locking_mode=EXCLUSIVE`, which holds its lock until it closes"
            ));
        }
        Skip::Busy(e.to_string())
    }

    /// Runs `f` under a SHARED lock; returns its value and how long the lock was held.
    fn shared<T>(&self, f: impl FnOnce() -> T) -> std::result::Result<(T, Duration), Skip> {
        let busy = |e: rusqlite::Error| self.refusal(e);
        self.conn.execute_batch("BEGIN").map_err(busy)?;
        // The lock is taken by this read (after waiting, up to LOCK_WAIT, while a writer
        // commits: that wait holds nothing). Held time is counted from its end; the read
        // itself (the schema's first page, from SQLite's cache) takes microseconds.
        let got: rusqlite::Result<i64> =
            self.conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0));
        let start = Instant::now();
        if let Err(e) = got {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(busy(e));
        }
        let v = f();
        let r = self.conn.execute_batch("COMMIT");
        let held = start.elapsed();
        if let Err(e) = r {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(busy(e));
        }
        Ok((v, held))
    }
}

/// What lock #1 saw and lock #2 must see again: the header (its change counter moves on
/// every commit), the size, and the time of the file's last write (which moves on every
/// write: a commit, and also the spill of a transaction that is still open and the
/// rollback that undoes it, which leave the counter and size as they were).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub header: DbHeader,
    pub len: u64,
    /// `st_mtime` in nanoseconds since the epoch.
    written: i128,
}

impl Stamp {
    /// Pages of the file.
    pub fn pages(&self) -> u32 {
        (self.len / self.header.page_size as u64) as u32
    }

    /// The file system clock's reading (nanoseconds, the coarse clock it stamps with) from
    /// which any write stamps the file with a time other than `written`: one timestamp
    /// step past it. A file system that stores whole seconds (nanoseconds 0) is given 2 s
    /// (FAT stores 2 s steps); one that rounds to 10^k ns, 10^k ns. Before that, a write
    /// could be stamped the same time as the one before it.
    fn rewritten_from(&self) -> i128 {
        let nanos = self.written.rem_euclid(1_000_000_000);
        let step: i128 = if nanos == 0 {
            2_000_000_000
        } else {
            let mut step = 1;
            while nanos % (step * 10) == 0 {
                step *= 10;
            }
            step
        };
        self.written + step
    }
}

/// The clock the kernel stamps file times with (`CLOCK_REALTIME_COARSE`; file systems with
/// finer stamps never stamp earlier than it), in nanoseconds since the epoch.
fn fs_clock() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return 0; // never "past" any write: lock #1 keeps waiting and gives up (Raced)
    }
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn stamp_of(src: &Source) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let header = src.header().ok()?;
    let m = src.db_file().metadata().ok()?;
    Some(Stamp {
        header,
        len: m.len(),
        written: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    })
}

/// Times lock #1 is taken again while the file's last write is as recent as the file
/// system's timestamp step (each time after waiting for the clock to pass it).
const FIRST_LOCK_TRIES: usize = 4;
/// The longest wait for the file system's clock (2 s steps, and a little more).
const CLOCK_WAIT: Duration = Duration::from_millis(2500);

/// SHARED lock #1: the [`Stamp`] of a committed state, taken when any later write is
/// sure to change the file's write time. Under the lock no writer is half-way through a
/// commit or holds a spilled transaction (both need the EXCLUSIVE lock), and the file
/// system's clock is read after the file's time: when it is a timestamp step past that
/// time, every write after the lock is dropped (a spill, its rollback, a commit) stamps a
/// different one. Otherwise the lock is dropped, and taken again once the clock has moved
/// (the coarse clock moves every few ms: the wait is one tick, the file unlocked).
fn first_lock(src: &Source, locker: &Locker) -> std::result::Result<(Stamp, Duration), Skip> {
    let mut held = Duration::ZERO;
    for _ in 0..FIRST_LOCK_TRIES {
        let ((stamp, now), h) = locker.shared(|| (stamp_of(src), fs_clock()))?;
        held += h;
        let stamp = stamp.ok_or_else(|| Skip::Busy("no valid header".into()))?;
        let due = stamp.rewritten_from();
        if now >= due {
            return Ok((stamp, held));
        }
        let started = Instant::now();
        while fs_clock() < due && started.elapsed() < CLOCK_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Written within the last timestamp step at each try: a writer busy enough that
    // this read would have raced it anyway.
    Err(Skip::Raced)
}

/// One observation (see the module's steps), as a diff against `table`.
pub fn observe(
    src: &Source,
    locker: &Locker,
    table: &PageTable,
) -> Result<std::result::Result<Observed, Skip>> {
    let mut sink = DiffSink::new(table);
    Ok(
        observe_into(src, locker, table, &mut sink)?.map(|o| Observed {
            change_counter: o.change_counter,
            diff: sink.into_diff(),
            lock_held: o.lock_held,
        }),
    )
}

/// A completed observation whose pages went to a [`Sink`].
#[derive(Debug)]
pub struct ObservedInto {
    pub change_counter: u32,
    pub page_size: u32,
    pub db_pages: u32,
    /// Time the SHARED locks were held, both together.
    pub lock_held: Duration,
}

/// [`observe`] into any [`Sink`]: pages that differ from `table` (all of them for an
/// empty table: a full image, e.g. into a file) without holding anything in memory.
pub fn observe_into(
    src: &Source,
    locker: &Locker,
    table: &PageTable,
    sink: &mut dyn Sink,
) -> Result<std::result::Result<ObservedInto, Skip>> {
    let (first, held1) = match first_lock(src, locker) {
        Ok(got) => got,
        Err(s) => return Ok(Err(s)),
    };
    let (h, len) = (first.header, first.len);
    if h.mode == Mode::Wal {
        return Ok(Err(Skip::NowWal));
    }
    seam::at(src.path(), Point::Unlocked);
    let ps = h.page_size as usize;
    let same_size = table.page_size() == h.page_size;
    let file_pages = (len / ps as u64) as u32;
    let io = |e| Error::io(src.path(), "cannot read the database", e);
    sink.restart(h.page_size)?;
    // 2. Unlocked scan: candidates go to the sink now, and are re-read under lock #2.
    // The database ends where page 1's header says (`db_size`), which may be before the
    // file's end; page 1 is re-read under lock #2, and the stamp vouches for the size.
    let mut db_pages = file_pages;
    let mut candidates: Vec<u32> = Vec::new();
    let mut buf = vec![0u8; ps * 64];
    let mut pgno = 1u32;
    while pgno <= file_pages.min(db_pages) {
        let n = (file_pages.min(db_pages) - pgno + 1).min(64);
        let want = n as usize * ps;
        let got = read_full(
            src.db_file(),
            &mut buf[..want],
            (pgno as u64 - 1) * ps as u64,
        )
        .map_err(io)?;
        if pgno == 1 {
            db_pages = super::db_size(&buf[..got.min(ps)], file_pages);
        }
        for (i, page) in buf[..got].chunks_exact(ps).enumerate() {
            let p = pgno + i as u32;
            if p > db_pages {
                break;
            }
            if p == 1 || !same_size || table.get(p) != Some(page_hash(p, page)) {
                candidates.push(p);
                sink.page(p, page)?;
            }
        }
        if got < want {
            return Ok(Err(Skip::Raced));
        }
        if pgno == 1 && n < file_pages.min(db_pages) {
            seam::at(src.path(), Point::Reading);
        }
        pgno += n;
    }
    seam::at(src.path(), Point::BeforeLock2);
    // 3. Confirm under lock #2.
    let relock = candidates.len() <= RELOCK_PAGES;
    let confirmed = locker.shared(|| -> Result<bool> {
        if stamp_of(src) != Some(first) {
            return Ok(false);
        }
        let mut page = vec![0u8; ps];
        for p in &candidates {
            if relock || *p == 1 {
                read_full(src.db_file(), &mut page, (*p as u64 - 1) * ps as u64).map_err(io)?;
                sink.page(*p, &page)?;
            }
        }
        Ok(true)
    });
    let (ok, held2) = match confirmed {
        Ok((r, held)) => (r?, held),
        Err(s) => return Ok(Err(s)),
    };
    if !ok {
        return Ok(Err(Skip::Raced));
    }
    sink.finish(db_pages, file_pages)?;
    Ok(Ok(ObservedInto {
        change_counter: h.change_counter,
        page_size: h.page_size,
        db_pages,
        lock_held: held1 + held2,
    }))
}

/// SHARED lock #1 of a read made elsewhere (a backup's one pass): the [`Stamp`] of a
/// committed state, which [`confirm_full`] then checks under lock #2.
pub fn counter(src: &Source, locker: &Locker) -> std::result::Result<Stamp, Skip> {
    let r = first_lock(src, locker).map(|(stamp, _)| stamp);
    if r.is_ok() {
        seam::at(src.path(), Point::Unlocked);
    }
    r
}

/// Lock #2 of a full image read without a lock and streamed elsewhere (a backup's one
/// pass, which cannot take pages back once sent): under a brief SHARED lock the file's
/// [`Stamp`] (change counter, size, time of the last write) must still be `first`'s
/// (taken under lock #1 with [`counter`]), and page 1 (every page, for a database of at
/// most [`RELOCK_PAGES`] pages, as [`observe_into`] re-reads its candidates) re-read there
/// must equal what was streamed, which `streamed` reads back into its buffer. `pages`:
/// the image's size (page 1's header may end the database before the file's end).
/// `Ok(Err(Skip::Raced))`: the file was written meanwhile (a commit, or a transaction
/// that spilled pages and rolled back), the image is not a committed state. Returns how
/// long the lock was held.
pub fn confirm_full(
    src: &Source,
    locker: &Locker,
    first: &Stamp,
    pages: u32,
    streamed: &mut dyn FnMut(u32, &mut [u8]) -> std::io::Result<()>,
) -> Result<std::result::Result<Duration, Skip>> {
    let ps = first.header.page_size as usize;
    let relock = if pages as usize <= RELOCK_PAGES {
        pages
    } else {
        1
    };
    let io = |e| Error::io(src.path(), "cannot read the database", e);
    seam::at(src.path(), Point::BeforeLock2);
    let confirmed = locker.shared(|| -> Result<bool> {
        if stamp_of(src) != Some(*first) {
            return Ok(false);
        }
        let (mut live, mut sent) = (vec![0u8; ps], vec![0u8; ps]);
        for p in 1..=relock {
            read_full(src.db_file(), &mut live, (p as u64 - 1) * ps as u64).map_err(io)?;
            streamed(p, &mut sent).map_err(io)?;
            if live != sent {
                return Ok(false);
            }
        }
        Ok(true)
    });
    match confirmed {
        Ok((r, held)) => Ok(if r? { Ok(held) } else { Err(Skip::Raced) }),
        Err(s) => Ok(Err(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(written: i128) -> Stamp {
        Stamp {
            header: DbHeader {
                page_size: 4096,
                mode: Mode::Rollback,
                change_counter: 1,
            },
            len: 4096,
            written,
        }
    }

    #[test]
    fn a_write_time_is_trusted_one_timestamp_step_after_it_whatever_the_file_systems_step() {
        const S: i128 = 1_000_000_000;
        // Nanosecond stamps (ext4, xfs, tmpfs): the next nanosecond.
        assert_eq!(
            stamp(1_700 * S + 123_456_789).rewritten_from(),
            1_700 * S + 123_456_790
        );
        // Microsecond stamps: the next microsecond.
        assert_eq!(
            stamp(1_700 * S + 123_456_000).rewritten_from(),
            1_700 * S + 123_457_000
        );
        // Whole seconds (or FAT's 2 s steps): 2 s later.
        assert_eq!(stamp(1_700 * S).rewritten_from(), 1_702 * S);
    }
}
