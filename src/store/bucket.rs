//! The backup bucket behind one narrow type.
//!
//! `file:///abs/dir` (a local directory, the embedded default: no server needed) and
//! `s3://bucket[/prefix]` (AWS S3, or any S3-compatible store whose endpoint is in
//! `AWS_ENDPOINT_URL`; credentials from the usual `AWS_*` variables or an instance role).
//! Both are `object_store` stores; everything above this module sees only [`Bucket`].
//!
//! Contracts every backend keeps (the conformance tests in `tests/` hold both to them):
//! - a put is atomic: no reader ever sees a partial object at a key, also not when the
//!   upload is cut off (object_store writes a local file to a staging name and renames
//!   it; S3 shows a multipart upload only when it is completed);
//! - `get_to_file` returns an error, never a short file, when the body ends early or
//!   the disk fills up (the partial file is removed), and gives the sha256 of what it
//!   wrote;
//! - memory stays flat in the object's size: bodies stream through fixed-size buffers;
//! - file reads and writes, hashing and zstd run on blocking threads, connected to the
//!   async transfer by bounded channels: the runtime's workers only move bytes.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::Digest;

use crate::blocking::join_error;
use crate::error::{Error, Result, StoreFailure};
use crate::progress::Progress;
use crate::store::codec::{Decoding, Encoding, HashingWriter, Landed, SameAs};
use crate::store::local::{self, StagingLeft};
use crate::store::s3::{self, S3Settings};
pub use crate::store::url::redact_url;
use crate::store::url::{BucketUrl, parse_bucket_url};

/// Parts of a multipart upload, and the point past which an upload is multipart.
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once: bounds memory to about PART_SIZE times this, plus the part
/// being filled. 2, not 3: a 1 GiB backup to S3 peaked at 60-72 MiB with 3 (measured,
/// docs/BENCHMARKS.md), over issue 13's 64 MiB.
pub(crate) const PART_CONCURRENCY: usize = 2;
/// Read buffer for files and zstd.
pub(crate) const CHUNK: usize = 1024 * 1024;
/// Chunks in flight between a blocking thread and the transfer.
pub(crate) const IN_FLIGHT: usize = 4;
/// The size of one ranged GET of a large object, and how many run at once: memory is
/// bounded by about their product (plus what is in flight to the writer). 8 MiB is what
/// AWS recommends for throughput; larger ranges would take the product past issue 13's
/// 64 MiB of memory at 1 GiB (each range is held whole until its turn).
const RANGE: u64 = 8 * 1024 * 1024;
const RANGES_IN_FLIGHT: usize = 3;

/// What a listing or a HEAD tells about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: Path,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// The store's entity tag, when it gives one (S3 does; a local directory derives one
    /// from the file's inode, mtime and size). Equal tags at one key mean the same upload.
    pub e_tag: Option<String>,
}

impl From<object_store::ObjectMeta> for ObjectInfo {
    fn from(m: object_store::ObjectMeta) -> Self {
        ObjectInfo {
            key: m.location,
            size: m.size,
            last_modified: m.last_modified,
            e_tag: m.e_tag,
        }
    }
}

/// What a streamed upload or download moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes of the plain (uncompressed) content.
    pub plain_bytes: u64,
    /// Bytes stored in the bucket (after compression, if any).
    pub stored_bytes: u64,
    /// Hex sha256 of the plain content.
    pub sha256: String,
}

/// Write `bytes` only if nothing is at the key yet, or replace what is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    Overwrite,
    Create,
}

#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// True if and only if large objects are downloaded as parallel ranged GETs (S3: a
    /// local directory gains nothing from them).
    ranged: bool,
    /// True if and only if listings come in key order (S3), so a listing can stop paging
    /// early; a local directory is walked in no order.
    sorted_lists: bool,
    /// As given, for messages: userinfo removed.
    url: String,
    /// A local directory's store, whose large uploads are written by
    /// `store::local` instead (around the page cache).
    pub(crate) local: Option<Arc<LocalFileSystem>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("url", &self.url).finish()
    }
}

impl Bucket {
    /// Opens `file:///abs/dir` or `s3://bucket[/prefix]`, with the S3 settings of the
    /// environment ([`S3Settings::from_env`]).
    ///
    /// A local directory must exist: a typo must not silently start a new, empty bucket.
    pub fn open(url: &str) -> Result<Bucket> {
        Bucket::open_with(url, &S3Settings::from_env()?)
    }

    /// As [`Bucket::open`], with explicit S3 settings: lets one process talk to several
    /// endpoints (the tests' fault-injecting proxy) without changing its environment.
    pub fn open_with(url: &str, s3: &S3Settings) -> Result<Bucket> {
        let shown = redact_url(url);
        let bad = |why: &str| {
            Error::usage(
                format!("--bucket {shown:?}: {why}"),
                "pass file:///absolute/dir for a local directory or s3://bucket-name for S3 (or set HUBVAULT_BUCKET)",
            )
        };
        // The URL rules (absolute directories, S3's bucket names) live in store::url.
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let parsed = parse_bucket_url(url, &cwd)?;
        // Large objects on S3 come as parallel ranged GETs; a local directory gains
        // nothing from them.
        let ranged = matches!(parsed, BucketUrl::S3 { .. });
        let mut local = None;
        let (store, root): (Arc<dyn ObjectStore>, String) = match parsed {
            BucketUrl::Local(dir) => {
                if s3.sse.is_some() {
                    return Err(Error::usage(
                        format!(
                            "--bucket {shown:?}: server-side encryption (--sse / HUBVAULT_SSE / sse in the config file) is for S3 buckets; a local directory cannot apply it"
                        ),
                        "leave --sse out for a file:// bucket, or encrypt the file system under it",
                    ));
                }
                match std::fs::metadata(&dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(bad(&format!("{} is not a directory", dir.display()))),
                    Err(e) => {
                        return Err(Error::usage(
                            format!(
                                "--bucket {shown:?}: directory {} cannot be used: {e}",
                                dir.display()
                            ),
                            format!(
                                "create it first (mkdir -p {}) or check --bucket",
                                dir.display()
                            ),
                        ));
                    }
                }
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(&e.to_string()))?;
                // A backup reported as uploaded must survive a power cut: fsync every
                // object and its directory, as S3 does before it answers 200.
                let fs = Arc::new(fs.with_fsync(true));
                local = Some(fs.clone());
                (fs as Arc<dyn ObjectStore>, String::new())
            }
            BucketUrl::S3 { bucket, prefix } => (
                Arc::new(s3::store(&bucket, s3).map_err(|e| bad(&e.to_string()))?),
                prefix,
            ),
        };
        let root = root.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if root.is_empty() {
            store
        } else {
            let prefix = Path::parse(root).map_err(|e| bad(&format!("bad key prefix: {e}")))?;
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(Bucket {
            store,
            ranged,
            sorted_lists: ranged,
            url: shown,
            local,
        })
    }

    /// Wraps any store; for tests (e.g. `object_store::memory::InMemory`).
    pub fn from_store(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> Bucket {
        Bucket {
            store,
            ranged: false,
            sorted_lists: false,
            url: redact_url(&url.into()),
            local: None,
        }
    }

    /// Declares that the store's listings come in key order, as S3's do (a wrapped store
    /// that sorts them: the benchmark's request counter).
    pub fn with_sorted_listings(mut self) -> Bucket {
        self.sorted_lists = true;
        self
    }

    pub(crate) fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The bucket's URL as given, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One HEAD. `None` when nothing is at the key.
    pub async fn head(&self, key: &Path) -> Result<Option<ObjectInfo>> {
        match self.store.head(key).await {
            Ok(m) => Ok(Some(m.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("HEAD", key, e)),
        }
    }

    /// Small objects (manifests, markers). With `Create`, returns false if and only if
    /// something was already at the key (and leaves it alone).
    pub async fn put_bytes(
        &self,
        key: &Path,
        bytes: impl Into<Bytes>,
        mode: WriteMode,
    ) -> Result<bool> {
        let opts = PutOptions {
            mode: match mode {
                WriteMode::Overwrite => PutMode::Overwrite,
                WriteMode::Create => PutMode::Create,
            },
            ..Default::default()
        };
        match self
            .store
            .put_opts(key, PutPayload::from(bytes.into()), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) if mode == WriteMode::Create => {
                Ok(false)
            }
            Err(e) => Err(self.err("PUT", key, e)),
        }
    }

    /// True if and only if the object at `key`, decoded, is byte for byte the local
    /// file (which the caller still holds), or has the sha256, that `expected` names: used
    /// when the answer to an upload's last request was lost, to tell whether it landed.
    pub(crate) async fn landed(&self, key: &Path, expected: &Landed, zstd: bool) -> bool {
        let encoding = if zstd {
            Encoding::Zstd(0)
        } else {
            Encoding::Plain
        };
        match expected.clone() {
            Landed::File(path) => {
                let compared = self
                    .get_into(
                        key,
                        Reading::for_encoding(encoding),
                        &crate::progress::NoProgress,
                        move |body| {
                            let local = std::fs::File::open(&path)
                                .map_err(|e| Error::io(&path, "cannot open", e))?;
                            let total = local.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                            let same = SameAs {
                                local: std::io::BufReader::with_capacity(CHUNK, local),
                                compared: 0,
                            };
                            let mut sink = Decoding::new(same, encoding)
                                .map_err(|e| Error::io(&path, "zstd", e))?;
                            while let Some(chunk) = body.next()? {
                                sink.write_all(&chunk)
                                    .map_err(|e| Error::io(&path, "differs", e))?;
                            }
                            let same = sink.finish().map_err(|e| Error::io(&path, "differs", e))?;
                            Ok(same.compared == total)
                        },
                    )
                    .await;
                matches!(compared, Ok((true, _)))
            }
            Landed::Sha256(sha) if !sha.is_empty() => {
                let shown = self.shown(key);
                let hashed = self
                    .get_into(
                        key,
                        Reading::for_encoding(encoding),
                        &crate::progress::NoProgress,
                        move |body| {
                            let mut sink =
                                Decoding::new(HashingWriter::new(std::io::sink()), encoding)
                                    .map_err(|e| {
                                        Error::check(format!("{shown}: zstd: {e}"), "retry")
                                    })?;
                            while let Some(chunk) = body.next()? {
                                sink.write_all(&chunk)
                                    .map_err(|e| Error::check(format!("{shown}: {e}"), "retry"))?;
                            }
                            let h = sink
                                .finish()
                                .map_err(|e| Error::check(format!("{shown}: {e}"), "retry"))?;
                            Ok(hex::encode(h.hasher.finalize()))
                        },
                    )
                    .await;
                matches!(hashed, Ok((got, _)) if got == sha)
            }
            Landed::Sha256(_) => false,
        }
    }

    /// A small object, whole, in memory.
    pub async fn get_bytes(&self, key: &Path) -> Result<Bytes> {
        let got = self
            .store
            .get(key)
            .await
            .map_err(|e| self.err("GET", key, e))?;
        got.bytes().await.map_err(|e| self.err("GET", key, e))
    }

    /// As [`Bucket::get_bytes`], for an object anyone who can write to the bucket could
    /// make huge: past `max` bytes it is refused (a check error, as for a damaged object)
    /// without being read further.
    pub async fn get_bytes_max(&self, key: &Path, max: u64) -> Result<Bytes> {
        let got = self
            .store
            .get(key)
            .await
            .map_err(|e| self.err("GET", key, e))?;
        let too_big = |size: u64| {
            Error::check(
                format!(
                    "{} is {size} bytes or more; an object of this kind is at most {max}",
                    self.shown(key)
                ),
                "it was not written by hubvault: `hubvault verify` checks the backups",
            )
        };
        if got.meta.size > max {
            return Err(too_big(got.meta.size));
        }
        let mut out = Vec::with_capacity(got.meta.size as usize);
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.err("GET", key, e))?;
            if (out.len() + chunk.len()) as u64 > max {
                return Err(too_big((out.len() + chunk.len()) as u64));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// Streams the object at `key` into `dest` (created or truncated), decoding it, and
    /// returns the sha256 of the plain bytes written. Fails, rather than returning a
    /// short file, if the body ends before the size the store announced; `dest` is
    /// fsynced before returning.
    pub async fn get_to_file(
        &self,
        key: &Path,
        dest: &std::path::Path,
        encoding: Encoding,
        progress: &dyn Progress,
    ) -> Result<Transfer> {
        self.get_to_file_as(key, dest, encoding, progress, Durable::Fsync)
            .await
    }

    /// As [`Bucket::get_to_file`], without the fsync: for a temp file that is either
    /// thrown away or fsynced by the caller before it is kept (a restore's download is
    /// fsynced once, after its rewrite, before the install). Syncing it here as well
    /// would write the file to disk twice, a second time after the rewrite changed
    /// most of its pages.
    pub async fn get_to_temp_file(
        &self,
        key: &Path,
        dest: &std::path::Path,
        encoding: Encoding,
        progress: &dyn Progress,
    ) -> Result<Transfer> {
        self.get_to_file_as(key, dest, encoding, progress, Durable::CallerSyncs)
            .await
    }

    async fn get_to_file_as(
        &self,
        key: &Path,
        dest: &std::path::Path,
        encoding: Encoding,
        progress: &dyn Progress,
        durable: Durable,
    ) -> Result<Transfer> {
        // An object replaced while its ranges are read fails the If-Match of the later
        // ranges (a backup committing a new canonical object as we read it): read it
        // again, from the start, a bounded number of times.
        let mut attempt = 0;
        let ((sha256, count), stored) = loop {
            let dest_path = dest.to_path_buf();
            let key_shown = self.shown(key);
            let got = self
                .get_into(
                    key,
                    Reading::for_encoding(encoding),
                    progress,
                    move |body| write_download(body, &dest_path, encoding, &key_shown, durable),
                )
                .await;
            match got {
                Err(e) if e.store_failure() == Some(StoreFailure::Conflict) && attempt < 3 => {
                    attempt += 1;
                    tracing::info!("{e}; reading it again (attempt {})", attempt + 1);
                }
                other => break other?,
            }
        };
        Ok(Transfer {
            plain_bytes: count,
            stored_bytes: stored,
            sha256,
        })
    }

    /// Streams the body of `key` to `consume`, which runs on a blocking thread and reads
    /// it chunk by chunk; `consume` sees the end of the body only when all the bytes the
    /// store announced arrived (a cut-off body is an error in [`Body::next`]). Returns
    /// what `consume` returned and the bytes received.
    async fn get_into<T: Send + 'static>(
        &self,
        key: &Path,
        reading: Reading,
        progress: &dyn Progress,
        consume: impl FnOnce(&mut Body) -> Result<T> + Send + 'static,
    ) -> Result<(T, u64)> {
        let (announced, mut stream) = self.body(key, reading).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(IN_FLIGHT);
        let consumer = tokio::task::spawn_blocking(move || consume(&mut Body { rx }));
        progress.begin(key.as_ref(), announced);
        let mut stored = 0u64;
        let mut failed: Option<Error> = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    stored += c.len() as u64;
                    progress.advance(c.len() as u64);
                    // A ranged GET answers 8 MiB at once: hand it over in CHUNK slices, so
                    // what waits in the channel stays small.
                    let mut gone = false;
                    for at in (0..c.len()).step_by(CHUNK) {
                        let piece = c.slice(at..(at + CHUNK).min(c.len()));
                        if tx.send(Piece::Data(piece)).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    if gone {
                        // The consumer stopped: its own error says why.
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(self.err("GET", key, e));
                    break;
                }
            }
        }
        progress.end();
        if failed.is_none() && stored != announced && !tx.is_closed() {
            failed = Some(Error::check(
                format!(
                    "{}: download ended after {stored} of {announced} bytes",
                    self.shown(key)
                ),
                "the connection was cut; run the command again",
            ));
        }
        if failed.is_none() {
            let _ = tx.send(Piece::End).await;
        }
        // Without `End` the consumer sees the channel close and fails, undoing its work.
        drop(tx);
        let consumed = consumer.await.map_err(join_error)?;
        match failed {
            Some(e) => Err(e),
            None => consumed.map(|t| (t, stored)),
        }
    }

    /// The size of the object at `key` and its body as a stream of chunks, in order.
    ///
    /// On S3 a large object is fetched as parallel ranged GETs ([`RANGE`] bytes each, at
    /// most [`RANGES_IN_FLIGHT`] at once, yielded in order): one connection to S3 moves
    /// far less than the machine can. With [`Reading::Streamed`] the rest after the first
    /// range is ONE streamed ranged GET instead. Every request after the first is
    /// conditional on the first answer's ETag (If-Match), so an object replaced
    /// mid-download fails the download (412) instead of mixing two objects. The first
    /// request is itself a ranged GET: a small object costs one request, as a plain GET
    /// would, and the answer's Content-Range names the whole size apart from the body.
    async fn body(
        &self,
        key: &Path,
        reading: Reading,
    ) -> Result<(
        u64,
        futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    )> {
        use futures::TryStreamExt;
        if !self.ranged {
            let got = self
                .store
                .get(key)
                .await
                .map_err(|e| self.err("GET", key, e))?;
            return Ok((got.meta.size, got.into_stream()));
        }
        let first = self
            .store
            .get_opts(
                key,
                object_store::GetOptions {
                    range: Some(object_store::GetRange::Bounded(0..RANGE)),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err("GET", key, e))?;
        let size = first.meta.size;
        let etag = first.meta.e_tag.clone();
        let head = first.into_stream();
        if size <= RANGE {
            return Ok((size, head));
        }
        let store = self.store.clone();
        let key = key.clone();
        if reading == Reading::Streamed {
            // Asked for once the first range is read: no body waits in memory.
            let rest = futures::stream::once(async move {
                let opts = object_store::GetOptions {
                    range: Some(object_store::GetRange::Bounded(RANGE..size)),
                    if_match: etag,
                    ..Default::default()
                };
                store.get_opts(&key, opts).await.map(|r| r.into_stream())
            })
            .try_flatten();
            return Ok((size, head.chain(rest).boxed()));
        }
        let rest = futures::stream::iter((RANGE..size).step_by(RANGE as usize))
            .map(move |start| {
                let (store, key, etag) = (store.clone(), key.clone(), etag.clone());
                async move {
                    let opts = object_store::GetOptions {
                        range: Some(object_store::GetRange::Bounded(
                            start..(start + RANGE).min(size),
                        )),
                        if_match: etag,
                        ..Default::default()
                    };
                    store.get_opts(&key, opts).await?.bytes().await
                }
            })
            .buffered(RANGES_IN_FLIGHT);
        Ok((size, head.chain(rest).into_stream().boxed()))
    }

    /// Every object under `prefix` (all pages of the listing).
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(prefix));
        while let Some(item) = stream.next().await {
            match item {
                Ok(m) => out.push(m.into()),
                // A local directory that does not exist yet simply holds nothing.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("LIST", prefix, e)),
            }
        }
        out.sort_by(|a: &ObjectInfo, b: &ObjectInfo| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The "directories" directly under `prefix` (the bucket's top level for the empty
    /// path): one delimiter listing (S3 pages it past 1,000 names).
    pub async fn list_prefixes(&self, prefix: &Path) -> Result<Vec<String>> {
        let p = (!prefix.as_ref().is_empty()).then_some(prefix);
        match self.store.list_with_delimiter(p).await {
            Ok(r) => {
                let mut names: Vec<String> = r
                    .common_prefixes
                    .iter()
                    .filter_map(|c| c.filename().map(str::to_string))
                    .collect();
                names.sort();
                Ok(names)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(self.err("LIST", prefix, e)),
        }
    }

    /// Objects under `prefix` whose keys sort after `offset` (all pages): a listing that
    /// starts where time-derived keys reach a given instant, instead of at the prefix's
    /// beginning.
    pub async fn list_after(&self, prefix: &Path, offset: &Path) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut stream = self.store.list_with_offset(Some(prefix), offset);
        while let Some(item) = stream.next().await {
            match item {
                Ok(m) => out.push(m.into()),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("LIST", prefix, e)),
            }
        }
        out.sort_by(|a: &ObjectInfo, b: &ObjectInfo| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Objects under `prefix` whose keys sort after `offset`, in key order, up to and
    /// including the first one for which `more` returns false: a listing that stops
    /// paging (S3: 1,000 keys a request) once the caller has what it needs.
    pub async fn list_after_until(
        &self,
        prefix: &Path,
        offset: &Path,
        mut more: impl FnMut(&Path) -> bool,
    ) -> Result<Vec<ObjectInfo>> {
        let mut out: Vec<ObjectInfo> = Vec::new();
        if !self.sorted_lists {
            // A local directory is walked in no particular order: all of it, then sorted.
            for o in self.list_after(prefix, offset).await? {
                let go_on = more(&o.key);
                out.push(o);
                if !go_on {
                    break;
                }
            }
            return Ok(out);
        }
        let mut stream = self.store.list_with_offset(Some(prefix), offset);
        while let Some(item) = stream.next().await {
            match item {
                Ok(m) => {
                    let go_on = more(&m.location);
                    out.push(m.into());
                    if !go_on {
                        break;
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("LIST", prefix, e)),
            }
        }
        Ok(out)
    }

    /// A byte range of an object (a header, one section).
    pub async fn get_range(&self, key: &Path, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(key, range)
            .await
            .map_err(|e| self.err("GET", key, e))
    }

    /// A server-side copy (S3 CopyObject; a local directory copies the file): no bytes
    /// travel through this machine.
    pub async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.store
            .copy(from, to)
            .await
            .map_err(|e| self.err("COPY", to, e))
    }

    /// How old a staging file must be to be taken as left by a killed upload: one under
    /// way writes its file all the time, and none lasts a day.
    pub const STAGING_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

    /// The staging files killed uploads left under `prefix` in a local-directory bucket
    /// ([`StagingLeft`]) that were last written more than `grace` ago (an upload under
    /// way writes its file all the time). Empty for S3, where a killed multipart upload
    /// leaves parts that only a lifecycle rule (`AbortIncompleteMultipartUpload`) or the
    /// bucket's owner can see.
    pub async fn staging_left(
        &self,
        prefix: &Path,
        grace: std::time::Duration,
    ) -> Result<Vec<StagingLeft>> {
        let Some(fs) = self.local.clone() else {
            return Ok(Vec::new());
        };
        let dir = fs
            .path_to_filesystem(prefix)
            .map_err(|e| self.err("LIST", prefix, e))?;
        let before = std::time::SystemTime::now() - grace;
        let key = prefix.to_string();
        let shown = dir.clone();
        tokio::task::spawn_blocking(move || local::staging_left(&dir, &key, before))
            .await
            .map_err(join_error)?
            .map_err(|e| {
                Error::io(
                    &shown,
                    "cannot walk the bucket directory for staging files",
                    e,
                )
            })
    }

    /// Removes one file [`Bucket::staging_left`] found (if it is still a regular file).
    pub async fn remove_staging(&self, s: &StagingLeft) -> Result<()> {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            local::remove_staging(&s).map_err(|e| Error::io(&s.path, "cannot remove", e))
        })
        .await
        .map_err(join_error)?
    }

    /// Deletes the object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &Path) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", key, e)),
        }
    }

    /// `bucket-url/key`, as messages name an object.
    pub fn shown(&self, key: &Path) -> String {
        format!("{}/{key}", self.url.trim_end_matches('/'))
    }

    pub(crate) fn err(&self, op: &'static str, key: &Path, e: object_store::Error) -> Error {
        Error::bucket(op, self.shown(key), &self.url, e)
    }

    /// An error of object_store's buffered writer: an `io::Error` that wraps the store's
    /// error when there is one.
    pub(crate) fn io_err(&self, op: &'static str, key: &Path, e: std::io::Error) -> Error {
        let kind = e.kind();
        match e
            .into_inner()
            .map(|inner| inner.downcast::<object_store::Error>())
        {
            Some(Ok(store_err)) => self.err(op, key, *store_err),
            Some(Err(other)) => Error::bucket_failure(
                op,
                self.shown(key),
                &self.url,
                StoreFailure::from_io_kind(kind),
                other.to_string(),
            ),
            None => Error::bucket_failure(
                op,
                self.shown(key),
                &self.url,
                StoreFailure::from_io_kind(kind),
                kind.to_string(),
            ),
        }
    }
}

/// How a large object is read from S3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Parallel ranged GETs: for plain objects, where the network is the bottleneck.
    Parallel,
    /// One streamed GET after the first range: for zstd objects, where the decoder is
    /// (about 1 GB/s of output needs about 85 MB/s of input at the versions' 12x, what one
    /// S3 connection gives), and where parallel ranges would only add requests (on moto,
    /// which copies the whole object for each range, an 82 MiB version took 2.44 s in
    /// 8 MiB ranges and 0.76 s in one GET: docs/BENCHMARKS.md, bench/ranges.sh).
    Streamed,
}

impl Reading {
    fn for_encoding(encoding: Encoding) -> Reading {
        match encoding {
            Encoding::Plain => Reading::Parallel,
            Encoding::Zstd(_) => Reading::Streamed,
        }
    }
}

enum Piece {
    Data(Bytes),
    End,
}

/// The body of an object as a blocking thread reads it.
struct Body {
    rx: tokio::sync::mpsc::Receiver<Piece>,
}

impl Body {
    /// The next chunk; `None` at the end of a whole body; an error when the transfer
    /// stopped before the end (the caller then undoes what it did).
    fn next(&mut self) -> Result<Option<Bytes>> {
        match self.rx.blocking_recv() {
            Some(Piece::Data(b)) => Ok(Some(b)),
            Some(Piece::End) => Ok(None),
            None => Err(Error::check(
                "the download stopped before the end of the object",
                "see the error of the download",
            )),
        }
    }
}

/// [`Body`] as a `Read`: a transfer that stopped before the end reads as an error.
struct BodyReader<'a> {
    body: &'a mut Body,
    cur: Bytes,
    ended: bool,
}

impl std::io::Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.body.next() {
                Ok(Some(b)) => self.cur = b,
                Ok(None) => self.ended = true,
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

impl Bucket {
    /// Streams the object at `key`, as stored, to `consume`, which runs on a blocking
    /// thread and reads it as a `Read` (one streamed GET; memory stays a few chunks
    /// whatever the object's size). The read ends only when every byte the store
    /// announced arrived; a transfer cut off is an error (the store's, when it gave one).
    /// Returns what `consume` returned and the bytes received.
    pub async fn read_with<T: Send + 'static>(
        &self,
        key: &Path,
        consume: impl FnOnce(&mut dyn std::io::Read) -> Result<T> + Send + 'static,
    ) -> Result<(T, u64)> {
        self.get_into(
            key,
            Reading::Streamed,
            &crate::progress::NoProgress,
            move |body| {
                let mut r = BodyReader {
                    body,
                    cur: Bytes::new(),
                    ended: false,
                };
                consume(&mut r)
            },
        )
        .await
    }
}

/// The blocking half of [`Bucket::get_to_file`].
fn write_download(
    body: &mut Body,
    dest: &std::path::Path,
    encoding: Encoding,
    key: &str,
    durable: Durable,
) -> Result<(String, u64)> {
    let file = std::fs::File::create(dest)
        .map_err(|e| Error::io(dest, "cannot create download file", e))?;
    // From here on, a failure removes `dest`: a short file must not be left to look
    // like a download (say, after the disk filled up).
    let mut partial = RemoveOnDrop(Some(dest.to_path_buf()));
    let write_err = |e: std::io::Error| match encoding {
        Encoding::Zstd(_)
            if e.kind() != std::io::ErrorKind::StorageFull && e.raw_os_error().is_none() =>
        {
            Error::check(
                format!("{key}: the compressed object is damaged: {e}"),
                "restore another version (hubvault versions) and run `hubvault verify`",
            )
        }
        _ => Error::io(dest, "cannot write download", e),
    };
    let hashing = HashingWriter::new(std::io::BufWriter::with_capacity(CHUNK, file));
    let mut sink = Decoding::new(hashing, encoding).map_err(write_err)?;
    while let Some(chunk) = body.next()? {
        sink.write_all(&chunk).map_err(write_err)?;
    }
    let HashingWriter {
        inner,
        hasher,
        count,
    } = sink.finish().map_err(write_err)?;
    let file = inner
        .into_inner()
        .map_err(|e| Error::io(dest, "cannot write download", e.into_error()))?;
    if durable == Durable::Fsync {
        file.sync_all()
            .map_err(|e| Error::io(dest, "cannot fsync download", e))?;
    }
    partial.0 = None;
    Ok((hex::encode(hasher.finalize()), count))
}

/// Whether a download is fsynced before [`Bucket::get_to_file`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durable {
    Fsync,
    /// The caller fsyncs the file before it keeps it (or throws it away).
    CallerSyncs,
}

/// Removes the file it names when dropped, unless disarmed (set to `None`).
pub(crate) struct RemoveOnDrop(pub(crate) Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
