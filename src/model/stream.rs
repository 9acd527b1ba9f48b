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

use std::io::Read;

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

/// Plain section body: per commit `time_ms i64 | db_pages u32 | after u128 | n u32 |
/// n × (pgno u32 | page)`, all little-endian.
fn section_body(s: &Section) -> Vec<u8> {
    let mut out = Vec::new();
    for c in &s.commits {
        out.extend_from_slice(&c.time_ms.to_le_bytes());
        out.extend_from_slice(&c.db_pages.to_le_bytes());
        out.extend_from_slice(&c.after.0.to_le_bytes());
        out.extend_from_slice(&(c.pages.len() as u32).to_le_bytes());
        for (pgno, page) in &c.pages {
            debug_assert_eq!(page.len(), s.page_size as usize);
            out.extend_from_slice(&pgno.to_le_bytes());
            out.extend_from_slice(page);
        }
    }
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
    let mut header = SegmentHeader {
        format: FORMAT,
        org: org.clone(),
        datahub,
        run: run.to_string(),
        seq,
        time_ms,
        sections: entries,
    };
    // Offsets depend on the header's length, which depends on the offsets' digits:
    // settle by iterating (two rounds at most in practice).
    let mut json = serde_json::to_vec(&header).expect("a segment header serialises");
    loop {
        let mut at = 12 + json.len() as u64;
        for e in &mut header.sections {
            e.offset = at;
            at += e.length;
        }
        let again = serde_json::to_vec(&header).expect("a segment header serialises");
        if again.len() == json.len() {
            json = again;
            break;
        }
        json = again;
    }
    let mut out = Vec::new();
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for b in &bodies {
        out.extend_from_slice(b);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Reads a segment's header and checks the whole object's trailer and layout.
pub fn decode_segment_header(bytes: &[u8], what: &str) -> Result<SegmentHeader> {
    let (json, body) = open_object(bytes, SEGMENT_MAGIC, what)?;
    let h: SegmentHeader = serde_json::from_slice(json).map_err(|e| damaged(what, e))?;
    if h.format != FORMAT {
        return Err(damaged(what, format!("format {}", h.format)));
    }
    let mut at = 12 + json.len() as u64;
    for e in &h.sections {
        if e.offset != at || !is_generation(&e.generation) || e.commits == 0 {
            return Err(damaged(what, "section table out of order"));
        }
        check_page_size(e.page_size, what)?;
        at = at
            .checked_add(e.length)
            .ok_or_else(|| damaged(what, "section length"))?;
    }
    if at != 12 + json.len() as u64 + body.len() as u64 {
        return Err(damaged(what, "sections do not fill the object"));
    }
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
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode_segment_header(&bad, "seg").is_err(), "byte {i}");
        }
        assert!(decode_segment_header(&bytes[..bytes.len() - 1], "seg").is_err());
    }

    #[test]
    fn a_base_round_trips_and_proves_its_checksum() {
        let image: Vec<u8> = (0..5).flat_map(|i| page(1024, i as u8 * 3)).collect();
        let h = BaseHeader {
            format: FORMAT,
            org: org(),
            datahub: DatahubId::random(),
            connector: ConnectorId::random(),
            generation: new_generation(),
            page_size: 1024,
            page_count: 5,
            checksum: PageTable::of_image(1024, &image).checksum(),
            time_ms: 5,
            journal_mode: "wal".into(),
        };
        let bytes = encode_base(&h, &image).unwrap();
        let (h2, img2) = decode_base(&bytes, "base").unwrap();
        assert_eq!((h2, img2), (h.clone(), image.clone()));
        let mut wrong = h;
        wrong.checksum = ChainSum(1);
        let bytes = encode_base(&wrong, &image).unwrap();
        assert!(decode_base(&bytes, "base").is_err());
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
                let e = SectionEntry {
                    connector: ConnectorId::random(), generation: "0123456789abcdef".into(),
                    page_size: 512, prev: ChainSum(0), after: ChainSum(0), commits: 1,
                    first_ms: 0, last_ms: 0, offset: 0, length: bytes.len() as u64,
                    plain: 4096, sha256: hex::encode(Sha256::digest(&bytes)),
                };
                let _ = decode_section_bytes(&bytes, &e, "x");
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
