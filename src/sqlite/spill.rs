//! A byte buffer that moves to a temp file of ours once it passes a threshold: what
//! capture holds for one connector's commits (a plain section body), a resync's changed
//! pages and an encoded segment. A VACUUM of a 1 GiB database is one commit of every
//! page; held in memory it cost the agent several times the database (each page copied
//! by the reader, the pending commit, the section body, the segment), so past
//! [`SPILL_AT`] the bytes live in `--tmp-dir` and memory stays a few MiB whatever the
//! commit's size.
//!
//! The temp file is created in the directory given (never beside a connector's files)
//! with the prefix every capture temp file has, and removed when the [`Spill`] is
//! dropped (or, for a finished one, its [`Spilled`]).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Bytes held in memory before a [`Spill`] moves to a temp file.
pub const SPILL_AT: usize = 4 << 20;

/// Spills to a temp file since the process started (for logs and tests).
pub static SPILLS: AtomicU64 = AtomicU64::new(0);

/// Append-mostly bytes: in memory up to a threshold, then in a temp file.
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    at: usize,
    mem: Vec<u8>,
    file: Option<(File, tempfile::TempPath)>,
    len: u64,
}

/// A finished [`Spill`]: its bytes, in memory or in a temp file (removed on drop).
#[derive(Debug)]
pub enum Spilled {
    Mem(bytes::Bytes),
    File(tempfile::TempPath, u64),
}

impl Spilled {
    pub fn len(&self) -> u64 {
        match self {
            Spilled::Mem(b) => b.len() as u64,
            Spilled::File(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Spill {
    /// An empty buffer that spills into `dir` past `at` bytes.
    pub fn new(dir: &Path, at: usize) -> Spill {
        Spill {
            dir: dir.to_path_buf(),
            at,
            mem: Vec::new(),
            file: None,
            len: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the bytes live in a temp file.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// The temp file, if spilled.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(_, p)| &**p)
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        match &self.file {
            Some((_, p)) => Error::io(p, what, e),
            None => Error::io(&self.dir, what, e),
        }
    }

    /// Moves the bytes held in memory to a new temp file in the directory.
    fn spill(&mut self) -> Result<()> {
        let (file, path) = tempfile::Builder::new()
            .prefix(".hubvault-capture-")
            .tempfile_in(&self.dir)
            .map_err(|e| {
                Error::io(
                    &self.dir,
                    "cannot create a temp file to spill a large commit into (check --tmp-dir)",
                    e,
                )
            })?
            .into_parts();
        file.write_all_at(&self.mem, 0)
            .map_err(|e| Error::io(&path, "cannot spill a large commit (check --tmp-dir)", e))?;
        self.mem = Vec::new();
        self.file = Some((file, path));
        SPILLS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends `b`.
    pub fn write(&mut self, b: &[u8]) -> Result<()> {
        if self.file.is_none() && self.mem.len() + b.len() > self.at {
            self.spill()?;
        }
        match &self.file {
            Some((f, _)) => f
                .write_all_at(b, self.len)
                .map_err(|e| self.io("cannot write a spilled commit (check --tmp-dir)", e))?,
            None => self.mem.extend_from_slice(b),
        }
        self.len += b.len() as u64;
        Ok(())
    }

    /// Overwrites bytes already written at `at`.
    pub fn patch(&mut self, at: u64, b: &[u8]) -> Result<()> {
        assert!(
            at + b.len() as u64 <= self.len,
            "a patch inside the written bytes"
        );
        match &self.file {
            Some((f, _)) => f
                .write_all_at(b, at)
                .map_err(|e| self.io("cannot write a spilled commit (check --tmp-dir)", e)),
            None => {
                self.mem[at as usize..at as usize + b.len()].copy_from_slice(b);
                Ok(())
            }
        }
    }

    /// Reads `buf.len()` bytes at `at` (inside the written bytes).
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        assert!(
            at + buf.len() as u64 <= self.len,
            "a read inside the written bytes"
        );
        match &self.file {
            Some((f, _)) => f
                .read_exact_at(buf, at)
                .map_err(|e| self.io("cannot read a spilled commit", e)),
            None => {
                buf.copy_from_slice(&self.mem[at as usize..at as usize + buf.len()]);
                Ok(())
            }
        }
    }

    /// Drops every byte from `len` on (an abandoned commit).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        match &self.file {
            Some((f, _)) => f
                .set_len(len)
                .map_err(|e| self.io("cannot truncate a spilled commit", e))?,
            None => self.mem.truncate(len as usize),
        }
        self.len = len;
        Ok(())
    }

    /// A reader of every byte from the start (a fresh descriptor when spilled).
    pub fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
        match &self.file {
            Some((_, p)) => {
                let f = File::open(p).map_err(|e| self.io("cannot read a spilled commit", e))?;
                Ok(Box::new(
                    std::io::BufReader::with_capacity(1 << 20, f).take(self.len),
                ))
            }
            None => Ok(Box::new(&self.mem[..])),
        }
    }

    /// The bytes written, for sending.
    pub fn finish(self) -> Spilled {
        match self.file {
            Some((_, p)) => Spilled::File(p, self.len),
            None => Spilled::Mem(self.mem.into()),
        }
    }
}

impl std::io::Write for Spill {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Spill::write(self, buf).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spill_reads_back_what_was_written_before_and_after_it_moves_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::new(dir.path(), 10);
        s.write(b"abcdef").unwrap();
        assert!(!s.spilled());
        s.patch(0, b"X").unwrap();
        s.write(b"ghijkl").unwrap();
        assert!(s.spilled());
        s.patch(7, b"Y").unwrap();
        let mut b = [0u8; 3];
        s.read_at(5, &mut b).unwrap();
        assert_eq!(&b, b"fgY");
        s.truncate(9).unwrap();
        let mut all = Vec::new();
        s.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"XbcdefgYi");
        let Spilled::File(p, n) = s.finish() else {
            panic!("spilled")
        };
        assert_eq!((std::fs::read(&p).unwrap().len(), n), (9, 9));
        let kept = p.to_path_buf();
        drop(p);
        assert!(!kept.exists(), "the temp file goes with its owner");
    }
}
