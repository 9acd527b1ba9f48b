//! SQLite's `-wal` file, read with plain `pread` and no lock (https://sqlite.org/walformat.html).
//!
//! Header (32 bytes, big-endian): magic (0x377f0682: checksums over little-endian words,
//! 0x377f0683: big-endian), version 3007000, page size, checkpoint sequence, salt-1,
//! salt-2, checksum of the first 24 bytes. Frames: 24-byte header (page number, database
//! size after commit (non-zero: a commit frame), salt-1, salt-2, cumulative checksum of
//! the frame header's first 8 bytes and the page, chained from the previous frame or the
//! header) and the page.
//!
//! A frame counts only if its salts are the header's and the checksum chain holds up to
//! it; only frames up to the last commit frame are taken. A writer appends frames and
//! never rewrites a committed one until it restarts the WAL, which writes a new header
//! (salt-1 + 1, a new salt-2): so a position (header, frame index, running checksum)
//! proves continuity for as long as the header is the one it was taken with.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

pub const HEADER: usize = 32;
pub const FRAME_HEADER: usize = 24;
const MAGIC_LE: u32 = 0x377f0682;
const MAGIC_BE: u32 = 0x377f0683;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// A WAL header that passed its own checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub raw: [u8; HEADER],
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salts: (u32, u32),
    pub checksum: (u32, u32),
}

impl WalHeader {
    pub fn parse(raw: &[u8]) -> Option<WalHeader> {
        let raw: [u8; HEADER] = raw.get(..HEADER)?.try_into().ok()?;
        let magic = be32(&raw, 0);
        let big_endian = match magic {
            MAGIC_BE => true,
            MAGIC_LE => false,
            _ => return None,
        };
        let page_size = match be32(&raw, 8) {
            1 => 65536,
            p => p,
        };
        if be32(&raw, 4) != 3007000
            || !(512..=65536).contains(&page_size)
            || !page_size.is_power_of_two()
        {
            return None;
        }
        let checksum = (be32(&raw, 24), be32(&raw, 28));
        if cksum(big_endian, &raw[..24], (0, 0)) != checksum {
            return None;
        }
        Some(WalHeader {
            raw,
            big_endian,
            page_size,
            checkpoint_seq: be32(&raw, 12),
            salts: (be32(&raw, 16), be32(&raw, 20)),
            checksum,
        })
    }

    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER as u64 + self.page_size as u64
    }
}

/// SQLite's WAL checksum (walChecksumBytes): over 32-bit words taken two at a time.
pub fn cksum(big_endian: bool, data: &[u8], (mut s1, mut s2): (u32, u32)) -> (u32, u32) {
    debug_assert!(data.len().is_multiple_of(8));
    for w in data.chunks_exact(8) {
        let (a, b) = if big_endian {
            (be32(w, 0), be32(w, 4))
        } else {
            (
                u32::from_le_bytes(w[0..4].try_into().expect("4")),
                u32::from_le_bytes(w[4..8].try_into().expect("4")),
            )
        };
        s1 = s1.wrapping_add(a).wrapping_add(s2);
        s2 = s2.wrapping_add(b).wrapping_add(s1);
    }
    (s1, s2)
}

/// Where tailing stands: every committed frame before `frames` has been taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalPos {
    pub header: WalHeader,
    /// Frames consumed (the next frame read is number `frames + 1`).
    pub frames: u64,
    /// Running checksum after frame `frames` (the header's when 0).
    pub checksum: (u32, u32),
}

impl WalPos {
    pub fn start(header: WalHeader) -> WalPos {
        WalPos {
            header,
            frames: 0,
            checksum: header.checksum,
        }
    }
}

/// One commit read from the WAL: the newest image of each page it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalCommit {
    pub db_pages: u32,
    pub pages: BTreeMap<u32, Vec<u8>>,
}

/// One commit found in the WAL, without its pages: (page number, frame number of the
/// newest image of that page in the commit), in page order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedCommit {
    pub db_pages: u32,
    pub frames: Vec<(u32, u64)>,
}

/// What reading after a position found.
#[derive(Debug)]
pub enum Tail<C = WalCommit> {
    /// Zero or more commits, and the position after the last one.
    Commits(Vec<C>, WalPos),
    /// The header is not the position's (a restart), or the file is shorter than the
    /// position (a truncation): continuity from the position cannot be proven.
    Discontinuous(&'static str),
}

/// Frames read per `pread`.
const BATCH_FRAMES: u64 = 64;

/// Reads the committed frames after `pos`. Never fails on a partly written frame: it
/// is simply not taken yet.
pub fn read_after(wal: &File, pos: &WalPos) -> std::io::Result<Tail> {
    read_after_with(wal, pos, scan)
}

/// [`read_after`] without the pages ([`IndexedCommit`]).
pub fn read_after_indexed(wal: &File, pos: &WalPos) -> std::io::Result<Tail<IndexedCommit>> {
    read_after_with(wal, pos, scan_index)
}

/// How the frames after a position are read: the commits, the position after the last
/// one, and the number of valid frames from the WAL's start.
type Scan<C> = fn(&File, &WalPos, u64) -> std::io::Result<(Vec<C>, WalPos, u64)>;

fn read_after_with<C>(wal: &File, pos: &WalPos, scan: Scan<C>) -> std::io::Result<Tail<C>> {
    let mut raw = [0u8; HEADER];
    let n = read_full(wal, &mut raw, 0)?;
    if n < HEADER {
        return Ok(Tail::Discontinuous("the WAL has no header (truncated)"));
    }
    if raw != pos.header.raw {
        return across_restart(wal, pos, &raw, scan);
    }
    let len = wal.metadata()?.len();
    let fs = pos.header.frame_size();
    let at = HEADER as u64 + pos.frames * fs;
    if len < at {
        return Ok(Tail::Discontinuous(
            "the WAL is shorter than the position (truncated)",
        ));
    }
    let (commits, end, _) = scan(wal, pos, len)?;
    Ok(Tail::Commits(commits, end))
}

/// The header changed. A writer restarts the WAL only when every frame was copied into
/// the database, and a restart adds 1 to salt-1. If exactly one restart happened, the
/// old WAL is still in the file through our position (no truncation since, the new WAL
/// not there yet), and the frame after our position was never written in the old WAL
/// (not a valid old frame), nothing was missed: the new WAL's frames follow our
/// position. Anything else is discontinuous.
fn across_restart<C>(
    wal: &File,
    pos: &WalPos,
    raw: &[u8],
    scan: Scan<C>,
) -> std::io::Result<Tail<C>> {
    let restarted = Tail::Discontinuous("the WAL header changed (restart)");
    let Some(new) = WalHeader::parse(raw) else {
        return Ok(restarted);
    };
    let old = pos.header;
    if new.salts.0 != old.salts.0.wrapping_add(1) || new.page_size != old.page_size {
        return Ok(restarted);
    }
    let fs = old.frame_size();
    // The frame at our position must still be the old WAL's (its salts, and the running
    // checksum we stand at): then the WAL was not truncated since (a
    // `wal_checkpoint(TRUNCATE)` empties the file before the new WAL is written, so the
    // slot after our position would hold nothing whatever the old WAL held there), and
    // the new WAL has not reached our slot (it writes its frames in order). At the
    // WAL's start (no frame consumed) nothing can prove that: resync.
    if pos.frames == 0 {
        return Ok(restarted);
    }
    let mut ours = [0u8; FRAME_HEADER];
    let got = read_full(wal, &mut ours, HEADER as u64 + (pos.frames - 1) * fs)?;
    if got < FRAME_HEADER
        || (be32(&ours, 8), be32(&ours, 12)) != old.salts
        || (be32(&ours, 16), be32(&ours, 20)) != pos.checksum
    {
        return Ok(restarted);
    }
    let mut next = vec![0u8; fs as usize];
    let got = read_full(wal, &mut next, HEADER as u64 + pos.frames * fs)?;
    if got == next.len() && (be32(&next, 8), be32(&next, 12)) == old.salts {
        let c = cksum(old.big_endian, &next[..8], pos.checksum);
        let c = cksum(old.big_endian, &next[FRAME_HEADER..], c);
        if c == (be32(&next, 16), be32(&next, 20)) {
            return Ok(restarted); // the old WAL went on after our position
        }
    }
    let len = wal.metadata()?.len();
    let (commits, end, valid) = scan(wal, &WalPos::start(new), len)?;
    let mut again = [0u8; HEADER];
    read_full(wal, &mut again, 0)?;
    // The new WAL had not reached our slot when we looked at it, and no second
    // restart came meanwhile.
    if valid > pos.frames || again != new.raw {
        return Ok(restarted);
    }
    Ok(Tail::Commits(commits, end))
}

/// One valid frame, as [`walk`] hands it on.
struct Frame<'a> {
    /// Its number, 1-based from the WAL's start.
    n: u64,
    pgno: u32,
    /// Database size in pages after the commit this frame ends; 0 if it ends none.
    size_after: u32,
    /// The running checksum through this frame.
    checksum: (u32, u32),
    page: &'a [u8],
}

/// Walks the valid frames of the WAL whose header is `h`, after frame `from` (whose
/// running checksum is `checksum`), until `len` bytes or through frame `stop_at`. A frame
/// is valid by SQLite's own recovery rule: the header's salts, a page number, and the
/// cumulative checksum chain up to it; the walk stops at the first one that is not.
/// Reads in batches of [`BATCH_FRAMES`] frames.
fn walk(
    wal: &File,
    h: &WalHeader,
    from: u64,
    checksum: (u32, u32),
    len: u64,
    stop_at: Option<u64>,
    mut each: impl FnMut(Frame<'_>),
) -> std::io::Result<()> {
    let fs = h.frame_size();
    let mut running = checksum;
    let mut frame = from;
    let mut buf = Vec::new();
    loop {
        if stop_at.is_some_and(|s| frame >= s) {
            return Ok(());
        }
        let at = HEADER as u64 + frame * fs;
        if at + fs > len {
            return Ok(());
        }
        let mut batch = ((len - at) / fs).min(BATCH_FRAMES);
        if let Some(s) = stop_at {
            batch = batch.min(s - frame);
        }
        buf.resize((batch * fs) as usize, 0);
        let got = read_full(wal, &mut buf, at)?;
        let whole = got as u64 / fs;
        for f in buf[..(whole * fs) as usize].chunks_exact(fs as usize) {
            let (pgno, size_after) = (be32(f, 0), be32(f, 4));
            if (be32(f, 8), be32(f, 12)) != h.salts || pgno == 0 {
                return Ok(());
            }
            let c = cksum(h.big_endian, &f[..8], running);
            let c = cksum(h.big_endian, &f[FRAME_HEADER..], c);
            if c != (be32(f, 16), be32(f, 20)) {
                return Ok(());
            }
            running = c;
            frame += 1;
            each(Frame {
                n: frame,
                pgno,
                size_after,
                checksum: c,
                page: &f[FRAME_HEADER..],
            });
        }
        if whole < batch {
            return Ok(());
        }
    }
}

/// Reads valid frames from `pos` to the last commit before `len` bytes; also returns
/// the number of valid frames (committed or not) from the WAL's start.
pub fn scan(wal: &File, pos: &WalPos, len: u64) -> std::io::Result<(Vec<WalCommit>, WalPos, u64)> {
    let h = pos.header;
    let ps = h.page_size as usize;
    let mut commits = Vec::new();
    let mut committed = *pos;
    let mut pending: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut valid = pos.frames;
    walk(wal, &h, pos.frames, pos.checksum, len, None, |f| {
        valid = f.n;
        pending.insert(f.pgno, f.page[..ps].to_vec());
        if f.size_after != 0 {
            let mut pages = std::mem::take(&mut pending);
            pages.retain(|p, _| *p <= f.size_after);
            commits.push(WalCommit {
                db_pages: f.size_after,
                pages,
            });
            committed = WalPos {
                header: h,
                frames: f.n,
                checksum: f.checksum,
            };
        }
    })?;
    Ok((commits, committed, valid))
}

/// [`scan`] without the pages: memory is a few bytes per frame, whatever the commit's
/// size.
pub fn scan_index(
    wal: &File,
    pos: &WalPos,
    len: u64,
) -> std::io::Result<(Vec<IndexedCommit>, WalPos, u64)> {
    let h = pos.header;
    let mut commits = Vec::new();
    let mut committed = *pos;
    // The frames of the commit under way, in file order (16 bytes a frame; a map took
    // about 40 a page, then the list as well): sorted when the commit ends.
    let mut pending: Vec<(u32, u64)> = Vec::new();
    let mut valid = pos.frames;
    walk(wal, &h, pos.frames, pos.checksum, len, None, |f| {
        valid = f.n;
        pending.push((f.pgno, f.n));
        if f.size_after != 0 {
            let mut frames = std::mem::take(&mut pending);
            // Page order; of a page's frames the newest first, and only it kept.
            frames.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            frames.dedup_by_key(|(p, _)| *p);
            frames.retain(|(p, _)| *p <= f.size_after);
            frames.shrink_to_fit();
            commits.push(IndexedCommit {
                db_pages: f.size_after,
                frames,
            });
            committed = WalPos {
                header: h,
                frames: f.n,
                checksum: f.checksum,
            };
        }
    })?;
    Ok((commits, committed, valid))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Where the newest committed image of each page lies in a WAL, without the images:
/// memory stays a few bytes per distinct page, whatever the WAL's size.
#[derive(Clone, Debug, Default)]
pub struct FrameIndex {
    /// Page number -> number (1-based) of the newest committed frame holding it.
    pub frames: std::collections::HashMap<u32, u64>,
    /// Database size in pages after the last commit (`None`: no commit).
    pub db_pages: Option<u32>,
    /// Frames through the last commit (0: none).
    pub committed: u64,
    /// Running checksum after frame `committed`.
    pub checksum: (u32, u32),
}

/// Indexes the valid frames of the WAL whose header is `h` through its last commit before
/// `len` bytes, or exactly through frame `stop_at` when given (which must then end a
/// commit: a shorter chain leaves `committed` below it, for the caller to see).
pub fn index(
    wal: &File,
    h: &WalHeader,
    len: u64,
    stop_at: Option<u64>,
) -> std::io::Result<FrameIndex> {
    let mut out = FrameIndex {
        checksum: h.checksum,
        ..Default::default()
    };
    let mut pending: Vec<(u32, u64)> = Vec::new();
    walk(wal, h, 0, h.checksum, len, stop_at, |f| {
        pending.push((f.pgno, f.n));
        if f.size_after != 0 {
            for (p, n) in pending.drain(..) {
                out.frames.insert(p, n);
            }
            out.frames.retain(|p, _| *p <= f.size_after);
            out.db_pages = Some(f.size_after);
            out.committed = f.n;
            out.checksum = f.checksum;
        }
    })?;
    Ok(out)
}

/// Reads the page of frame number `n` (1-based) into `page` if that frame still belongs
/// to the WAL with header `h` and holds page `pgno`; false otherwise (the WAL was
/// restarted and the slot rewritten since it was indexed).
pub fn read_frame(
    wal: &File,
    h: &WalHeader,
    n: u64,
    pgno: u32,
    page: &mut [u8],
) -> std::io::Result<bool> {
    let fs = h.frame_size();
    let at = HEADER as u64 + (n - 1) * fs;
    let mut head = [0u8; FRAME_HEADER];
    if read_full(wal, &mut head, at)? < FRAME_HEADER
        || be32(&head, 0) != pgno
        || (be32(&head, 8), be32(&head, 12)) != h.salts
    {
        return Ok(false);
    }
    if read_full(wal, page, at + FRAME_HEADER as u64)? < page.len() {
        return Ok(false);
    }
    // The salts are read before the page: a restart that rewrites this slot writes the
    // frame header and the page in one write, so confirm the header again after.
    let mut again = [0u8; FRAME_HEADER];
    Ok(read_full(wal, &mut again, at)? == FRAME_HEADER && again == head)
}
