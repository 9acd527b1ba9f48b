//! The id rewrite done on the pages of a database file, without SQLite: every record of
//! the ordinary ROWID tables named by the caller is read from its table B-tree (overflow
//! chains included), every spelling of an old id in its TEXT and BLOB values is replaced
//! by the new id in the same spelling, and the bytes are written back where they were.
//!
//! Why: an id is always replaced by an id of the same length, so a record never changes
//! size and no page moves. SQLite's `UPDATE` must instead rewrite every row and delete and
//! insert its entry in every index of a changed column; on the 979 MiB bench database that
//! is most of a restore onto new ids. Here the rows are patched in place and the caller
//! then `REINDEX`es the indexes of the changed columns ([`Done::changed`]): an index keeps
//! its own copy of the key, which is now stale and may be out of order.
//!
//! Contract of [`rewrite_file`]:
//! - the file is one nobody else has open (a restore's private download, `remap
//!   --output`'s temp copy), in rollback-journal form (no `-wal` beside it);
//! - two passes: the first reads every page the rewrite would touch and checks every
//!   structure it relies on (header, page types, cell pointers and sizes against the
//!   page, record headers, overflow chains: each page used once, no loop, no page past
//!   the end); anything it does not understand is a [`Outcome::Refused`] and nothing was
//!   written, so the caller can fall back to the SQL rewrite on the same file. The second
//!   pass rewrites; a hostile file can never make it write outside the page a value
//!   lives in (every offset was checked, and is checked again);
//! - counts per column as the SQL rewrite's functions do (values holding a spelling:
//!   rewritable, mixed case, raw bytes), so the caller's plan and refusals are the same;
//! - what is not the B-trees of the named tables (indexes, `sqlite_schema`, the freelist,
//!   other tables) is never read for ids nor written: the caller refuses beforehand what
//!   this cannot handle (ids in `WITHOUT ROWID` tables, virtual tables, generated columns,
//!   ids in the schema's SQL, a column default holding an old id, which rows older than
//!   the column read without holding it), and rebuilds the indexes afterwards.
//!
//! An index of a changed column is then patched in place by
//! [`patch_indexes_in_transaction`] when that is provably the index `REINDEX` would build
//! (every key column the rewrite changes holds one value in the whole index: see there),
//! and rebuilt otherwise.
//!
//! File format: <https://www.sqlite.org/fileformat2.html> ("The Database Header",
//! "B-tree Pages", "Record Format").

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rusqlite::Connection;

use crate::sqlite::idfn::{ColTally, reads_as_number};
use crate::sqlite::spelling::{Kind, Matcher};

/// One ordinary ROWID table to rewrite.
#[derive(Clone, Debug)]
pub struct TableSpec {
    pub name: String,
    /// Its root page (`sqlite_schema.rootpage`).
    pub root: u32,
    /// Its columns in record order (a table with generated columns is never given).
    pub columns: Vec<String>,
    /// Per column (missing = false): a TEXT value whose rewrite would read as a number
    /// makes the first pass refuse. SQLite stores such text as a number in a column of
    /// numeric affinity; the pages would keep it TEXT, which `integrity_check` reports
    /// and lookups by the id miss. The SQL rewrite refuses these values one by one.
    pub guarded: Vec<bool>,
}

/// One index of a table the rewrite changed, to patch in place: see
/// [`patch_indexes_in_transaction`].
#[derive(Clone, Debug)]
pub struct IndexSpec {
    pub name: String,
    /// Its root page (`sqlite_schema.rootpage`).
    pub root: u32,
}

/// What a rewrite changed.
#[derive(Clone, Debug, Default)]
pub struct Done {
    /// Per table (the order given), per column: the values that held a spelling.
    pub tallies: Vec<Vec<ColTally>>,
    /// Per table, per column: true if and only if a byte of that column changed. Indexes
    /// on those columns are stale until `REINDEX`ed.
    pub changed: Vec<Vec<bool>>,
    /// Pages written (leaf and overflow).
    pub pages_written: u64,
}

/// The result: done, or refused with nothing written (use the SQL rewrite instead).
#[derive(Debug)]
pub enum Outcome {
    Done(Done),
    Refused(String),
}

/// Why a pass stopped.
enum Stop {
    Refuse(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::Io(e)
    }
}

fn refuse<T>(why: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Refuse(why.into()))
}

/// The largest record assembled from an overflow chain; a larger one is refused (memory
/// stays flat in the database's size).
const MAX_ASSEMBLED: u64 = 32 << 20;

/// The header fields the walk relies on.
#[derive(Clone, Copy, Debug)]
struct Header {
    page_size: usize,
    /// Usable bytes per page: the page size minus the reserved bytes.
    usable: usize,
    pages: u32,
    text: Kind,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn header(file: &File, path: &Path) -> Result<Header, Stop> {
    let len = file.metadata()?.len();
    if len < 512 {
        return refuse(format!("{} is too short to be a database", path.display()));
    }
    let mut h = [0u8; 100];
    file.read_exact_at(&mut h, 0)?;
    header_of(&h, len)
}

/// The header fields of a database whose first 100 bytes are `h` and whose size is
/// `len` bytes.
fn header_of(h: &[u8; 100], len: u64) -> Result<Header, Stop> {
    if len < 512 || &h[..16] != b"SQLite format 3\0" {
        return refuse("not an SQLite 3 file");
    }
    let page_size = match u16_at(h, 16) {
        1 => 65536,
        n if n >= 512 && n.is_power_of_two() => n,
        n => return refuse(format!("page size {n}")),
    };
    // Offsets 18/19: file format versions, 1 = rollback journal, 2 = WAL.
    if !matches!(h[18], 1 | 2) || !matches!(h[19], 1 | 2) {
        return refuse("unknown file format version");
    }
    let usable = page_size - h[20] as usize;
    if usable < 480 {
        return refuse("too many reserved bytes per page");
    }
    // Payload fractions: fixed at 64, 32, 32.
    if h[21] != 64 || h[22] != 32 || h[23] != 32 {
        return refuse("unusual payload fractions");
    }
    if !len.is_multiple_of(page_size as u64) {
        return refuse("the file is not a whole number of pages");
    }
    let file_pages = len / page_size as u64;
    if file_pages > u32::MAX as u64 {
        return refuse("too many pages");
    }
    let pages = file_pages as u32;
    // The in-header size is valid when the change counter equals "version-valid-for".
    let in_header = u32_at(h, 28);
    if u32_at(h, 24) == u32_at(h, 92) && in_header != 0 && in_header != pages {
        return refuse(format!(
            "the header says {in_header} pages, the file holds {pages}"
        ));
    }
    // Largest root page for auto-vacuum: pointer-map pages exist. Patching values in
    // place moves no page, so they would stay right, but they are not read here: refused
    // rather than walked past unchecked.
    if u32_at(h, 52) != 0 {
        return refuse("auto_vacuum is on (pointer-map pages)");
    }
    let text = match u32_at(h, 56) {
        1 => Kind::Utf8Text,
        2 => Kind::Utf16LeText,
        3 => Kind::Utf16BeText,
        e => return refuse(format!("text encoding {e}")),
    };
    Ok(Header {
        page_size,
        usable,
        pages,
        text,
    })
}

/// A varint at `b[at..end]`: its value and length; `None` if it runs past `end`.
fn varint(b: &[u8], at: usize, end: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let p = at + i;
        if p >= end || p >= b.len() {
            return None;
        }
        let byte = b[p];
        if i == 8 {
            return Some(((v << 8) | byte as u64, 9));
        }
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Bytes of a table leaf cell's payload kept on the page (the rest overflows).
fn local_size(usable: usize, payload: u64) -> usize {
    let u = usable as u64;
    let x = u - 35;
    if payload <= x {
        return payload as usize;
    }
    let m = ((u - 12) * 32 / 255) - 23;
    let k = m + ((payload - m) % (u - 4));
    (if k <= x { k } else { m }) as usize
}

/// One stretch of a payload: `len` bytes at `offset` of page `page`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    page: u32,
    offset: usize,
    len: usize,
}

/// Where a pass reads and writes whole pages (numbered from 1).
trait Pages {
    fn read(&mut self, n: u32, buf: &mut [u8]) -> std::io::Result<()>;
    /// Writes `bytes` at offset `at` of page `n`.
    fn write(&mut self, n: u32, at: usize, bytes: &[u8]) -> std::io::Result<()>;
}

/// A file nobody else has open: pages read and written with `pread`/`pwrite`.
struct FilePages<'a> {
    file: &'a File,
    page_size: u64,
}

impl Pages for FilePages<'_> {
    fn read(&mut self, n: u32, buf: &mut [u8]) -> std::io::Result<()> {
        self.file
            .read_exact_at(buf, (n as u64 - 1) * self.page_size)
    }

    fn write(&mut self, n: u32, at: usize, bytes: &[u8]) -> std::io::Result<()> {
        self.file
            .write_all_at(bytes, (n as u64 - 1) * self.page_size + at as u64)
    }
}

/// The pages of the main database of a connection inside its write transaction, read and
/// written through `sqlite_dbpage`: every write goes through SQLite's pager, so it is in
/// the transaction's journal (or WAL) and is committed or rolled back with it, and other
/// connections see the old pages until the commit.
struct DbPages<'c> {
    conn: &'c Connection,
    page_size: usize,
    /// A page read back for a partial write.
    scratch: Vec<u8>,
}

impl DbPages<'_> {
    const READ: &'static str = "SELECT data FROM sqlite_dbpage WHERE pgno = ?1";
    const WRITE: &'static str = "UPDATE sqlite_dbpage SET data = ?2 WHERE pgno = ?1";

    fn put(&mut self, n: u32, page: &[u8]) -> rusqlite::Result<usize> {
        self.conn
            .prepare_cached(Self::WRITE)?
            .execute(rusqlite::params![n, page])
    }
}

impl Pages for DbPages<'_> {
    fn read(&mut self, n: u32, buf: &mut [u8]) -> std::io::Result<()> {
        let len = self
            .conn
            .prepare_cached(Self::READ)
            .and_then(|mut st| {
                st.query_row([n], |r| {
                    let b = r.get_ref(0)?.as_blob()?;
                    if b.len() == buf.len() {
                        buf.copy_from_slice(b);
                    }
                    Ok(b.len())
                })
            })
            .map_err(|e| std::io::Error::other(format!("sqlite_dbpage, page {n}: {e}")))?;
        if len != buf.len() {
            return Err(std::io::Error::other(format!(
                "sqlite_dbpage gave {len} bytes for page {n}"
            )));
        }
        Ok(())
    }

    fn write(&mut self, n: u32, at: usize, bytes: &[u8]) -> std::io::Result<()> {
        let mut page = std::mem::take(&mut self.scratch);
        let whole = at == 0 && bytes.len() == self.page_size;
        if !whole {
            page.resize(self.page_size, 0);
            self.read(n, &mut page)?;
            page[at..at + bytes.len()].copy_from_slice(bytes);
        }
        let put = self.put(n, if whole { bytes } else { &page });
        self.scratch = page;
        match put {
            Ok(1) => Ok(()),
            Ok(k) => Err(std::io::Error::other(format!(
                "sqlite_dbpage wrote {k} rows for page {n}"
            ))),
            Err(e) => Err(std::io::Error::other(format!(
                "sqlite_dbpage, writing page {n}: {e}"
            ))),
        }
    }
}

/// The pages read and written, and the one-use-per-page rule.
struct Pager<'a> {
    pages: &'a mut dyn Pages,
    h: Header,
    /// One bit per page: already used by a B-tree or an overflow chain in this pass.
    seen: Vec<u64>,
    /// The page holding the lock bytes (offset 1 GiB): never a B-tree page.
    lock_page: u64,
}

impl<'a> Pager<'a> {
    fn new(pages: &'a mut dyn Pages, h: Header) -> Pager<'a> {
        Pager {
            pages,
            h,
            seen: vec![0; (h.pages as usize).div_ceil(64) + 1],
            lock_page: (1u64 << 30) / h.page_size as u64 + 1,
        }
    }

    /// Claims page `n` for this pass: refused when out of range or used before.
    fn claim(&mut self, n: u32) -> Result<(), Stop> {
        if n < 2 || n > self.h.pages || n as u64 == self.lock_page {
            return refuse(format!("a pointer to page {n}, outside the file"));
        }
        let (w, b) = (n as usize / 64, n % 64);
        if self.seen[w] & (1 << b) != 0 {
            return refuse(format!("page {n} is used twice (a loop or a cross-link)"));
        }
        self.seen[w] |= 1 << b;
        Ok(())
    }

    fn read(&mut self, n: u32, buf: &mut [u8]) -> Result<(), Stop> {
        self.pages.read(n, buf)?;
        Ok(())
    }

    fn write(&mut self, n: u32, at: usize, bytes: &[u8]) -> Result<(), Stop> {
        // Checked again here: whatever the caller computed, nothing lands past its page.
        if at + bytes.len() > self.h.page_size || n < 2 || n > self.h.pages {
            return refuse("a write past its page");
        }
        self.pages.write(n, at, bytes)?;
        Ok(())
    }
}

/// Whether a pass only checks or also rewrites.
struct Rewrite<'m> {
    m: &'m Matcher,
    done: Done,
}

impl<'m> Rewrite<'m> {
    fn new(m: &'m Matcher, tables: &[TableSpec]) -> Rewrite<'m> {
        Rewrite {
            m,
            done: Done {
                tallies: tables
                    .iter()
                    .map(|s| vec![ColTally::default(); s.columns.len()])
                    .collect(),
                changed: tables
                    .iter()
                    .map(|s| vec![false; s.columns.len()])
                    .collect(),
                pages_written: 0,
            },
        }
    }
}

/// One family of B-tree pages: its leaf and interior type bytes, and how messages name it.
struct Family {
    leaf: u8,
    interior: u8,
    /// "table" or "index".
    noun: &'static str,
    /// "a table" or "an index".
    a_noun: &'static str,
}

const TABLE_PAGES: Family = Family {
    leaf: 0x0D,
    interior: 0x05,
    noun: "table",
    a_noun: "a table",
};

const INDEX_PAGES: Family = Family {
    leaf: 0x0A,
    interior: 0x02,
    noun: "index",
    a_noun: "an index",
};

/// The header of a B-tree page, checked against its page.
struct PageHead {
    leaf: bool,
    cells: usize,
    /// Where the cell pointer array starts (after the 8- or 12-byte page header)...
    head: usize,
    /// ...and where it ends (never past the usable bytes).
    ptrs_end: usize,
}

/// The header of page `n` of the B-tree `name` of family `f`; refused when the page is
/// of another type or its cell pointers would run past the usable bytes.
fn page_head(page: &[u8], usable: usize, f: Family, name: &str, n: u32) -> Result<PageHead, Stop> {
    let leaf = match page[0] {
        k if k == f.leaf => true,
        k if k == f.interior => false,
        kind => {
            return refuse(format!(
                "{} {name}: page {n} is not {} B-tree page (type {kind:#x})",
                f.noun, f.a_noun
            ));
        }
    };
    let cells = u16_at(page, 3);
    let head = if leaf { 8 } else { 12 };
    let ptrs_end = head + 2 * cells;
    if ptrs_end > usable {
        return refuse(format!("{} {name}: page {n}: too many cells", f.noun));
    }
    Ok(PageHead {
        leaf,
        cells,
        head,
        ptrs_end,
    })
}

/// One pass over the B-tree of table `t`.
fn walk_table(
    p: &mut Pager<'_>,
    spec: &TableSpec,
    t: usize,
    mut rw: Option<&mut Rewrite<'_>>,
    guard: Option<&Matcher>,
) -> Result<(), Stop> {
    let usable = p.h.usable;
    let mut page = vec![0u8; p.h.page_size];
    let mut assembled = Vec::new();
    let mut stack = vec![spec.root];
    p.claim(spec.root).map_err(|_| {
        Stop::Refuse(format!(
            "table {}: root page {} is outside the file or used twice",
            spec.name, spec.root
        ))
    })?;
    while let Some(n) = stack.pop() {
        p.read(n, &mut page)?;
        let PageHead {
            leaf,
            cells,
            head,
            ptrs_end,
        } = page_head(&page, usable, TABLE_PAGES, &spec.name, n)?;
        if !leaf {
            // Children: each cell's left pointer, then the right-most pointer. Pushed in
            // reverse so that pages are visited in key order (no rule depends on it).
            let mut children = Vec::with_capacity(cells + 1);
            for i in 0..cells {
                let c = u16_at(&page, head + 2 * i);
                if c < ptrs_end || c + 4 > usable {
                    return refuse(format!(
                        "table {}: page {n}: cell {i} outside the page",
                        spec.name
                    ));
                }
                if varint(&page, c + 4, usable).is_none() {
                    return refuse(format!(
                        "table {}: page {n}: cell {i} runs past the page",
                        spec.name
                    ));
                }
                children.push(u32_at(&page, c));
            }
            children.push(u32_at(&page, 8));
            for &c in children.iter().rev() {
                p.claim(c)?;
                stack.push(c);
            }
            continue;
        }
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(cells);
        let mut dirty = false;
        for i in 0..cells {
            let c = u16_at(&page, head + 2 * i);
            let bad = |what: &str| {
                Stop::Refuse(format!("table {}: page {n}: cell {i} {what}", spec.name))
            };
            if c < ptrs_end || c >= usable {
                return Err(bad("outside the page"));
            }
            let (size, a) = varint(&page, c, usable).ok_or_else(|| bad("runs past the page"))?;
            let (_rowid, b) =
                varint(&page, c + a, usable).ok_or_else(|| bad("runs past the page"))?;
            if size > i32::MAX as u64 {
                return Err(bad("has an impossible payload size"));
            }
            let start = c + a + b;
            let local = local_size(usable, size);
            let spills = (local as u64) < size;
            let end = start + local + if spills { 4 } else { 0 };
            if end > usable {
                return Err(bad("runs past the page"));
            }
            spans.push((c, end));
            if !spills {
                let payload = &mut page[start..start + local];
                dirty |= record(spec, t, p.h.text, payload, rw.as_deref_mut(), guard)
                    .map_err(|w| bad(&w))?
                    .is_some();
                continue;
            }
            // The value overflows: assemble it, with where each stretch lives.
            if size > MAX_ASSEMBLED {
                return Err(bad("is a record larger than this rewrite assembles"));
            }
            assembled.clear();
            assembled.extend_from_slice(&page[start..start + local]);
            let mut segs = vec![Segment {
                page: n,
                offset: start,
                len: local,
            }];
            let mut next = u32_at(&page, start + local);
            let mut left = size as usize - local;
            let mut over = vec![0u8; p.h.page_size];
            while left > 0 {
                if next == 0 {
                    return Err(bad("has an overflow chain that ends early"));
                }
                p.claim(next)?;
                p.read(next, &mut over)?;
                let take = left.min(usable - 4);
                assembled.extend_from_slice(&over[4..4 + take]);
                segs.push(Segment {
                    page: next,
                    offset: 4,
                    len: take,
                });
                left -= take;
                next = u32_at(&over, 0);
            }
            if next != 0 {
                return Err(bad("has an overflow chain longer than its payload"));
            }
            let before = rw.is_some().then(|| assembled.clone());
            if record(spec, t, p.h.text, &mut assembled, rw.as_deref_mut(), guard)
                .map_err(|w| bad(&w))?
                .is_some()
            {
                let before = before.unwrap_or_default();
                let mut at = 0;
                for s in &segs {
                    let (old, new) = (&before[at..at + s.len], &assembled[at..at + s.len]);
                    if old != new {
                        if s.page == n {
                            page[s.offset..s.offset + s.len].copy_from_slice(new);
                            dirty = true;
                        } else {
                            p.write(s.page, s.offset, new)?;
                            if let Some(r) = rw.as_deref_mut() {
                                r.done.pages_written += 1;
                            }
                        }
                    }
                    at += s.len;
                }
            }
        }
        // Cells must not overlap: a patch of one would change another.
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[0].1 > w[1].0) {
            return refuse(format!("table {}: page {n}: cells overlap", spec.name));
        }
        if dirty {
            let r = rw
                .as_deref_mut()
                .expect("only a rewriting pass changes bytes");
            r.done.pages_written += 1;
            p.write(n, 0, &page)?;
        }
    }
    Ok(())
}

/// Size of a value of serial type `st`; `None` for the reserved types 10 and 11.
fn value_size(st: u64) -> Option<u64> {
    Some(match st {
        0 | 8 | 9 => 0,
        1..=4 => st,
        5 => 6,
        6 | 7 => 8,
        10 | 11 => return None,
        n => (n - 12) / 2,
    })
}

/// Checks one record and, in a rewriting pass, rewrites its TEXT and BLOB values in
/// place and counts what they held. `Some(())` when a byte changed. With `guard` (the
/// checking pass), the TEXT values of [`TableSpec::guarded`] columns are rewritten in a
/// copy and refused if the result would read as a number.
fn record(
    spec: &TableSpec,
    t: usize,
    text: Kind,
    payload: &mut [u8],
    rw: Option<&mut Rewrite<'_>>,
    guard: Option<&Matcher>,
) -> Result<Option<()>, String> {
    let (hsize, a) = varint(payload, 0, payload.len()).ok_or("has a broken record header")?;
    if hsize > payload.len() as u64 || hsize < a as u64 {
        return Err("has a record header past its payload".into());
    }
    let hsize = hsize as usize;
    let mut at = a;
    let mut body = hsize as u64;
    let mut col = 0;
    let mut changed = None;
    let mut rw = rw;
    while at < hsize {
        let (st, l) = varint(payload, at, hsize).ok_or("has a broken record header")?;
        at += l;
        if col >= spec.columns.len() {
            return Err("has more values than its table has columns".into());
        }
        let size = value_size(st).ok_or("has a value of a reserved serial type")?;
        // `size` comes from the file (up to 2^63): checked before any addition.
        if size > payload.len() as u64 - body {
            return Err("has a value past its payload".into());
        }
        let end = body + size;
        if end > payload.len() as u64 {
            return Err("has a value past its payload".into());
        }
        if st >= 13
            && st % 2 == 1
            && spec.guarded.get(col) == Some(&true)
            && let Some(m) = guard
            && let (Some(new), _) = m.rewrite(text, &payload[body as usize..end as usize])
            && text_reads_as_number(text, &new)
        {
            return Err(format!(
                "column {}: a rewritten text value would read as a number (numeric affinity)",
                spec.columns[col]
            ));
        }
        if st >= 12
            && size > 0
            && let Some(r) = rw.as_deref_mut()
        {
            let kind = if st % 2 == 1 { text } else { Kind::Blob };
            let v = &mut payload[body as usize..end as usize];
            let (new, tally) = r.m.rewrite(kind, v);
            if !tally.is_empty() {
                let c = &mut r.done.tallies[t][col];
                c.hit += 1;
                c.rewritable += u64::from(tally.rewritable > 0);
                c.mixed_case += u64::from(tally.mixed_case > 0);
                c.raw_bytes += u64::from(tally.raw_bytes > 0);
            }
            if let Some(new) = new {
                if new.len() != v.len() {
                    return Err("would change length (a bug: ids are replaced by ids)".into());
                }
                if new.as_slice() != &*v {
                    v.copy_from_slice(&new);
                    r.done.changed[t][col] = true;
                    changed = Some(());
                }
            }
        }
        body = end;
        col += 1;
    }
    Ok(changed)
}

/// True if TEXT `bytes` in encoding `text` reads as a number (SQLite would store it as
/// one in a column of numeric affinity).
fn text_reads_as_number(text: Kind, bytes: &[u8]) -> bool {
    let units = |be: bool| {
        let u: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| {
                if be {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    u16::from_le_bytes([p[0], p[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&u).into_bytes()
    };
    match text {
        Kind::Utf16LeText => reads_as_number(&units(false)),
        Kind::Utf16BeText => reads_as_number(&units(true)),
        _ => reads_as_number(bytes),
    }
}

/// Rewrites the old ids of `m` in the records of `tables` in the file at `path`, as the
/// module's contract says. `Err` only for I/O; a file this does not handle is
/// `Ok(Outcome::Refused)` with nothing written.
pub fn rewrite_file(path: &Path, m: &Matcher, tables: &[TableSpec]) -> std::io::Result<Outcome> {
    let wal = crate::sqlite::fsio::side_path(path, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|w| w.len() > 0) {
        return Ok(Outcome::Refused(format!(
            "{} is beside it: its pages are not all in the file",
            wal.display()
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let run = || -> Result<Done, Stop> {
        let h = header(&file, path)?;
        let mut pages = FilePages {
            file: &file,
            page_size: h.page_size as u64,
        };
        passes(&mut pages, h, m, tables)
    };
    outcome(run())
}

/// As [`rewrite_file`], on the main database of `conn`, which must be inside a write
/// transaction (`BEGIN IMMEDIATE`), through `sqlite_dbpage`: the pages written are part
/// of that transaction, so the caller checks the result and then commits, or rolls
/// everything back. Other connections, other processes included, see the old pages until
/// the commit. Unlike [`rewrite_file`], one pass checks and rewrites: on `Refused`, as on
/// `Err`, some pages may have been written, so the caller rolls the transaction back
/// (and may then take the SQL rewrite). Also `Refused` when this build of SQLite has no
/// `sqlite_dbpage` or the connection may not write it (`SQLITE_DBCONFIG_DEFENSIVE` on).
pub fn rewrite_in_transaction(
    conn: &Connection,
    m: &Matcher,
    tables: &[TableSpec],
) -> std::io::Result<Outcome> {
    let h = match in_transaction(conn)? {
        Ok(h) => h,
        Err(why) => return Ok(Outcome::Refused(why)),
    };
    let run = || -> Result<Done, Stop> {
        let mut pages = DbPages {
            conn,
            page_size: h.page_size,
            scratch: Vec::new(),
        };
        // One pass that checks and rewrites at once: a refusal half-way is rolled back
        // with the transaction, so nothing needs to be known before the first write.
        let t0 = std::time::Instant::now();
        let mut r = Rewrite::new(m, tables);
        let mut p = Pager::new(&mut pages, h);
        for (t, spec) in tables.iter().enumerate() {
            walk_table(&mut p, spec, t, Some(&mut r), Some(m))?;
        }
        tracing::debug!(
            "pagerewrite: one pass in the transaction took {:?}",
            t0.elapsed()
        );
        Ok(r.done)
    };
    outcome(run())
}

/// The header of the main database of `conn` for page writes through `sqlite_dbpage`
/// inside its write transaction; `Ok(Err(why))` when this build of SQLite has no
/// `sqlite_dbpage`, the connection may not write it (`SQLITE_DBCONFIG_DEFENSIVE` on) or
/// the header is one the walks do not handle.
fn in_transaction(conn: &Connection) -> std::io::Result<Result<Header, String>> {
    if conn.is_autocommit() {
        return Err(std::io::Error::other(
            "the page rewrite through sqlite_dbpage needs a write transaction (a bug)",
        ));
    }
    let sql = |what: &str, e: rusqlite::Error| std::io::Error::other(format!("{what}: {e}"));
    // A missing sqlite_dbpage (a build without SQLITE_ENABLE_DBPAGE_VTAB) fails here.
    let page1: Vec<u8> = match conn
        .prepare_cached(DbPages::READ)
        .and_then(|mut st| st.query_row([1], |r| r.get(0)))
    {
        Ok(b) => b,
        Err(e) => return Ok(Err(format!("sqlite_dbpage: {e}"))),
    };
    let pragma = |name: &str| -> std::io::Result<u64> {
        conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .map_err(|e| sql(name, e))
            .map(|v| v.max(0) as u64)
    };
    let (page_size, page_count) = (pragma("page_size")?, pragma("page_count")?);
    if conn
        .db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE)
        .map_err(|e| sql("SQLITE_DBCONFIG_DEFENSIVE", e))?
    {
        return Ok(Err(
            "the connection is in defensive mode: sqlite_dbpage is read-only".into(),
        ));
    }
    let Some(h) = page1.first_chunk::<100>() else {
        return Ok(Err("page 1 is shorter than the header".into()));
    };
    let h = match header_of(h, page_count.saturating_mul(page_size)) {
        Ok(h) => h,
        Err(Stop::Refuse(why)) => return Ok(Err(why)),
        Err(Stop::Io(e)) => return Err(e),
    };
    if h.page_size as u64 != page_size {
        return Ok(Err("the header's page size is not the connection's".into()));
    }
    Ok(Ok(h))
}

/// After [`rewrite_in_transaction`] (or a committed [`rewrite_file`]), in a write
/// transaction of `conn` on the same database: the ids in the keys of each index of
/// `indexes` replaced as the rewrite replaced them in the rows. Per index, `Ok(pages
/// written)`, or `Err(why)` when it must be rebuilt with `REINDEX` instead.
///
/// Why this is the index `REINDEX` would build: an index entry holds a copy of its row's
/// key columns, byte for byte, and the rewrite is a function of a value's bytes, so each
/// patched entry is its rewritten row's entry. What could go wrong is the order: a new id
/// may sort elsewhere than the old one among the other values. So an index is patched
/// only if every key column in which the rewrite changed a value holds the same bytes
/// in every entry: two entries then compare equal there before and after, whatever the
/// collation or direction, and every other column is unchanged, so their order (and any
/// UNIQUE constraint) is as before. Otherwise, and for a key that overflows its page or a
/// page this walk does not expect, `Err`: the pages already patched do not matter, since
/// `REINDEX` empties the index before it fills it again.
pub fn patch_indexes_in_transaction(
    conn: &Connection,
    m: &Matcher,
    indexes: &[IndexSpec],
) -> std::io::Result<Vec<Result<u64, String>>> {
    let h = match in_transaction(conn)? {
        Ok(h) => h,
        Err(why) => return Ok(indexes.iter().map(|_| Err(why.clone())).collect()),
    };
    let mut pages = DbPages {
        conn,
        page_size: h.page_size,
        scratch: Vec::new(),
    };
    let mut out = Vec::with_capacity(indexes.len());
    for spec in indexes {
        let mut p = Pager::new(&mut pages, h);
        out.push(match walk_index(&mut p, spec, m) {
            Ok(written) => Ok(written),
            Err(Stop::Refuse(why)) => Err(why),
            Err(Stop::Io(e)) => return Err(e),
        });
    }
    Ok(out)
}

/// What the keys of one index held, position by position in the key record: the first
/// value met (serial type and bytes, before any rewrite), whether another entry holds a
/// different one, and whether the rewrite changed a value there.
#[derive(Default)]
struct Keys {
    /// Positions per key record: set by the first one, the same in all.
    width: Option<usize>,
    first: Vec<(u64, Vec<u8>)>,
    varies: Vec<bool>,
    changed: Vec<bool>,
}

impl Keys {
    /// A key column whose values the rewrite changed and that holds more than one value:
    /// the patched order could differ from SQLite's.
    fn unsafe_column(&self) -> Option<usize> {
        (0..self.changed.len()).find(|&i| self.changed[i] && self.varies[i])
    }
}

/// One pass over the B-tree of index `spec`, patching its keys ([`key_record`]); the pages
/// written, or refused (rebuild it instead) as soon as the patch could be out of order.
fn walk_index(p: &mut Pager<'_>, spec: &IndexSpec, m: &Matcher) -> Result<u64, Stop> {
    let usable = p.h.usable;
    // The largest payload an index cell keeps on its page (file format: X for index
    // pages); a longer key overflows, which this walk leaves to REINDEX.
    let max_local = (usable - 12) * 64 / 255 - 23;
    let mut page = vec![0u8; p.h.page_size];
    let mut keys = Keys::default();
    let mut written = 0;
    let mut stack = vec![spec.root];
    p.claim(spec.root)?;
    while let Some(n) = stack.pop() {
        p.read(n, &mut page)?;
        let PageHead {
            leaf,
            cells,
            head,
            ptrs_end,
        } = page_head(&page, usable, INDEX_PAGES, &spec.name, n)?;
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(cells);
        let mut children = Vec::new();
        let mut dirty = false;
        for i in 0..cells {
            let c = u16_at(&page, head + 2 * i);
            let bad = |what: &str| {
                Stop::Refuse(format!("index {}: page {n}: cell {i} {what}", spec.name))
            };
            // An interior cell starts with its left child's page number.
            let at = if leaf { c } else { c + 4 };
            if c < ptrs_end || at >= usable {
                return Err(bad("outside the page"));
            }
            if !leaf {
                children.push(u32_at(&page, c));
            }
            let (size, a) = varint(&page, at, usable).ok_or_else(|| bad("runs past the page"))?;
            if size > max_local as u64 {
                return Err(bad("is a key that overflows its page"));
            }
            let (start, end) = (at + a, at + a + size as usize);
            if end > usable {
                return Err(bad("runs past the page"));
            }
            spans.push((c, end));
            dirty |=
                key_record(p.h.text, &mut page[start..end], m, &mut keys).map_err(|w| bad(&w))?;
        }
        if let Some(col) = keys.unsafe_column() {
            return refuse(format!(
                "index {}: key column {col} holds more than one value, so the new ids may sort elsewhere",
                spec.name
            ));
        }
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[0].1 > w[1].0) {
            return refuse(format!("index {}: page {n}: cells overlap", spec.name));
        }
        if !leaf {
            children.push(u32_at(&page, 8));
            for &c in children.iter().rev() {
                p.claim(c)?;
                stack.push(c);
            }
        }
        if dirty {
            p.write(n, 0, &page)?;
            written += 1;
        }
    }
    Ok(written)
}

/// Rewrites the TEXT and BLOB values of one index key record in place (as [`record`] does
/// a row's) and notes in `keys` what each position held before. `Ok(true)` when a byte
/// changed.
fn key_record(
    text: Kind,
    payload: &mut [u8],
    m: &Matcher,
    keys: &mut Keys,
) -> Result<bool, String> {
    let (hsize, a) = varint(payload, 0, payload.len()).ok_or("has a broken record header")?;
    if hsize > payload.len() as u64 || hsize < a as u64 {
        return Err("has a record header past its payload".into());
    }
    let hsize = hsize as usize;
    let (mut at, mut body, mut pos) = (a, hsize as u64, 0);
    let mut changed = false;
    while at < hsize {
        let (st, l) = varint(payload, at, hsize).ok_or("has a broken record header")?;
        at += l;
        let size = value_size(st).ok_or("has a value of a reserved serial type")?;
        if size > payload.len() as u64 - body {
            return Err("has a value past its payload".into());
        }
        let (s, e) = (body as usize, (body + size) as usize);
        if pos == keys.first.len() {
            if keys.width.is_some() {
                return Err("has more key columns than the index's other keys".into());
            }
            keys.first.push((st, payload[s..e].to_vec()));
            keys.varies.push(false);
            keys.changed.push(false);
        } else if !keys.varies[pos]
            && (keys.first[pos].0 != st || keys.first[pos].1 != payload[s..e])
        {
            keys.varies[pos] = true;
        }
        if st >= 12 && size > 0 {
            let kind = if st % 2 == 1 { text } else { Kind::Blob };
            let v = &mut payload[s..e];
            if let (Some(new), _) = m.rewrite(kind, v) {
                if new.len() != v.len() {
                    return Err("would change length (a bug: ids are replaced by ids)".into());
                }
                if new.as_slice() != &*v {
                    v.copy_from_slice(&new);
                    keys.changed[pos] = true;
                    changed = true;
                }
            }
        }
        body += size;
        pos += 1;
    }
    match keys.width {
        None => keys.width = Some(pos),
        Some(w) if w != pos => {
            return Err("has fewer key columns than the index's other keys".into());
        }
        Some(_) => {}
    }
    Ok(changed)
}

fn outcome(r: Result<Done, Stop>) -> std::io::Result<Outcome> {
    match r {
        Ok(done) => Ok(Outcome::Done(done)),
        Err(Stop::Refuse(why)) => Ok(Outcome::Refused(why)),
        Err(Stop::Io(e)) => Err(e),
    }
}

/// The two passes over `pages`: structure only, then, if all of it holds, the rewrite.
fn passes(
    pages: &mut dyn Pages,
    h: Header,
    m: &Matcher,
    tables: &[TableSpec],
) -> Result<Done, Stop> {
    // First pass: structure only. Nothing is written unless all of it holds.
    let t0 = std::time::Instant::now();
    let mut p = Pager::new(pages, h);
    for (t, spec) in tables.iter().enumerate() {
        walk_table(&mut p, spec, t, None, Some(m))?;
    }
    tracing::debug!("pagerewrite: structure pass took {:?}", t0.elapsed());
    let mut r = Rewrite::new(m, tables);
    let mut p = Pager::new(pages, h);
    for (t, spec) in tables.iter().enumerate() {
        walk_table(&mut p, spec, t, Some(&mut r), None).map_err(|e| match e {
            // The first pass checked all of it: a refusal now means the pages changed.
            Stop::Refuse(why) => Stop::Io(std::io::Error::other(format!(
                "the pages changed during the rewrite: {why}"
            ))),
            e => e,
        })?;
    }
    Ok(r.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(columns: usize) -> TableSpec {
        TableSpec {
            name: "t".into(),
            root: 2,
            columns: (0..columns).map(|i| format!("c{i}")).collect(),
            guarded: Vec::new(),
        }
    }

    #[test]
    fn local_payload_follows_the_file_format() {
        // U = 4096: X = 4061, M = ((4096-12)*32/255)-23 = 489.
        assert_eq!(local_size(4096, 4061), 4061);
        // P = 4062: K = 489 + 3573 = 4062 > X, so only M stays local.
        assert_eq!(local_size(4096, 4062), 489);
        // K = M + 100 <= X: K stays local (the rest fills one overflow page exactly).
        assert_eq!(local_size(4096, 489 + 4092 + 100), 589);
        // K > X: M stays local.
        // K = M + 4000 > X: only M stays local.
        assert_eq!(local_size(4096, 489 + 4092 + 4000), 489);
    }

    #[test]
    fn a_record_header_from_a_hostile_file_is_refused_never_a_panic() {
        let cases: [&[u8]; 6] = [
            // A serial type of 2^63-ish: a value far past the payload.
            &[10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            // Reserved serial type 10.
            &[2, 10],
            // Header size past the payload.
            &[50, 1],
            // Header size smaller than its own varint.
            &[0],
            // More values than columns.
            &[4, 1, 1, 1, 1, 2, 3],
            // A varint that runs past the header.
            &[2, 0x81],
        ];
        for c in cases {
            let mut b = c.to_vec();
            assert!(
                record(&spec(2), 0, Kind::Utf8Text, &mut b, None, None).is_err(),
                "{c:?}"
            );
        }
        let mut ok = vec![3, 1, 15, 7, b'a'];
        assert_eq!(
            record(&spec(2), 0, Kind::Utf8Text, &mut ok, None, None),
            Ok(None)
        );
    }
}
