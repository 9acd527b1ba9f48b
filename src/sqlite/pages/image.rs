//! A consistent page image, streamed in page order through a fixed buffer: what a backup
//! reads ONCE and feeds to its hash, its uploads and its compressor, whatever the
//! database's size.
//!
//! An [`ImagePlan`] says where each page of the image lies: in the database file, or in
//! a WAL frame (the newest committed frame of that page up to the image's last frame).
//! The plan is only as good as what pins it, which is the caller's business:
//! - a WAL database under a read transaction of a connection of ours ([`pin_wal`]): that
//!   transaction's snapshot is read from the `-shm` (its wal-index header), bracketed so
//!   that it is provably the one the transaction took. While it is held, no checkpoint
//!   copies a frame past the snapshot into the file and the WAL cannot restart under a
//!   reader that uses it; a reader that uses no WAL frame (every frame already in the
//!   file) blocks checkpoints altogether, so the file alone is the state. Either way the
//!   file overlaid with the indexed frames is exactly the snapshot, read without a lock of
//!   our own, and the connection can check that same snapshot meanwhile;
//! - a file nothing writes (a temp copy), or one whose state a change counter vouches for
//!   before and after the read (rollback-journal mode, see `snapshot`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;

use crate::error::{Error, Result};
use crate::sqlite::pages::shm::IndexHeader;
use crate::sqlite::pages::wal::{self, WalHeader, read_full};
use crate::sqlite::pages::{Mode, Source};

/// Pages read per `pread` of the database file.
const BATCH_PAGES: u32 = 64;

/// Where every page of an image lies.
#[derive(Debug)]
pub struct ImagePlan {
    pub page_size: u32,
    /// The image's size in pages.
    pub pages: u32,
    /// The journal mode the database header said when the plan was made.
    pub mode: Mode,
    /// For a WAL database: the WAL (a descriptor of its own: SQLite locks nothing on the
    /// `-wal`, so closing it is harmless), its header, and page -> newest frame number.
    wal: Option<(File, WalHeader, HashMap<u32, u64>)>,
    /// For a WAL database pinned by [`pin_wal`]: the wal-index header of the snapshot,
    /// which another connection's read transaction can be proven to share.
    pub index: Option<IndexHeader>,
}

impl ImagePlan {
    /// The whole database file as it is (no WAL): a file nothing writes, or one a caller
    /// vouches for by other means.
    pub fn file(src: &Source) -> Result<ImagePlan> {
        let h = src.header()?;
        let len = src
            .db_file()
            .metadata()
            .map_err(|e| Error::io(src.path(), "cannot stat the database", e))?
            .len();
        ImagePlan {
            page_size: h.page_size,
            pages: (len / h.page_size as u64) as u32,
            mode: h.mode,
            wal: None,
            index: None,
        }
        .sized(src)
    }

    /// The plan cut to the database's size as SQLite takes it from page 1's header
    /// ([`crate::sqlite::pages::db_size`]): a file may be longer than its database.
    pub fn sized(mut self, src: &Source) -> Result<ImagePlan> {
        let mut page1 = vec![0u8; self.page_size as usize];
        let got = self
            .reader(src, false)
            .read_pages(&mut page1)
            .map_err(|e| Error::io(src.path(), "cannot read the database", e))?;
        self.pages = crate::sqlite::pages::db_size(&page1[..got], self.pages);
        Ok(self)
    }

    /// Bytes of the image.
    pub fn bytes(&self) -> u64 {
        self.pages as u64 * self.page_size as u64
    }

    /// Pages taken from the WAL instead of the file.
    pub fn wal_pages(&self) -> usize {
        self.wal.as_ref().map_or(0, |w| w.2.len())
    }

    /// A reader of the image in page order. With `legacy_header`, page 1 says rollback
    /// mode (header bytes 18 and 19 set to 1), so that the bytes are a self-contained file
    /// that opens read-only anywhere, without a `-wal` or `-shm` beside it.
    pub fn reader<'a>(&'a self, src: &'a Source, legacy_header: bool) -> ImageReader<'a> {
        ImageReader {
            plan: self,
            src,
            legacy_header,
            next: 1,
            buf: Vec::new(),
            frame: Vec::new(),
            at: 0,
        }
    }
}

/// Streams an [`ImagePlan`]'s pages in order (see [`ImagePlan::reader`]).
pub struct ImageReader<'a> {
    plan: &'a ImagePlan,
    src: &'a Source,
    legacy_header: bool,
    /// The next page to read into `buf`.
    next: u32,
    buf: Vec<u8>,
    /// One frame's page, read before it replaces the file's.
    frame: Vec<u8>,
    /// Bytes of `buf` already handed out.
    at: usize,
}

impl ImageReader<'_> {
    /// Reads the next pages into `dst` (a whole number of pages, at least one), straight
    /// from the file with the WAL's frames laid over them; returns the bytes read, 0 at
    /// the end of the image.
    fn read_pages(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        let plan = self.plan;
        if self.next > plan.pages {
            return Ok(0);
        }
        let ps = plan.page_size as usize;
        let n = (plan.pages - self.next + 1).min((dst.len() / ps) as u32);
        let dst = &mut dst[..n as usize * ps];
        let got = read_full(self.src.db_file(), dst, (self.next as u64 - 1) * ps as u64)?;
        // A page past the file's end that no frame holds: SQLite counts it but never wrote
        // it, and reads it as zeros.
        dst[got..].fill(0);
        if let Some((f, h, frames)) = &plan.wal {
            for i in 0..n {
                let p = self.next + i;
                if let Some(&frame) = frames.get(&p) {
                    let page = &mut dst[i as usize * ps..(i as usize + 1) * ps];
                    // A frame rewritten since it was indexed means the WAL restarted, which
                    // a pinning reader allows only when every frame was already in the
                    // file and checkpoints are blocked: the file's page is the state.
                    self.frame.resize(ps, 0);
                    if wal::read_frame(f, h, frame, p, &mut self.frame)? {
                        page.copy_from_slice(&self.frame);
                    }
                }
            }
        }
        if self.next == 1 && self.legacy_header && dst.len() >= 20 {
            dst[18] = 1;
            dst[19] = 1;
        }
        self.next += n;
        Ok(dst.len())
    }

    /// Reads the next batch of pages into `buf`; false at the end of the image.
    fn fill(&mut self) -> std::io::Result<bool> {
        let ps = self.plan.page_size as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(BATCH_PAGES as usize * ps, 0);
        let got = self.read_pages(&mut buf);
        buf.truncate(*got.as_ref().unwrap_or(&0));
        self.buf = buf;
        self.at = 0;
        Ok(got? > 0)
    }
}

impl Read for ImageReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            // Room for whole pages: read them straight into the caller's buffer (one
            // copy less for every byte of a backup).
            if out.len() >= self.plan.page_size as usize {
                return self.read_pages(out);
            }
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Attempts at pinning a snapshot before giving up (each a few microseconds; a writer
/// committing between the two header reads makes an attempt fail).
const PIN_TRIES: usize = 200;

/// Starts a read transaction through `begin` (which must BEGIN and read, so that the
/// transaction takes its snapshot) and plans the image that snapshot sees, for a WAL
/// database. The wal-index header is read before and after `begin`: equal, it is the
/// snapshot the transaction took (a header only moves forward: a commit changes its
/// change counter, a restart its salts). Otherwise `end` ends the transaction and it is
/// tried again. `Ok(None)`: the database is not in WAL mode (any more).
pub fn pin_wal(
    src: &mut Source,
    mut begin: impl FnMut() -> Result<()>,
    mut end: impl FnMut(),
) -> Result<Option<ImagePlan>> {
    let path = src.path().to_path_buf();
    let io = |what: &str, e| Error::io(&path, what, e);
    for _ in 0..PIN_TRIES {
        if src.header()?.mode != Mode::Wal {
            return Ok(None);
        }
        let before = src
            .shm_header()
            .map_err(|e| io("cannot read the -shm", e))?;
        begin()?;
        let after = src
            .shm_header()
            .map_err(|e| io("cannot read the -shm", e))?;
        let hdr = src.header()?;
        let (Some(h), true, Mode::Wal) = (after, before == after, hdr.mode) else {
            end();
            if hdr.mode != Mode::Wal {
                return Ok(None);
            }
            std::thread::yield_now();
            continue;
        };
        if h.max_frame == 0 {
            // Every reader reads the file alone, and checkpoints wait for this one.
            let mut plan = ImagePlan::file(src)?;
            plan.wal = None;
            plan.index = Some(h);
            return Ok(Some(plan));
        }
        let ps = h.page_size;
        if ps != hdr.page_size {
            end();
            continue;
        }
        // Index frames 1..max_frame of the WAL these salts name; they cannot be restarted
        // away while the transaction holds a read mark past 0, and when it holds none,
        // the file already holds them (see the module's rule).
        let Some((wal_file, wh)) = src
            .wal_with_header()
            .map_err(|e| io("cannot read the -wal", e))?
        else {
            end();
            continue;
        };
        if wh.raw[16..24] != h.salts || wh.page_size != ps {
            end();
            continue;
        }
        let len = wal_file
            .metadata()
            .map_err(|e| io("cannot stat the -wal", e))?
            .len();
        let idx = wal::index(&wal_file, &wh, len, Some(h.max_frame as u64))
            .map_err(|e| io("cannot read the -wal", e))?;
        if idx.committed != h.max_frame as u64
            || idx.checksum != h.frame_checksum
            || idx.db_pages != Some(h.pages)
        {
            // The frames are not the snapshot's (a restart since the header was read,
            // with every frame already in the file): take the next attempt.
            end();
            continue;
        }
        let plan = ImagePlan {
            page_size: ps,
            pages: h.pages,
            mode: Mode::Wal,
            wal: Some((wal_file, wh, idx.frames)),
            index: Some(h),
        };
        return plan.sized(src).map(Some);
    }
    Err(Error::db(
        &path,
        format!("changed during each of {PIN_TRIES} attempts to pin a read snapshot"),
        "a writer commits without pause; try again",
    ))
}
