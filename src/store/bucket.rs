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
//! - memory stays flat in the object's size: bodies stream through fixed-size buffers.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::progress::Progress;

/// Parts of a multipart upload, and the point past which an upload is multipart.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once: bounds memory to about PART_SIZE times this.
const PART_CONCURRENCY: usize = 3;
/// Read buffer for files and zstd.
const CHUNK: usize = 1024 * 1024;

/// What a listing or a HEAD tells about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: Path,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

impl From<object_store::ObjectMeta> for ObjectInfo {
    fn from(m: object_store::ObjectMeta) -> Self {
        ObjectInfo {
            key: m.location,
            size: m.size,
            last_modified: m.last_modified,
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

/// How content is stored at a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// As is: the seed's canonical object, openable by any SQLite tool.
    Plain,
    /// zstd at the given level: kept versions.
    Zstd(i32),
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
    url: String,
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
        Bucket::open_with(url, &S3Settings::from_env())
    }

    /// As [`Bucket::open`], with explicit S3 settings: lets one process talk to several
    /// endpoints (the tests' fault-injecting proxy) without changing its environment.
    pub fn open_with(url: &str, s3: &S3Settings) -> Result<Bucket> {
        let bad = |why: &str| {
            Error::usage(
                format!("--bucket {url:?}: {why}"),
                "pass file:///absolute/dir for a local directory or s3://bucket-name for S3 (or set HUBVAULT_BUCKET)",
            )
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let (store, root): (Arc<dyn ObjectStore>, String) = match parsed.scheme() {
            "file" => {
                if parsed
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(bad(
                        "a file URL names no host: write file:///abs/dir (three slashes)",
                    ));
                }
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad("not an absolute local path"))?;
                match std::fs::metadata(&dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(bad(&format!("{} is not a directory", dir.display()))),
                    Err(e) => {
                        return Err(Error::usage(
                            format!(
                                "--bucket {url:?}: directory {} cannot be used: {e}",
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
                let fs = fs.with_fsync(true);
                (Arc::new(fs), String::new())
            }
            "s3" => {
                let name = parsed
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| bad("no bucket name"))?;
                (
                    Arc::new(s3_store(name, s3).map_err(|e| bad(&e.to_string()))?),
                    parsed.path().to_string(),
                )
            }
            other => return Err(bad(&format!("scheme {other:?} is not supported"))),
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
            url: url.to_string(),
        })
    }

    /// Wraps any store; for tests (e.g. `object_store::memory::InMemory`).
    pub fn from_store(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> Bucket {
        Bucket {
            store,
            url: url.into(),
        }
    }

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
        let mut src =
            std::fs::File::open(file).map_err(|e| Error::io(file, "cannot open for upload", e))?;
        let total = src.metadata().map(|m| m.len()).unwrap_or(0);
        let mut uploads = Vec::with_capacity(targets.len());
        for (key, encoding) in targets {
            let encoder = match *encoding {
                Encoding::Plain => None,
                Encoding::Zstd(level) => {
                    let mut enc =
                        zstd::stream::write::Encoder::new(Vec::with_capacity(CHUNK), level)
                            .map_err(|e| Error::io(file, "cannot start zstd", e))?;
                    enc.include_checksum(true)
                        .map_err(|e| Error::io(file, "zstd", e))?;
                    // Records the plain size in the frame (`zstd -l` shows it) and lets zstd
                    // size its window to the input.
                    enc.set_pledged_src_size(Some(total))
                        .map_err(|e| Error::io(file, "zstd", e))?;
                    // One worker thread: zstd compresses while this thread reads and
                    // sends, so compression overlaps the plain upload.
                    enc.multithread(1).map_err(|e| Error::io(file, "zstd", e))?;
                    enc.include_contentsize(true)
                        .map_err(|e| Error::io(file, "zstd", e))?;
                    Some(enc)
                }
            };
            let writer = BufWriter::with_capacity(self.store.clone(), key.clone(), PART_SIZE)
                .with_max_concurrency(PART_CONCURRENCY);
            uploads.push(StagedUpload {
                bucket: self.clone(),
                key: key.clone(),
                writer,
                encoder,
                stored: 0,
                zstd: matches!(encoding, Encoding::Zstd(_)),
                file: file.to_path_buf(),
            });
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut plain = 0u64;
        // Named after the plain (canonical) object when there is one: what the operator knows.
        let label = targets
            .iter()
            .find(|t| t.1 == Encoding::Plain)
            .or(targets.first());
        progress.begin(label.map(|t| t.0.as_ref()).unwrap_or(""), total);
        let result: Result<()> = async {
            loop {
                let n = src
                    .read(&mut buf)
                    .map_err(|e| Error::io(file, "read failed during upload", e))?;
                if n == 0 {
                    break;
                }
                if hash {
                    hasher.update(&buf[..n]);
                }
                plain += n as u64;
                for u in uploads.iter_mut() {
                    u.write(&buf[..n]).await?;
                }
                progress.advance(n as u64);
            }
            for u in uploads.iter_mut() {
                u.finish_encoding().await?;
            }
            Ok(())
        }
        .await;
        progress.end();
        if let Err(e) = result {
            for u in uploads {
                u.abort().await;
            }
            return Err(e);
        }
        Ok((
            Transfer {
                plain_bytes: plain,
                stored_bytes: 0,
                sha256: if hash {
                    hex::encode(hasher.finalize())
                } else {
                    String::new()
                },
            },
            uploads,
        ))
    }

    /// True if and only if the object at `key`, decoded, is byte for byte the local
    /// `file` (which the caller still holds): used when the answer to an upload's last
    /// request was lost, to tell whether the upload landed.
    async fn landed(&self, key: &Path, file: &std::path::Path, zstd: bool) -> bool {
        let Ok(local) = std::fs::File::open(file) else {
            return false;
        };
        let total = local.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let Ok(got) = self.store.get(key).await else {
            return false;
        };
        let same = SameAs {
            local: std::io::BufReader::with_capacity(CHUNK, local),
            compared: 0,
        };
        enum Sink {
            Plain(SameAs),
            Zstd(zstd::stream::write::Decoder<'static, SameAs>),
        }
        let mut sink = if zstd {
            match zstd::stream::write::Decoder::new(same) {
                Ok(d) => Sink::Zstd(d),
                Err(_) => return false,
            }
        } else {
            Sink::Plain(same)
        };
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return false;
            };
            let w = match &mut sink {
                Sink::Plain(s) => s.write_all(&chunk),
                Sink::Zstd(d) => d.write_all(&chunk),
            };
            if w.is_err() {
                return false;
            }
        }
        let same = match sink {
            Sink::Plain(s) => s,
            Sink::Zstd(mut d) => {
                if d.flush().is_err() {
                    return false;
                }
                d.into_inner()
            }
        };
        same.compared == total
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
        let got = self
            .store
            .get(key)
            .await
            .map_err(|e| self.err("GET", key, e))?;
        let announced = got.meta.size;
        let file = std::fs::File::create(dest)
            .map_err(|e| Error::io(dest, "cannot create download file", e))?;
        // From here on, a failure removes `dest`: a short file must not be left to look
        // like a download (say, after the disk filled up).
        let mut partial = RemoveOnDrop(Some(dest.to_path_buf()));
        let hashing = HashingWriter {
            inner: std::io::BufWriter::with_capacity(CHUNK, file),
            hasher: Sha256::new(),
            count: 0,
        };
        enum Sink {
            Plain(HashingWriter<std::io::BufWriter<std::fs::File>>),
            Zstd(
                zstd::stream::write::Decoder<
                    'static,
                    HashingWriter<std::io::BufWriter<std::fs::File>>,
                >,
            ),
        }
        let mut sink = match encoding {
            Encoding::Plain => Sink::Plain(hashing),
            Encoding::Zstd(_) => Sink::Zstd(
                zstd::stream::write::Decoder::new(hashing)
                    .map_err(|e| Error::io(dest, "cannot start zstd", e))?,
            ),
        };
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
        progress.begin(key.as_ref(), announced);
        let mut stored = 0u64;
        let mut stream = got.into_stream();
        let mut outcome: Result<()> = Ok(());
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    outcome = Err(self.err("GET", key, e));
                    break;
                }
            };
            stored += chunk.len() as u64;
            let w = match &mut sink {
                Sink::Plain(w) => w.write_all(&chunk),
                Sink::Zstd(d) => d.write_all(&chunk),
            };
            if let Err(e) = w {
                outcome = Err(write_err(e));
                break;
            }
            progress.advance(chunk.len() as u64);
        }
        progress.end();
        outcome?;
        if stored != announced {
            return Err(Error::check(
                format!("{key}: download ended after {stored} of {announced} bytes"),
                "the connection was cut; run the command again",
            ));
        }
        let hashing = match sink {
            Sink::Plain(w) => w,
            Sink::Zstd(mut d) => {
                d.flush().map_err(write_err)?;
                d.into_inner()
            }
        };
        let HashingWriter {
            inner,
            hasher,
            count,
        } = hashing;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io(dest, "cannot write download", e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io(dest, "cannot fsync download", e))?;
        partial.0 = None;
        Ok(Transfer {
            plain_bytes: count,
            stored_bytes: stored,
            sha256: hex::encode(hasher.finalize()),
        })
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

    /// Deletes the object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &Path) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", key, e)),
        }
    }

    fn err(&self, op: &'static str, key: &Path, e: object_store::Error) -> Error {
        let text = e.to_string();
        let hint = hint_for(
            &text,
            matches!(e, object_store::Error::NotFound { .. }),
            &self.url,
        );
        Error::Bucket {
            op,
            key: format!("{}/{key}", self.url.trim_end_matches('/')),
            message: text,
            hint,
            source: Some(e),
        }
    }

    fn io_err(&self, op: &'static str, key: &Path, e: std::io::Error) -> Error {
        // BufWriter reports store errors as io::Error wrapping the object_store error.
        let text = e.to_string();
        let hint = hint_for(&text, false, &self.url);
        Error::Bucket {
            op,
            key: format!("{}/{key}", self.url.trim_end_matches('/')),
            message: text,
            hint,
            source: None,
        }
    }
}

fn hint_for(text: &str, not_found: bool, url: &str) -> String {
    let has = |s: &str| text.contains(s);
    if not_found || has("NoSuchKey") {
        "no backup is there; list what exists with `hubvault status`".into()
    } else if has("NoSuchBucket") {
        format!(
            "the bucket in --bucket {url} does not exist; check the name and the endpoint (AWS_ENDPOINT_URL)"
        )
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("403")
        || has("Forbidden")
        || has("credential")
    {
        "the store refused our credentials; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the instance role) and the bucket policy".into()
    } else if has("onnection") || has("dns") || has("timed out") || has("error sending request") {
        format!(
            "cannot reach the store of {url}; check AWS_ENDPOINT_URL and the network, then try again"
        )
    } else if has("No space left") {
        "the bucket's disk is full; free space there and try again".into()
    } else {
        "try again; if it keeps failing, check the store's logs".into()
    }
}

/// How hubvault talks to S3: endpoint, timeouts, retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// An S3-compatible endpoint (`AWS_ENDPOINT_URL`); `None` for AWS itself.
    pub endpoint: Option<String>,
    pub connect_timeout: Duration,
    /// For one request, body included.
    pub timeout: Duration,
    pub retries: usize,
    /// Bounds all retries of one request, backoff included.
    pub retry_timeout: Duration,
}

impl S3Settings {
    /// `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `HUBVAULT_S3_CONNECT_TIMEOUT` (10 s),
    /// `HUBVAULT_S3_TIMEOUT` (120 s), `HUBVAULT_S3_RETRIES` (6),
    /// `HUBVAULT_S3_RETRY_TIMEOUT` (120 s).
    pub fn from_env() -> S3Settings {
        S3Settings {
            endpoint: std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .ok()
                .filter(|e| !e.is_empty()),
            connect_timeout: Duration::from_secs(env_secs("HUBVAULT_S3_CONNECT_TIMEOUT", 10)),
            timeout: Duration::from_secs(env_secs("HUBVAULT_S3_TIMEOUT", 120)),
            retries: env_secs("HUBVAULT_S3_RETRIES", 6) as usize,
            retry_timeout: Duration::from_secs(env_secs("HUBVAULT_S3_RETRY_TIMEOUT", 120)),
        }
    }
}

fn s3_store(bucket: &str, s3: &S3Settings) -> object_store::Result<object_store::aws::AmazonS3> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let mut client = ClientOptions::new()
        .with_connect_timeout(s3.connect_timeout)
        .with_timeout(s3.timeout);
    if let Some(ep) = &s3.endpoint {
        // Plain http only for an endpoint the operator named explicitly.
        client = client.with_allow_http(ep.starts_with("http://"));
        b = b
            .with_endpoint(ep.clone())
            .with_virtual_hosted_style_request(false);
    }
    let retry = RetryConfig {
        max_retries: s3.retries,
        retry_timeout: s3.retry_timeout,
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
    };
    b.with_client_options(client).with_retry(retry).build()
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A writer that accepts only the bytes of a local file, in order: fails at the first
/// byte that differs or past the file's end.
struct SameAs {
    local: std::io::BufReader<std::fs::File>,
    compared: u64,
}

impl Write for SameAs {
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

/// Removes the file it names when dropped, unless disarmed (set to `None`).
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
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

/// An upload whose bytes are all sent (or buffered) but which is not yet visible at
/// its key: [`StagedUpload::commit`] makes it appear whole, [`StagedUpload::abort`] (or
/// dropping it) leaves the key as it was.
pub struct StagedUpload {
    bucket: Bucket,
    key: Path,
    writer: BufWriter,
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    stored: u64,
    /// True if and only if the object is stored zstd-compressed.
    zstd: bool,
    file: std::path::PathBuf,
}

impl StagedUpload {
    pub fn key(&self) -> &Path {
        &self.key
    }

    async fn write(&mut self, plain: &[u8]) -> Result<()> {
        let out: Vec<u8>;
        let bytes: &[u8] = match self.encoder.as_mut() {
            None => plain,
            Some(enc) => {
                enc.write_all(plain)
                    .map_err(|e| Error::io(&self.file, "zstd", e))?;
                out = std::mem::take(enc.get_mut());
                &out
            }
        };
        if !bytes.is_empty() {
            self.stored += bytes.len() as u64;
            self.writer
                .write_all(bytes)
                .await
                .map_err(|e| self.bucket.io_err("PUT", &self.key, e))?;
        }
        Ok(())
    }

    async fn finish_encoding(&mut self) -> Result<()> {
        if let Some(enc) = self.encoder.take() {
            let tail = enc.finish().map_err(|e| Error::io(&self.file, "zstd", e))?;
            self.stored += tail.len() as u64;
            self.writer
                .write_all(&tail)
                .await
                .map_err(|e| self.bucket.io_err("PUT", &self.key, e))?;
        }
        Ok(())
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

/// sha256 of a local file, streamed.
pub fn sha256_file(path: &std::path::Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n_total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(path, "cannot read", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), n_total))
}
