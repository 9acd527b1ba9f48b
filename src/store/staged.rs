//! Uploads whose bytes are all sent (or buffered) but which are not yet visible at their
//! key: a backup checks its snapshot while it uploads, and commits only if the check
//! passed.

use std::io::{Read, Write};

use bytes::Bytes;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::blocking::{blocking, join_error};
use crate::error::StoreFailure;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::bucket::{Bucket, CHUNK, IN_FLIGHT, PART_CONCURRENCY, PART_SIZE, Transfer};
pub use crate::store::codec::Landed;
use crate::store::codec::{self, Encoding};
use crate::store::local::{AlignedChunk, LocalUpload};
use crate::store::tagged::{self, TagSlot};

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
        let (mut src, total) = blocking(move || {
            let f = std::fs::File::open(&path)
                .map_err(|e| Error::io(&path, "cannot open for upload", e))?;
            let total = f.metadata().map(|m| m.len()).unwrap_or(0);
            Ok((f, total))
        })
        .await?;
        let src_path = file.to_path_buf();
        let ((), sent, uploads) = self
            .stage_with(
                targets,
                total,
                hash,
                Landed::File(file.to_path_buf()),
                progress,
                move |feed| {
                    feed.copy_from(&mut src, &src_path)?;
                    Ok(())
                },
            )
            .await?;
        Ok((sent, uploads))
    }

    /// Streams what `source` writes into its [`Feed`] (on a blocking thread) to every
    /// target key at the same time, hashing the plain bytes when `hash` and encoding them
    /// once per target, staged as [`Bucket::stage_file`] does. `total` is for progress
    /// and zstd's frame header (the plain size when known). `landed` is how a commit
    /// whose last answer was lost tells whether the object landed: against a local file,
    /// or (with [`Landed::Sha256`] left empty) against the sha256 computed here.
    /// Returns what `source` returned, what was sent, and the staged uploads.
    pub async fn stage_with<T: Send + 'static>(
        &self,
        targets: &[(Path, Encoding)],
        total: u64,
        hash: bool,
        landed: Landed,
        progress: &dyn Progress,
        source: impl FnOnce(&mut Feed) -> Result<T> + Send + 'static,
    ) -> Result<(T, Transfer, Vec<StagedUpload>)> {
        let mut uploads: Vec<StagedUpload> = Vec::with_capacity(targets.len());
        for (key, enc) in targets {
            let zstd = matches!(enc, Encoding::Zstd(_));
            let upload = match self.local_path(key, total)? {
                // A large object into a local directory: written around the page cache.
                Some(dest) => {
                    let local = LocalUpload::create(dest.clone())
                        .await
                        .map_err(|e| self.local_err(key, &dest, e))?;
                    StagedUpload::local(self.clone(), key.clone(), local, zstd, landed.clone())
                }
                None => {
                    // The store's answer to the commit names the object we wrote (its ETag).
                    let (store, e_tag) = tagged::recording(self.store());
                    let writer = BufWriter::with_capacity(store, key.clone(), PART_SIZE)
                        .with_max_concurrency(PART_CONCURRENCY);
                    let mut upload =
                        StagedUpload::new(self.clone(), key.clone(), writer, zstd, landed.clone());
                    upload.e_tag = Some(e_tag);
                    upload
                }
            };
            uploads.push(upload);
        }
        let encodings: Vec<Encoding> = targets.iter().map(|t| t.1).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Vec<Bytes>)>(IN_FLIGHT);
        // The blocking side: read, hash, compress. Ends early (with an error nobody reads)
        // when the receiving side is gone.
        let producer = tokio::task::spawn_blocking(move || {
            let mut feed = Feed::new(&encodings, total, hash, tx)?;
            let t = source(&mut feed)?;
            let (sha, plain) = feed.finish()?;
            Ok::<_, Error>((t, sha, plain))
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
            Ok((t, sha256, plain)) => {
                if matches!(landed, Landed::Sha256(_)) {
                    for u in uploads.iter_mut() {
                        u.landed = Landed::Sha256(sha256.clone());
                    }
                }
                Ok((
                    t,
                    Transfer {
                        plain_bytes: plain,
                        stored_bytes: 0,
                        sha256,
                    },
                    uploads,
                ))
            }
            Err(e) => {
                for u in uploads {
                    u.abort().await;
                }
                Err(e)
            }
        }
    }
}

impl Bucket {
    /// Where a staged upload of about `total` plain bytes to `key` is written by
    /// [`LocalUpload`]: in a local directory, from one multipart part up (smaller
    /// objects keep object_store's single write).
    fn local_path(&self, key: &Path, total: u64) -> Result<Option<std::path::PathBuf>> {
        match &self.local {
            Some(fs) if total >= PART_SIZE as u64 => fs
                .path_to_filesystem(key)
                .map(Some)
                .map_err(|e| self.err("PUT", key, e)),
            _ => Ok(None),
        }
    }

    /// A local upload's error, typed by its kind (a full disk, a read-only mount) and
    /// naming the file.
    fn local_err(&self, key: &Path, file: &std::path::Path, e: std::io::Error) -> Error {
        Error::bucket_failure(
            "PUT",
            self.shown(key),
            self.url(),
            StoreFailure::from_io_kind(e.kind()),
            format!("{}: {e}", file.display()),
        )
    }
}

/// The blocking side of [`Bucket::stage_with`]: the plain bytes written into it are
/// hashed, encoded once per target and handed to the uploads in chunks of [`CHUNK`].
pub struct Feed {
    encoders: Vec<Option<zstd::stream::write::Encoder<'static, Vec<u8>>>>,
    hasher: Option<Sha256>,
    plain: u64,
    tx: tokio::sync::mpsc::Sender<(usize, Vec<Bytes>)>,
    /// The chunk being filled by [`Feed::write`] and its bytes written: aligned, so a
    /// local upload writes it to the disk as it is, without a copy into a buffer of its
    /// own.
    buf: Option<(AlignedChunk, usize)>,
}

fn gone() -> Error {
    Error::check(
        "the upload stopped before the content was read",
        "see the error of the upload",
    )
}

fn zstd_err(e: std::io::Error) -> Error {
    Error::check(format!("zstd: {e}"), "report this as a bug")
}

impl Feed {
    fn new(
        encodings: &[Encoding],
        total: u64,
        hash: bool,
        tx: tokio::sync::mpsc::Sender<(usize, Vec<Bytes>)>,
    ) -> Result<Feed> {
        let encoders = encodings
            .iter()
            .map(|e| match *e {
                Encoding::Plain => Ok(None),
                Encoding::Zstd(level) => codec::encoder(level, Some(total)).map(Some),
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(zstd_err)?;
        Ok(Feed {
            encoders,
            hasher: hash.then(Sha256::new),
            plain: 0,
            tx,
            buf: None,
        })
    }

    /// Plain bytes written so far.
    pub fn plain_bytes(&self) -> u64 {
        self.plain + self.buf.as_ref().map_or(0, |(_, n)| *n as u64)
    }

    /// Reads `src` to its end straight into the chunks sent (`path` names it in errors);
    /// returns the bytes read.
    pub fn copy_from(&mut self, src: &mut impl Read, path: &std::path::Path) -> Result<u64> {
        self.flush_partial()?;
        let mut total = 0u64;
        loop {
            // Aligned: a local upload writes it to the disk as it is (`O_DIRECT`).
            let mut chunk = AlignedChunk::zeroed(CHUNK);
            let mut n = 0;
            // Fill the chunk: a short read (a page batch) is not the end.
            while n < CHUNK {
                let got = src
                    .read(&mut chunk.as_mut()[n..])
                    .map_err(|e| Error::io(path, "read failed during upload", e))?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
            self.send(chunk.freeze(n))?;
            if n < CHUNK {
                return Ok(total);
            }
        }
    }

    /// Writes plain bytes (buffered into chunks).
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let (chunk, fill) = self
                .buf
                .get_or_insert_with(|| (AlignedChunk::zeroed(CHUNK), 0));
            let n = (CHUNK - *fill).min(data.len());
            chunk.as_mut()[*fill..*fill + n].copy_from_slice(&data[..n]);
            *fill += n;
            data = &data[n..];
            if *fill == CHUNK {
                self.flush_partial()?;
            }
        }
        Ok(())
    }

    fn flush_partial(&mut self) -> Result<()> {
        match self.buf.take() {
            Some((chunk, n)) if n > 0 => self.send(chunk.freeze(n)),
            _ => Ok(()),
        }
    }

    fn send(&mut self, chunk: Bytes) -> Result<()> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        self.plain += chunk.len() as u64;
        let mut out = Vec::with_capacity(self.encoders.len());
        for enc in self.encoders.iter_mut() {
            match enc {
                None => out.push(chunk.clone()),
                Some(enc) => {
                    enc.write_all(&chunk).map_err(zstd_err)?;
                    out.push(Bytes::from(std::mem::take(enc.get_mut())));
                }
            }
        }
        self.tx
            .blocking_send((chunk.len(), out))
            .map_err(|_| gone())
    }

    /// Sends what is buffered and the encoders' last bytes; returns the plain sha256
    /// (empty unless hashing) and the plain byte count.
    fn finish(mut self) -> Result<(String, u64)> {
        self.flush_partial()?;
        let tails = std::mem::take(&mut self.encoders)
            .into_iter()
            .map(|enc| match enc {
                None => Ok(Bytes::new()),
                Some(enc) => enc.finish().map(Bytes::from),
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(zstd_err)?;
        self.tx.blocking_send((0, tails)).map_err(|_| gone())?;
        let sha = self
            .hasher
            .take()
            .map(|h| hex::encode(h.finalize()))
            .unwrap_or_default();
        Ok((sha, self.plain))
    }
}

/// An upload whose bytes are all sent (or buffered) but which is not yet visible at
/// its key: [`StagedUpload::commit`] makes it appear whole, [`StagedUpload::abort`] (or
/// dropping it) leaves the key as it was.
pub struct StagedUpload {
    bucket: Bucket,
    key: Path,
    writer: Sink,
    stored: u64,
    /// True if and only if the object is stored zstd-compressed.
    zstd: bool,
    /// What the object is compared with when the answer to the upload's last request
    /// was lost.
    landed: Landed,
    /// Where the store's answer to the commit leaves the object's ETag.
    e_tag: Option<TagSlot>,
}

/// What a committed upload is at its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Bytes stored.
    pub stored: u64,
    /// The ETag the store answered the commit with: the object we wrote, and no later
    /// one. `None` when the store gave none, or the answer was lost (the object was then
    /// found whole by reading it back, which does not prove its tag is ours).
    pub e_tag: Option<String>,
}

/// Where a staged upload's bytes go.
enum Sink {
    /// object_store's buffered writer (S3 multipart, or a local single write).
    Store(BufWriter),
    /// A large object into a local directory ([`LocalUpload`]).
    Local(LocalUpload),
}

impl StagedUpload {
    pub(crate) fn new(
        bucket: Bucket,
        key: Path,
        writer: BufWriter,
        zstd: bool,
        landed: Landed,
    ) -> Self {
        StagedUpload {
            bucket,
            key,
            writer: Sink::Store(writer),
            stored: 0,
            zstd,
            landed,
            e_tag: None,
        }
    }

    fn local(bucket: Bucket, key: Path, local: LocalUpload, zstd: bool, landed: Landed) -> Self {
        StagedUpload {
            bucket,
            key,
            writer: Sink::Local(local),
            stored: 0,
            zstd,
            landed,
            e_tag: None,
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
        match &mut self.writer {
            Sink::Store(w) => w
                .put(bytes)
                .await
                .map_err(|e| self.bucket.err("PUT", &self.key, e)),
            Sink::Local(l) => match l.write(bytes).await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.bucket.local_err(&self.key, l.staging(), e)),
            },
        }
    }

    /// Completes the upload: the object appears whole at its key. Returns the bytes
    /// stored.
    pub async fn commit(self) -> Result<u64> {
        Ok(self.commit_tagged().await?.stored)
    }

    /// As [`StagedUpload::commit`], with the ETag the store gave the object.
    pub async fn commit_tagged(self) -> Result<Committed> {
        let StagedUpload {
            bucket,
            key,
            writer,
            stored,
            zstd,
            landed,
            e_tag,
        } = self;
        let mut writer = match writer {
            Sink::Store(w) => w,
            Sink::Local(l) => {
                let staging = l.staging().to_path_buf();
                // A local rename either happened or not: no lost answer to look into.
                // The ETag is the one the local store gives the file we wrote.
                return match l.commit().await {
                    Ok(e_tag) => Ok(Committed {
                        stored,
                        e_tag: Some(e_tag),
                    }),
                    Err(e) => Err(bucket.local_err(&key, &staging, e)),
                };
            }
        };
        match writer.shutdown().await {
            Ok(()) => Ok(Committed {
                stored,
                e_tag: e_tag
                    .as_ref()
                    .and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            }),
            Err(e) => {
                // No `abort` here: once shutdown has begun the writer cleans up after
                // itself (a failed completion aborts the multipart upload), and
                // object_store panics on `abort` ("Already shut down").
                let err = bucket.io_err("PUT", &key, e);
                // The last request may have succeeded with its answer lost: a retried
                // CompleteMultipartUpload then gets NoSuchUpload (moto and other
                // S3-compatible stores). If the key holds exactly our bytes, it landed.
                if bucket.landed(&key, &landed, zstd).await {
                    tracing::info!(
                        "{}: the upload's last answer was lost, but the object landed whole",
                        key
                    );
                    Ok(Committed {
                        stored,
                        e_tag: None,
                    })
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Abandons the upload (aborts a multipart upload, removes a staging file).
    pub async fn abort(self) {
        match self.writer {
            Sink::Store(mut w) => {
                let _ = w.abort().await;
            }
            Sink::Local(l) => l.abort().await,
        }
    }
}
