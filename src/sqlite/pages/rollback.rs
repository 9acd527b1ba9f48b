//! Rollback-journal databases: commits seen through the file change counter (header
//! offset 24, moved by every commit), pages read without a lock, confirmed under a brief
//! SHARED lock (FINDINGS.md: a full scan under the lock made a `busy_timeout=0` writer
//! fail; this holds it for a few reads).
//!
//! One observation, when the counter moved since the last one:
//! 1. SHARED lock #1 (`BEGIN` + one read of `sqlite_schema` takes it, `COMMIT` drops it):
//!    read the counter C0 and the file size. Under the lock no writer is half-way
//!    through a commit, so C0 names a committed state.
//! 2. No lock: read every page, hash it, keep those that differ from the last captured
//!    state (the candidates).
//! 3. SHARED lock #2: the counter must still be C0 and the size unchanged (else a commit
//!    raced the scan: give up this observation, the caller retries), then re-read the
//!    candidates (at most [`RELOCK_PAGES`]) and page 1 under the lock and take those.
//!
//! A commit always moves the counter, so "C0 at lock #1 and at lock #2" proves the
//! unlocked scan read the file of state C0. The one window it cannot see: a transaction
//! that spills pages into the file (cache overflow) and then ROLLS BACK between the two
//! locks; the re-read of the candidates under lock #2 corrects any page that looked
//! changed, not one whose spilled image happened to equal the last state
//! (docs/CONTINUOUS.md).
//!
//! A hot journal (a crashed writer) is not ours to roll back on a read-only connection:
//! the observation is skipped and retried, as it is when the lock cannot be had within
//! [`LOCK_WAIT`].

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::model::stream::{PageTable, page_hash};
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
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| Error::sqlite(path, "cannot open the database for capture", e))?;
        conn.busy_timeout(LOCK_WAIT)
            .map_err(|e| Error::sqlite(path, "busy_timeout", e))?;
        Ok(Locker { conn })
    }

    /// Runs `f` under a SHARED lock; returns its value and how long the lock was held.
    fn shared<T>(&self, f: impl FnOnce() -> T) -> std::result::Result<(T, Duration), Skip> {
        let busy = |e: rusqlite::Error| Skip::Busy(e.to_string());
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

fn counter_of(src: &Source) -> Option<(DbHeader, u64)> {
    let h = src.header().ok()?;
    let len = src.db_file().metadata().ok()?.len();
    Some((h, len))
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
    let ((h, len), held1) = match locker.shared(|| counter_of(src)) {
        Ok((Some(first), held)) => (first, held),
        Ok((None, _)) => return Ok(Err(Skip::Busy("no valid header".into()))),
        Err(s) => return Ok(Err(s)),
    };
    if h.mode == Mode::Wal {
        return Ok(Err(Skip::NowWal));
    }
    let ps = h.page_size as usize;
    let same_size = table.page_size() == h.page_size;
    let file_pages = (len / ps as u64) as u32;
    let io = |e| Error::io(src.path(), "cannot read the database", e);
    sink.restart(h.page_size)?;
    // 2. Unlocked scan: candidates go to the sink now, and are re-read under lock #2.
    let mut candidates: Vec<u32> = Vec::new();
    let mut buf = vec![0u8; ps * 64];
    let mut pgno = 1u32;
    while pgno <= file_pages {
        let n = (file_pages - pgno + 1).min(64);
        let want = n as usize * ps;
        let got = read_full(
            src.db_file(),
            &mut buf[..want],
            (pgno as u64 - 1) * ps as u64,
        )
        .map_err(io)?;
        for (i, page) in buf[..got].chunks_exact(ps).enumerate() {
            let p = pgno + i as u32;
            if p == 1 || !same_size || table.get(p) != Some(page_hash(p, page)) {
                candidates.push(p);
                sink.page(p, page)?;
            }
        }
        if got < want {
            return Ok(Err(Skip::Raced));
        }
        pgno += n;
    }
    // 3. Confirm under lock #2.
    let relock = candidates.len() <= RELOCK_PAGES;
    let confirmed = locker.shared(|| -> Result<bool> {
        match counter_of(src) {
            Some((h2, len2)) if h2 == h && len2 == len => {}
            _ => return Ok(false),
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
    sink.finish(file_pages, file_pages)?;
    Ok(Ok(ObservedInto {
        change_counter: h.change_counter,
        page_size: h.page_size,
        db_pages: file_pages,
        lock_held: held1 + held2,
    }))
}

/// The change counter and size, read under a brief SHARED lock: a committed state's.
pub fn counter(src: &Source, locker: &Locker) -> std::result::Result<(DbHeader, u64), Skip> {
    match locker.shared(|| counter_of(src)) {
        Ok((Some(first), _)) => Ok(first),
        Ok((None, _)) => Err(Skip::Busy("no valid header".into())),
        Err(s) => Err(s),
    }
}

/// Lock #2 of a full image read without a lock and streamed elsewhere (a backup's one
/// pass, which cannot take pages back once sent): under a brief SHARED lock the counter
/// and size must still be `first`'s (taken under lock #1 with [`counter`]), and page 1
/// (every page, for a database of at most [`RELOCK_PAGES`] pages, as [`observe_into`]
/// re-reads its candidates) re-read there must equal what was streamed, which `streamed`
/// reads back into its buffer. `Ok(Err(Skip::Raced))`: a commit came, the image is not
/// a committed state. Returns how long the lock was held.
pub fn confirm_full(
    src: &Source,
    locker: &Locker,
    first: &(DbHeader, u64),
    streamed: &mut dyn FnMut(u32, &mut [u8]) -> std::io::Result<()>,
) -> Result<std::result::Result<Duration, Skip>> {
    let (h, len) = first;
    let ps = h.page_size as usize;
    let pages = (len / ps as u64) as u32;
    let relock = if pages as usize <= RELOCK_PAGES {
        pages
    } else {
        1
    };
    let io = |e| Error::io(src.path(), "cannot read the database", e);
    let confirmed = locker.shared(|| -> Result<bool> {
        match counter_of(src) {
            Some(now) if now == *first => {}
            _ => return Ok(false),
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
