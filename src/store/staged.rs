//! Uploads whose bytes are all sent (or buffered) but which are not yet visible at their
//! key: a backup checks its snapshot while it uploads, and commits only if the check
//! passed.

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::blocking::{blocking, join_error};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::bucket::{Bucket, CHUNK, IN_FLIGHT, PART_CONCURRENCY, PART_SIZE, Transfer};
use crate::store::codec::{self, Encoding};

impl Bucket {
    /// Streams a local file to `key`, hashing the plain bytes on the way. Atomic: the
    /// object appears whole when the upload completes, or not at all.
    pub async fn put_file(
        &self,
        key: &Path,
        file: &std::path::Path,
        encoding: Encoding,
        progress: &dyn Progress,
    ) -> Result<Transfer> {
        let (plain, mut staged) = self
            .stage_file(file, &[(key.clone(), encoding)], true, progress)
            .await?;
        let stored = staged
            .pop()
            .expect("one target, one upload")
            .commit()
            .await?;
        Ok(Transfer {
            plain_bytes: plain.plain_bytes,
            stored_bytes: stored,
            sha256: plain.sha256,
        })
    }

    /// Reads `file` ONCE and streams it to every target key at the same time (e.g. the
    /// plain canonical object and a zstd version). `hash` is true if and only if the
    /// plain bytes are hashed on the way (the returned sha256 is empty otherwise: for a
    /// caller that hashed the file already and only needs the byte count to match).
    ///
    /// Nothing is visible at any key until the caller commits the returned uploads, one
    /// by one, in the order it chooses; dropping or aborting one leaves its key as it
    /// was. This lets a backup check the snapshot while it uploads, and replace nothing
    /// unless the check passed.
    pub async fn stage_file(
        &self,
        file: &std::path::Path,
        targets: &[(Path, Encoding)],
        hash: bool,
        progress: &dyn Progress,
    ) -> Result<(Transfer, Vec<StagedUpload>)> {
        let path = file.to_path_buf();
        let (src, total) = blocking(move || {
            let f = std::fs::File::open(&path)
                .map_err(|e| Error::io(&path, "cannot open for upload", e))?;
            let total = f.metadata().map(|m| m.len()).unwrap_or(0);
            Ok((f, total))
        })
        .await?;
        let mut uploads: Vec<StagedUpload> = targets
            .iter()
            .map(|(key, enc)| {
                let writer = BufWriter::with_capacity(self.store(), key.clone(), PART_SIZE)
                    .with_max_concurrency(PART_CONCURRENCY);
                StagedUpload::new(
                    self.clone(),
                    key.clone(),
                    writer,
                    matches!(enc, Encoding::Zstd(_)),
                    file.to_path_buf(),
                )
            })
            .collect();
        let encodings: Vec<Encoding> = targets.iter().map(|t| t.1).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Vec<Bytes>)>(IN_FLIGHT);
        let src_path = file.to_path_buf();
        // The blocking side: read, hash, compress. Ends early (with an error nobody reads)
        // when the receiving side is gone.
        let producer = tokio::task::spawn_blocking(move || {
            produce(src, &src_path, total, &encodings, hash, tx)
        });
        // Named after the plain (canonical) object when there is one: what the operator knows.
        let label = targets
            .iter()
            .find(|t| t.1 == Encoding::Plain)
            .or(targets.first());
        progress.begin(label.map(|t| t.0.as_ref()).unwrap_or(""), total);
        let sent: Result<()> = async {
            while let Some((n, chunks)) = rx.recv().await {
                for (u, c) in uploads.iter_mut().zip(chunks) {
                    u.write(c).await?;
                }
                progress.advance(n as u64);
            }
            Ok(())
        }
        .await;
        progress.end();
        drop(rx);
        let produced = producer.await.map_err(join_error);
        let outcome = match (sent, produced) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) | (Ok(()), Ok(Err(e))) => Err(e),
            (Ok(()), Ok(Ok(t))) => Ok(t),
        };
        match outcome {
            Ok((sha256, plain)) => Ok((
                Transfer {
                    plain_bytes: plain,
                    stored_bytes: 0,
                    sha256,
                },
                uploads,
            )),
            Err(e) => {
                for u in uploads {
                    u.abort().await;
                }
                Err(e)
            }
        }
    }
}

/// The blocking half of [`Bucket::stage_file`]: reads `src`, hashes it, encodes one
/// chunk per target, and hands them over. Returns the plain sha256 (empty unless `hash`)
/// and the plain byte count.
fn produce(
    mut src: std::fs::File,
    path: &std::path::Path,
    total: u64,
    encodings: &[Encoding],
    hash: bool,
    tx: tokio::sync::mpsc::Sender<(usize, Vec<Bytes>)>,
) -> Result<(String, u64)> {
    let zstd_err = |e| Error::io(path, "zstd", e);
    let mut encoders = encodings
        .iter()
        .map(|e| match *e {
            Encoding::Plain => Ok(None),
            Encoding::Zstd(level) => codec::encoder(level, Some(total)).map(Some),
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(zstd_err)?;
    let gone = || {
        Error::check(
            "the upload stopped before the file was read",
            "see the error of the upload",
        )
    };
    let mut hasher = Sha256::new();
    let mut plain = 0u64;
    loop {
        let mut buf = BytesMut::zeroed(CHUNK);
        let n = src
            .read(&mut buf)
            .map_err(|e| Error::io(path, "read failed during upload", e))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        let chunk = buf.freeze();
        if hash {
            hasher.update(&chunk);
        }
        plain += n as u64;
        let mut out = Vec::with_capacity(encoders.len());
        for enc in encoders.iter_mut() {
            match enc {
                None => out.push(chunk.clone()),
                Some(enc) => {
                    enc.write_all(&chunk).map_err(zstd_err)?;
                    out.push(Bytes::from(std::mem::take(enc.get_mut())));
                }
            }
        }
        tx.blocking_send((n, out)).map_err(|_| gone())?;
    }
    let tails = encoders
        .into_iter()
        .map(|enc| match enc {
            None => Ok(Bytes::new()),
            Some(enc) => enc.finish().map(Bytes::from),
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(zstd_err)?;
    tx.blocking_send((0, tails)).map_err(|_| gone())?;
    let sha = if hash {
        hex::encode(hasher.finalize())
    } else {
        String::new()
    };
    Ok((sha, plain))
}

/// An upload whose bytes are all sent (or buffered) but which is not yet visible at
/// its key: [`StagedUpload::commit`] makes it appear whole, [`StagedUpload::abort`] (or
/// dropping it) leaves the key as it was.
pub struct StagedUpload {
    bucket: Bucket,
    key: Path,
    writer: BufWriter,
    stored: u64,
    /// True if and only if the object is stored zstd-compressed.
    zstd: bool,
    /// The local file the content came from: compared with the object when the answer
    /// to the upload's last request was lost.
    file: std::path::PathBuf,
}

impl StagedUpload {
    pub(crate) fn new(
        bucket: Bucket,
        key: Path,
        writer: BufWriter,
        zstd: bool,
        file: std::path::PathBuf,
    ) -> Self {
        StagedUpload {
            bucket,
            key,
            writer,
            stored: 0,
            zstd,
            file,
        }
    }

    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Sends (or buffers) the next stored bytes.
    pub(crate) async fn write(&mut self, bytes: Bytes) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stored += bytes.len() as u64;
        self.writer
            .put(bytes)
            .await
            .map_err(|e| self.bucket.err("PUT", &self.key, e))
    }

    /// Completes the upload: the object appears whole at its key. Returns the bytes
    /// stored.
    pub async fn commit(mut self) -> Result<u64> {
        match self.writer.shutdown().await {
            Ok(()) => Ok(self.stored),
            Err(e) => {
                // No `abort` here: once shutdown has begun the writer cleans up after
                // itself (a failed completion aborts the multipart upload), and
                // object_store panics on `abort` ("Already shut down").
                let err = self.bucket.io_err("PUT", &self.key, e);
                // The last request may have succeeded with its answer lost: a retried
                // CompleteMultipartUpload then gets NoSuchUpload (moto and other
                // S3-compatible stores). If the key holds exactly our bytes, it landed.
                if self.bucket.landed(&self.key, &self.file, self.zstd).await {
                    tracing::info!(
                        "{}: the upload's last answer was lost, but the object landed whole",
                        self.key
                    );
                    Ok(self.stored)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Abandons the upload (aborts a multipart upload, removes a staging file).
    pub async fn abort(mut self) {
        let _ = self.writer.abort().await;
    }
}
