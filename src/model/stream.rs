//! Continuous capture's stored formats: the chain checksum of a database state, a base
//! (`.hvb`, the full page image a chain starts from) and a hub segment (`.hvs`, one
//! tick's commits of every changed connector of a hub). No I/O: bytes in, bytes out.
//!
//! docs/CONTINUOUS.md describes the formats for a reader of the bucket; the rules here:
//! - The chain checksum of a state is `xxh3-128(XOR over its pages of
//!   xxh3-128(page, seed = page number) || page count || page size)`. It updates in
//!   O(changed pages) ([`PageTable`]), so the agent keeps it for free, and a restore that
//!   builds a state page by page proves it built the state the agent saw.
//! - Every object ends with the sha256 of all the bytes before it; every section of a
//!   segment also carries the sha256 of its own (compressed) bytes, so a ranged read of
//!   one section is checkable alone.
//! - Readers are strict: a wrong magic, a length past the end, a trailing byte, a page
//!   number 0 or past the commit's size, a decompressed size past what the header
//!   announces: all are errors, never a partial result.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};

pub const BASE_MAGIC: &[u8; 8] = b"HVBASE\0\x01";
pub const SEGMENT_MAGIC: &[u8; 8] = b"HVSEGM\0\x01";
pub const FORMAT: u32 = 1;
/// A header is small JSON; anything longer is not ours.
const MAX_HEADER: usize = 1 << 20;
/// Largest page SQLite allows.
pub const MAX_PAGE_SIZE: u32 = 65536;

/// The chain checksum of one database state (see the module's rule).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ChainSum(pub u128);

impl ChainSum {
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }

    pub fn parse(s: &str) -> Option<ChainSum> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(ChainSum)
    }
}

impl std::fmt::Debug for ChainSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl std::fmt::Display for ChainSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for ChainSum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ChainSum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChainSum::parse(&s).ok_or_else(|| serde::de::Error::custom("not a 32-digit hex checksum"))
    }
}

/// The hash of one page as the chain checksum counts it.
pub fn page_hash(pgno: u32, page: &[u8]) -> u128 {
    xxh3_128_with_seed(page, pgno as u64)
}

/// The page hashes of one database state, and its chain checksum kept up to date.
#[derive(Clone, Debug)]
pub struct PageTable {
    page_size: u32,
    /// Index 0 is page 1.
    hashes: Vec<u128>,
    acc: u128,
    zero: Vec<u8>,
}

impl PageTable {
    pub fn new(page_size: u32) -> PageTable {
        PageTable {
            page_size,
            hashes: Vec::new(),
            acc: 0,
            zero: vec![0u8; page_size as usize],
        }
    }

    /// The table of a whole image (its length a multiple of the page size).
    pub fn of_image(page_size: u32, image: &[u8]) -> PageTable {
        let mut t = PageTable::new(page_size);
        for (i, page) in image.chunks(page_size as usize).enumerate() {
            t.push(page_hash(i as u32 + 1, page));
        }
        t
    }

    fn push(&mut self, h: u128) {
        self.acc ^= h;
        self.hashes.push(h);
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    pub fn pages(&self) -> u32 {
        self.hashes.len() as u32
    }

    pub fn get(&self, pgno: u32) -> Option<u128> {
        self.hashes.get(pgno.checked_sub(1)? as usize).copied()
    }

    /// Truncates to `pages`, or extends with zero-filled pages (a page SQLite counts but
    /// never wrote reads as zeros, from a file and from a restored image alike).
    pub fn resize(&mut self, pages: u32) {
        while self.hashes.len() > pages as usize {
            let h = self.hashes.pop().expect("longer than pages");
            self.acc ^= h;
        }
        while self.hashes.len() < pages as usize {
            let pgno = self.hashes.len() as u32 + 1;
            let h = page_hash(pgno, &self.zero);
            self.push(h);
        }
    }

    /// Sets page `pgno` (1-based) to a page whose hash is `h`, growing the table if needed.
    pub fn set(&mut self, pgno: u32, h: u128) {
        assert!(pgno >= 1, "page numbers start at 1");
        if pgno > self.pages() {
            self.resize(pgno);
        }
        let slot = &mut self.hashes[pgno as usize - 1];
        self.acc ^= *slot ^ h;
        *slot = h;
    }

    pub fn checksum(&self) -> ChainSum {
        let mut buf = [0u8; 24];
        buf[..16].copy_from_slice(&self.acc.to_le_bytes());
        buf[16..20].copy_from_slice(&(self.hashes.len() as u32).to_le_bytes());
        buf[20..24].copy_from_slice(&self.page_size.to_le_bytes());
        ChainSum(xxh3_128(&buf))
    }

    /// Applies one commit: its pages, then its size.
    pub fn apply(&mut self, commit: &Commit) {
        for (pgno, page) in &commit.pages {
            self.set(*pgno, page_hash(*pgno, page));
        }
        self.resize(commit.db_pages);
    }
}

/// One commit as observed: the pages it changed and the database's size after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// When the agent saw the commit in the files (UTC, ms): never before the commit.
    pub time_ms: i64,
    /// Size of the database in pages after the commit.
    pub db_pages: u32,
    /// Chain checksum of the state after the commit.
    pub after: ChainSum,
    /// (page number, page image), each page at most once, in page order.
    pub pages: Vec<(u32, Vec<u8>)>,
}

/// A chain's generation: a fresh random id for every base.
pub fn new_generation() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

fn is_generation(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------- base (.hvb)

/// What a base says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseHeader {
    pub format: u32,
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    pub generation: String,
    pub page_size: u32,
    pub page_count: u32,
    pub checksum: ChainSum,
    /// When the image was read (UTC, ms).
    pub time_ms: i64,
    /// `wal` or `delete`: what the connector used when the image was read.
    pub journal_mode: String,
}

/// `magic || u32 header length || header JSON || zstd(image) || sha256(all before)`.
pub fn encode_base(header: &BaseHeader, image: &[u8]) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(header).expect("a base header serialises");
    let mut out = Vec::with_capacity(image.len() / 3 + json.len() + 64);
    out.extend_from_slice(BASE_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let z = zstd::bulk::compress(image, 1)
        .map_err(|e| Error::check(format!("zstd: {e}"), "report this as a bug"))?;
    out.extend_from_slice(&z);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

fn damaged(what: &str, why: impl std::fmt::Display) -> Error {
    Error::check(
        format!("{what} is damaged: {why}"),
        "the object was changed after it was written; restore an instant before it, or a kept version (`hubvault versions`)",
    )
}

/// Splits `bytes` into (header JSON, body) after checking magic and trailer.
fn open_object<'a>(bytes: &'a [u8], magic: &[u8; 8], what: &str) -> Result<(&'a [u8], &'a [u8])> {
    if bytes.len() < 8 + 4 + 32 || &bytes[..8] != magic {
        return Err(damaged(what, "not a hubvault stream object (magic)"));
    }
    let (content, trailer) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(content).as_slice() != trailer {
        return Err(damaged(what, "its sha256 trailer does not match"));
    }
    let len = u32::from_le_bytes(content[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER || 12 + len > content.len() {
        return Err(damaged(what, "header length past the end"));
    }
    Ok((&content[12..12 + len], &content[12 + len..]))
}

/// Decompresses exactly `expected` bytes, no more: a bomb or a short body is an error.
fn unzstd_exact(z: &[u8], expected: usize, what: &str) -> Result<Vec<u8>> {
    let mut d = zstd::stream::read::Decoder::new(z).map_err(|e| damaged(what, e))?;
    let mut out = Vec::with_capacity(expected.min(64 << 20));
    (&mut d)
        .take(expected as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| damaged(what, format!("zstd: {e}")))?;
    if out.len() != expected {
        return Err(damaged(
            what,
            format!("{} bytes decompressed, {expected} announced", out.len()),
        ));
    }
    Ok(out)
}

/// Reads a base, checks its trailer, its size and its chain checksum.
pub fn decode_base(bytes: &[u8], what: &str) -> Result<(BaseHeader, Vec<u8>)> {
    let (json, body) = open_object(bytes, BASE_MAGIC, what)?;
    let h: BaseHeader = serde_json::from_slice(json).map_err(|e| damaged(what, e))?;
    check_page_size(h.page_size, what)?;
    if h.format != FORMAT || !is_generation(&h.generation) {
        return Err(damaged(what, "unknown format or generation"));
    }
    let size = h.page_count as u64 * h.page_size as u64;
    if size > usize::MAX as u64 / 2 {
        return Err(damaged(what, "page count too large"));
    }
    let image = unzstd_exact(body, size as usize, what)?;
    let t = PageTable::of_image(h.page_size, &image);
    if t.checksum() != h.checksum {
        return Err(damaged(what, "the image does not have its chain checksum"));
    }
    Ok((h, image))
}

/// A writer that hashes (sha256) and counts what passes through it.
struct Hashing<W: Write> {
    inner: W,
    sha: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// [`encode_base`] streamed: the image is read from `image` (exactly the header's page
/// count of pages) and the object written to `out` as it is encoded, through buffers of
/// a fixed size whatever the image's size. Returns the bytes written. The layout is the
/// same (the header's length is known before the body: page count and checksum are).
pub fn encode_base_to(
    header: &BaseHeader,
    image: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<u64> {
    let io = |e: std::io::Error| Error::check(format!("writing a base: {e}"), "see the error");
    let json = serde_json::to_vec(header).expect("a base header serialises");
    let mut w = Hashing {
        inner: out,
        sha: Sha256::new(),
        count: 0,
    };
    w.write_all(BASE_MAGIC).map_err(io)?;
    w.write_all(&(json.len() as u32).to_le_bytes())
        .map_err(io)?;
    w.write_all(&json).map_err(io)?;
    let size = header.page_count as u64 * header.page_size as u64;
    let mut z = zstd::stream::write::Encoder::new(&mut w, 1).map_err(io)?;
    z.include_contentsize(true).map_err(io)?;
    z.set_pledged_src_size(Some(size)).map_err(io)?;
    let copied = std::io::copy(&mut image.take(size), &mut z).map_err(io)?;
    if copied != size {
        return Err(Error::check(
            format!("a base image ended after {copied} of {size} bytes"),
            "the image file was cut short; the next pass writes it again",
        ));
    }
    z.finish().map_err(io)?;
    let sum = w.sha.clone().finalize();
    w.write_all(&sum).map_err(io)?;
    Ok(w.count)
}

/// Passes on every byte of `inner` but the last 32 (a trailer), hashing what it passes.
struct HoldTrailer<'r> {
    inner: &'r mut dyn Read,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    sha: Sha256,
}

const TRAILER: usize = 32;

impl HoldTrailer<'_> {
    /// Reads more into the buffer; false at the end of `inner`.
    fn more(&mut self) -> std::io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The trailer and the hash of every byte before it, once `inner` is at its end;
    /// `None` when bytes are left before the trailer or the object is shorter than one.
    fn finish(mut self) -> std::io::Result<Option<([u8; 32], [u8; 32])>> {
        while !self.eof {
            self.more()?;
        }
        if self.end - self.start != TRAILER {
            return Ok(None);
        }
        let mut t = [0u8; 32];
        t.copy_from_slice(&self.buf[self.start..self.end]);
        Ok(Some((t, self.sha.finalize().into())))
    }
}

impl Read for HoldTrailer<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.end - self.start <= TRAILER && !self.eof {
            self.more()?;
        }
        let avail = (self.end - self.start).saturating_sub(TRAILER);
        let n = avail.min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.sha.update(&out[..n]);
        self.start += n;
        Ok(n)
    }
}

/// [`decode_base`] streamed: reads a base from `r` and gives each page of its image, in
/// order, to `page` as it is decoded (one page in memory at a time). The checks are
/// [`decode_base`]'s, made as the bytes pass: only when this returns `Ok` were the pages
/// given the base's (a caller writing them somewhere discards them on an error). Returns
/// the header and the image's page table.
pub fn decode_base_from(
    r: &mut dyn Read,
    what: &str,
    page: &mut dyn FnMut(u32, &[u8]) -> Result<()>,
) -> Result<(BaseHeader, PageTable)> {
    let short = |e: std::io::Error| damaged(what, format!("cut short or unreadable: {e}"));
    let mut sha = Sha256::new();
    let mut head = [0u8; 12];
    r.read_exact(&mut head).map_err(short)?;
    if &head[..8] != BASE_MAGIC {
        return Err(damaged(what, "not a hubvault stream object (magic)"));
    }
    sha.update(head);
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER {
        return Err(damaged(what, "header length past the end"));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json).map_err(short)?;
    sha.update(&json);
    let h: BaseHeader = serde_json::from_slice(&json).map_err(|e| damaged(what, e))?;
    check_page_size(h.page_size, what)?;
    if h.format != FORMAT || !is_generation(&h.generation) {
        return Err(damaged(what, "unknown format or generation"));
    }
    let mut body = HoldTrailer {
        inner: r,
        buf: vec![0u8; 256 * 1024],
        start: 0,
        end: 0,
        eof: false,
        sha,
    };
    let mut table = PageTable::new(h.page_size);
    {
        let mut z = zstd::stream::read::Decoder::new(&mut body).map_err(|e| damaged(what, e))?;
        let mut buf = vec![0u8; h.page_size as usize];
        for pgno in 1..=h.page_count {
            z.read_exact(&mut buf).map_err(|e| {
                damaged(
                    what,
                    format!("zstd: page {pgno} of {} announced: {e}", h.page_count),
                )
            })?;
            table.push(page_hash(pgno, &buf));
            page(pgno, &buf)?;
        }
        let mut extra = [0u8; 1];
        match z.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => {
                return Err(damaged(
                    what,
                    format!("more than the {} pages announced", h.page_count),
                ));
            }
            Err(e) => return Err(damaged(what, format!("zstd: {e}"))),
        }
    }
    match body.finish().map_err(short)? {
        Some((trailer, sum)) if trailer == sum => {}
        Some(_) => return Err(damaged(what, "its sha256 trailer does not match")),
        None => return Err(damaged(what, "bytes after the image")),
    }
    if table.checksum() != h.checksum {
        return Err(damaged(what, "the image does not have its chain checksum"));
    }
    Ok((h, table))
}

fn check_page_size(p: u32, what: &str) -> Result<()> {
    if !(512..=MAX_PAGE_SIZE).contains(&p) || !p.is_power_of_two() {
        return Err(damaged(what, format!("page size {p}")));
    }
    Ok(())
}

// ---------------------------------------------------------------- segment (.hvs)

/// One connector's part of a segment, as the segment header lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionEntry {
    pub connector: ConnectorId,
    pub generation: String,
    pub page_size: u32,
    /// Chain checksum of the state before the first commit.
    pub prev: ChainSum,
    /// Chain checksum of the state after the last commit.
    pub after: ChainSum,
    pub commits: u32,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Byte range of the compressed section, from the start of the object.
    pub offset: u64,
    pub length: u64,
    /// Bytes after decompression.
    pub plain: u64,
    /// Hex sha256 of the compressed section.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentHeader {
    pub format: u32,
    pub org: OrgSlug,
    pub datahub: DatahubId,
    /// The agent run that wrote it (8 hex digits) and its sequence number in that run.
    pub run: String,
    pub seq: u64,
    pub time_ms: i64,
    pub sections: Vec<SectionEntry>,
}

/// One connector's commits, to be written into a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub connector: ConnectorId,
    pub generation: String,
    pub page_size: u32,
    pub prev: ChainSum,
    pub commits: Vec<Commit>,
}

impl Section {
    pub fn after(&self) -> ChainSum {
        self.commits.last().map_or(self.prev, |c| c.after)
    }
}

/// Bytes of a commit's head in a plain section body ([`commit_head`]).
pub const COMMIT_HEAD: usize = 32;

/// A commit's head in a plain section body: `time_ms i64 | db_pages u32 | after u128 |
/// n u32`, little-endian; its `n` pages (`pgno u32 | page`) follow. Capture writes
/// bodies page by page into a spool and patches the head once the commit is complete.
pub fn commit_head(time_ms: i64, db_pages: u32, after: ChainSum, n: u32) -> [u8; COMMIT_HEAD] {
    let mut h = [0u8; COMMIT_HEAD];
    h[..8].copy_from_slice(&time_ms.to_le_bytes());
    h[8..12].copy_from_slice(&db_pages.to_le_bytes());
    h[12..28].copy_from_slice(&after.0.to_le_bytes());
    h[28..].copy_from_slice(&n.to_le_bytes());
    h
}

/// Plain section body: per commit `time_ms i64 | db_pages u32 | after u128 | n u32 |
/// n × (pgno u32 | page)`, all little-endian.
fn section_body(s: &Section) -> Vec<u8> {
    let mut out = Vec::new();
    for c in &s.commits {
        out.extend_from_slice(&commit_head(
            c.time_ms,
            c.db_pages,
            c.after,
            c.pages.len() as u32,
        ));
        for (pgno, page) in &c.pages {
            debug_assert_eq!(page.len(), s.page_size as usize);
            out.extend_from_slice(&pgno.to_le_bytes());
            out.extend_from_slice(page);
        }
    }
    out
}

/// Each section compressed on its own, with its table entry (offsets still 0).
fn encode_sections(
    sections: &[Section],
    time_ms: i64,
) -> Result<(Vec<SectionEntry>, Vec<Vec<u8>>)> {
    let mut entries = Vec::new();
    let mut bodies = Vec::new();
    for s in sections {
        let plain = section_body(s);
        let z = zstd::bulk::compress(&plain, 1)
            .map_err(|e| Error::check(format!("zstd: {e}"), "report this as a bug"))?;
        entries.push(SectionEntry {
            connector: s.connector,
            generation: s.generation.clone(),
            page_size: s.page_size,
            prev: s.prev,
            after: s.after(),
            commits: s.commits.len() as u32,
            first_ms: s.commits.first().map_or(time_ms, |c| c.time_ms),
            last_ms: s.commits.last().map_or(time_ms, |c| c.time_ms),
            offset: 0,
            length: z.len() as u64,
            plain: plain.len() as u64,
            sha256: hex::encode(Sha256::digest(&z)),
        });
        bodies.push(z);
    }
    Ok((entries, bodies))
}

/// What a section says about itself when its plain body was written elsewhere (capture's
/// spool): [`compress_section_to`] turns it into a table entry.
#[derive(Clone, Debug)]
pub struct SpooledSection {
    pub connector: ConnectorId,
    pub generation: String,
    pub page_size: u32,
    pub prev: ChainSum,
    pub after: ChainSum,
    pub commits: u32,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// A writer that counts what goes through it.
struct CountWrite<'w> {
    inner: &'w mut dyn Write,
    n: u64,
}

impl Write for CountWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that counts and hashes what goes through it.
struct Tally<'w> {
    inner: &'w mut dyn Write,
    n: u64,
    sha: Sha256,
}

impl Write for Tally<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        self.sha.update(&buf[..k]);
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses a plain section body read from `plain` (a spool: never whole in memory)
/// into `out`, as [`encode_segment`] would; returns its table entry (offset still 0).
pub fn compress_section_to(
    s: &SpooledSection,
    plain: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<SectionEntry> {
    compress_section_from(s, out, &mut |z| {
        std::io::copy(plain, z).map(|_| ()).map_err(|e| {
            Error::check(
                format!("cannot spool a section: {e}"),
                "check free space in --tmp-dir",
            )
        })
    })
}

/// As [`compress_section_to`], the plain body written by `produce` (a merged commit
/// written page by page) instead of read.
pub fn compress_section_from(
    s: &SpooledSection,
    out: &mut dyn Write,
    produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<SectionEntry> {
    let zerr = |e: std::io::Error| Error::check(format!("zstd: {e}"), "report this as a bug");
    let mut tally = Tally {
        inner: out,
        n: 0,
        sha: Sha256::new(),
    };
    let mut z = zstd::stream::Encoder::new(&mut tally, 1).map_err(zerr)?;
    let mut counted = CountWrite {
        inner: &mut z,
        n: 0,
    };
    produce(&mut counted)?;
    let plain_len = counted.n;
    z.finish().map_err(zerr)?;
    Ok(SectionEntry {
        connector: s.connector,
        generation: s.generation.clone(),
        page_size: s.page_size,
        prev: s.prev,
        after: s.after,
        commits: s.commits,
        first_ms: s.first_ms,
        last_ms: s.last_ms,
        offset: 0,
        length: tally.n,
        plain: plain_len,
        sha256: hex::encode(tally.sha.finalize()),
    })
}

/// A segment's header over sections already compressed ([`compress_section_to`]).
pub fn segment_header(
    org: &OrgSlug,
    datahub: DatahubId,
    run: &str,
    seq: u64,
    time_ms: i64,
    sections: Vec<SectionEntry>,
) -> SegmentHeader {
    SegmentHeader {
        format: FORMAT,
        org: org.clone(),
        datahub,
        run: run.to_string(),
        seq,
        time_ms,
        sections,
    }
}

/// [`encode_segment`]'s bytes, written to `out` from the compressed sections read from
/// `bodies` in table order (exactly the entries' lengths): memory stays a buffer.
/// Returns the bytes written.
pub fn assemble_segment_to(
    header: &mut SegmentHeader,
    bodies: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<u64> {
    assemble_to(SEGMENT_MAGIC, header, |h| &mut h.sections, bodies, out)
}

/// [`encode_compact`]'s bytes, written to `out` as [`assemble_segment_to`] writes a
/// segment's (the header from [`compact_header`]).
pub fn assemble_compact_to(
    header: &mut CompactHeader,
    bodies: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<u64> {
    assemble_to(COMPACT_MAGIC, header, |h| &mut h.sections, bodies, out)
}

fn assemble_to<H: Serialize>(
    magic: &[u8; 8],
    header: &mut H,
    table: fn(&mut H) -> &mut Vec<SectionEntry>,
    bodies: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<u64> {
    let json = settle_offsets(header, table);
    let want: u64 = table(header).iter().map(|e| e.length).sum();
    let ioerr = |e: std::io::Error| {
        Error::check(
            format!("cannot write a stream object: {e}"),
            "check free space in --tmp-dir",
        )
    };
    let mut tally = Tally {
        inner: out,
        n: 0,
        sha: Sha256::new(),
    };
    tally.write_all(magic).map_err(ioerr)?;
    tally
        .write_all(&(json.len() as u32).to_le_bytes())
        .map_err(ioerr)?;
    tally.write_all(&json).map_err(ioerr)?;
    let got = std::io::copy(&mut bodies.take(want), &mut tally).map_err(ioerr)?;
    if got != want {
        return Err(Error::check(
            format!("a segment's sections were {got} bytes, not {want}"),
            "report this as a bug",
        ));
    }
    let sum = tally.sha.clone().finalize();
    tally.inner.write_all(&sum).map_err(ioerr)?;
    Ok(tally.n + sum.len() as u64)
}

/// The header JSON with the section table's offsets settled (see [`assemble`]).
fn settle_offsets<H: Serialize>(
    header: &mut H,
    table: fn(&mut H) -> &mut Vec<SectionEntry>,
) -> Vec<u8> {
    let mut json = serde_json::to_vec(header).expect("a header serialises");
    loop {
        let mut at = 12 + json.len() as u64;
        for e in table(header).iter_mut() {
            e.offset = at;
            at += e.length;
        }
        let again = serde_json::to_vec(header).expect("a header serialises");
        if again.len() == json.len() {
            return again;
        }
        json = again;
    }
}

/// `magic || u32 header length || header JSON || sections || sha256`, the section table's
/// offsets settled (they depend on the header's length, which depends on the offsets'
/// digits: two rounds at most in practice).
fn assemble<H: Serialize>(
    magic: &[u8; 8],
    header: &mut H,
    table: fn(&mut H) -> &mut Vec<SectionEntry>,
    bodies: &[Vec<u8>],
) -> Vec<u8> {
    let json = settle_offsets(header, table);
    let mut out = Vec::with_capacity(json.len() + bodies.iter().map(Vec::len).sum::<usize>() + 44);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for b in bodies {
        out.extend_from_slice(b);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// `magic || u32 header length || header JSON || sections (each zstd) || sha256`.
pub fn encode_segment(
    org: &OrgSlug,
    datahub: DatahubId,
    run: &str,
    seq: u64,
    time_ms: i64,
    sections: &[Section],
) -> Result<Vec<u8>> {
    let (entries, bodies) = encode_sections(sections, time_ms)?;
    let mut header = SegmentHeader {
        format: FORMAT,
        org: org.clone(),
        datahub,
        run: run.to_string(),
        seq,
        time_ms,
        sections: entries,
    };
    Ok(assemble(
        SEGMENT_MAGIC,
        &mut header,
        |h| &mut h.sections,
        &bodies,
    ))
}

/// Checks a section table against the body it describes.
fn check_table(
    entries: &[SectionEntry],
    json_len: usize,
    body_len: usize,
    what: &str,
) -> Result<()> {
    let mut at = 12 + json_len as u64;
    for e in entries {
        if e.offset != at || !is_generation(&e.generation) || e.commits == 0 {
            return Err(damaged(what, "section table out of order"));
        }
        check_page_size(e.page_size, what)?;
        at = at
            .checked_add(e.length)
            .ok_or_else(|| damaged(what, "section length"))?;
    }
    if at != 12 + json_len as u64 + body_len as u64 {
        return Err(damaged(what, "sections do not fill the object"));
    }
    Ok(())
}

/// Reads a segment's header and checks the whole object's trailer and layout.
pub fn decode_segment_header(bytes: &[u8], what: &str) -> Result<SegmentHeader> {
    let (json, body) = open_object(bytes, SEGMENT_MAGIC, what)?;
    let h: SegmentHeader = serde_json::from_slice(json).map_err(|e| damaged(what, e))?;
    if h.format != FORMAT {
        return Err(damaged(what, format!("format {}", h.format)));
    }
    check_table(&h.sections, json.len(), body.len(), what)?;
    Ok(h)
}

/// Decodes one section of a segment whose header was read by
/// [`decode_segment_header`]; `bytes` is the whole object.
pub fn decode_section(bytes: &[u8], e: &SectionEntry, what: &str) -> Result<Section> {
    let start = e.offset as usize;
    let end = start
        .checked_add(e.length as usize)
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| damaged(what, "section past the end"))?;
    decode_section_bytes(&bytes[start..end], e, what)
}

/// Decodes one section from its compressed bytes alone (a ranged read).
pub fn decode_section_bytes(z: &[u8], e: &SectionEntry, what: &str) -> Result<Section> {
    if hex::encode(Sha256::digest(z)) != e.sha256 {
        return Err(damaged(
            what,
            format!("section of {} fails its sha256", e.connector),
        ));
    }
    if e.plain > (1u64 << 34) {
        return Err(damaged(what, "section too large"));
    }
    let plain = unzstd_exact(z, e.plain as usize, what)?;
    let ps = e.page_size as usize;
    let mut r = Cursor {
        b: &plain,
        at: 0,
        what,
    };
    let mut commits = Vec::new();
    let mut last_time = i64::MIN;
    while r.at < plain.len() {
        let time_ms = i64::from_le_bytes(r.take(8)?.try_into().expect("8"));
        let db_pages = r.u32()?;
        let after = ChainSum(u128::from_le_bytes(r.take(16)?.try_into().expect("16")));
        let n = r.u32()? as usize;
        if n > (plain.len() - r.at) / (4 + ps) {
            return Err(damaged(what, "page count past the end"));
        }
        let mut pages = Vec::with_capacity(n);
        let mut prev_pgno = 0u32;
        for _ in 0..n {
            let pgno = r.u32()?;
            if pgno <= prev_pgno || pgno > db_pages {
                return Err(damaged(what, format!("page number {pgno} out of order")));
            }
            prev_pgno = pgno;
            pages.push((pgno, r.take(ps)?.to_vec()));
        }
        if time_ms < last_time {
            return Err(damaged(what, "commits out of time order"));
        }
        last_time = time_ms;
        commits.push(Commit {
            time_ms,
            db_pages,
            after,
            pages,
        });
    }
    if commits.len() != e.commits as usize || commits.last().map(|c| c.after) != Some(e.after) {
        return Err(damaged(what, "section does not match its entry"));
    }
    Ok(Section {
        connector: e.connector,
        generation: e.generation.clone(),
        page_size: e.page_size,
        prev: e.prev,
        commits,
    })
}

// ---------------------------------------------------------------- compacted (.hvs, HVCOMP)

pub const COMPACT_MAGIC: &[u8; 8] = b"HVCOMP\0\x01";

/// Level 1: every commit of one minute's segments, as captured. Level 2: merged (the
/// newest image of each page changed in the window), cumulative from the window's parent
/// mark (docs/CONTINUOUS.md, "Compaction").
pub const LEVEL_MINUTE: u8 = 1;
pub const LEVEL_MERGED: u8 = 2;

/// The segments of one agent run an object holds: first and last segment number, and
/// when the last of them was sent (a gap after it can hide commits from then on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpan {
    pub run: String,
    pub first: u64,
    pub last: u64,
    pub last_ms: i64,
}

/// Segment numbers of a run that were missing (or unreadable) inside an object's window
/// when it was compacted: the restore treats them as it treats a gap between segments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    pub run: String,
    pub first: u64,
    pub last: u64,
    /// When the segment before the gap was sent: the earliest commit it can hide.
    pub after_ms: i64,
    pub why: String,
}

/// What a compacted object says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactHeader {
    pub format: u32,
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub level: u8,
    /// The window: segments sent at or after `start_ms` and before `end_ms` (UTC, ms).
    pub start_ms: i64,
    pub end_ms: i64,
    /// When the object was written.
    pub time_ms: i64,
    pub runs: Vec<RunSpan>,
    pub gaps: Vec<Gap>,
    /// File names of the objects merged into this one (a later run deletes a level-1
    /// object's sources that a killed run left behind, and only those).
    pub sources: Vec<String>,
    pub sections: Vec<SectionEntry>,
}

/// What goes into a compacted object besides its sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactMeta {
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub level: u8,
    pub start_ms: i64,
    pub end_ms: i64,
    pub time_ms: i64,
    pub runs: Vec<RunSpan>,
    pub gaps: Vec<Gap>,
    pub sources: Vec<String>,
}

/// A compacted object's header over sections already compressed
/// ([`compress_section_to`]), for [`assemble_compact_to`].
pub fn compact_header(meta: &CompactMeta, sections: Vec<SectionEntry>) -> CompactHeader {
    CompactHeader {
        format: FORMAT,
        org: meta.org.clone(),
        datahub: meta.datahub,
        level: meta.level,
        start_ms: meta.start_ms,
        end_ms: meta.end_ms,
        time_ms: meta.time_ms,
        runs: meta.runs.clone(),
        gaps: meta.gaps.clone(),
        sources: meta.sources.clone(),
        sections,
    }
}

/// `HVCOMP magic || u32 header length || header JSON || sections (each zstd) || sha256`:
/// the segment's layout, so one section reads alone the same way.
pub fn encode_compact(meta: &CompactMeta, sections: &[Section]) -> Result<Vec<u8>> {
    let (entries, bodies) = encode_sections(sections, meta.end_ms)?;
    let mut header = compact_header(meta, entries);
    Ok(assemble(
        COMPACT_MAGIC,
        &mut header,
        |h| &mut h.sections,
        &bodies,
    ))
}

/// Reads a compacted object's header and checks the whole object's trailer and layout.
pub fn decode_compact_header(bytes: &[u8], what: &str) -> Result<CompactHeader> {
    let (json, body) = open_object(bytes, COMPACT_MAGIC, what)?;
    let h: CompactHeader = serde_json::from_slice(json).map_err(|e| damaged(what, e))?;
    if h.format != FORMAT
        || !(LEVEL_MINUTE..=LEVEL_MERGED).contains(&h.level)
        || h.start_ms >= h.end_ms
    {
        return Err(damaged(what, "unknown format, level or window"));
    }
    check_table(&h.sections, json.len(), body.len(), what)?;
    Ok(h)
}

/// A segment's or a compacted object's header, read by its magic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectHeader {
    Segment(SegmentHeader),
    Compact(CompactHeader),
}

impl ObjectHeader {
    pub fn sections(&self) -> &[SectionEntry] {
        match self {
            ObjectHeader::Segment(h) => &h.sections,
            ObjectHeader::Compact(h) => &h.sections,
        }
    }

    /// The runs whose segments the object holds.
    pub fn runs(&self) -> Vec<RunSpan> {
        match self {
            ObjectHeader::Segment(h) => vec![RunSpan {
                run: h.run.clone(),
                first: h.seq,
                last: h.seq,
                last_ms: h.time_ms,
            }],
            ObjectHeader::Compact(h) => h.runs.clone(),
        }
    }

    pub fn gaps(&self) -> &[Gap] {
        match self {
            ObjectHeader::Segment(_) => &[],
            ObjectHeader::Compact(h) => &h.gaps,
        }
    }
}

/// Reads any stream object's header (not a base), checking its trailer and layout.
pub fn decode_object_header(bytes: &[u8], what: &str) -> Result<ObjectHeader> {
    if bytes.len() >= 8 && &bytes[..8] == COMPACT_MAGIC {
        decode_compact_header(bytes, what).map(ObjectHeader::Compact)
    } else {
        decode_segment_header(bytes, what).map(ObjectHeader::Segment)
    }
}

// ---------------------------------------------------------------- streamed reading

/// A commit's head in a plain section body ([`commit_head`]), as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitHead {
    pub time_ms: i64,
    pub db_pages: u32,
    pub after: ChainSum,
    /// Pages that follow the head.
    pub pages: u32,
}

impl CommitHead {
    fn parse(h: &[u8; COMMIT_HEAD]) -> CommitHead {
        CommitHead {
            time_ms: i64::from_le_bytes(h[..8].try_into().expect("8")),
            db_pages: u32::from_le_bytes(h[8..12].try_into().expect("4")),
            after: ChainSum(u128::from_le_bytes(h[12..28].try_into().expect("16"))),
            pages: u32::from_le_bytes(h[28..].try_into().expect("4")),
        }
    }

    /// Bytes of the commit in a plain section body, head included.
    pub fn plain_len(&self, page_size: u32) -> u64 {
        COMMIT_HEAD as u64 + self.pages as u64 * (4 + page_size as u64)
    }
}

/// A reader that hashes (sha256) and counts what is read through it.
struct HashRead<'r> {
    inner: &'r mut dyn Read,
    sha: Sha256,
    n: u64,
}

impl Read for HashRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.sha.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// A reader that counts what is read through it.
struct CountRead<'r> {
    inner: &'r mut dyn Read,
    n: u64,
}

impl Read for CountRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Reads a stream object (a segment or a compacted object) as it arrives from `r`,
/// checking what the whole-object readers check: magic, header, section table, each
/// section's sha256 and plain size, the trailer, nothing after it. `on_section` gets
/// each section's entry and its plain body as a reader; what it leaves unread is read
/// (and checked) here. Memory stays a few buffers whatever the object's size; an error
/// may come after `on_section` saw a section (the caller keeps nothing of an object
/// that fails).
pub fn read_object_from(
    r: &mut dyn Read,
    what: &str,
    on_section: &mut dyn FnMut(&SectionEntry, &mut dyn Read) -> Result<()>,
) -> Result<ObjectHeader> {
    let short = |e: std::io::Error| damaged(what, format!("cut short: {e}"));
    let mut outer = HashRead {
        inner: r,
        sha: Sha256::new(),
        n: 0,
    };
    let mut head = [0u8; 12];
    outer
        .read_exact(&mut head)
        .map_err(|_| damaged(what, "not a hubvault stream object (magic)"))?;
    let magic = &head[..8];
    if magic != COMPACT_MAGIC && magic != SEGMENT_MAGIC {
        return Err(damaged(what, "not a hubvault stream object (magic)"));
    }
    let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER {
        return Err(damaged(what, "header length past the end"));
    }
    let mut json = vec![0u8; len];
    outer.read_exact(&mut json).map_err(short)?;
    let header = if magic == COMPACT_MAGIC {
        let h: CompactHeader = serde_json::from_slice(&json).map_err(|e| damaged(what, e))?;
        if h.format != FORMAT
            || !(LEVEL_MINUTE..=LEVEL_MERGED).contains(&h.level)
            || h.start_ms >= h.end_ms
        {
            return Err(damaged(what, "unknown format, level or window"));
        }
        ObjectHeader::Compact(h)
    } else {
        let h: SegmentHeader = serde_json::from_slice(&json).map_err(|e| damaged(what, e))?;
        if h.format != FORMAT {
            return Err(damaged(what, format!("format {}", h.format)));
        }
        ObjectHeader::Segment(h)
    };
    let body = header
        .sections()
        .iter()
        .try_fold(0u64, |a, e| a.checked_add(e.length))
        .ok_or_else(|| damaged(what, "section length"))?;
    check_table(header.sections(), len, body as usize, what)?;
    for e in header.sections() {
        if e.plain > (1u64 << 34) {
            return Err(damaged(what, "section too large"));
        }
        let mut take = (&mut outer).take(e.length);
        let mut hz = HashRead {
            inner: &mut take,
            sha: Sha256::new(),
            n: 0,
        };
        {
            let mut d = zstd::stream::read::Decoder::new(&mut hz).map_err(|e| damaged(what, e))?;
            let mut bounded = (&mut d).take(e.plain + 1);
            let mut plain = CountRead {
                inner: &mut bounded,
                n: 0,
            };
            on_section(e, &mut plain)?;
            std::io::copy(&mut plain, &mut std::io::sink())
                .map_err(|e| damaged(what, format!("zstd: {e}")))?;
            if plain.n != e.plain {
                return Err(damaged(
                    what,
                    format!("{} bytes decompressed, {} announced", plain.n, e.plain),
                ));
            }
        }
        std::io::copy(&mut hz, &mut std::io::sink()).map_err(short)?;
        if hz.n != e.length {
            return Err(damaged(what, "cut short"));
        }
        if hex::encode(hz.sha.finalize()) != e.sha256 {
            return Err(damaged(
                what,
                format!("section of {} fails its sha256", e.connector),
            ));
        }
    }
    let sum = outer.sha.finalize();
    let mut trailer = [0u8; 32];
    outer.inner.read_exact(&mut trailer).map_err(short)?;
    if sum.as_slice() != trailer {
        return Err(damaged(what, "its sha256 trailer does not match"));
    }
    let mut more = [0u8; 1];
    if outer.inner.read(&mut more).map_err(short)? != 0 {
        return Err(damaged(what, "bytes after its trailer"));
    }
    Ok(header)
}

/// Reads a section's plain body from `plain` commit by commit, checking it as
/// [`decode_section_bytes`] does, and copies it to `out` as read: returns each commit's
/// head. Memory: one page.
pub fn scan_section(
    e: &SectionEntry,
    plain: &mut dyn Read,
    out: &mut dyn Write,
    what: &str,
) -> Result<Vec<CommitHead>> {
    let short = |err: std::io::Error| damaged(what, format!("record past the end: {err}"));
    let wrote = |err: std::io::Error| {
        Error::check(
            format!("cannot keep a section of {what}: {err}"),
            "check free space in --tmp-dir",
        )
    };
    let ps = e.page_size as u64;
    let mut page = vec![0u8; e.page_size as usize];
    let mut heads = Vec::new();
    let mut at = 0u64;
    let mut last_time = i64::MIN;
    while at < e.plain {
        let mut h = [0u8; COMMIT_HEAD];
        plain.read_exact(&mut h).map_err(short)?;
        out.write_all(&h).map_err(wrote)?;
        at += COMMIT_HEAD as u64;
        let c = CommitHead::parse(&h);
        if c.pages as u64 > e.plain.saturating_sub(at) / (4 + ps) {
            return Err(damaged(what, "page count past the end"));
        }
        let mut prev_pgno = 0u32;
        for _ in 0..c.pages {
            let mut p = [0u8; 4];
            plain.read_exact(&mut p).map_err(short)?;
            let pgno = u32::from_le_bytes(p);
            if pgno <= prev_pgno || pgno > c.db_pages {
                return Err(damaged(what, format!("page number {pgno} out of order")));
            }
            prev_pgno = pgno;
            plain.read_exact(&mut page).map_err(short)?;
            out.write_all(&p).map_err(wrote)?;
            out.write_all(&page).map_err(wrote)?;
        }
        at += c.pages as u64 * (4 + ps);
        if c.time_ms < last_time {
            return Err(damaged(what, "commits out of time order"));
        }
        last_time = c.time_ms;
        heads.push(c);
    }
    if at != e.plain
        || heads.len() != e.commits as usize
        || heads.last().map(|c| c.after) != Some(e.after)
    {
        return Err(damaged(what, "section does not match its entry"));
    }
    Ok(heads)
}

// ---------------------------------------------------------------- chaining and merging

/// Chains sections of ONE connector and generation, given in the order they were sent,
/// into as few sections as the chain allows: a section whose `prev` is the state reached
/// so far is appended; one that repeats commits already in (a retried upload whose first
/// attempt landed) is trimmed to the commits after that state; one that does neither
/// starts a new section, so a break stays visible to the restore, which reports it.
pub fn chain_sections(input: Vec<Section>) -> Vec<Section> {
    let shapes: Vec<(ChainSum, Vec<ChainSum>)> = input
        .iter()
        .map(|s| (s.prev, s.commits.iter().map(|c| c.after).collect()))
        .collect();
    let plan = chain_plan(&shapes);
    let mut input: Vec<Option<Section>> = input.into_iter().map(Some).collect();
    plan.into_iter()
        .map(|parts| {
            let mut it = parts.into_iter();
            let (first, skip) = it.next().expect("a chained section has a part");
            let mut out = input[first].take().expect("each section used once");
            out.commits.drain(..skip);
            for (i, skip) in it {
                let s = input[i].take().expect("each section used once");
                out.commits.extend(s.commits.into_iter().skip(skip));
            }
            out
        })
        .collect()
}

/// [`chain_sections`] on the sections' shapes alone (`prev` and each commit's `after`,
/// in the order sent): the chained sections, each as the input sections it is made of
/// with how many of their first commits to skip. Compaction plans with it and copies
/// the commits from its temp files, never holding a section's pages.
pub fn chain_plan(input: &[(ChainSum, Vec<ChainSum>)]) -> Vec<Vec<(usize, usize)>> {
    let mut out: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut current = ChainSum(0);
    let mut history: std::collections::BTreeSet<ChainSum> = Default::default();
    for (i, (prev, afters)) in input.iter().enumerate() {
        let Some(last) = afters.last() else {
            continue;
        };
        let Some(cur) = out.last_mut() else {
            history.insert(*prev);
            history.extend(afters.iter().copied());
            out.push(vec![(i, 0)]);
            current = *last;
            continue;
        };
        if *prev == current {
            history.extend(afters.iter().copied());
            cur.push((i, 0));
            current = *last;
            continue;
        }
        if history.contains(prev)
            && let Some(k) = afters.iter().position(|a| *a == current)
        {
            history.extend(afters[k + 1..].iter().copied());
            if k + 1 < afters.len() {
                cur.push((i, k + 1));
                current = *last;
            }
            continue;
        }
        // A break: kept as a section of its own.
        history.insert(*prev);
        history.extend(afters.iter().copied());
        out.push(vec![(i, 0)]);
        current = *last;
    }
    out
}

/// One commit that takes any state to where `commits` (applied in order) take it: the
/// newest image of each page written, the last size, the last checksum and time. A page
/// cut off by a smaller size and grown back without being written reads as zeros after
/// the sequence, so it is written as zeros (the state it is applied to may still hold
/// an older image there).
pub fn merge_commits(commits: &[Commit], page_size: u32) -> Option<Commit> {
    let last = commits.last()?;
    let mut pages: std::collections::BTreeMap<u32, &[u8]> = Default::default();
    let mut smallest = u32::MAX;
    for c in commits {
        for (p, img) in &c.pages {
            pages.insert(*p, img);
        }
        smallest = smallest.min(c.db_pages);
        pages.retain(|p, _| *p <= c.db_pages);
    }
    let zero = vec![0u8; page_size as usize];
    let mut out: Vec<(u32, Vec<u8>)> = Vec::with_capacity(pages.len());
    for p in 1..=last.db_pages {
        match pages.get(&p) {
            Some(img) => out.push((p, img.to_vec())),
            None if p > smallest => out.push((p, zero.clone())),
            None => {}
        }
    }
    Some(Commit {
        time_ms: last.time_ms,
        db_pages: last.db_pages,
        after: last.after,
        pages: out,
    })
}

/// A section as one merged commit (see [`merge_commits`]).
pub fn merge_section(s: Section) -> Section {
    let merged = merge_commits(&s.commits, s.page_size);
    Section {
        commits: merged.into_iter().collect(),
        ..s
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    what: &'a str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| damaged(self.what, "record past the end"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ps: usize, fill: u8) -> Vec<u8> {
        vec![fill; ps]
    }

    #[test]
    fn chain_checksum_updates_in_place_equal_a_fresh_table() {
        let ps = 512u32;
        let mut image: Vec<u8> = (0..4).flat_map(|i| page(512, i as u8)).collect();
        let mut t = PageTable::of_image(ps, &image);
        let c = Commit {
            time_ms: 1,
            db_pages: 6,
            after: ChainSum(0),
            pages: vec![(2, page(512, 9)), (6, page(512, 7))],
        };
        t.apply(&c);
        image[512..1024].copy_from_slice(&page(512, 9));
        image.extend(page(512, 0));
        image.extend(page(512, 7));
        assert_eq!(t.checksum(), PageTable::of_image(ps, &image).checksum());
        t.resize(3);
        image.truncate(3 * 512);
        assert_eq!(t.checksum(), PageTable::of_image(ps, &image).checksum());
        // The same pages in another order are another state.
        let swapped: Vec<u8> = [page(512, 9), page(512, 0), page(512, 2)].concat();
        assert_ne!(t.checksum(), PageTable::of_image(ps, &swapped).checksum());
    }

    fn org() -> OrgSlug {
        OrgSlug::parse("acme").unwrap()
    }

    fn section(conn: ConnectorId) -> Section {
        Section {
            connector: conn,
            generation: "0123456789abcdef".into(),
            page_size: 512,
            prev: ChainSum(5),
            commits: vec![
                Commit {
                    time_ms: 10,
                    db_pages: 3,
                    after: ChainSum(6),
                    pages: vec![(1, page(512, 1)), (3, page(512, 3))],
                },
                Commit {
                    time_ms: 12,
                    db_pages: 2,
                    after: ChainSum(7),
                    pages: vec![],
                },
            ],
        }
    }

    #[test]
    fn a_segment_round_trips_and_each_section_reads_alone() {
        let (a, b) = (ConnectorId::random(), ConnectorId::random());
        let hub = DatahubId::random();
        let bytes =
            encode_segment(&org(), hub, "0a0b0c0d", 7, 99, &[section(a), section(b)]).unwrap();
        let h = decode_segment_header(&bytes, "seg").unwrap();
        assert_eq!(
            (h.seq, h.run.as_str(), h.sections.len()),
            (7, "0a0b0c0d", 2)
        );
        for (e, want) in h.sections.iter().zip([a, b]) {
            let s = decode_section(&bytes, e, "seg").unwrap();
            assert_eq!(s, section(want));
            let alone = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(decode_section_bytes(alone, e, "seg").unwrap(), s);
        }
    }

    /// Capture's path: plain bodies written commit head by commit head, compressed and
    /// assembled through readers and writers, read back as `encode_segment`'s are.
    #[test]
    fn a_segment_assembled_from_spooled_bodies_reads_as_an_encoded_one() {
        let (a, b) = (ConnectorId::random(), ConnectorId::random());
        let hub = DatahubId::random();
        let mut zbodies = Vec::new();
        let mut entries = Vec::new();
        for conn in [a, b] {
            let s = section(conn);
            let mut plain = Vec::new();
            for c in &s.commits {
                plain.extend_from_slice(&commit_head(
                    c.time_ms,
                    c.db_pages,
                    c.after,
                    c.pages.len() as u32,
                ));
                for (p, img) in &c.pages {
                    plain.extend_from_slice(&p.to_le_bytes());
                    plain.extend_from_slice(img);
                }
            }
            assert_eq!(plain, section_body(&s));
            let meta = SpooledSection {
                connector: conn,
                generation: s.generation.clone(),
                page_size: s.page_size,
                prev: s.prev,
                after: s.after(),
                commits: s.commits.len() as u32,
                first_ms: 10,
                last_ms: 12,
            };
            entries.push(compress_section_to(&meta, &mut &plain[..], &mut zbodies).unwrap());
        }
        let mut header = segment_header(&org(), hub, "0a0b0c0d", 3, 99, entries);
        let mut bytes = Vec::new();
        let n = assemble_segment_to(&mut header, &mut &zbodies[..], &mut bytes).unwrap();
        assert_eq!(n, bytes.len() as u64);
        let h = decode_segment_header(&bytes, "seg").unwrap();
        assert_eq!(h, header);
        for (e, want) in h.sections.iter().zip([a, b]) {
            assert_eq!(decode_section(&bytes, e, "seg").unwrap(), section(want));
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let bytes = encode_segment(
            &org(),
            DatahubId::random(),
            "0a0b0c0d",
            1,
            1,
            &[section(ConnectorId::random())],
        )
        .unwrap();
        // Streamed (compaction's reader): the sections scanned read back as decoded,
        // and every flipped byte, a missing or an extra byte, is refused too.
        let streamed = |b: &[u8]| {
            let mut plains = Vec::new();
            read_object_from(&mut &b[..], "seg", &mut |e, r| {
                let mut plain = Vec::new();
                let heads = scan_section(e, r, &mut plain, "seg")?;
                plains.push((heads, plain));
                Ok(())
            })
            .map(|h| (h, plains))
        };
        let (h, plains) = streamed(&bytes).unwrap();
        let s = decode_section(&bytes, &h.sections()[0], "seg").unwrap();
        assert_eq!(plains[0].1, section_body(&s));
        let afters: Vec<ChainSum> = plains[0].0.iter().map(|c| c.after).collect();
        assert_eq!(
            afters,
            s.commits.iter().map(|c| c.after).collect::<Vec<_>>()
        );
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode_segment_header(&bad, "seg").is_err(), "byte {i}");
            assert!(streamed(&bad).is_err(), "byte {i}, streamed");
        }
        assert!(decode_segment_header(&bytes[..bytes.len() - 1], "seg").is_err());
        assert!(streamed(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(streamed(&longer).is_err());
    }

    /// The header of a base holding `image` (pages of `ps` bytes), with new ids.
    fn base_header(ps: u32, image: &[u8]) -> BaseHeader {
        BaseHeader {
            format: FORMAT,
            org: org(),
            datahub: DatahubId::random(),
            connector: ConnectorId::random(),
            generation: new_generation(),
            page_size: ps,
            page_count: (image.len() / ps as usize) as u32,
            checksum: PageTable::of_image(ps, image).checksum(),
            time_ms: 5,
            journal_mode: "wal".into(),
        }
    }

    #[test]
    fn a_base_round_trips_and_proves_its_checksum() {
        let image: Vec<u8> = (0..5).flat_map(|i| page(1024, i as u8 * 3)).collect();
        let h = base_header(1024, &image);
        let bytes = encode_base(&h, &image).unwrap();
        let (h2, img2) = decode_base(&bytes, "base").unwrap();
        assert_eq!((h2, img2), (h.clone(), image.clone()));
        let mut wrong = h;
        wrong.checksum = ChainSum(1);
        let bytes = encode_base(&wrong, &image).unwrap();
        assert!(decode_base(&bytes, "base").is_err());
    }

    /// Existing buckets hold bases written whole by `encode_base`; the streamed writer
    /// writes what both readers read; the streamed reader refuses what the whole one does.
    #[test]
    fn a_base_streams_both_ways_and_a_flipped_byte_is_refused() {
        let ps = 512u32;
        // More than the reader's buffers (256 KiB) and zstd's blocks.
        let image: Vec<u8> = (0..1500u32)
            .flat_map(|i| {
                let mut p = page(512, (i % 251) as u8);
                p[..4].copy_from_slice(&i.to_le_bytes());
                p
            })
            .collect();
        let h = base_header(ps, &image);
        let whole = encode_base(&h, &image).unwrap();
        let mut streamed = Vec::new();
        let n = encode_base_to(&h, &mut &image[..], &mut streamed).unwrap();
        assert_eq!(n, streamed.len() as u64);
        assert_eq!(
            decode_base(&streamed, "b").unwrap(),
            (h.clone(), image.clone())
        );
        for bytes in [&whole, &streamed] {
            let mut got = Vec::new();
            let (h2, t) = decode_base_from(&mut &bytes[..], "b", &mut |p, pg| {
                assert_eq!(p as usize, got.len() / 512 + 1);
                got.extend_from_slice(pg);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                (h2, got, t.checksum()),
                (h.clone(), image.clone(), h.checksum)
            );
        }
        for i in (0..streamed.len()).step_by(97).chain([streamed.len() - 1]) {
            let mut bad = streamed.clone();
            bad[i] ^= 0x20;
            assert!(
                decode_base_from(&mut &bad[..], "b", &mut |_, _| Ok(())).is_err(),
                "byte {i}"
            );
        }
        let cut = &streamed[..streamed.len() - 1];
        assert!(decode_base_from(&mut &cut[..], "b", &mut |_, _| Ok(())).is_err());
        let mut longer = streamed.clone();
        longer.push(0);
        assert!(decode_base_from(&mut &longer[..], "b", &mut |_, _| Ok(())).is_err());
        // An image shorter than its header says is refused by the writer.
        assert!(encode_base_to(&h, &mut &image[..512 * 1499], &mut Vec::new()).is_err());
    }

    /// Applies a commit to an image as a restore does.
    fn apply_image(image: &mut Vec<u8>, c: &Commit, ps: usize) {
        for (p, img) in &c.pages {
            let end = *p as usize * ps;
            if image.len() < end {
                image.resize(end, 0);
            }
            image[end - ps..end].copy_from_slice(img);
        }
        image.resize(c.db_pages as usize * ps, 0);
    }

    #[test]
    fn a_page_cut_off_and_grown_back_is_merged_as_zeros() {
        let ps = 512;
        let c = |db_pages: u32, pages: Vec<(u32, u8)>| Commit {
            time_ms: 0,
            db_pages,
            after: ChainSum(0),
            pages: pages.into_iter().map(|(p, f)| (p, page(ps, f))).collect(),
        };
        // 4 pages, cut to 2, page 4 written again at 5 pages: page 3 and 5 are zeros.
        let commits = vec![c(4, vec![(3, 7)]), c(2, vec![]), c(5, vec![(4, 9)])];
        let m = merge_commits(&commits, ps as u32).unwrap();
        let start: Vec<u8> = (1..=4u8).flat_map(|i| page(ps, i)).collect();
        let (mut a, mut b) = (start.clone(), start);
        for x in &commits {
            apply_image(&mut a, x, ps);
        }
        apply_image(&mut b, &m, ps);
        assert_eq!(a, b);
        assert_eq!(
            m.pages.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
    }

    #[test]
    fn chaining_trims_a_retried_upload_and_keeps_a_break() {
        let conn = ConnectorId::random();
        let g = "0123456789abcdef".to_string();
        let commit = |after: u128| Commit {
            time_ms: after as i64,
            db_pages: 1,
            after: ChainSum(after),
            pages: vec![],
        };
        let sec = |prev: u128, afters: &[u128]| Section {
            connector: conn,
            generation: g.clone(),
            page_size: 512,
            prev: ChainSum(prev),
            commits: afters.iter().map(|a| commit(*a)).collect(),
        };
        // 1->2->3, then a retry repeating 2,3 and adding 4, then 4->5, then a break 9->10.
        let out = chain_sections(vec![
            sec(1, &[2, 3]),
            sec(1, &[2, 3, 4]),
            sec(4, &[5]),
            sec(9, &[10]),
        ]);
        assert_eq!(out.len(), 2);
        let afters: Vec<u128> = out[0].commits.iter().map(|c| c.after.0).collect();
        assert_eq!((out[0].prev.0, afters), (1, vec![2, 3, 4, 5]));
        assert_eq!((out[1].prev.0, out[1].after().0), (9, 10));
    }

    #[test]
    fn a_compacted_object_round_trips_and_is_told_from_a_segment() {
        let conn = ConnectorId::random();
        let meta = CompactMeta {
            org: org(),
            datahub: DatahubId::random(),
            level: LEVEL_MINUTE,
            start_ms: 60_000,
            end_ms: 120_000,
            time_ms: 130_000,
            runs: vec![RunSpan {
                run: "0a0b0c0d".into(),
                first: 3,
                last: 9,
                last_ms: 119_000,
            }],
            gaps: vec![],
            sources: vec!["a.hvs".into()],
        };
        let bytes = encode_compact(&meta, &[section(conn)]).unwrap();
        let h = decode_object_header(&bytes, "c").unwrap();
        let ObjectHeader::Compact(ch) = &h else {
            panic!("not read as compacted")
        };
        assert_eq!((ch.level, ch.start_ms, ch.end_ms), (1, 60_000, 120_000));
        assert_eq!(h.runs()[0].last, 9);
        assert_eq!(
            decode_section(&bytes, &ch.sections[0], "c").unwrap(),
            section(conn)
        );
        let seg = encode_segment(&org(), meta.datahub, "0a0b0c0d", 1, 1, &[section(conn)]).unwrap();
        assert!(matches!(
            decode_object_header(&seg, "s").unwrap(),
            ObjectHeader::Segment(_)
        ));
        assert!(decode_compact_header(&seg, "s").is_err());
        for i in (0..bytes.len()).step_by(11) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_object_header(&bad, "c").is_err(), "byte {i}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
            /// Whatever the bytes, the readers return an error or a value, never panic.
            #[test]
            fn readers_never_panic_on_any_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), magic in any::<bool>()) {
                if magic && bytes.len() > 8 {
                    bytes[..8].copy_from_slice(SEGMENT_MAGIC);
                }
                let _ = decode_segment_header(&bytes, "x");
                let _ = decode_base(&bytes, "x");
                let _ = decode_base_from(&mut &bytes[..], "x", &mut |_, _| Ok(()));
                let e = SectionEntry {
                    connector: ConnectorId::random(), generation: "0123456789abcdef".into(),
                    page_size: 512, prev: ChainSum(0), after: ChainSum(0), commits: 1,
                    first_ms: 0, last_ms: 0, offset: 0, length: bytes.len() as u64,
                    plain: 4096, sha256: hex::encode(Sha256::digest(&bytes)),
                };
                let _ = decode_section_bytes(&bytes, &e, "x");
                let _ = read_object_from(&mut &bytes[..], "x", &mut |e, r| {
                    scan_section(e, r, &mut std::io::sink(), "x").map(|_| ())
                });
            }

            /// Applying the merged commit to ANY state gives what applying the commits
            /// one by one gives: page for page, and the same chain checksum.
            #[test]
            fn a_merged_commit_equals_its_commits_applied_in_order(
                start in 0usize..7,
                start_fill in any::<u8>(),
                commits in proptest::collection::vec((1u32..9, proptest::collection::btree_set(1u32..9, 0..4), any::<u8>()), 1..6),
            ) {
                let ps = 512usize;
                let commits: Vec<Commit> = commits.into_iter().map(|(size, pgnos, fill)| Commit {
                    time_ms: 0, db_pages: size, after: ChainSum(0),
                    pages: pgnos.into_iter().filter(|p| *p <= size).map(|p| (p, vec![fill ^ p as u8; ps])).collect(),
                }).collect();
                let image: Vec<u8> = (0..start).flat_map(|i| vec![start_fill.wrapping_add(i as u8); ps]).collect();
                let (mut a, mut b) = (image.clone(), image.clone());
                for c in &commits { apply_image(&mut a, c, ps); }
                let m = merge_commits(&commits, ps as u32).unwrap();
                apply_image(&mut b, &m, ps);
                prop_assert_eq!(&a, &b);
                let mut t = PageTable::of_image(ps as u32, &image);
                t.apply(&m);
                prop_assert_eq!(t.checksum(), PageTable::of_image(ps as u32, &a).checksum());
            }

            /// A section with any commits round-trips exactly.
            #[test]
            fn sections_round_trip(commits in proptest::collection::vec((0i64..1000, proptest::collection::btree_set(1u32..20, 0..4), any::<u8>()), 1..5)) {
                let mut t = 0;
                let commits: Vec<Commit> = commits.into_iter().map(|(dt, pgnos, fill)| {
                    t += dt;
                    Commit { time_ms: t, db_pages: 20, after: ChainSum(t as u128),
                        pages: pgnos.into_iter().map(|p| (p, vec![fill; 512])).collect() }
                }).collect();
                let s = Section { connector: ConnectorId::random(), generation: new_generation(), page_size: 512, prev: ChainSum(1), commits };
                let bytes = encode_segment(&OrgSlug::parse("o").unwrap(), DatahubId::random(), "00000000", 0, 0, std::slice::from_ref(&s)).unwrap();
                let h = decode_segment_header(&bytes, "x").unwrap();
                prop_assert_eq!(decode_section(&bytes, &h.sections[0], "x").unwrap(), s);
            }
        }
    }
}
