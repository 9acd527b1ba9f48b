//! A large upload into a local-directory bucket, written around the page cache.
//!
//! object_store's local uploads `write(2)` every byte into the page cache and `fsync` it
//! at the end. For a database-sized object that costs twice: the copy into freshly
//! allocated page-cache memory (on this project's VMs new memory is the expensive part:
//! 0.3-0.55 s of system time for 242 MiB written into a new file, 0.08 s into pages just
//! freed) and then the whole flush at `fsync`, after the pass. Written with `O_DIRECT`
//! the bytes go from our buffer to the disk while the pass runs (`dd oflag=direct` of
//! 242 MiB: 0.31-0.47 s with its fsync, against 0.81-1.18 s buffered), and the `fsync`
//! at commit finds little left to do. Durability is the same: the file is fsynced, then
//! renamed into place, then its directory fsynced, as object_store does with fsync on.
//!
//! The staging file is named as object_store names its own (`{key}#{n}`), so listings
//! skip it the same way, and it is removed when the upload is aborted or dropped. A file
//! system that refuses `O_DIRECT` (older tmpfs) gets plain writes.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Bytes per direct write of gathered unaligned bytes (a multiple of [`ALIGN`]): large
/// writes keep the disk busy.
const WRITE_SIZE: usize = 8 * 1024 * 1024;
/// Aligned chunks gathered into one `pwritev`, at least: large direct writes keep the
/// disk busy (with [`QUEUED`], what the writer holds is bounded:
/// [`LocalUpload::peak_held`]). 4 MiB with 4 chunks queued measured a forced backup of
/// 979 MiB at 4.54 s against 4.07 (5 pairs, load average 5.5): not kept without a quiet
/// rerun; 8 and 8 give main's time (docs/BENCHMARKS.md).
const BATCH_SIZE: usize = 8 * 1024 * 1024;
/// Alignment of a direct write's memory, offset and length (the largest logical block
/// size in use).
pub(crate) const ALIGN: usize = 4096;
/// Chunks waiting for the writer thread: about one write's worth, so the producer rarely
/// waits while a write is on its way to the disk.
const QUEUED: usize = 8;

/// Bytes of chunks an upload's writer holds (queued, batched or being copied), and the
/// most it held at once.
#[derive(Debug, Default)]
pub(crate) struct Held {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Held {
    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A staged local upload: bytes are sent to a writer thread; [`LocalUpload::commit`]
/// renames the finished file into place.
pub(crate) struct LocalUpload {
    dest: PathBuf,
    staging: PathBuf,
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    worker: Option<tokio::task::JoinHandle<std::io::Result<File>>>,
    held: Arc<Held>,
    /// Set once the staging file is renamed or removed.
    done: bool,
}

impl LocalUpload {
    /// Creates the staging file beside `dest` (and any missing directories, fsynced) and
    /// starts its writer thread.
    pub(crate) async fn create(dest: PathBuf) -> std::io::Result<LocalUpload> {
        let d = dest.clone();
        let (file, staging) = tokio::task::spawn_blocking(move || new_staging_file(&d))
            .await
            .map_err(std::io::Error::other)??;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUED);
        let held = Arc::new(Held::default());
        let h = held.clone();
        let worker = tokio::task::spawn_blocking(move || write_all(file, rx, &h));
        Ok(LocalUpload {
            dest,
            staging,
            tx: Some(tx),
            worker: Some(worker),
            held,
            done: false,
        })
    }

    /// The most bytes of chunks its writer held at once (queued, batched, being
    /// copied): at most `QUEUED` chunks and a batch, whatever the object's size (test
    /// `a_writer_holds_a_bounded_number_of_chunks_whatever_the_size`). The unaligned
    /// bytes' buffer, made only when such bytes come, is apart.
    #[cfg(test)]
    pub(crate) fn peak_held(&self) -> usize {
        self.held.peak.load(Ordering::Relaxed)
    }

    /// The file being written (for errors).
    pub(crate) fn staging(&self) -> &Path {
        &self.staging
    }

    /// Queues the next bytes. A failed write shows up here (or at commit) as the
    /// writer's own error.
    pub(crate) async fn write(&mut self, bytes: Bytes) -> std::io::Result<()> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(std::io::Error::other("upload already finished"));
        };
        let n = bytes.len();
        self.held.add(n);
        if tx.send(bytes).await.is_ok() {
            return Ok(());
        }
        self.held.release(n);
        // The writer stopped: its error says why.
        self.tx = None;
        match self.join().await {
            Err(e) => Err(e),
            Ok(_) => Err(std::io::Error::other("the writer stopped early")),
        }
    }

    async fn join(&mut self) -> std::io::Result<File> {
        match self.worker.take() {
            Some(w) => w.await.map_err(std::io::Error::other)?,
            None => Err(std::io::Error::other("upload already finished")),
        }
    }

    /// Waits for the last bytes, fsyncs the file, renames it to its key and fsyncs the
    /// directory: the object appears whole, durably, or not at all.
    pub(crate) async fn commit(mut self) -> std::io::Result<String> {
        self.tx = None;
        let file = self.join().await?;
        let (staging, dest) = (self.staging.clone(), self.dest.clone());
        let published = tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            // The file's tag as the local store will report it at the key: the rename
            // keeps inode, size and mtime, and nothing writes to the file after this.
            let e_tag = local_e_tag(&file.metadata()?);
            drop(file);
            std::fs::rename(&staging, &dest)?;
            sync_parent(&dest)?;
            Ok(e_tag)
        })
        .await
        .map_err(std::io::Error::other)?;
        if published.is_ok() {
            self.done = true;
        }
        // On an error Drop removes the staging file, if the rename did not take it.
        published
    }

    /// Abandons the upload and removes the staging file.
    pub(crate) async fn abort(mut self) {
        self.tx = None;
        let _ = self.join().await;
        let staging = self.staging.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(staging)).await;
        self.done = true;
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Neither committed nor aborted (an error or a cancelled task): the writer ends
        // when its channel closes; the file goes now (unlinking an open file is fine).
        self.tx = None;
        let staging = self.staging.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || std::fs::remove_file(staging))),
            Err(_) => drop(std::fs::remove_file(staging)),
        }
    }
}

/// `{dest}#{n}` for the first free `n`, created (with its missing directories), switched
/// to direct I/O where the file system allows it.
fn new_staging_file(dest: &Path) -> std::io::Result<(File, PathBuf)> {
    let mut n = 1u32;
    loop {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let path = PathBuf::from(name);
        match File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                // Set after creation: an open(2) with O_DIRECT that the file system
                // refuses would leave the file created behind an error.
                let _ = set_direct(&f, true);
                return Ok((f, path));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => create_parent_dirs(dest)?,
            Err(e) => return Err(e),
        }
    }
}

/// Creates `dest`'s missing parent directories and fsyncs each one whose entries
/// changed, up to the first that existed (as object_store does with fsync on).
fn create_parent_dirs(dest: &Path) -> std::io::Result<()> {
    let parent = dest
        .parent()
        .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no parent directory"))?;
    let mut first_existing = parent;
    while !first_existing.exists() {
        match first_existing.parent() {
            Some(p) => first_existing = p,
            None => break,
        }
    }
    std::fs::create_dir_all(parent)?;
    let mut dir = parent;
    loop {
        File::open(dir)?.sync_all()?;
        if dir == first_existing {
            return Ok(());
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => return Ok(()),
        }
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(p) => File::open(p)?.sync_all(),
        None => Ok(()),
    }
}

fn set_direct(f: &File, on: bool) -> std::io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(f)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags.difference(OFlags::DIRECT)
    };
    fcntl_setfl(f, flags)?;
    Ok(())
}

/// Memory for one chunk of a feed, aligned for a direct write: an aligned window into a
/// slightly larger allocation (no unsafe allocation needed). Filled, it becomes [`Bytes`]
/// that the writer thread hands to the disk as they are, without a copy.
pub(crate) struct AlignedChunk {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedChunk {
    /// `len` zeroed bytes whose start is aligned to [`ALIGN`].
    pub(crate) fn zeroed(len: usize) -> AlignedChunk {
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedChunk { raw, start, len }
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// Its first `n` bytes, shared without a copy.
    pub(crate) fn freeze(mut self, n: usize) -> Bytes {
        self.len = n.min(self.len);
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for AlignedChunk {
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// A chunk a direct write can take as it is: aligned memory, a whole number of blocks.
fn is_aligned(b: &Bytes) -> bool {
    (b.as_ptr() as usize).is_multiple_of(ALIGN) && b.len().is_multiple_of(ALIGN) && !b.is_empty()
}

/// The writer thread: aligned chunks ([`AlignedChunk`], what a feed sends) are written
/// as they are, several with one `pwritev`; any other bytes are gathered into an aligned
/// buffer (one copy, the buffer made when the first such bytes come) and written whole.
/// A feed's last chunk is aligned but usually of an odd length: held back, it is written
/// as it is through the page cache if nothing follows it.
fn write_all(
    file: File,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    held: &Held,
) -> std::io::Result<File> {
    let direct = rustix::fs::fcntl_getfl(&file)
        .map(|f| f.contains(rustix::fs::OFlags::DIRECT))
        .unwrap_or(false);
    let mut w = Writer {
        file,
        direct,
        raw: Vec::new(),
        fill: 0,
        offset: 0,
        batch: Vec::new(),
        batched: 0,
        held,
    };
    let mut tail: Option<Bytes> = None;
    while let Some(chunk) = rx.blocking_recv() {
        if let Some(t) = tail.take() {
            // Not the last after all: its bytes go through the buffer.
            w.take(t)?;
        }
        let odd_end = !chunk.len().is_multiple_of(ALIGN);
        if w.direct && w.fill == 0 && odd_end && (chunk.as_ptr() as usize).is_multiple_of(ALIGN) {
            tail = Some(chunk);
            continue;
        }
        w.take(chunk)?;
    }
    w.finish(tail)
}

/// The state of [`write_all`].
struct Writer<'h> {
    file: File,
    direct: bool,
    /// The buffer of unaligned bytes (empty until needed), `WRITE_SIZE` from its first
    /// aligned byte; `fill` bytes in it.
    raw: Vec<u8>,
    fill: usize,
    offset: u64,
    batch: Vec<Bytes>,
    batched: usize,
    held: &'h Held,
}

impl Writer<'_> {
    fn take(&mut self, chunk: Bytes) -> std::io::Result<()> {
        if self.direct && self.fill == 0 && is_aligned(&chunk) {
            self.batched += chunk.len();
            self.batch.push(chunk);
            if self.batched >= BATCH_SIZE {
                self.flush_batch()?;
            }
            return Ok(());
        }
        self.flush_batch()?;
        self.gather(&chunk)?;
        self.held.release(chunk.len());
        Ok(())
    }

    fn flush_batch(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        write_batch(&self.file, &mut self.direct, &self.batch, self.offset)?;
        self.offset += self.batched as u64;
        self.held.release(self.batched);
        self.batch.clear();
        self.batched = 0;
        Ok(())
    }

    fn buf(&mut self) -> &mut [u8] {
        if self.raw.is_empty() {
            self.raw = vec![0u8; WRITE_SIZE + ALIGN];
        }
        let start = self.raw.as_ptr().align_offset(ALIGN);
        &mut self.raw[start..start + WRITE_SIZE]
    }

    fn gather(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let fill = self.fill;
            let n = (WRITE_SIZE - fill).min(data.len());
            self.buf()[fill..fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == WRITE_SIZE {
                let (offset, mut direct) = (self.offset, self.direct);
                let start = self.raw.as_ptr().align_offset(ALIGN);
                write_at(
                    &self.file,
                    &mut direct,
                    &self.raw[start..start + WRITE_SIZE],
                    offset,
                )?;
                self.direct = direct;
                self.offset += WRITE_SIZE as u64;
                self.fill = 0;
            }
        }
        Ok(())
    }

    fn finish(mut self, tail: Option<Bytes>) -> std::io::Result<File> {
        self.flush_batch()?;
        if let Some(t) = tail {
            // The last bytes, of an odd length: through the page cache.
            if self.direct {
                set_direct(&self.file, false)?;
                self.direct = false;
            }
            write_at(&self.file, &mut self.direct, &t, self.offset)?;
            self.offset += t.len() as u64;
            self.held.release(t.len());
        }
        if self.fill > 0 {
            if self.direct && !self.fill.is_multiple_of(ALIGN) {
                // The unaligned tail goes through the page cache.
                set_direct(&self.file, false)?;
                self.direct = false;
            }
            let start = self.raw.as_ptr().align_offset(ALIGN);
            let mut direct = self.direct;
            write_at(
                &self.file,
                &mut direct,
                &self.raw[start..start + self.fill],
                self.offset,
            )?;
        }
        Ok(self.file)
    }
}

/// Aligned chunks written one after the other from `offset`, with one `pwritev` (a
/// short write, e.g. at a full disk, or a refused direct write: the rest one by one
/// through [`write_at`], which reports the error).
fn write_batch(
    file: &File,
    direct: &mut bool,
    batch: &[Bytes],
    offset: u64,
) -> std::io::Result<()> {
    let slices: Vec<std::io::IoSlice<'_>> =
        batch.iter().map(|b| std::io::IoSlice::new(b)).collect();
    let total: usize = batch.iter().map(|b| b.len()).sum();
    let mut done = rustix::io::pwritev(file, &slices, offset).unwrap_or(0);
    if done == total {
        return Ok(());
    }
    let mut at = offset;
    for b in batch {
        let skip = done.min(b.len());
        done -= skip;
        if skip < b.len() {
            write_at(file, direct, &b[skip..], at + skip as u64)?;
        }
        at += b.len() as u64;
    }
    Ok(())
}

/// One write at `offset`; a direct write the file system refuses (`EINVAL`) is done
/// again through the page cache, which then stays in use.
fn write_at(file: &File, direct: &mut bool, buf: &[u8], offset: u64) -> std::io::Result<()> {
    match file.write_all_at(buf, offset) {
        Err(e) if *direct && e.raw_os_error() == Some(libc::EINVAL) => {
            set_direct(file, false)?;
            *direct = false;
            file.write_all_at(buf, offset)
        }
        r => r,
    }
}

/// The ETag object_store's `LocalFileSystem` gives a file (`get_etag` in its local.rs,
/// 0.14: inode, modification time in microseconds and size, in hex). It must stay the
/// same as the store's: `latest.json` records it and restore compares it with a HEAD
/// (test `store::local::tests::a_committed_local_upload_reports_the_etag_the_store_gives_it`).
fn local_e_tag(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{:x}-{:x}\"", m.ino(), mtime, m.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::store::{Bucket, Encoding, codec::Landed};
    use object_store::path::Path as Key;

    /// 8 MiB and an odd tail: one whole direct write and a tail through the page cache.
    const SIZE: usize = WRITE_SIZE + 4096 * 3 + 1001;

    /// Content that is neither zeros nor repeating (a fixed seed, for failures that
    /// reproduce): a misplaced or lost write cannot go unseen.
    fn content(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Every file under `dir`, relative, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(dir).unwrap().to_owned();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    async fn stage(
        bucket: &Bucket,
        key: &Key,
        data: Vec<u8>,
    ) -> super::super::staged::StagedUpload {
        let total = data.len() as u64;
        let (_, _, mut staged) = bucket
            .stage_with(
                &[(key.clone(), Encoding::Plain)],
                total,
                true,
                Landed::Sha256(String::new()),
                &NoProgress,
                move |feed| feed.write(&data),
            )
            .await
            .unwrap();
        staged.pop().unwrap()
    }

    /// A producer far ahead of the disk (40 MiB fed at once, in the feed's aligned 1 MiB
    /// chunks): the writer never holds more than `QUEUED` chunks, one waiting to be
    /// queued, and one batch (17 MiB), and the file is the bytes fed.
    #[tokio::test]
    async fn a_writer_holds_a_bounded_number_of_chunks_whatever_the_size() {
        // The feed's chunk size (the test's own: the bound is in the chunks it sends).
        const CHUNK: usize = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("object");
        let mut up = LocalUpload::create(dest.clone()).await.unwrap();
        let data = content((40 << 20) + 777);
        for piece in data.chunks(CHUNK) {
            let mut c = AlignedChunk::zeroed(piece.len());
            c.as_mut().copy_from_slice(piece);
            up.write(c.freeze(piece.len())).await.unwrap();
        }
        let peak = up.peak_held();
        up.commit().await.unwrap();
        assert!(std::fs::read(&dest).unwrap() == data, "the file differs");
        let bound = QUEUED * CHUNK + CHUNK + BATCH_SIZE;
        assert!(
            peak <= bound,
            "the writer held {peak} bytes at once, over {bound}"
        );
        assert!(peak >= CHUNK, "the counter counts ({peak})");
    }

    #[tokio::test]
    async fn a_large_upload_to_a_local_directory_lands_whole_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open(&format!("file://{}", dir.path().display())).unwrap();
        let key = Key::from("org/datahub/a/connector/b/sqlite.db");
        let data = content(SIZE);
        let staged = stage(&bucket, &key, data.clone()).await;
        // Written but not visible: not at its key, not in a listing.
        assert!(bucket.head(&key).await.unwrap().is_none());
        assert!(bucket.list(&Key::from("org")).await.unwrap().is_empty());
        assert_eq!(staged.commit().await.unwrap(), SIZE as u64);
        assert!(
            bucket.get_bytes(&key).await.unwrap() == data,
            "the object differs"
        );
        assert_eq!(files(dir.path()), ["org/datahub/a/connector/b/sqlite.db"]);
    }

    /// Aligned chunks (what `Feed::copy_from` sends) go to the disk as they are, other
    /// bytes through the aligned buffer; mixed in any order, the object is the bytes fed.
    #[tokio::test]
    async fn aligned_and_unaligned_chunks_mixed_land_as_the_bytes_fed() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open(&format!("file://{}", dir.path().display())).unwrap();
        let key = Key::from("k/sqlite.db");
        let data = content(2 * WRITE_SIZE + 4096 * 5 + 77);
        let fed = data.clone();
        let (_, _, mut staged) = bucket
            .stage_with(
                &[(key.clone(), Encoding::Plain)],
                data.len() as u64,
                true,
                Landed::Sha256(String::new()),
                &NoProgress,
                move |feed| {
                    let (a, rest) = fed.split_at(WRITE_SIZE + 2 * 4096);
                    let (b, c) = rest.split_at(12_345);
                    feed.copy_from(&mut &a[..], Path::new("a"))?;
                    feed.write(b)?;
                    feed.copy_from(&mut &c[..], Path::new("c"))?;
                    Ok(())
                },
            )
            .await
            .unwrap();
        staged.pop().unwrap().commit().await.unwrap();
        assert!(
            bucket.get_bytes(&key).await.unwrap() == data,
            "the object differs"
        );
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_local_upload_leaves_the_key_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open(&format!("file://{}", dir.path().display())).unwrap();
        let key = Key::from("k/sqlite.db");
        let old = content(SIZE);
        stage(&bucket, &key, old.clone())
            .await
            .commit()
            .await
            .unwrap();
        let mut new = old.clone();
        new[5] ^= 1;
        stage(&bucket, &key, new.clone()).await.abort().await;
        assert!(bucket.get_bytes(&key).await.unwrap() == old);
        assert_eq!(files(dir.path()), ["k/sqlite.db"]);
        drop(stage(&bucket, &key, new).await);
        // The drop removes the staging file on the blocking pool: wait for it, bounded.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while files(dir.path()).len() > 1 && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(files(dir.path()), ["k/sqlite.db"]);
        assert!(bucket.get_bytes(&key).await.unwrap() == old);
    }

    #[tokio::test]
    async fn a_committed_local_upload_reports_the_etag_the_store_gives_it() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::open(&format!("file://{}", dir.path().display())).unwrap();
        let key = Key::from("org/datahub/a/connector/b/sqlite.db");
        let committed = stage(&bucket, &key, content(SIZE))
            .await
            .commit_tagged()
            .await
            .unwrap();
        assert_eq!(committed.stored, SIZE as u64);
        let head = bucket
            .head(&key)
            .await
            .unwrap()
            .expect("the object is at its key");
        assert_eq!(
            committed.e_tag, head.e_tag,
            "restore would not know our own upload"
        );
        assert!(committed.e_tag.is_some());
    }
}

/// A staging file that a killed upload left in a local-directory bucket (`{key}#{n}`):
/// invisible to LIST and GET (object_store skips such names), as large as the object was
/// going to be, and never removed by anything else.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StagingLeft {
    /// The key it was staging, with its `#n`.
    pub key: String,
    pub bytes: u64,
    #[serde(skip)]
    pub(crate) path: PathBuf,
}

/// True if and only if object_store's local listing skips `name` as a staging file: what
/// follows its first `#` is one or more ASCII digits (object_store 0.14,
/// `local::is_valid_file_path`).
fn is_staging_name(name: &[u8]) -> bool {
    match name.iter().position(|b| *b == b'#') {
        Some(i) => i + 1 < name.len() && name[i + 1..].iter().all(u8::is_ascii_digit),
        None => false,
    }
}

/// The staging files under `dir` (the directory of the key prefix `prefix`) last
/// modified before `before`. Walks without following symbolic links: a link is neither
/// entered nor reported, whatever its name.
pub(crate) fn staging_left(
    dir: &Path,
    prefix: &str,
    before: std::time::SystemTime,
) -> std::io::Result<Vec<StagingLeft>> {
    use std::os::unix::ffi::OsStrExt;
    let mut found = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), prefix.trim_matches('/').to_string())];
    while let Some((d, key)) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            // The prefix does not exist (yet): nothing was staged under it.
            Err(e) if e.kind() == ErrorKind::NotFound && d == dir => return Ok(found),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let child = if key.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{key}/{}", name.to_string_lossy())
            };
            let ft = entry.file_type()?;
            if ft.is_dir() {
                todo.push((entry.path(), child));
            } else if ft.is_file() && is_staging_name(name.as_bytes()) {
                let m = entry.metadata()?;
                if m.modified()? < before {
                    found.push(StagingLeft {
                        key: child,
                        bytes: m.len(),
                        path: entry.path(),
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

/// Removes one file [`staging_left`] found, if it is still a regular file (never a link
/// put there meanwhile). Gone already is fine.
pub(crate) fn remove_staging(s: &StagingLeft) -> std::io::Result<()> {
    match std::fs::symlink_metadata(&s.path) {
        Ok(m) if m.file_type().is_file() => match std::fs::remove_file(&s.path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod staging_tests {
    use super::is_staging_name;

    #[test]
    fn a_name_is_staging_exactly_when_object_stores_listing_skips_it() {
        for yes in ["sqlite.db#1", "x.zst#12", "x#007", "#1"] {
            assert!(is_staging_name(yes.as_bytes()), "{yes}");
        }
        // object_store lists these: its rule looks past the FIRST `#` only.
        for no in ["sqlite.db", "a#", "a#1b", "a#1.zst", "a1", "a#b#1"] {
            assert!(!is_staging_name(no.as_bytes()), "{no}");
        }
    }
}
