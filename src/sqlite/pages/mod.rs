//! The page reader: a consistent page image of a live SQLite database, read WITHOUT a
//! connection in WAL mode and with only brief shared locks in rollback-journal mode, and
//! the commits made since a known position. Continuous capture is built on it; issue
//! 13's one-pass backup is meant to reuse [`Source`] and [`Source::wal_image`].
//!
//! Rules (docs/CONTINUOUS.md has the proofs):
//! - The database's files are opened read-only with `O_NOFOLLOW` and the descriptors
//!   kept for the connector's whole life: closing ANY descriptor of a file drops every
//!   POSIX lock this process holds on it, SQLite's own included (FINDINGS.md).
//! - Nothing is ever created or written beside the database.
//! - WAL mode ([`Source::wal_image`]): header H1, every page of the database file, then
//!   the WAL (header H2, every valid frame through the last commit N), then header H3;
//!   H1 == H2 == H3 (and, when there is no WAL header, the `-shm` salts unchanged) means no
//!   restart or truncation happened meanwhile, so any page a checkpoint copied into the
//!   file during the read came from frames 1..N, which are overlaid: the image is exactly
//!   the state at commit N, and tailing goes on from frame N.
//! - Rollback-journal mode ([`rollback`]): see that module.
//! - A whole image is never held in memory: lock-free images go to a [`Sink`] (a diff in
//!   memory against a page table, or a file for a full image), and a pinned image is
//!   streamed in page order ([`image`]), which is how a backup reads a database once.

pub mod image;
pub mod rollback;
pub mod seam;
pub mod shm;
pub mod wal;

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::stream::{PageTable, page_hash};
use crate::sqlite::fsio::side_path;
use crate::sqlite::spill::Spill;
use wal::{WalHeader, WalPos, read_full};

/// Where a lock-free image goes as it is read. A page may come more than once (the
/// WAL's image after the file's): the last one given wins. A new attempt starts with
/// [`Sink::restart`].
pub trait Sink {
    /// A new attempt: forget every page given so far.
    fn restart(&mut self, page_size: u32) -> Result<()>;
    fn page(&mut self, pgno: u32, page: &[u8]) -> Result<()>;
    /// The image has `db_pages` pages. A page past `file_pages` that was not given is
    /// zeros; one up to `file_pages` that was not given is the table's.
    fn finish(&mut self, db_pages: u32, file_pages: u32) -> Result<()>;
}

/// A [`Sink`] that keeps, in memory, the pages that differ from a page table: the
/// commit a resync or an observation records.
pub struct DiffSink<'t> {
    table: &'t PageTable,
    diff: Diff,
    pages: std::collections::BTreeMap<u32, Vec<u8>>,
}

impl<'t> DiffSink<'t> {
    pub fn new(table: &'t PageTable) -> DiffSink<'t> {
        DiffSink {
            table,
            diff: Diff::default(),
            pages: Default::default(),
        }
    }

    pub fn into_diff(self) -> Diff {
        self.diff
    }
}

impl Sink for DiffSink<'_> {
    fn restart(&mut self, page_size: u32) -> Result<()> {
        self.pages.clear();
        self.diff = Diff {
            page_size,
            ..Diff::default()
        };
        Ok(())
    }

    fn page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        self.pages.insert(pgno, page.to_vec());
        Ok(())
    }

    fn finish(&mut self, db_pages: u32, file_pages: u32) -> Result<()> {
        let ps = self.diff.page_size;
        let same_size = self.table.page_size() == ps;
        let zero = vec![0u8; ps as usize];
        let mut given = std::mem::take(&mut self.pages);
        let mut pages = Vec::new();
        for p in 1..=db_pages {
            let img = match given.remove(&p) {
                Some(img) => img,
                None if p <= file_pages => continue, // same as the table
                None => zero.clone(),
            };
            if !same_size || self.table.get(p) != Some(page_hash(p, &img)) {
                pages.push((p, img));
            }
        }
        self.diff.db_pages = db_pages;
        self.diff.pages = pages;
        Ok(())
    }
}

/// A [`Sink`] like [`DiffSink`] whose pages live in a [`Spill`] (a temp file of ours past
/// a few MiB): a resync after a VACUUM differs in every page, and memory must stay flat
/// in that. The index holds 12 bytes a page given; [`SpillSink::changed`] hands the
/// pages that differ from the table out in page order, one at a time.
pub struct SpillSink {
    spill: Spill,
    at: SlotIndex,
    page_size: u32,
    db_pages: u32,
    file_pages: u32,
}

impl SpillSink {
    pub fn new(dir: &Path, spill_at: usize) -> SpillSink {
        SpillSink {
            spill: Spill::new(dir, spill_at),
            at: Default::default(),
            page_size: 0,
            db_pages: 0,
            file_pages: 0,
        }
    }

    /// True if the pages went to a temp file.
    pub fn spilled(&self) -> bool {
        self.spill.spilled()
    }

    /// The image's size in pages (after [`Sink::finish`]).
    pub fn db_pages(&self) -> u32 {
        self.db_pages
    }

    /// Bytes of memory its index of pages holds.
    pub fn index_bytes(&self) -> usize {
        self.at.heap_bytes()
    }

    /// Calls `each(pgno, page, hash)` in page order for every page of the image that
    /// differs from `table` (as [`DiffSink`] keeps them).
    pub fn changed(
        &self,
        table: &PageTable,
        mut each: impl FnMut(u32, &[u8], u128) -> Result<()>,
    ) -> Result<()> {
        let ps = self.page_size;
        let same_size = table.page_size() == ps;
        let mut page = vec![0u8; ps as usize];
        for p in 1..=self.db_pages {
            match self.at.get(p, ps) {
                Some(off) => self.spill.read_at(off, &mut page)?,
                None if p <= self.file_pages => continue, // same as the table
                None => page.fill(0),
            }
            let h = page_hash(p, &page);
            if !same_size || table.get(p) != Some(h) {
                each(p, &page, h)?;
            }
        }
        Ok(())
    }
}

impl Sink for SpillSink {
    fn restart(&mut self, page_size: u32) -> Result<()> {
        self.spill.truncate(0)?;
        self.at.clear();
        self.page_size = page_size;
        Ok(())
    }

    fn page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        match self.at.get(pgno, self.page_size) {
            Some(off) => self.spill.patch(off, page),
            None => {
                self.at.insert(pgno, self.spill.len());
                self.spill.write(page)
            }
        }
    }

    fn finish(&mut self, db_pages: u32, file_pages: u32) -> Result<()> {
        self.db_pages = db_pages;
        self.file_pages = file_pages;
        Ok(())
    }
}

/// Where each page of a [`SpillSink`] lies in its spill (pages are `page_size` bytes,
/// appended). A resync's pass over the file gives pages in ascending order: those are
/// kept as page numbers alone, slot `i` at offset `i * page_size` (4 bytes a page; a
/// VACUUM's resync of a 1 GiB database differs in every page, 250,000 of them, where a
/// map took about 40 bytes each). Pages given out of order (the WAL's, over the file's)
/// go to a map.
#[derive(Debug, Default)]
pub struct SlotIndex {
    /// Page numbers of slots 0, 1, ..., ascending.
    sorted: Vec<u32>,
    /// Pages appended after the first one out of order: page number -> offset.
    rest: std::collections::BTreeMap<u32, u64>,
}

impl SlotIndex {
    /// The offset of page `p`'s slot, if it has one.
    pub fn get(&self, p: u32, page_size: u32) -> Option<u64> {
        match self.sorted.binary_search(&p) {
            Ok(i) => Some(i as u64 * page_size as u64),
            Err(_) => self.rest.get(&p).copied(),
        }
    }

    /// Records a new page (not given before) appended at `offset`.
    pub fn insert(&mut self, p: u32, offset: u64) {
        if self.rest.is_empty() && self.sorted.last().is_none_or(|l| *l < p) {
            self.sorted.push(p);
        } else {
            self.rest.insert(p, offset);
        }
    }

    pub fn clear(&mut self) {
        self.sorted = Vec::new();
        self.rest.clear();
    }

    /// Bytes the index holds (capacity), for the test of its size.
    pub fn heap_bytes(&self) -> usize {
        self.sorted.capacity() * 4 + self.rest.len() * 40
    }
}

/// A [`Sink`] that writes a full image into a file (a temp file of ours), page by page:
/// memory stays one page whatever the database's size.
pub struct FileSink {
    file: File,
    path: PathBuf,
    page_size: u32,
}

impl FileSink {
    pub fn new(file: File, path: &Path) -> FileSink {
        FileSink {
            file,
            path: path.to_path_buf(),
            page_size: 0,
        }
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(&self.path, "cannot write the image", e)
    }
}

impl Sink for FileSink {
    fn restart(&mut self, page_size: u32) -> Result<()> {
        self.page_size = page_size;
        self.file.set_len(0).map_err(|e| self.io(e))
    }

    fn page(&mut self, pgno: u32, page: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(page, (pgno as u64 - 1) * self.page_size as u64)
            .map_err(|e| self.io(e))
    }

    fn finish(&mut self, db_pages: u32, _file_pages: u32) -> Result<()> {
        // Past the pages written, zeros; past db_pages, nothing.
        self.file
            .set_len(db_pages as u64 * self.page_size as u64)
            .map_err(|e| self.io(e))
    }
}

/// The journal mode the database header says (bytes 18 and 19: 2 means WAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Wal,
    Rollback,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Wal => "wal",
            Mode::Rollback => "delete",
        }
    }
}

/// The first 100 bytes of the database file, as read (possibly mid-write: a caller
/// that acts on it confirms under the rules of its mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbHeader {
    pub page_size: u32,
    pub mode: Mode,
    /// File change counter (offset 24): moves on every commit in rollback mode only.
    pub change_counter: u32,
}

impl DbHeader {
    pub fn parse(b: &[u8]) -> Option<DbHeader> {
        if b.len() < 100 || &b[..16] != b"SQLite format 3\0" {
            return None;
        }
        let ps = u16::from_be_bytes([b[16], b[17]]) as u32;
        let page_size = if ps == 1 { 65536 } else { ps };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return None;
        }
        let mode = if b[18] == 2 && b[19] == 2 {
            Mode::Wal
        } else {
            Mode::Rollback
        };
        Some(DbHeader {
            page_size,
            mode,
            change_counter: u32::from_be_bytes(b[24..28].try_into().expect("4")),
        })
    }
}

/// The database's size in pages as SQLite's b-tree layer takes it (sqlite3.c,
/// `lockBtree`), given page 1 of the state (at least its first 96 bytes) and the pager's
/// count (`pager_pages`: the WAL's last commit, else the file's pages): the size in page
/// 1's header (offset 28) when it is valid, i.e. non-zero and written by a SQLite that
/// keeps it (the change counter at offset 24 equals the version-valid-for number at
/// offset 92); else the pager's count. The backup API, `page_count` and every reader use
/// this size: pages of a longer file past it (SQLite's chunk-size preallocation,
/// `SQLITE_FCNTL_CHUNK_SIZE`, or a tool that extended the file) are no part of the
/// database. A header size past the pager's count is SQLite's "malformed" (kept, so the
/// checks say so).
pub fn db_size(page1: &[u8], pager_pages: u32) -> u32 {
    if page1.len() < 96 || page1[24..28] != page1[92..96] {
        return pager_pages;
    }
    match u32::from_be_bytes(page1[28..32].try_into().expect("4")) {
        0 => pager_pages,
        n => n,
    }
}

/// The pages that differ from a known state ([`PageTable`]), and the size after.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub page_size: u32,
    pub db_pages: u32,
    /// (page number, image), in page order.
    pub pages: Vec<(u32, Vec<u8>)>,
}

impl Diff {
    /// True if and only if applying it to `table` changes nothing.
    pub fn is_empty_for(&self, table: &PageTable) -> bool {
        self.pages.is_empty() && self.db_pages == table.pages()
    }
}

/// Where a lock-free WAL image left off ([`Source::wal_image_into`]).
#[derive(Clone, Copy, Debug)]
pub struct WalTaken {
    pub page_size: u32,
    pub db_pages: u32,
    /// Where tailing goes on (`None`: there was no WAL).
    pub pos: Option<WalPos>,
    /// With no WAL: the `-shm` salts that the next WAL's header will carry.
    pub shm: Option<[u8; 8]>,
}

/// A consistent lock-free image of a WAL database ([`Source::wal_image`]).
#[derive(Debug)]
pub struct WalImage {
    /// The image as a diff against the table passed in.
    pub diff: Diff,
    /// Where tailing goes on (`None`: there was no WAL).
    pub pos: Option<WalPos>,
    /// With no WAL: the `-shm` salts that the next WAL's header will carry.
    pub shm: Option<[u8; 8]>,
}

/// The `-wal` descriptor a tail was indexed from ([`Source::wal_tail_index`]).
pub struct WalFrames {
    file: Arc<File>,
    path: PathBuf,
}

impl WalFrames {
    /// The page of frame `n` of the WAL with header `h` into `page`; false if that slot
    /// no longer holds it (the WAL was restarted and rewritten since it was indexed).
    pub fn read(&self, h: &WalHeader, n: u64, pgno: u32, page: &mut [u8]) -> Result<bool> {
        wal::read_frame(&self.file, h, n, pgno, page)
            .map_err(|e| Error::io(&self.path, "cannot read the -wal", e))
    }
}

/// A side file (`-wal`, `-shm`) kept open while its inode stays the one at its path.
#[derive(Debug)]
struct Side {
    path: PathBuf,
    open: Option<(Arc<File>, u64)>,
}

impl Side {
    fn new(path: PathBuf) -> Side {
        Side { path, open: None }
    }

    /// The file at the path now, reopened if it was replaced; `None` if there is none.
    /// An old descriptor is kept until replaced (closing it could drop locks).
    fn current(&mut self) -> std::io::Result<Option<&File>> {
        let ino = match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_file() => m.ino(),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if self.open.as_ref().map(|(_, i)| *i) != Some(ino) {
            match open_kept(&self.path) {
                Ok(f) => {
                    let real = f.metadata()?.ino();
                    self.open = Some((f, real));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(self.open.as_ref().map(|(f, _)| &**f))
    }
}

/// Read-only, never through a link, and only a regular file: the name is in a
/// connector's directory, whose user may put a FIFO there at any moment (`O_NONBLOCK`:
/// an `open` of a FIFO with no writer never returns; it changes nothing for a file).
fn open_ro(path: &Path) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Read-only descriptors of databases' files, one per file, shared by every [`Source`]
/// of this process and closed only once no `Source` uses it and the file is no longer at
/// the name it was opened at (deleted, or replaced by another file).
/// Closing ANY descriptor of a file drops every POSIX lock this process holds on it,
/// SQLite's own included: a backup's `Source` that closed its descriptors when done
/// would drop the locks of a connection of the same process (another backup's read
/// transaction, a test's writer, whose `-shm` another process may then truncate under
/// its mapping). A file no longer at its name is one our connections, which open by
/// name, no longer reach; keeping it would let a connector's user who swaps file after
/// file in at `-wal` (each kept alive under another name) pile up root's descriptors
/// until every open fails. Keyed by (device, inode).
static KEPT: std::sync::Mutex<Vec<Kept>> = std::sync::Mutex::new(Vec::new());

/// (device, inode), the name it was opened at, and the descriptor kept for it.
type Kept = ((u64, u64), PathBuf, Arc<File>);

/// True if and only if the file at `path` now is (device, inode) `key`.
fn still_at(path: &Path, key: (u64, u64)) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == key)
}

/// The kept descriptor of the file at `path` (opened read-only, `O_NOFOLLOW`).
fn open_kept(path: &Path) -> std::io::Result<Arc<File>> {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    kept.retain(|(k, at, f)| Arc::strong_count(f) > 1 || still_at(at, *k));
    let m = std::fs::symlink_metadata(path)?;
    if let Some((_, _, f)) = kept.iter().find(|(k, _, _)| *k == (m.dev(), m.ino())) {
        return Ok(f.clone());
    }
    let f = Arc::new(open_ro(path)?);
    let m = f.metadata()?;
    let key = (m.dev(), m.ino());
    // Replaced between the stat and the open by a file we hold already: this new
    // descriptor is kept too (closing it could drop locks), under the same rule.
    let old = kept
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, f)| f.clone());
    kept.push((key, path.to_path_buf(), f.clone()));
    Ok(old.unwrap_or(f))
}

/// One connector database's files, held open for the connector's life.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    db: Arc<File>,
    wal: Side,
    shm: Side,
}

/// Attempts at a stable lock-free image before giving up for this tick.
const IMAGE_TRIES: usize = 5;

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        let db = open_kept(path)
            .map_err(|e| Error::io(path, "cannot open the database for capture", e))?;
        Ok(Source {
            path: path.to_path_buf(),
            db,
            wal: Side::new(side_path(path, "-wal")),
            shm: Side::new(side_path(path, "-shm")),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if and only if the path now names another file than the one held open (the
    /// database was replaced, e.g. by a restore's rename): the caller starts over.
    pub fn replaced(&self) -> bool {
        match (std::fs::metadata(&self.path), self.db.metadata()) {
            (Ok(now), Ok(held)) => now.ino() != held.ino() || now.dev() != held.dev(),
            (Err(_), _) | (_, Err(_)) => false,
        }
    }

    pub fn db_file(&self) -> &File {
        &self.db
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(&self.path, what, e)
    }

    /// The database header, read without a lock.
    pub fn header(&self) -> Result<DbHeader> {
        let mut b = [0u8; 100];
        let n = read_full(&self.db, &mut b, 0).map_err(|e| self.io("cannot read the header", e))?;
        DbHeader::parse(&b[..n]).ok_or_else(|| {
            Error::db(
                &self.path,
                "has no valid SQLite header (yet)",
                "capture retries on the next tick",
            )
        })
    }

    /// The `-wal` file's header, if the file exists and holds a valid one.
    fn wal_header(&mut self) -> Result<Option<WalHeader>> {
        let path = self.path.clone();
        let Some(f) = self
            .wal
            .current()
            .map_err(|e| Error::io(&path, "cannot open the -wal", e))?
        else {
            return Ok(None);
        };
        let mut raw = [0u8; wal::HEADER];
        let n =
            read_full(f, &mut raw, 0).map_err(|e| Error::io(&path, "cannot read the -wal", e))?;
        Ok(if n < wal::HEADER {
            None
        } else {
            WalHeader::parse(&raw)
        })
    }

    /// The salts of the `-shm` wal-index header (bytes 32..40 of its first copy): they
    /// move on every WAL restart and truncation, even when the `-wal` is left empty.
    fn shm_salts(&mut self) -> Option<[u8; 8]> {
        let f = self.shm.current().ok()??;
        let mut b = [0u8; 8];
        (read_full(f, &mut b, 32).ok()? == 8).then_some(b)
    }

    /// Commits after `pos` in the current `-wal` (lock-free tailing).
    pub fn wal_tail(&mut self, pos: &WalPos) -> Result<wal::Tail> {
        let path = self.path.clone();
        match self
            .wal
            .current()
            .map_err(|e| Error::io(&path, "cannot open the -wal", e))?
        {
            None => Ok(wal::Tail::Discontinuous("the -wal file is gone")),
            Some(f) => {
                wal::read_after(f, pos).map_err(|e| Error::io(&path, "cannot read the -wal", e))
            }
        }
    }

    /// [`Source::wal_tail`] without the pages: where each commit's newest image of each
    /// page lies, and the `-wal` descriptor they lie in (read them with
    /// [`WalFrames::read`]: from that descriptor, so a WAL deleted meanwhile by the last
    /// connection's close still gives them). A commit of any size costs a few bytes a
    /// page here.
    pub fn wal_tail_index(
        &mut self,
        pos: &WalPos,
    ) -> Result<(wal::Tail<wal::IndexedCommit>, Option<WalFrames>)> {
        let path = self.path.clone();
        if self
            .wal
            .current()
            .map_err(|e| Error::io(&path, "cannot open the -wal", e))?
            .is_none()
        {
            return Ok((wal::Tail::Discontinuous("the -wal file is gone"), None));
        }
        let f = self
            .wal
            .open
            .as_ref()
            .map(|(f, _)| f.clone())
            .expect("current");
        let tail = wal::read_after_indexed(&f, pos)
            .map_err(|e| Error::io(&path, "cannot read the -wal", e))?;
        Ok((tail, Some(WalFrames { file: f, path })))
    }

    /// True if and only if a `-wal` file with a valid header is there now.
    pub fn wal_has_header(&mut self) -> bool {
        matches!(self.wal_header(), Ok(Some(_)))
    }

    /// A consistent image of a WAL-mode database, lock-free (see the module's rule),
    /// as a diff against `table`, and the position tailing goes on from (`None`: there
    /// was no WAL; any WAL that appears later must be checked with
    /// [`Source::wal_follows`]). `Ok(None)`: writers moved too fast for `IMAGE_TRIES`
    /// attempts; try again later.
    pub fn wal_image(&mut self, table: &PageTable) -> Result<Option<WalImage>> {
        let mut sink = DiffSink::new(table);
        let Some(t) = self.wal_image_into(table, &mut sink)? else {
            return Ok(None);
        };
        Ok(Some(WalImage {
            diff: sink.into_diff(),
            pos: t.pos,
            shm: t.shm,
        }))
    }

    /// [`Source::wal_image`] into any [`Sink`]: pages of the file that differ from `table`
    /// (all of them for an empty table), then the newest committed image of every page
    /// the WAL holds, read by frame offset (no WAL page is held in memory).
    pub fn wal_image_into(
        &mut self,
        table: &PageTable,
        sink: &mut dyn Sink,
    ) -> Result<Option<WalTaken>> {
        'attempt: for _ in 0..IMAGE_TRIES {
            let h1 = self.wal_header()?;
            let shm1 = self.shm_salts();
            let hdr = self.header()?;
            let ps = hdr.page_size;
            let same_size = table.page_size() == ps;
            let len = self
                .db
                .metadata()
                .map_err(|e| self.io("cannot stat", e))?
                .len();
            let file_pages = (len / ps as u64) as u32;
            sink.restart(ps)?;
            // Page 1 of the image (the file's, then the WAL's newest): its header says
            // the database's size.
            let mut page1 = Vec::new();
            // Pass over the file: only pages that differ from the table.
            let mut buf = vec![0u8; ps as usize * 64];
            let mut pgno = 1u32;
            while pgno <= file_pages {
                let n = (file_pages - pgno + 1).min(64);
                let want = n as usize * ps as usize;
                let got = read_full(&self.db, &mut buf[..want], (pgno as u64 - 1) * ps as u64)
                    .map_err(|e| self.io("cannot read the database", e))?;
                if pgno == 1 {
                    page1 = buf[..got.min(ps as usize)].to_vec();
                }
                for (i, page) in buf[..got].chunks_exact(ps as usize).enumerate() {
                    let p = pgno + i as u32;
                    if !same_size || table.get(p) != Some(page_hash(p, page)) {
                        sink.page(p, page)?;
                    }
                }
                if got < want {
                    break;
                }
                pgno += n;
            }
            let h2 = self.wal_header()?;
            if h1.map(|h| h.raw) != h2.map(|h| h.raw) {
                continue;
            }
            let (pos, db_pages) = match h2 {
                Some(h) if h.page_size == ps => {
                    let path = self.path.clone();
                    let io = |what: &str, e| Error::io(&path, what, e);
                    let f = self
                        .wal
                        .current()
                        .map_err(|e| io("cannot open the -wal", e))?;
                    let Some(f) = f else { continue };
                    let wlen = f
                        .metadata()
                        .map_err(|e| io("cannot stat the -wal", e))?
                        .len();
                    let idx =
                        wal::index(f, &h, wlen, None).map_err(|e| io("cannot read the -wal", e))?;
                    // Overlay frames 1..N: the newest image of each page wins. Read in
                    // frame order (the file's order), before the last header check.
                    let mut frames: Vec<(u64, u32)> =
                        idx.frames.iter().map(|(p, n)| (*n, *p)).collect();
                    frames.sort_unstable();
                    let mut page = vec![0u8; ps as usize];
                    for (n, p) in frames {
                        if !wal::read_frame(f, &h, n, p, &mut page)
                            .map_err(|e| io("cannot read the -wal", e))?
                        {
                            continue 'attempt; // restarted meanwhile
                        }
                        if p == 1 {
                            page1.clone_from(&page);
                        }
                        sink.page(p, &page)?;
                    }
                    let pos = WalPos {
                        header: h,
                        frames: idx.committed,
                        checksum: idx.checksum,
                    };
                    (Some(pos), idx.db_pages.unwrap_or(file_pages))
                }
                Some(_) => continue,
                None => (None, file_pages),
            };
            let h3 = self.wal_header()?;
            let shm3 = self.shm_salts();
            if h3.map(|h| h.raw) != h1.map(|h| h.raw) || (h1.is_none() && shm1 != shm3) {
                continue;
            }
            let db_pages = db_size(&page1, db_pages);
            sink.finish(db_pages, file_pages)?;
            return Ok(Some(WalTaken {
                page_size: ps,
                db_pages,
                pos,
                shm: shm1,
            }));
        }
        Ok(None)
    }

    /// The wal-index header of the `-shm` now, if there is a valid one.
    pub fn shm_header(&mut self) -> std::io::Result<Option<shm::IndexHeader>> {
        match self.shm.current()? {
            Some(f) => shm::IndexHeader::read(f),
            None => Ok(None),
        }
    }

    /// A descriptor of its own on the `-wal` now, and its header, if it holds a valid one.
    /// (SQLite locks nothing on the `-wal`: closing this descriptor is harmless.)
    pub fn wal_with_header(&mut self) -> std::io::Result<Option<(File, WalHeader)>> {
        let Some(f) = self.wal.current()? else {
            return Ok(None);
        };
        let f = f.try_clone()?;
        let mut raw = [0u8; wal::HEADER];
        if read_full(&f, &mut raw, 0)? < wal::HEADER {
            return Ok(None);
        }
        Ok(WalHeader::parse(&raw).map(|h| (f, h)))
    }

    /// After an image taken with no WAL (position `None`), true if and only if the WAL
    /// there now starts right after that image: its header carries exactly the salts
    /// the `-shm` announced for the next WAL then (one restart, no frame missed).
    pub fn wal_follows(&mut self, shm_then: Option<[u8; 8]>) -> Result<Option<WalPos>> {
        let Some(h) = self.wal_header()? else {
            return Ok(None);
        };
        let Some(s) = shm_then else { return Ok(None) };
        // The wal-index stores salts in the WAL header's byte order (big-endian copies).
        if h.raw[16..24] == s {
            Ok(Some(WalPos::start(h)))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod races;
#[cfg(test)]
mod tests;
