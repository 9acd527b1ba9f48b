//! Continuous capture: every commit of every connector under the hub root reaches the
//! bucket within about one tick, without touching the connectors' databases.
//!
//! - Each connector is a [`Tracked`]: its files held open ([`Source`]), the page hashes
//!   of the last captured state ([`PageTable`]) and the commits not yet uploaded. WAL
//!   databases are tailed lock-free; rollback-journal databases observed through the
//!   change counter and two brief SHARED locks (`sqlite::pages`). What cannot be proven
//!   continuous is resynced: a fresh lock-free image, diffed against the page table, goes
//!   out as one commit, and the chain goes on.
//! - A chain (a generation) starts with a base: the full image, uploaded when the agent
//!   first sees the connector (so every agent start begins new generations, and says so),
//!   or when the page size changes.
//! - Per HUB, not per connector: one segment object per upload holds a section for every
//!   connector with commits (S3 charges per request). An upload happens when commits are
//!   pending and at least one tick has passed since the last one, so a lone commit after
//!   idle goes out at once and a busy hub makes one PUT a tick. Idle: no request at all.
//! - Wake-ups: inotify on every connector directory ([`crate::agent::watch`]), the tick as
//!   the fallback poll.
//! - A failed upload keeps the commits and retries at the next tick; past
//!   [`MAX_PENDING_BYTES`] of a connector's commits held back, they are dropped and the
//!   connector starts a new generation once the bucket answers again (logged).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::agent::metrics::Metrics;
use crate::agent::scheduler::discover;
use crate::agent::shutdown::stopped;
use crate::agent::watch::Watcher;
use crate::blocking::blocking;
use crate::clock::{SharedClock, Time};
use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::{ConnectorKey, SegmentName, StreamKeys};
use crate::model::stream::{
    self, BaseHeader, COMMIT_HEAD, ChainSum, PageTable, SpooledSection, assemble_segment_to,
    commit_head, compress_section_to, encode_base_to, page_hash, segment_header,
};
use crate::sqlite::pages::rollback::{self, Locker, Skip};
use crate::sqlite::pages::wal::Tail;
use crate::sqlite::pages::{FileSink, Mode, Sink, Source, SpillSink, wal::WalPos};
use crate::sqlite::spill::{SPILL_AT, Spill, Spilled};
use crate::store::{Bucket, WriteMode};

pub use crate::agent::config::DEFAULT_TICK;
/// Commits of one connector held back while the bucket fails, at most.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// The per-connector marker under the connector prefix is rewritten at most this often.
pub const MARKER_EVERY: Duration = Duration::from_secs(60);
/// A connector whose changes could not be captured for this long (on the capture's
/// clock) gets one warning naming why: a hot journal, a writer holding its lock.
pub const BLOCKED_WARN: Duration = Duration::from_secs(30);
/// A connector whose capture failed is tried again after this long.
const FAILED_RETRY: Duration = Duration::from_secs(10);
/// Rollback-journal observations are spaced by this many times the last one's duration.
const ROLLBACK_SPACING: u32 = 4;
/// Attempts at a rollback-journal observation that raced a commit, per wake-up.
const RACE_TRIES: usize = 3;

#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub hub_root: PathBuf,
    pub org: OrgSlug,
    pub tick: Duration,
    /// Where a base image is written to read its ids (never beside the database).
    pub tmp_dir: Option<PathBuf>,
    /// Where commit times and the instants in keys come from.
    pub clock: SharedClock,
}

/// Where WAL tailing stands.
#[derive(Clone, Copy, Debug)]
enum WalState {
    /// Nothing proven: the next look is a resync.
    Unknown,
    /// Tailing from this position.
    At(WalPos),
    /// The last image was taken with no WAL; a WAL whose header carries these `-shm`
    /// salts follows it, as long as the file is still as it was when that image began
    /// (`stamp`). A connector that opens, commits and closes between two looks leaves no
    /// WAL behind (its close checkpoints the commit into the file and deletes the
    /// `-wal`): only the file's times show it.
    Empty {
        shm: Option<[u8; 8]>,
        stamp: Option<FileStamp>,
    },
}

/// What `lstat` says of the database file: any write to it moves its modification and
/// change times. Taken before an image is read, so a write after the stamp either is in
/// the image or shows as a different stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// File times are kept at the kernel's coarse clock (a few ms): a write just after
    /// one made within that grain would leave the same times. A stamp of a file written
    /// less than this before is no proof, and the next look resyncs instead.
    const GRAIN: Duration = Duration::from_millis(100);

    /// The stamp of `db` now (never follows a link); `None` when it cannot be read or
    /// the file was written less than [`FileStamp::GRAIN`] ago.
    fn of(db: &std::path::Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(db).ok()?;
        // A write of the content moves the modification time (and the change time with it).
        let settled = std::time::SystemTime::now()
            .duration_since(m.modified().ok()?)
            .is_ok_and(|d| d >= Self::GRAIN);
        settled.then_some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// A base waiting for its upload: its image in a temp file of ours (in `--tmp-dir`,
/// removed once uploaded), encoded as it is sent, so memory stays flat in the size.
struct PendingBase {
    header: BaseHeader,
    image: tempfile::TempPath,
    /// Its stamp was checked against the newest instant the bucket holds of the
    /// connector ([`Capture::floor_new_bases`]).
    floored: bool,
    /// Why that check failed last (warned once, not every tick).
    floor_failed: Option<String>,
}

/// A segment encoded and sent, not yet known to have landed: retried as it is (same key,
/// same bytes) until it lands, so a segment number never stands for two contents and
/// commits observed meanwhile wait for the next segment.
struct InFlight {
    key: object_store::path::Path,
    name: SegmentName,
    /// The encoded segment: in memory, or in a temp file of ours past [`SPILL_AT`].
    bytes: Spilled,
    /// An attempt was made: before sending a temp file again (an overwrite), a HEAD
    /// says whether that attempt landed.
    tried: bool,
    /// Per connector: commits in it, the newest commit's time.
    conns: Vec<(ConnectorId, u64, Option<i64>)>,
}

/// What capture tells a compactor in the same agent: the hubs it captures, the stream
/// objects it wrote, and the segment it is still sending (nothing sent before that
/// segment's time can still appear, so a window ending by then is final).
#[derive(Debug, Default)]
pub struct StreamProgress {
    inner: std::sync::Mutex<ProgressState>,
}

#[derive(Debug, Default)]
struct ProgressState {
    hubs: std::collections::BTreeSet<DatahubId>,
    written: Vec<(DatahubId, object_store::path::Path, u64)>,
    in_flight: BTreeMap<DatahubId, Time>,
    /// The latest instant [`StreamProgress::settled`] gave a compactor: windows up to it
    /// may be written, so no segment is stamped before it (the clock may step back).
    settled_high: Option<Time>,
}

impl StreamProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hubs capture has written to.
    pub fn hubs(&self) -> Vec<DatahubId> {
        self.lock().hubs.iter().copied().collect()
    }

    /// Keys (and sizes) written for `hub` since the last call.
    pub fn take_written(&self, hub: DatahubId) -> Vec<(object_store::path::Path, u64)> {
        let mut st = self.lock();
        let (mine, rest): (Vec<_>, Vec<_>) = st.written.drain(..).partition(|(h, _, _)| *h == hub);
        st.written = rest;
        mine.into_iter().map(|(_, k, n)| (k, n)).collect()
    }

    /// No segment of `hub` sent before this instant can still land: `now`, or the time of
    /// the segment still being sent.
    pub fn settled(&self, hub: DatahubId, now: Time) -> Time {
        let mut st = self.lock();
        let settled = st.in_flight.get(&hub).map_or(now, |t| (*t).min(now));
        st.settled_high = st.settled_high.max(Some(settled));
        settled
    }

    /// The stamp of a segment of `hub` about to be made, read from `clock` while the
    /// segment is marked as on its way: a compactor's [`StreamProgress::settled`] is
    /// either before this (the lock) or sees the segment in flight, never a window past
    /// the stamp without it. Never before an instant `settled` gave (a clock stepped back
    /// would stamp it inside a window already written).
    fn begin_flight(&self, hub: DatahubId, clock: &dyn crate::clock::Clock) -> Time {
        let mut st = self.lock();
        let now = clock.now().max(st.settled_high.unwrap_or(Time::MIN_UTC));
        st.in_flight.insert(hub, now);
        now
    }

    fn landed(&self, hub: DatahubId, key: &object_store::path::Path, n: u64) {
        let mut st = self.lock();
        st.in_flight.remove(&hub);
        st.hubs.insert(hub);
        st.written.push((hub, key.clone(), n));
    }

    fn wrote(&self, hub: DatahubId, key: &object_store::path::Path, n: u64) {
        let mut st = self.lock();
        st.hubs.insert(hub);
        st.written.push((hub, key.clone(), n));
    }
}

/// A connector's commits not yet uploaded, as the plain body of its next section (the
/// segment format's, `model::stream`), written page by page into a [`Spill`]: in memory
/// up to a few MiB, then in a temp file in `--tmp-dir`. A VACUUM (every page in one
/// commit) or a resync after it thus costs a file, not memory.
struct Pending {
    body: Spill,
    commits: u32,
    first_ms: i64,
    last_ms: i64,
    /// The chain checksum after the last commit.
    after: ChainSum,
}

impl Pending {
    fn new(tmp: &std::path::Path) -> Pending {
        Pending {
            body: Spill::new(tmp, SPILL_AT),
            commits: 0,
            first_ms: 0,
            last_ms: 0,
            after: ChainSum::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.commits == 0
    }

    fn bytes(&self) -> usize {
        self.body.len() as usize
    }

    /// Starts a commit: its head is written once its pages are (`end`); returns where.
    fn begin(&mut self) -> Result<u64> {
        let mark = self.body.len();
        self.body.write(&[0u8; COMMIT_HEAD])?;
        Ok(mark)
    }

    fn page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        self.body.write(&pgno.to_le_bytes())?;
        self.body.write(page)
    }

    fn end(
        &mut self,
        mark: u64,
        time_ms: i64,
        db_pages: u32,
        after: ChainSum,
        n: u32,
    ) -> Result<()> {
        self.body
            .patch(mark, &commit_head(time_ms, db_pages, after, n))?;
        if self.commits == 0 {
            self.first_ms = time_ms;
        }
        self.commits += 1;
        self.last_ms = time_ms;
        self.after = after;
        Ok(())
    }

    /// Forgets every byte from `mark` on (commits that could not be read whole).
    fn abandon(&mut self, mark: u64) -> Result<()> {
        self.body.truncate(mark)
    }
}

/// One connector under capture.
pub struct Tracked {
    connector: ConnectorId,
    db: PathBuf,
    src: Source,
    locker: Option<Locker>,
    datahub: Option<DatahubId>,
    generation: Option<String>,
    table: PageTable,
    mode: Option<Mode>,
    wal: WalState,
    counter: Option<u32>,
    base: Option<PendingBase>,
    /// Where spills go (`--tmp-dir`).
    tmp: PathBuf,
    /// Commits not yet uploaded, and the chain checksum before the first of them.
    pending: Pending,
    pending_prev: ChainSum,
    pending_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Bytes of this connector's commits in a segment still being sent, and since when.
    inflight_bytes: usize,
    inflight_since: Option<chrono::DateTime<chrono::Utc>>,
    clock: SharedClock,
    /// Since when a change was seen that could not be captured yet (busy writer, hot
    /// journal, a WAL moving faster than an image): counted in the lag.
    behind_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Why, as last seen, and whether the operator was told (once per blocked period).
    behind_why: Option<String>,
    behind_warned: bool,
    /// Rollback-journal mode: a full scan costs O(database size), so observations are
    /// spaced by a few times the last scan's duration (commits in between are merged into
    /// one record); the loop wakes at this instant to observe a change left waiting.
    observe_after: Option<Instant>,
    rollback_waiting: bool,
    /// The page table must be rebuilt from a new base (pending commits were dropped).
    restart: bool,
    marker_at: Option<Instant>,
    /// Reported problem, so it is logged once and not every tick.
    failing: Option<String>,
    /// After a failure, the connector is left alone until then (a database that is not a
    /// connector's must not cost a full read on every wake-up).
    retry_after: Option<Instant>,
}

/// What one look at the connectors found, for metrics and logs.
#[derive(Debug, Default)]
struct Looked {
    resyncs: BTreeMap<ConnectorId, u64>,
    lock_held: BTreeMap<ConnectorId, Duration>,
}

impl Tracked {
    fn new(
        connector: ConnectorId,
        db: PathBuf,
        tmp: PathBuf,
        clock: SharedClock,
    ) -> Result<Tracked> {
        let src = Source::open(&db)?;
        Ok(Tracked {
            connector,
            db,
            src,
            locker: None,
            datahub: None,
            generation: None,
            table: PageTable::new(4096),
            mode: None,
            wal: WalState::Unknown,
            counter: None,
            base: None,
            pending: Pending::new(&tmp),
            tmp,
            pending_prev: ChainSum::default(),
            pending_since: None,
            inflight_bytes: 0,
            inflight_since: None,
            clock,
            behind_since: None,
            behind_why: None,
            behind_warned: false,
            observe_after: None,
            rollback_waiting: false,
            restart: false,
            marker_at: None,
            failing: None,
            retry_after: None,
        })
    }

    /// A commit goes pending.
    fn pushed(&mut self, was_spilled: bool) {
        if self.pending.commits == 1 {
            self.pending_since = Some(self.clock.now());
        }
        if !was_spilled && self.pending.body.spilled() {
            tracing::info!(connector = %self.connector, mib = self.pending.bytes() >> 20,
                "capture: large commits spilled to a temp file in --tmp-dir (memory stays flat)");
        }
    }

    /// Takes a consistent image (a resync, or a rollback-journal observation) and records
    /// the pages that differ from the last captured state as one commit. The image goes
    /// through a [`SpillSink`] and the commit into the pending spool page by page: memory
    /// stays flat however many pages changed.
    fn capture_image(&mut self, mode: Mode, looked: &mut Looked) -> Result<()> {
        // The table as captured: the image is diffed against it, and it stays what the
        // table is again if the commit cannot be recorded. The live table takes each
        // changed page's hash as the page goes pending (no list of hashes: a VACUUM's
        // resync changes every page).
        let old = self.table.clone();
        let mut sink = SpillSink::new(&self.tmp, SPILL_AT);
        if self.image_into(mode, &old, &mut sink, looked)?.is_none() {
            return Ok(());
        }
        // The image moved the WAL position (or the change counter) on to its state; if
        // its commit is not recorded, nothing may go on from there: the next look
        // resyncs against the table as captured (tailing from the image's position would
        // put later commits on a state without its pages).
        let recorded = self.record_image(&sink, old);
        if recorded.is_err() {
            self.wal = WalState::Unknown;
            self.counter = None;
        }
        recorded
    }

    /// [`Tracked::capture_image`]'s commit: the pages of the image that differ from `old`
    /// (the table as captured) go pending as one commit; on an error, the table is `old`
    /// again and nothing is pending of it.
    fn record_image(&mut self, sink: &SpillSink, old: PageTable) -> Result<()> {
        if sink.spilled() {
            tracing::info!(connector = %self.connector, pages = sink.db_pages(),
                "capture: the image spilled to a temp file in --tmp-dir (memory stays flat)");
        }
        let time_ms = self.clock.now_ms();
        let was_spilled = self.pending.body.spilled();
        let mark = self.pending.begin()?;
        let mut changed = 0u32;
        let (table, pending) = (&mut self.table, &mut self.pending);
        let wrote = sink.changed(&old, |p, page, h| {
            table.set(p, h);
            changed += 1;
            pending.page(p, page)
        });
        if let Err(e) = wrote {
            self.table = old;
            self.pending.abandon(mark)?;
            return Err(e);
        }
        if changed == 0 && sink.db_pages() == self.table.pages() {
            return self.pending.abandon(mark);
        }
        self.table.resize(sink.db_pages());
        let after = self.table.checksum();
        if let Err(e) = self
            .pending
            .end(mark, time_ms, sink.db_pages(), after, changed)
        {
            self.table = old;
            self.pending.abandon(mark)?;
            return Err(e);
        }
        drop(old);
        self.pushed(was_spilled);
        Ok(())
    }

    /// Starts a generation from a full image of `db_pages` pages, read into the temp
    /// file `image` (never into memory).
    fn start_generation(
        &mut self,
        org: &OrgSlug,
        image: tempfile::TempPath,
        (ps, db_pages): (u32, u32),
        mode: Mode,
    ) -> Result<()> {
        let table = table_of_file(&image, ps, db_pages)?;
        let datahub = ids_of_image(&image, &self.db, self.connector)?;
        let generation = stream::new_generation();
        let header = BaseHeader {
            format: stream::FORMAT,
            org: org.clone(),
            datahub,
            connector: self.connector,
            generation: generation.clone(),
            page_size: ps,
            page_count: db_pages,
            checksum: table.checksum(),
            time_ms: self.clock.now_ms(),
            journal_mode: mode.name().to_string(),
        };
        tracing::info!(connector = %self.connector, generation = %generation, pages = db_pages,
            "capture: new generation (a fresh base); the chain starts here");
        self.datahub = Some(datahub);
        self.pending_prev = table.checksum();
        self.table = table;
        self.generation = Some(generation);
        self.base = Some(PendingBase {
            header,
            image,
            floored: false,
            floor_failed: None,
        });
        self.pending = Pending::new(&self.tmp);
        self.pending_since = None;
        self.restart = false;
        Ok(())
    }

    /// Looks at the files once: new commits go to `pending`.
    fn look(&mut self, org: &OrgSlug, tmp: &std::path::Path, looked: &mut Looked) -> Result<()> {
        if self.src.replaced() {
            tracing::info!(connector = %self.connector, db = %self.db.display(),
                "capture: the database file was replaced (a restore?); starting over");
            let marker_at = self.marker_at;
            *self = Tracked::new(
                self.connector,
                self.db.clone(),
                self.tmp.clone(),
                self.clock.clone(),
            )?;
            self.marker_at = marker_at;
        }
        let header = self.src.header()?;
        let mode_changed = self.mode.is_some_and(|m| m != header.mode);
        if mode_changed {
            tracing::info!(connector = %self.connector, mode = header.mode.name(),
                "capture: journal mode changed; resyncing");
            self.wal = WalState::Unknown;
            self.counter = None;
        }
        self.mode = Some(header.mode);
        let fresh =
            self.generation.is_none() || self.restart || header.page_size != self.table.page_size();
        if fresh {
            let empty = PageTable::new(header.page_size);
            let (file, path) = tempfile::Builder::new()
                .prefix(".hubvault-capture-")
                .tempfile_in(tmp)
                .map_err(|e| Error::io(tmp, "cannot create a temp file for a base", e))?
                .into_parts();
            let mut sink = FileSink::new(file, &path);
            let got = self.image_into(header.mode, &empty, &mut sink, looked)?;
            let Some(size) = got else { return Ok(()) };
            return self.start_generation(org, path, size, header.mode);
        }
        match header.mode {
            Mode::Wal => {
                self.locker = None;
                self.wal_look(looked)
            }
            Mode::Rollback => {
                if self.counter == Some(header.change_counter) {
                    self.rollback_waiting = false;
                    self.caught_up();
                    return Ok(());
                }
                if self.observe_after.is_some_and(|t| Instant::now() < t) {
                    self.rollback_waiting = true;
                    return Ok(());
                }
                self.rollback_waiting = false;
                let started = Instant::now();
                self.capture_image(Mode::Rollback, looked)?;
                self.observe_after = Some(Instant::now() + started.elapsed() * ROLLBACK_SPACING);
                Ok(())
            }
        }
    }

    /// A change was seen that could not be captured now (`why`): the lag counts from the
    /// first such look, and past [`BLOCKED_WARN`] the operator is told once, with the
    /// reason (a hot journal is named with its file), instead of a debug line every tick.
    fn behind(&mut self, why: String) {
        let now = self.clock.now();
        let since = *self.behind_since.get_or_insert(now);
        let blocked = (now - since).to_std().unwrap_or_default();
        if !self.behind_warned && blocked >= BLOCKED_WARN {
            tracing::warn!(connector = %self.connector, db = %self.db.display(),
                "capture: nothing new captured for {}s: {why}; retrying every tick",
                blocked.as_secs());
            self.behind_warned = true;
        }
        self.behind_why = Some(why);
    }

    /// The current state was captured (or nothing changed): not behind any more.
    fn caught_up(&mut self) {
        if self.behind_warned {
            let blocked = self
                .behind_since
                .and_then(|s| (self.clock.now() - s).to_std().ok())
                .unwrap_or_default();
            tracing::info!(connector = %self.connector,
                "capture: capturing again after {}s", blocked.as_secs());
        }
        self.behind_since = None;
        self.behind_why = None;
        self.behind_warned = false;
    }

    /// A consistent image of the current state (the pages that differ from `table`) into
    /// a sink (a file for a base); returns the image's page size and pages; `None` when
    /// it could not be had now (busy writer, hot journal): the next wake-up retries.
    fn image_into(
        &mut self,
        mode: Mode,
        table: &PageTable,
        sink: &mut dyn Sink,
        looked: &mut Looked,
    ) -> Result<Option<(u32, u32)>> {
        match mode {
            Mode::Wal => {
                // Before the image's first read: see `WalState::Empty`.
                let stamp = FileStamp::of(&self.db);
                let Some(t) = self.src.wal_image_into(table, sink)? else {
                    tracing::warn!(connector = %self.connector, "capture: the WAL moved during every attempt at an image; retrying at the next tick (lag grows)");
                    self.behind("the WAL moved during every attempt at an image (a writer committing without pause)".into());
                    return Ok(None);
                };
                self.caught_up();
                self.wal = match t.pos {
                    Some(p) => WalState::At(p),
                    None => WalState::Empty { shm: t.shm, stamp },
                };
                Ok(Some((t.page_size, t.db_pages)))
            }
            Mode::Rollback => {
                if self.locker.is_none() {
                    self.locker = Some(Locker::open(&self.db)?);
                }
                let locker = self.locker.as_ref().expect("just set");
                for _ in 0..RACE_TRIES {
                    match rollback::observe_into(&self.src, locker, table, sink)? {
                        Ok(o) => {
                            *looked.lock_held.entry(self.connector).or_default() += o.lock_held;
                            self.counter = Some(o.change_counter);
                            self.caught_up();
                            return Ok(Some((o.page_size, o.db_pages)));
                        }
                        Err(Skip::Raced) => continue,
                        Err(Skip::NowWal) => {
                            self.wal = WalState::Unknown;
                            return Ok(None);
                        }
                        Err(Skip::Busy(why)) => {
                            tracing::debug!(connector = %self.connector, "capture: lock not had now ({why}); next tick");
                            self.behind(why);
                            return Ok(None);
                        }
                    }
                }
                tracing::debug!(connector = %self.connector, "capture: commits raced {RACE_TRIES} scans; next tick");
                self.behind(format!(
                    "a writer committed during each of {RACE_TRIES} scans in a row"
                ));
                Ok(None)
            }
        }
    }

    fn wal_look(&mut self, looked: &mut Looked) -> Result<()> {
        let pos = match self.wal {
            WalState::At(p) => Some(p),
            // The file written since the image began (a commit checkpointed into it, its
            // WAL maybe gone), or no proof it was not: resync.
            WalState::Empty { stamp, .. }
                if stamp.is_none() || stamp != FileStamp::of(&self.db) =>
            {
                tracing::debug!(connector = %self.connector, "capture: the file changed with no WAL seen (or may have); resyncing");
                None
            }
            WalState::Empty { shm, .. } => match self.src.wal_follows(shm)? {
                Some(p) => Some(p),
                // Still no WAL and the file as it was: nothing changed.
                None if !self.src.wal_has_header() => return Ok(()),
                None => None,
            },
            WalState::Unknown => None,
        };
        if let Some(pos) = pos {
            match self.src.wal_tail_index(&pos)? {
                (Tail::Commits(commits, next), Some(frames)) => {
                    if self.tail_into_pending(&commits, &next, &frames)? {
                        self.wal = WalState::At(next);
                        return Ok(());
                    }
                    tracing::info!(connector = %self.connector, "capture: the WAL was rewritten while its commits were read; resyncing from a lock-free image");
                }
                (Tail::Commits(..), None) => {}
                (Tail::Discontinuous(why), _) => {
                    tracing::info!(connector = %self.connector, "capture: {why}; resyncing from a lock-free image");
                }
            }
        }
        *looked.resyncs.entry(self.connector).or_default() += 1;
        self.capture_image(Mode::Wal, looked)
    }

    /// Reads the pages of the commits found after the position (newest image of each page
    /// of each commit, by frame number) into the pending spool, one page at a time, and
    /// only then moves the page table and the chain on. False (nothing recorded) when a
    /// frame no longer holds its page: the WAL was restarted and rewritten meanwhile.
    fn tail_into_pending(
        &mut self,
        commits: &[crate::sqlite::pages::wal::IndexedCommit],
        next: &WalPos,
        frames: &crate::sqlite::pages::WalFrames,
    ) -> Result<bool> {
        if commits.is_empty() {
            return Ok(true);
        }
        let h = next.header;
        let time_ms = self.clock.now_ms();
        let mut was_spilled = self.pending.body.spilled();
        let start = self.pending.body.len();
        let mut page = vec![0u8; h.page_size as usize];
        // Each commit's page hashes, in the order of its frames (their page numbers), and
        // the database's size its page 1 says, if it wrote page 1.
        let mut read: Vec<(u64, Vec<u128>, Option<u32>)> = Vec::with_capacity(commits.len());
        for c in commits {
            let mark = self.pending.begin()?;
            let mut size = None;
            let mut hashes = Vec::with_capacity(c.frames.len());
            for (p, n) in &c.frames {
                let ok = match frames.read(&h, *n, *p, &mut page) {
                    Ok(ok) => ok,
                    Err(e) => {
                        self.pending.abandon(start)?;
                        return Err(e);
                    }
                };
                if !ok {
                    self.pending.abandon(start)?;
                    return Ok(false);
                }
                if let Err(e) = self.pending.page(*p, &page) {
                    self.pending.abandon(start)?;
                    return Err(e);
                }
                if *p == 1 {
                    size = Some(crate::sqlite::pages::db_size(&page, c.db_pages));
                }
                hashes.push(page_hash(*p, &page));
            }
            read.push((mark, hashes, size));
        }
        for (c, (mark, hashes, size)) in commits.iter().zip(read) {
            for ((p, _), hash) in c.frames.iter().zip(&hashes) {
                self.table.set(*p, *hash);
            }
            // The commit frame gives the pager's count, which counts the pages of a file
            // longer than its database; SQLite's size is in page 1, which every commit
            // that changes it writes: a commit without page 1 leaves the size as it was.
            let db_pages = size.unwrap_or_else(|| self.table.pages().min(c.db_pages));
            self.table.resize(db_pages);
            let after = self.table.checksum();
            self.pending
                .end(mark, time_ms, db_pages, after, hashes.len() as u32)?;
            self.pushed(was_spilled);
            was_spilled = self.pending.body.spilled();
        }
        Ok(true)
    }
}

/// The page table of the `pages` pages of size `ps` in `file`, read through a fixed
/// buffer.
fn table_of_file(file: &std::path::Path, ps: u32, pages: u32) -> Result<PageTable> {
    use std::io::Read;
    let f = std::fs::File::open(file).map_err(|e| Error::io(file, "cannot read the base", e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut t = PageTable::new(ps);
    let mut page = vec![0u8; ps as usize];
    for p in 1..=pages {
        r.read_exact(&mut page)
            .map_err(|e| Error::io(file, "cannot read the base", e))?;
        t.set(p, page_hash(p, &page));
    }
    Ok(t)
}

/// Reads the datahub id of the image in `image` (our temp file, never beside the
/// database); the connector id must be the directory's. The image is opened as a plain
/// file: a WAL-mode header (bytes 18, 19 = 2) would make SQLite look for a -shm beside
/// it, so those two bytes read 1 while it is open and are put back after.
fn ids_of_image(
    image: &std::path::Path,
    db: &std::path::Path,
    connector: ConnectorId,
) -> Result<DatahubId> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| Error::io(image, "cannot open the base", e))?;
    let mut mode = [0u8; 2];
    let plain = f.read_exact_at(&mut mode, 18).is_ok();
    if plain {
        f.write_all_at(&[1, 1], 18)
            .map_err(|e| Error::io(image, "cannot write", e))?;
    }
    let info = crate::sqlite::db::open_read_only(image)
        .and_then(|conn| crate::sqlite::db::read_info(&conn, db));
    if plain {
        f.write_all_at(&mode, 18)
            .map_err(|e| Error::io(image, "cannot write", e))?;
    }
    let info = info?;
    if info.connector != connector {
        return Err(Error::db(
            db,
            format!(
                "names connector {} but lives in the directory of connector {connector}",
                info.connector
            ),
            "a database copied from another connector is not captured; restore it onto its own id",
        ));
    }
    Ok(info.datahub)
}

/// The capture loop of one agent.
pub struct Capture {
    bucket: Bucket,
    opts: CaptureOptions,
    metrics: Arc<Metrics>,
    run: String,
    seq: u64,
    tracked: BTreeMap<ConnectorId, Tracked>,
    in_flight: BTreeMap<DatahubId, InFlight>,
    progress: Arc<StreamProgress>,
    /// The clock every stamp comes from (`opts.clock` is this one): it never goes back.
    stamps: Arc<crate::clock::Monotonic>,
    last_upload: Option<Instant>,
    /// The hub root is rescanned at most once a tick: a busy writer wakes us on every
    /// write, and a connector appearing can wait a tick.
    last_discovery: Option<Instant>,
    /// Connectors whose files could not be opened, and why, as last logged: discovery
    /// retries them every tick, and says so again only when the reason changes.
    unopened: BTreeMap<ConnectorId, String>,
    /// Why the hub root could not be listed, as last logged: said once, not every tick.
    unlisted: Option<String>,
}

impl Capture {
    pub fn new(bucket: Bucket, mut opts: CaptureOptions, metrics: Arc<Metrics>) -> Capture {
        let run = hex::encode(rand::random::<[u8; 4]>());
        // Stamps never go back within a run (the system clock may), nor behind what the
        // bucket holds (`floor_new_bases`).
        let stamps = crate::clock::monotonic(opts.clock);
        opts.clock = stamps.clone();
        Capture {
            stamps,
            bucket,
            opts,
            metrics,
            run,
            seq: 0,
            tracked: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            progress: Arc::new(StreamProgress::default()),
            last_upload: None,
            last_discovery: None,
            unopened: BTreeMap::new(),
            unlisted: None,
        }
    }

    /// What this capture tells a compactor (hubs, objects written, the segment in flight).
    pub fn progress(&self) -> Arc<StreamProgress> {
        self.progress.clone()
    }

    /// One wake-up without its waits: a rescan of the hub root, a look at every
    /// connector's files, and an upload when anything is pending (tests and simulations
    /// drive capture with this and a [`crate::clock::ManualClock`]).
    pub async fn step(&mut self) {
        self.last_discovery = None;
        // Without its waits: the rollback observation's real-time spacing too. A driven
        // clock jumps while the real one barely moves, and under load a skipped look
        // stamped a commit at a later wake-up than the one that made it.
        // And a failed connector's 10 s pause: a driven step looks at every connector.
        for t in self.tracked.values_mut() {
            t.observe_after = None;
            t.retry_after = None;
        }
        self.look(None).await;
        if self.has_pending() {
            self.upload().await;
        }
        self.report_lag();
    }

    /// True if and only if a base, commits or a segment wait for an upload.
    fn has_pending(&self) -> bool {
        !self.in_flight.is_empty()
            || self
                .tracked
                .values()
                .any(|t| !t.pending.is_empty() || t.base.is_some())
    }

    /// Captures until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let watcher = Watcher::new();
        tracing::info!(run = %self.run, tick = ?self.opts.tick, inotify = watcher.is_some(),
            "continuous capture started");
        if let Some(w) = &watcher {
            w.watch(&self.opts.hub_root);
        }
        let mut next_poll = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.look(watcher.as_deref()).await;
            let now = Instant::now();
            let due = self
                .last_upload
                .is_none_or(|t| now.duration_since(t) >= self.opts.tick);
            if self.has_pending() && due {
                self.upload().await;
            }
            self.report_lag();
            let pending = self.has_pending();
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + self.opts.tick;
            }
            // Wake on a change, at the next poll, when held-back commits are due, or when
            // a rollback-journal change left waiting may be observed.
            let mut wake = next_poll;
            for t in self.tracked.values() {
                if t.rollback_waiting
                    && let Some(at) = t.observe_after
                {
                    wake = wake.min(at);
                }
            }
            if pending && let Some(t) = self.last_upload {
                wake = wake.min(t + self.opts.tick);
            }
            let wake = tokio::time::Instant::from_std(wake.max(Instant::now()));
            match &watcher {
                Some(w) => {
                    let changed = w.changed.clone();
                    tokio::select! {
                        _ = changed.notified() => {}
                        _ = tokio::time::sleep_until(wake) => {}
                        _ = stopped(&mut shutdown) => break,
                    }
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake) => {}
                        _ = stopped(&mut shutdown) => break,
                    }
                }
            }
        }
        // What is pending goes out before we stop, within a bounded time.
        if self.has_pending() {
            let _ = tokio::time::timeout(Duration::from_secs(10), self.upload()).await;
        }
        tracing::info!("continuous capture stopped");
        Ok(())
    }

    /// Rescans the hub root, then looks at every connector's files (blocking work, off
    /// the runtime).
    async fn look(&mut self, watcher: Option<&Watcher>) {
        if self
            .last_discovery
            .is_none_or(|t| t.elapsed() >= self.opts.tick)
        {
            self.last_discovery = Some(Instant::now());
            self.discover(watcher).await;
        }
        self.look_at_files().await;
        // A base made by this look is stamped right away, before a later look stamps
        // commits on top of it (uploads come at most once a tick).
        self.floor_new_bases().await;
    }

    async fn discover(&mut self, watcher: Option<&Watcher>) {
        let root = self.opts.hub_root.clone();
        let found = match blocking(move || discover(&root)).await {
            Ok(f) => f,
            Err(e) => {
                let why = e.to_string();
                if self.unlisted.as_deref() == Some(why.as_str()) {
                    tracing::debug!("capture: {why}");
                } else {
                    tracing::error!("capture: {why}");
                    self.unlisted = Some(why);
                }
                return;
            }
        };
        if self.unlisted.take().is_some() {
            tracing::info!(hub_root = %self.opts.hub_root.display(), "capture: the hub root can be listed again");
        }
        let present: Vec<ConnectorId> = found.iter().map(|d| d.connector).collect();
        self.unopened.retain(|c, _| present.contains(c));
        self.tracked.retain(|c, t| {
            let keep = present.contains(c);
            if !keep {
                tracing::info!(connector = %t.connector, "capture: connector removed; forgetting it");
            }
            keep
        });
        for d in found {
            if let std::collections::btree_map::Entry::Vacant(e) = self.tracked.entry(d.connector) {
                let tmp = self.opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
                match Tracked::new(d.connector, d.db.clone(), tmp, self.opts.clock.clone()) {
                    Ok(t) => {
                        e.insert(t);
                        if self.unopened.remove(&d.connector).is_some() {
                            tracing::info!(connector = %d.connector, "capture: working again");
                        }
                    }
                    Err(err) => {
                        let msg = err.to_string();
                        if self.unopened.get(&d.connector) != Some(&msg) {
                            tracing::warn!(connector = %d.connector, "capture: {msg} (retrying every tick)");
                            self.unopened.insert(d.connector, msg);
                        }
                    }
                }
            }
        }
        if let Some(w) = watcher {
            let mut dirs: Vec<PathBuf> = vec![self.opts.hub_root.clone()];
            for t in self.tracked.values() {
                if let Some(p) = t.db.parent() {
                    w.watch(p);
                    dirs.push(p.to_path_buf());
                }
            }
            w.retain(&dirs);
        }
    }

    async fn look_at_files(&mut self) {
        let mut tracked = std::mem::take(&mut self.tracked);
        let org = self.opts.org.clone();
        let tmp = self.opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let result = blocking(move || {
            let mut looked = Looked::default();
            for t in tracked.values_mut() {
                if t.retry_after.is_some_and(|r| Instant::now() < r) {
                    continue;
                }
                // Its base's stamp is not known yet (the bucket's newest instant could not
                // be read): no commit is stamped before it is. The files are looked at
                // again once it is (a resync if the WAL moved on meanwhile).
                if t.base.as_ref().is_some_and(|b| !b.floored) {
                    continue;
                }
                match t.look(&org, &tmp, &mut looked) {
                    Ok(()) => {
                        t.retry_after = None;
                        if t.failing.take().is_some() {
                            tracing::info!(connector = %t.connector, "capture: working again");
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if t.failing.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(connector = %t.connector, "capture: {msg} (retrying every {FAILED_RETRY:?})");
                            t.failing = Some(msg);
                        }
                        t.retry_after = Some(Instant::now() + FAILED_RETRY);
                    }
                }
            }
            Ok((tracked, looked))
        })
        .await;
        match result {
            Ok((tracked, looked)) => {
                self.tracked = tracked;
                for (c, n) in looked.resyncs {
                    self.metrics
                        .update(&c.to_string(), |s| s.capture.resyncs_total += n);
                }
                for (c, d) in looked.lock_held {
                    self.metrics.update(&c.to_string(), |s| {
                        s.capture.lock_seconds_total += d.as_secs_f64()
                    });
                }
            }
            Err(e) => tracing::error!("capture: {e}"),
        }
    }

    /// A new generation's base is stamped after everything the bucket already holds of
    /// its connector, and capture's clock is raised to that instant. After an agent
    /// restart with the clock set back (a reboot before NTP answers, a wrong hardware
    /// clock), the new chain would otherwise sort before the one the last run wrote: a
    /// plain `restore` would give the state before the restart, and an instant after the
    /// old chain would be refused as two agents at once. One [`crate::catalog::stream::span`]
    /// (a few LISTs) per new base, right after the look that made it and before its
    /// upload: no commit of its generation is stamped until it is done.
    async fn floor_new_bases(&mut self) {
        for t in self.tracked.values_mut() {
            let Some(b) = &mut t.base else { continue };
            if b.floored {
                continue;
            }
            let h = &b.header;
            match crate::catalog::stream::span(&self.bucket, &h.org, h.datahub, t.connector).await {
                Ok(span) => {
                    b.floored = true;
                    let Some((_, newest)) = span else { continue };
                    let newest_ms = newest.timestamp_millis();
                    if newest_ms >= b.header.time_ms {
                        let now = chrono::DateTime::from_timestamp_millis(b.header.time_ms)
                            .unwrap_or_default();
                        tracing::warn!(connector = %t.connector,
                            "capture: the bucket holds commits of this connector up to {}, later than this machine's clock ({}): a new chain is stamped just after them, and capture keeps stamping from there until the clock catches up (check the clock: timedatectl)",
                            newest.to_rfc3339(), now.to_rfc3339());
                        self.stamps.raise_to(newest_ms + 1);
                        b.header.time_ms = newest_ms + 1;
                    }
                }
                // The next upload tries again: a base stamped before the chain it follows
                // would hand back an older state.
                Err(e) => {
                    let msg = e.to_string();
                    if b.floor_failed.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(connector = %t.connector,
                            "capture: cannot read the newest instant of the stream before uploading a new base, retrying every tick: {msg}");
                        b.floor_failed = Some(msg);
                    }
                }
            }
        }
    }

    /// Bases first; then, per hub, the segment still in flight (retried as it is), then
    /// one new segment with every connector's pending commits.
    async fn upload(&mut self) {
        self.last_upload = Some(Instant::now());
        self.floor_new_bases().await;
        // Bases.
        for t in self.tracked.values_mut() {
            let Some(b) = &t.base else { continue };
            if !b.floored {
                continue;
            }
            let keys = StreamKeys::new(b.header.org.clone(), b.header.datahub);
            let at = chrono::DateTime::from_timestamp_millis(b.header.time_ms).unwrap_or_default();
            let key = keys.base(t.connector, at, &b.header.generation);
            let (h, path) = (b.header.clone(), b.image.to_path_buf());
            // The image's size: a large one takes the store's large-object path.
            let total = h.page_count as u64 * h.page_size as u64;
            // Streamed from the image file, encoded on the way (a fresh key: the
            // generation is new).
            let sent = self
                .bucket
                .put_streamed(&key, total, move |w| {
                    let f = std::fs::File::open(&path)
                        .map_err(|e| Error::io(&path, "cannot read the base's image", e))?;
                    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
                    encode_base_to(&h, &mut r, w)
                })
                .await;
            match sent {
                Ok((_, n)) => {
                    tracing::info!(connector = %t.connector, key = %key, bytes = n, "capture: base uploaded");
                    self.progress.wrote(b.header.datahub, &key, n);
                    t.base = None;
                    self.metrics.update(&t.connector.to_string(), |s| {
                        s.capture.bases_total += 1;
                        s.capture.bytes_total += n;
                    });
                }
                Err(e) => {
                    tracing::warn!(connector = %t.connector, "capture: base upload failed, retrying next tick: {e}")
                }
            }
        }
        // Segments still in flight first: they hold older commits.
        let hubs: Vec<DatahubId> = self.in_flight.keys().copied().collect();
        for hub in hubs {
            self.send(hub).await;
        }
        // Then one new segment per hub that has none in flight.
        let mut hubs: BTreeMap<DatahubId, Vec<ConnectorId>> = BTreeMap::new();
        for (c, t) in &self.tracked {
            if t.base.is_none()
                && !t.pending.is_empty()
                && let Some(h) = t.datahub
                && !self.in_flight.contains_key(&h)
            {
                hubs.entry(h).or_default().push(*c);
            }
        }
        let tmp = self.opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
        for (hub, conns) in hubs {
            // The connectors' spools move into the segment: each section is compressed
            // from its spool, and the segment assembled into memory or, past SPILL_AT, a
            // temp file; nothing holds a whole commit in memory.
            let mut parts = Vec::new();
            let mut per_conn = Vec::new();
            for c in &conns {
                let t = self.tracked.get_mut(c).expect("listed above");
                let p = std::mem::replace(&mut t.pending, Pending::new(&t.tmp));
                per_conn.push((*c, p.commits as u64, Some(p.last_ms)));
                let section = SpooledSection {
                    connector: *c,
                    generation: t.generation.clone().expect("a generation before commits"),
                    page_size: t.table.page_size(),
                    prev: t.pending_prev,
                    after: p.after,
                    commits: p.commits,
                    first_ms: p.first_ms,
                    last_ms: p.last_ms,
                };
                t.pending_prev = p.after;
                t.inflight_bytes += p.bytes();
                if t.inflight_since.is_none() {
                    t.inflight_since = t.pending_since;
                }
                t.pending_since = None;
                parts.push((section, p.body));
            }
            // Stamped and said to be on its way at once: a compactor pass between the
            // two would call the stamp's minute finished without this segment.
            let now = self.progress.begin_flight(hub, &*self.opts.clock);
            // A number for every segment encoded: it is sent until it lands (or dropped
            // with its commits, see MAX_PENDING_BYTES), so a gap in a run's numbers is a
            // missing segment (restore checks).
            let seq = self.seq;
            let keys = StreamKeys::new(self.opts.org.clone(), hub);
            let key = keys.segment(now, &self.run, seq);
            let (org, run, tmp) = (self.opts.org.clone(), self.run.clone(), tmp.clone());
            let encoded = blocking(move || {
                let mut bodies = Spill::new(&tmp, SPILL_AT);
                let mut entries = Vec::with_capacity(parts.len());
                for (s, body) in &parts {
                    let mut r = body.reader()?;
                    entries.push(compress_section_to(s, &mut r, &mut bodies)?);
                }
                drop(parts);
                let mut header =
                    segment_header(&org, hub, &run, seq, now.timestamp_millis(), entries);
                let mut out = Spill::new(&tmp, SPILL_AT);
                assemble_segment_to(&mut header, &mut bodies.reader()?, &mut out)?;
                Ok(out.finish())
            })
            .await;
            let bytes = match encoded {
                Ok(b) => b,
                Err(e) => {
                    // The commits left their spools: the chain cannot go on from them.
                    tracing::error!(
                        "capture: cannot encode a segment, its connectors start new generations: {e}"
                    );
                    for c in &conns {
                        let t = self.tracked.get_mut(c).expect("listed above");
                        t.inflight_bytes = 0;
                        t.inflight_since = None;
                        t.restart = true;
                    }
                    self.progress.lock().in_flight.remove(&hub);
                    continue;
                }
            };
            self.seq += 1;
            self.in_flight.insert(
                hub,
                InFlight {
                    key,
                    name: SegmentName {
                        time: now,
                        run: self.run.clone(),
                        seq,
                    },
                    bytes,
                    tried: false,
                    conns: per_conn,
                },
            );
            self.send(hub).await;
        }
    }

    /// Sends the hub's segment in flight; on success forgets it (and updates metrics and
    /// markers), on failure keeps it for the next tick, or drops it with every commit
    /// held back once a connector holds more than [`MAX_PENDING_BYTES`].
    async fn send(&mut self, hub: DatahubId) {
        let Some(f) = self.in_flight.get(&hub) else {
            return;
        };
        let n = f.bytes.len();
        // Create: our run's key is ours alone, so "already there" means an earlier
        // attempt landed, with these very bytes. A large segment is streamed from its
        // temp file (an overwrite: the same bytes again), after a HEAD when an attempt
        // was made.
        let sent = match &f.bytes {
            Spilled::Mem(b) => self
                .bucket
                .put_bytes(&f.key, b.clone(), WriteMode::Create)
                .await
                .map(|_| ()),
            Spilled::File(path, len) => {
                let landed = if f.tried {
                    matches!(self.bucket.head(&f.key).await, Ok(Some(i)) if i.size == *len)
                } else {
                    false
                };
                if landed {
                    Ok(())
                } else {
                    let path = path.to_path_buf();
                    self.bucket
                        .put_streamed(&f.key, *len, move |w| {
                            let mut r = std::fs::File::open(&path)
                                .map_err(|e| Error::io(&path, "cannot read the segment", e))?;
                            std::io::copy(&mut r, w)
                                .map_err(|e| Error::io(&path, "cannot send the segment", e))?;
                            Ok(())
                        })
                        .await
                        .map(|_| ())
                }
            }
        };
        if let Some(f) = self.in_flight.get_mut(&hub) {
            f.tried = true;
        }
        match sent {
            Ok(_) => {
                let f = self.in_flight.remove(&hub).expect("checked");
                // Landed and no longer in flight at once: a compactor that reads `settled`
                // and then the keys written never misses a segment sent before it.
                self.progress.landed(hub, &f.key, n);
                tracing::debug!(key = %f.key, bytes = n, connectors = f.conns.len(), seq = f.name.seq, "capture: segment uploaded");
                self.metrics.hub_segment(n);
                for (c, count, last) in &f.conns {
                    let Some(t) = self.tracked.get_mut(c) else {
                        continue;
                    };
                    t.inflight_bytes = 0;
                    t.inflight_since = None;
                    self.metrics.update(&c.to_string(), |s| {
                        s.capture.commits_total += count;
                        s.capture.last_commit =
                            last.and_then(chrono::DateTime::from_timestamp_millis);
                    });
                    if t.marker_at.is_none_or(|m| m.elapsed() >= MARKER_EVERY) {
                        let ck = ConnectorKey::new(self.opts.org.clone(), hub, *c);
                        match self
                            .bucket
                            .put_bytes(&ck.stream_marker(), Vec::<u8>::new(), WriteMode::Overwrite)
                            .await
                        {
                            Ok(_) => t.marker_at = Some(Instant::now()),
                            Err(e) => tracing::warn!(connector = %c, "capture: marker: {e}"),
                        }
                    }
                }
            }
            Err(e) => {
                let f = self.in_flight.get(&hub).expect("checked");
                tracing::warn!(key = %f.key, "capture: segment upload failed, retrying next tick: {e}");
                let over = f.conns.iter().any(|(c, _, _)| {
                    self.tracked
                        .get(c)
                        .is_some_and(|t| t.pending.bytes() + t.inflight_bytes > MAX_PENDING_BYTES)
                });
                if over {
                    let f = self.in_flight.remove(&hub).expect("checked");
                    self.progress.lock().in_flight.remove(&hub);
                    for (c, _, _) in &f.conns {
                        let Some(t) = self.tracked.get_mut(c) else {
                            continue;
                        };
                        tracing::error!(connector = %c, "capture: {} MiB of commits held back while the bucket fails; dropping them, a new generation starts when it answers", (t.pending.bytes() + t.inflight_bytes) >> 20);
                        t.pending = Pending::new(&t.tmp);
                        t.inflight_bytes = 0;
                        t.inflight_since = None;
                        t.pending_since = None;
                        t.restart = true;
                    }
                }
            }
        }
    }

    fn report_lag(&self) {
        for (c, t) in &self.tracked {
            let since = [t.pending_since, t.inflight_since, t.behind_since]
                .into_iter()
                .flatten()
                .min();
            self.metrics.update(&c.to_string(), |s| {
                s.capture.pending_since = since;
                s.capture.blocked_since = t.behind_since;
                s.capture.blocked_why = t.behind_why.clone();
            });
        }
    }
}
