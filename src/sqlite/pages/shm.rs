//! The wal-index header at the start of a WAL database's `-shm` file, read with plain
//! `pread` and no lock (https://sqlite.org/walformat.html, "the WAL-index header").
//!
//! Every connection copies this header when it starts a read transaction: it IS the
//! snapshot that transaction sees (the last valid frame `mxFrame`, the database size in
//! pages after it, the salts of the WAL it belongs to). SQLite writes two copies (the
//! second first, then the first) and a checksum; a reader takes the header only when both
//! copies agree and the checksum holds, as SQLite's own `walIndexTryHdr` does.
//!
//! Layout (48 bytes, native byte order, the salts copied as raw bytes from the WAL
//! header): iVersion, unused, iChange, isInit (u8), bigEndCksum (u8), szPage (u16),
//! mxFrame, nPage, aFrameCksum[2], aSalt[2], aCksum[2].

use std::fs::File;

use crate::sqlite::pages::wal::{cksum, read_full};

pub const COPY: usize = 48;

/// A wal-index header that passed its own checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    pub raw: [u8; COPY],
    /// Moves on every write transaction.
    pub change: u32,
    /// 0 when the WAL is empty (`max_frame` 0).
    pub page_size: u32,
    /// The last valid frame of the WAL (0: every reader reads the database file alone).
    pub max_frame: u32,
    /// The database's size in pages at `max_frame`.
    pub pages: u32,
    /// The running checksum of the WAL after frame `max_frame`.
    pub frame_checksum: (u32, u32),
    /// The WAL header's salts, as the WAL header stores them (bytes 16..24).
    pub salts: [u8; 8],
}

fn native32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl IndexHeader {
    /// Parses the first 96 bytes of a `-shm`: `None` unless both copies agree, the
    /// header is initialised and its checksum holds.
    pub fn parse(b: &[u8]) -> Option<IndexHeader> {
        let (a, second) = (b.get(..COPY)?, b.get(COPY..2 * COPY)?);
        if a != second || a[12] != 1 {
            return None;
        }
        // Checksummed in the machine's byte order (walIndexWriteHdr: nativeCksum = 1).
        let sum = cksum(cfg!(target_endian = "big"), &a[..40], (0, 0));
        if sum != (native32(a, 40), native32(a, 44)) {
            return None;
        }
        let ps = u16::from_ne_bytes([a[14], a[15]]) as u32;
        let page_size = if ps == 1 { 65536 } else { ps };
        let max_frame = native32(a, 16);
        // An empty WAL's header (a fresh `-shm`, every frame gone) says page size 0.
        let valid = (512..=65536).contains(&page_size) && page_size.is_power_of_two();
        if !(valid || (page_size == 0 && max_frame == 0)) {
            return None;
        }
        Some(IndexHeader {
            raw: a.try_into().expect("48 bytes"),
            change: native32(a, 8),
            page_size,
            max_frame,
            pages: native32(a, 20),
            frame_checksum: (native32(a, 24), native32(a, 28)),
            salts: a[32..40].try_into().expect("8 bytes"),
        })
    }

    /// Reads and parses the header of an open `-shm`.
    pub fn read(shm: &File) -> std::io::Result<Option<IndexHeader>> {
        let mut b = [0u8; 2 * COPY];
        let n = read_full(shm, &mut b, 0)?;
        Ok(IndexHeader::parse(&b[..n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(max_frame: u32) -> [u8; 2 * COPY] {
        let mut a = [0u8; COPY];
        a[..4].copy_from_slice(&3007000u32.to_ne_bytes());
        a[8..12].copy_from_slice(&7u32.to_ne_bytes());
        a[12] = 1;
        a[14..16].copy_from_slice(&4096u16.to_ne_bytes());
        a[16..20].copy_from_slice(&max_frame.to_ne_bytes());
        a[20..24].copy_from_slice(&10u32.to_ne_bytes());
        a[32..40].copy_from_slice(b"saltsalt");
        let (s1, s2) = cksum(cfg!(target_endian = "big"), &a[..40], (0, 0));
        a[40..44].copy_from_slice(&s1.to_ne_bytes());
        a[44..48].copy_from_slice(&s2.to_ne_bytes());
        let mut b = [0u8; 2 * COPY];
        b[..COPY].copy_from_slice(&a);
        b[COPY..].copy_from_slice(&a);
        b
    }

    #[test]
    fn a_header_is_taken_only_when_both_copies_agree_and_the_checksum_holds() {
        let b = header(5);
        let h = IndexHeader::parse(&b).unwrap();
        assert_eq!((h.max_frame, h.pages, h.page_size), (5, 10, 4096));
        assert_eq!(&h.salts, b"saltsalt");
        let mut torn = b;
        torn[COPY + 16] ^= 1; // a writer between the two copies
        assert!(IndexHeader::parse(&torn).is_none());
        let mut bad = b;
        bad[16] ^= 1;
        bad[COPY + 16] ^= 1; // both copies agree, the checksum does not
        assert!(IndexHeader::parse(&bad).is_none());
        assert!(IndexHeader::parse(&b[..50]).is_none());
    }
}
