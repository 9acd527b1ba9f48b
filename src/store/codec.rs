//! How content is stored at a key, and the writers that encode, decode, hash and compare
//! it. Everything here is blocking: the bucket runs it on a blocking thread, never on the
//! async runtime's workers.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

/// How content is stored at a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// As is: the platform's canonical object, openable by any SQLite tool.
    Plain,
    /// zstd at the given level: kept versions.
    Zstd(i32),
}

/// How a commit whose last answer was lost tells whether its object landed whole.
#[derive(Clone, Debug)]
pub enum Landed {
    /// The object, decoded, is byte for byte this local file (which the caller keeps).
    File(std::path::PathBuf),
    /// The object, decoded, has this sha256 (set by `Bucket::stage_with` when empty).
    Sha256(String),
}

/// A zstd encoder writing into memory, set up as every stored version is: checksummed,
/// with the plain size in the frame (`zstd -l` shows it, and zstd sizes its window to
/// it), and one worker thread so compression overlaps reading and sending.
pub(crate) fn encoder(
    level: i32,
    plain_size: Option<u64>,
) -> std::io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
    encoder_to(Vec::with_capacity(1 << 20), level, plain_size)
}

/// [`encoder`]'s settings, writing into any writer (e.g. a temp file).
pub fn encoder_to<W: Write>(
    out: W,
    level: i32,
    plain_size: Option<u64>,
) -> std::io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    enc.include_checksum(true)?;
    enc.include_contentsize(plain_size.is_some())?;
    enc.set_pledged_src_size(plain_size)?;
    enc.multithread(1)?;
    Ok(enc)
}

/// A writer that decodes what it is given (when the content is zstd) into `inner`.
pub(crate) enum Decoding<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Decoder<'static, W>),
}

impl<W: Write> Decoding<W> {
    pub(crate) fn new(inner: W, encoding: Encoding) -> std::io::Result<Self> {
        Ok(match encoding {
            Encoding::Plain => Decoding::Plain(inner),
            Encoding::Zstd(_) => Decoding::Zstd(zstd::stream::write::Decoder::new(inner)?),
        })
    }

    pub(crate) fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Decoding::Plain(w) => w.write_all(buf),
            Decoding::Zstd(d) => d.write_all(buf),
        }
    }

    /// Flushes the decoder (a truncated frame is an error here) and gives back `inner`.
    pub(crate) fn finish(self) -> std::io::Result<W> {
        match self {
            Decoding::Plain(w) => Ok(w),
            Decoding::Zstd(mut d) => {
                d.flush()?;
                Ok(d.into_inner())
            }
        }
    }
}

/// Counts and hashes what passes through it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) count: u64,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that accepts only the bytes of a local file, in order: fails at the first
/// byte that differs or past the file's end.
pub(crate) struct SameAs<R> {
    pub(crate) local: R,
    pub(crate) compared: u64,
}

impl<R: Read> Write for SameAs<R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut mine = vec![0u8; buf.len()];
        self.local.read_exact(&mut mine)?;
        if mine != buf {
            return Err(std::io::Error::other("differs from the local file"));
        }
        self.compared += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
