//! The platform's backup rule for one connector: decide, snapshot, check, upload.
//!
//! 1. Read the ids from the live database (one small query) and settle the key.
//! 2. One HEAD of the canonical key. Missing, or older than `max_age`, or `force`:
//!    go on. Otherwise stop here: `skipped (fresh)`, no snapshot taken.
//! 3. ONE pass over a consistent state of the live database ([`crate::sqlite::snapshot`]:
//!    no temp copy in WAL mode): its pages go to the sha256, to the canonical upload
//!    (staged: not visible) and to the version's compressor (a small temp file: the
//!    version's key needs the sha256, known only at the end), while the same state is
//!    checked on another thread (`integrity_check` or `quick_check`, `foreign_key_check`,
//!    ids, row counts). A state that fails its check is never uploaded: the staged uploads
//!    are aborted, the canonical object and every version stay.
//! 4. Unless the image is byte-identical to the last version, write a new immutable
//!    version (zstd) and its manifest. Only then replace the canonical object (a plain
//!    SQLite file, atomically) and `latest.json`. An unchanged database still refreshes
//!    the canonical object, so the platform's 24-hour clock sees a fresh backup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::blocking::blocking;
use crate::catalog::history;
use crate::error::{Error, Result};
use crate::model::ids::{ConnectorId, DatahubId, OrgSlug};
use crate::model::layout::{ConnectorKey, DbFileName, KeyKind, VersionId};
use crate::model::manifest::{self, Manifest};
use crate::model::time::fmt_age;
use crate::progress::Progress;
use crate::sqlite::db;
use crate::sqlite::fsio;
use crate::sqlite::lock::ConnectorLock;
use crate::sqlite::snapshot;
use crate::store::staged::{Landed, StagedUpload};
use crate::store::{Bucket, Encoding, WriteMode, encoder_to};

pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// zstd level of kept versions. On connector databases level 1 is both faster (~4x)
/// and smaller than level 3 (docs/BENCHMARKS.md, bench/compression.sh).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub db: PathBuf,
    pub org: OrgSlug,
    /// Checked against the database when given.
    pub datahub: Option<DatahubId>,
    pub connector: Option<ConnectorId>,
    pub max_age: Duration,
    pub force: bool,
    /// Where the snapshot is written; the system temp dir when `None`.
    pub tmp_dir: Option<PathBuf>,
    pub zstd_level: i32,
    /// How long to wait for another backup of the same connector to finish.
    pub lock_wait: Duration,
}

impl BackupOptions {
    pub fn new(db: impl Into<PathBuf>, org: OrgSlug) -> Self {
        BackupOptions {
            db: db.into(),
            org,
            datahub: None,
            connector: None,
            max_age: DEFAULT_MAX_AGE,
            force: false,
            tmp_dir: None,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            lock_wait: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Uploaded,
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub decision: Decision,
    /// Why, in words: "no backup at the key", "backup is 25h old, older than --max-age 24h", …
    pub reason: String,
    pub key: String,
    pub org: OrgSlug,
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    /// Age of the backup that was at the key before this run, if any.
    pub previous_age_seconds: Option<f64>,
    /// Size and sha256 of the uploaded plain file.
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    /// The kept version the canonical object now equals.
    pub version: Option<VersionId>,
    /// True if and only if this run wrote a new version (false: the database was
    /// byte-identical to the last version, only the canonical object was refreshed).
    pub new_version: bool,
    pub stored_bytes: Option<u64>,
    pub check: Option<&'static str>,
    /// Versions the retention policy removed after the upload (set by the caller that
    /// applied it: see `ops::prune::after_upload`).
    pub pruned: Option<usize>,
    pub seconds: f64,
}

/// Runs the platform's backup rule for one connector database.
pub async fn run(
    bucket: &Bucket,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let db_path = opts.db.as_path();
    let file = db_file_name(db_path)?;
    let live = {
        let db_path = db_path.to_path_buf();
        blocking(move || {
            db::refuse_link(&db_path)?;
            db::check_is_sqlite(&db_path)?;
            let conn = db::open_live(&db_path)?;
            let info = db::read_info(&conn, &db_path)?;
            db::require_connector_tables(&conn, &db_path)?;
            Ok(info)
        })
        .await?
    };
    check_given_id(
        opts.datahub,
        live.datahub,
        "--datahub",
        "Integrations.id",
        db_path,
    )?;
    check_given_id(
        opts.connector,
        live.connector,
        "--connector",
        "Integrations.sources[0].id",
        db_path,
    )?;
    let ck = ConnectorKey::new(opts.org.clone(), live.datahub, live.connector);
    let key = ck.canonical(&file);

    // Never two backups of one connector at once (agent vs. a connector's start-up).
    let _lock = ConnectorLock::acquire(db_path, opts.lock_wait).await?;

    let now = chrono::Utc::now();
    let previous = bucket.head(&key).await?;
    let previous_age = previous
        .as_ref()
        .map(|p| (now - p.last_modified).to_std().unwrap_or_default());
    let reason = match (previous_age, opts.force) {
        (_, true) => "--force".to_string(),
        (None, false) => "no backup at the key".to_string(),
        (Some(age), false) if age >= opts.max_age => {
            format!(
                "backup is {} old, older than --max-age {}",
                fmt_age(age),
                fmt_age(opts.max_age)
            )
        }
        (Some(age), false) => {
            return Ok(BackupReport {
                decision: Decision::Skipped,
                reason: format!(
                    "backup is {} old, younger than --max-age {}",
                    fmt_age(age),
                    fmt_age(opts.max_age)
                ),
                key: key.to_string(),
                org: opts.org.clone(),
                datahub: live.datahub,
                connector: live.connector,
                previous_age_seconds: Some(age.as_secs_f64()),
                bytes: None,
                sha256: None,
                version: None,
                new_version: false,
                stored_bytes: None,
                check: None,
                pruned: None,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    };

    // One history per connector, of one database file (docs/DESIGN.md). A latest.json
    // the bucket did not answer for is an error, not "absent": taken for absent, that
    // check is skipped and the latest.json this backup puts replaces ours.
    let latest = history::try_read_latest(bucket, &ck).await?;
    if let Some(m) = &latest {
        check_same_db_file(m, &file, db_path, &ck)?;
    }

    let tmp_dir = opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    // A rollback-journal database is read without a lock: a commit that raced the read
    // fails it, and what it staged is thrown away before the next attempt.
    let mut retry = snapshot::Retry::new();
    let pass = loop {
        match one_pass(bucket, opts, &key, &tmp_dir, progress).await {
            Err(e) if snapshot::is_raced(&e) => {
                let took = snapshot::raced_read_took(&e).unwrap_or_default();
                tracing::debug!(read_took = ?took, "a commit raced the read; again");
                let db = opts.db.clone();
                let mut r = retry;
                retry = blocking(move || {
                    r.again(&db, took, "a commit came during the read")?;
                    Ok(r)
                })
                .await?;
            }
            other => break other?,
        }
    };
    let OnePass {
        sha256,
        bytes: snap_bytes,
        taken_at,
        journal_mode,
        check,
        interrupt,
        canonical,
        spill,
    } = pass;
    // Unchanged since the last version (and that version is there): no new version.
    let unchanged = match &latest {
        Some(m) if m.sha256 == sha256 => bucket.head(&ck.version_data(&m.version)).await?.is_some(),
        _ => false,
    };
    let version = if unchanged {
        None
    } else {
        let v = VersionId::new(taken_at, &sha256);
        match bucket
            .stage_file(
                &spill.file,
                &[(ck.version_data(&v), Encoding::Plain)],
                false,
                &crate::progress::NoProgress,
            )
            .await
        {
            Ok((_, mut staged)) => Some((v, staged.pop().expect("one target"))),
            Err(e) => {
                canonical.abort().await;
                interrupt.interrupt();
                let _ = check.await;
                return Err(e);
            }
        }
    };
    let uploads = Uploads {
        version,
        canonical,
        checked: None,
    };
    let checked = match check.await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            uploads.abort().await;
            return Err(e);
        }
        Err(e) => {
            uploads.abort().await;
            return Err(Error::check(
                format!("snapshot check task failed: {e}"),
                "report this as a bug",
            ));
        }
    };
    if checked.info.datahub != live.datahub || checked.info.connector != live.connector {
        uploads.abort().await;
        return Err(Error::check(
            format!(
                "{}: the ids in the database changed while the backup ran",
                db_path.display()
            ),
            "run the backup again",
        ));
    }
    let latest = if unchanged { latest } else { None };
    let uploads = uploads.with_checked(checked);

    let uploaded_at = chrono::Utc::now();
    let new_version = uploads.version.is_some();
    let checked = uploads.checked.clone().expect("set above");
    let manifest = match (uploads.version, latest) {
        (None, Some(mut m)) => {
            m.uploaded_at = uploaded_at;
            m.snapshot_at = taken_at;
            m
        }
        (Some((version, upload)), _) => {
            let stored_size = upload.commit().await?;
            tracing::debug!(elapsed = ?started.elapsed(), stored_size, "version written");
            let m = Manifest {
                format: manifest::FORMAT,
                org: opts.org.clone(),
                datahub: live.datahub,
                connector: live.connector,
                db_file: file.to_string(),
                name: checked.info.name.clone(),
                source_type: checked.info.source_type.clone(),
                version,
                sha256: sha256.clone(),
                size: snap_bytes,
                stored_size,
                page_size: checked.page_size,
                page_count: checked.page_count,
                journal_mode: journal_mode.clone(),
                rows: checked.rows.clone(),
                check: checked.check.to_string(),
                snapshot_at: taken_at,
                uploaded_at,
                tool: manifest::tool(),
                host: manifest::host_name(),
                canonical: None,
            };
            bucket
                .put_bytes(
                    &ck.version_manifest(&m.version),
                    m.to_json(),
                    WriteMode::Create,
                )
                .await?;
            m
        }
        (None, None) => unreachable!("no new version only when the latest manifest matched"),
    };
    let committed = uploads.canonical.commit_tagged().await?;
    tracing::debug!(elapsed = ?started.elapsed(), "canonical object written");
    // latest.json names the canonical object by the ETag the store answered OUR upload
    // with: restore fetches the (smaller) version only while that object is there.
    let manifest = Manifest {
        canonical: committed.e_tag.map(|e_tag| manifest::CanonicalRecord {
            e_tag,
            size: snap_bytes,
        }),
        ..manifest
    };
    bucket
        .put_bytes(
            &ck.latest_manifest(),
            manifest.to_json(),
            WriteMode::Overwrite,
        )
        .await?;
    write_label(bucket, &ck, &manifest.source_type, &manifest.name).await?;
    // The source object (metadata and tags too), for restore-hub's list of connectors to
    // create in the platform (model/source.rs); one small PUT per upload.
    bucket
        .put_bytes(
            &ck.source(),
            crate::model::source::to_json(&checked.info.source),
            WriteMode::Overwrite,
        )
        .await?;
    let snap_check = checked.check;
    let snap_size = snap_bytes;
    Ok(BackupReport {
        decision: Decision::Uploaded,
        reason,
        key: key.to_string(),
        org: opts.org.clone(),
        datahub: live.datahub,
        connector: live.connector,
        previous_age_seconds: previous_age.map(|a| a.as_secs_f64()),
        bytes: Some(snap_size),
        sha256: Some(sha256),
        version: Some(manifest.version.clone()),
        new_version,
        stored_bytes: Some(manifest.stored_size),
        check: Some(snap_check),
        pruned: None,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The uploads of one backup, staged and not yet visible.
struct Uploads {
    /// The new version and its upload; `None` when the copy equals the latest version.
    version: Option<(VersionId, StagedUpload)>,
    canonical: StagedUpload,
    checked: Option<snapshot::Checked>,
}

impl Uploads {
    fn with_checked(mut self, c: snapshot::Checked) -> Self {
        self.checked = Some(c);
        self
    }

    async fn abort(self) {
        if let Some((_, v)) = self.version {
            v.abort().await;
        }
        self.canonical.abort().await;
    }
}

/// What one pass over the live database produced: the canonical upload staged, the
/// version compressed into a temp file, the check still running.
struct OnePass {
    sha256: String,
    bytes: u64,
    taken_at: chrono::DateTime<chrono::Utc>,
    journal_mode: String,
    check: tokio::task::JoinHandle<Result<snapshot::Checked>>,
    /// Stops the check early when the backup fails anyway.
    interrupt: snapshot::Interrupt,
    canonical: StagedUpload,
    spill: Spill,
}

/// The compressed version, waiting in `--tmp-dir` for the sha256 that names its key.
/// Removed when dropped; the descriptor holds the `flock` a sweeper looks at.
struct Spill {
    file: tempfile::TempPath,
    _owner: std::fs::File,
}

/// Pins a consistent state and reads it ONCE: every byte goes to the sha256, the staged
/// canonical upload and the version's compressor, while the same state is checked on
/// another thread (its verdict is awaited by the caller, before anything is committed).
async fn one_pass(
    bucket: &Bucket,
    opts: &BackupOptions,
    key: &object_store::path::Path,
    tmp_dir: &Path,
    progress: &dyn Progress,
) -> Result<OnePass> {
    let started = Instant::now();
    let (pinned, spill) = {
        let (db, tmp_dir) = (opts.db.clone(), tmp_dir.to_path_buf());
        blocking(move || {
            // What killed runs left (a copy, a compressed version) goes first.
            snapshot::sweep_dead_snapshots(&tmp_dir);
            let pinned = snapshot::pin(&db, &tmp_dir)?;
            let (owner, file) = snapshot::locked_temp_file(&tmp_dir, ".zst").map_err(|e| {
                Error::io(
                    &tmp_dir,
                    "cannot create a temp file for the compressed version",
                    e,
                )
            })?;
            Ok((
                pinned,
                Spill {
                    file,
                    _owner: owner,
                },
            ))
        })
        .await?
    };
    let (taken_at, journal_mode) = (pinned.taken_at, pinned.journal_mode.clone());
    let (image, checker) = pinned.split(true);
    let bytes = image.bytes();
    let interrupt = checker.interrupt_handle();
    let check = tokio::task::spawn_blocking(move || checker.check());
    let (db, spill_path, level) = (opts.db.clone(), spill.file.to_path_buf(), opts.zstd_level);
    let streamed = bucket
        .stage_with(
            &[(key.clone(), Encoding::Plain)],
            bytes,
            true,
            Landed::Sha256(String::new()),
            progress,
            move |feed| {
                let out = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&spill_path)
                    .map_err(|e| Error::io(&spill_path, "cannot open", e))?;
                let out = std::io::BufWriter::with_capacity(1 << 20, out);
                let enc = encoder_to(out, level, Some(bytes))
                    .map_err(|e| snapshot::map_tmp_io(&db, &spill_path, e))?;
                let mut tee = Tee {
                    reader: image.reader(),
                    enc,
                    failed: None,
                };
                let sent = feed.copy_from(&mut tee, &db);
                if let Some(e) = tee.failed.take() {
                    return Err(snapshot::map_tmp_io(&db, &spill_path, e));
                }
                sent?;
                let out = tee
                    .enc
                    .finish()
                    .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                    .map_err(|e| snapshot::map_tmp_io(&db, &spill_path, e))?;
                // A temp file: a crash loses it anyway, so no fsync.
                drop(out);
                Ok(())
            },
        )
        .await;
    let ((), sent, mut staged) = match streamed {
        Ok(s) => s,
        Err(e) => {
            interrupt.interrupt();
            let _ = check.await;
            return Err(e);
        }
    };
    let canonical = staged.pop().expect("one target");
    tracing::debug!(elapsed = ?started.elapsed(), bytes, "one pass: image hashed, staged and compressed");
    if let Err(e) = ensure_same_size(sent.plain_bytes, bytes, &opts.db) {
        canonical.abort().await;
        interrupt.interrupt();
        let _ = check.await;
        return Err(e);
    }
    Ok(OnePass {
        sha256: sent.sha256,
        bytes,
        taken_at,
        journal_mode,
        check,
        interrupt,
        canonical,
        spill,
    })
}

/// The image as the feed reads it, also written into the version's compressor.
struct Tee<'a, W: std::io::Write> {
    reader: snapshot::ImageRead<'a>,
    enc: zstd::stream::write::Encoder<'static, W>,
    /// A failed write to the compressed temp file (the feed's error would blame the read).
    failed: Option<std::io::Error>,
}

impl<W: std::io::Write> std::io::Read for Tee<'_, W> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Write;
        let n = self.reader.read(out)?;
        if let Err(e) = self.enc.write_all(&out[..n]) {
            let kind = e.kind();
            self.failed = Some(e);
            return Err(std::io::Error::new(
                kind,
                "the compressed version could not be written",
            ));
        }
        Ok(n)
    }
}

/// Keeps exactly one label marker per connector, for `status`.
async fn write_label(
    bucket: &Bucket,
    ck: &ConnectorKey,
    source_type: &str,
    name: &str,
) -> Result<()> {
    let label = ck.label(source_type, name);
    let existing = bucket.list(&ck.labels_dir()).await?;
    if !existing.iter().any(|o| o.key == label) {
        bucket
            .put_bytes(&label, Vec::new(), WriteMode::Overwrite)
            .await?;
    }
    for old in existing.iter().filter(|o| o.key != label) {
        if matches!(
            crate::model::layout::parse_key(&old.key),
            Some((_, KeyKind::Label { .. }))
        ) {
            bucket.delete(&old.key).await?;
        }
    }
    Ok(())
}

fn ensure_same_size(uploaded: u64, expected: u64, db: &Path) -> Result<()> {
    if uploaded == expected {
        Ok(())
    } else {
        Err(Error::check(
            format!(
                "{}: the image read was {uploaded} bytes, the snapshot has {expected}",
                db.display()
            ),
            "run the backup again; if it persists, report this as a bug",
        ))
    }
}

/// A connector keeps the history of one database file: `latest.json` and the versions
/// beside the canonical object do not say which file they are of, so a second file name
/// (`foo.db` beside `sqlite.db`) would overwrite the other's history. Refused.
fn check_same_db_file(
    latest: &Manifest,
    file: &DbFileName,
    db: &Path,
    ck: &ConnectorKey,
) -> Result<()> {
    if latest.db_file == file.as_str() {
        return Ok(());
    }
    Err(Error::usage(
        format!(
            "--db {}: connector {} already keeps the backups of its database file {:?} under {} (latest.json); backing up {:?} there would mix two databases in one history",
            db.display(),
            ck.connector,
            latest.db_file,
            ck.prefix(),
            file.as_str()
        ),
        format!(
            "a connector has one database file: back up {} instead; if the connector really moved to {:?}, remove its old backups from the bucket first",
            fsio::parent_dir(db).join(&latest.db_file).display(),
            file.as_str()
        ),
    ))
}

fn check_given_id<T: PartialEq + std::fmt::Display>(
    given: Option<T>,
    stored: T,
    flag: &str,
    column: &str,
    db: &Path,
) -> Result<()> {
    match given {
        Some(g) if g != stored => Err(Error::usage(
            format!(
                "{flag} {g} disagrees with the database {}, whose {column} is {stored}",
                db.display()
            ),
            format!(
                "leave out {flag} (it defaults to the database's id), or pass the database of that connector"
            ),
        )),
        _ => Ok(()),
    }
}

/// The database's file name, which ends the canonical key.
pub fn db_file_name(db: &Path) -> Result<DbFileName> {
    let name = db.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::usage(
            format!("--db {}: no file name", db.display()),
            "pass the path of the connector's sqlite.db",
        )
    })?;
    DbFileName::parse(name)
}

/// The backup's one pass over a rollback-journal database, raced by a real writer at the
/// read's seams (`sqlite::pages::seam`): what reaches the bucket is a committed state.
#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::sqlite::pages::seam::{self, Point};
    use crate::sqlite::testdb::{self, Rows};

    /// About 480 pages (2 MB): more than `rollback::RELOCK_PAGES` (lock #2 re-reads page
    /// 1 only) and more than one 1 MiB read of the copy thread.
    const ROWS: u64 = 8000;

    struct Setup {
        _dir: tempfile::TempDir,
        db: PathBuf,
        bucket_dir: PathBuf,
        opts: BackupOptions,
        writer: Arc<Mutex<rusqlite::Connection>>,
    }

    fn setup() -> Setup {
        setup_in(false)
    }

    /// As [`setup`]; `wal`: the database is in WAL mode.
    fn setup_in(wal: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (hub, bucket_dir, tmp) = (
            dir.path().join("hub"),
            dir.path().join("bucket"),
            dir.path().join("tmp"),
        );
        for d in [&hub, &bucket_dir, &tmp] {
            std::fs::create_dir(d).unwrap();
        }
        let db = hub.join("sqlite.db");
        let writer = testdb::create(&db, ROWS, wal);
        let mut opts = BackupOptions::new(&db, OrgSlug::parse("acme").unwrap());
        opts.force = true;
        opts.tmp_dir = Some(tmp);
        Setup {
            _dir: dir,
            db,
            bucket_dir,
            opts,
            writer: Arc::new(Mutex::new(writer)),
        }
    }

    /// Runs one backup; returns its report and the rows of the canonical object it wrote.
    fn backup(s: &Setup) -> (BackupReport, Rows) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bucket = Bucket::open(&format!("file://{}", s.bucket_dir.display())).unwrap();
        let report = rt
            .block_on(run(&bucket, &s.opts, &crate::progress::NoProgress))
            .unwrap();
        let rows = testdb::rows_of_file(&s.bucket_dir.join(&report.key));
        (report, rows)
    }

    fn writer(
        w: &Arc<Mutex<rusqlite::Connection>>,
    ) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        w.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_backup_whose_unlocked_read_a_commit_tears_is_retried_and_uploads_the_committed_state() {
        let s = setup();
        // Lock #2 is reached once per attempt.
        let attempts = Arc::new(Mutex::new(0u32));
        let _hook = {
            let (w, attempts) = (s.writer.clone(), attempts.clone());
            seam::set(&s.db, move |at| {
                let mut n = attempts.lock().unwrap();
                match at {
                    // Half the file copied: every row rewritten, committed.
                    Point::Reading if *n == 0 => {
                        writer(&w)
                            .execute(
                                "UPDATE Events SET payload = printf('%.*c', ?1, 'd')",
                                [testdb::PAYLOAD as i64],
                            )
                            .unwrap();
                    }
                    Point::BeforeLock2 => *n += 1,
                    _ => {}
                }
            })
        };
        let (report, uploaded) = backup(&s);
        assert_eq!(
            *attempts.lock().unwrap(),
            2,
            "the torn read was refused, once"
        );
        assert_eq!(report.decision, Decision::Uploaded);
        assert_eq!(report.check, Some("integrity_check"));
        assert!(
            uploaded.is_committed_prefix("d") && uploaded.count == ROWS,
            "{uploaded:?}"
        );
        assert_eq!(uploaded, testdb::rows_now(&s.db));
    }

    #[test]
    fn a_backup_never_uploads_the_pages_of_a_transaction_that_spilled_and_rolled_back_during_its_read()
     {
        let s = setup();
        let attempts = Arc::new(Mutex::new(0u32));
        let _hook = {
            let (w, attempts, db) = (s.writer.clone(), attempts.clone(), s.db.clone());
            seam::set(&s.db, move |at| {
                let mut n = attempts.lock().unwrap();
                match at {
                    // Lock #1 dropped: a transaction rewrites every row and spills.
                    Point::Unlocked if *n == 0 => {
                        testdb::spill_open_transaction(&writer(&w), &db, 1, ROWS, 'U')
                    }
                    // The copy is read: it rolls back; counter and size are lock #1's.
                    Point::BeforeLock2 => {
                        if *n == 0 {
                            writer(&w).execute_batch("ROLLBACK").unwrap();
                        }
                        *n += 1;
                    }
                    _ => {}
                }
            })
        };
        let (_, uploaded) = backup(&s);
        assert_eq!(
            *attempts.lock().unwrap(),
            2,
            "the spilled read was refused, once"
        );
        assert!(
            uploaded.is_committed_prefix("c") && uploaded.count == ROWS,
            "{uploaded:?}"
        );
        assert_eq!(uploaded, testdb::rows_now(&s.db));
    }

    #[test]
    fn a_wal_backup_whose_second_connection_sqlite_refuses_checks_on_one_and_uploads_the_pinned_state()
     {
        let s = setup_in(true);
        let w = writer(&s.writer);
        // Every frame in the file, the WAL kept: the backup's reader reads the file alone
        // (read mark 0), under which another connection may restart the WAL.
        let busy: i64 = w
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0);
        drop(w);
        let pinned = testdb::rows_now(&s.db);
        let restarted = Arc::new(Mutex::new(false));
        let _hook = {
            let (w, db, restarted) = (s.writer.clone(), s.db.clone(), restarted.clone());
            seam::set(&s.db, move |at| {
                let mut done = restarted.lock().unwrap();
                if at == Point::WalPinned && !*done {
                    // The snapshot's WAL restarted (sqlite3_snapshot_open refuses it) and
                    // a commit moved the wal-index header (no proof by header either).
                    let other = rusqlite::Connection::open(&db).unwrap();
                    let busy: i64 = other
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                        .unwrap();
                    assert_eq!(busy, 0, "the truncation was not held back");
                    testdb::commit_rows(&writer(&w), ROWS + 1, 1);
                    *done = true;
                }
            })
        };
        let (report, uploaded) = backup(&s);
        assert!(*restarted.lock().unwrap());
        assert_eq!(report.check, Some("integrity_check"));
        assert_eq!(uploaded, pinned, "the upload is the pinned state");
        assert!(uploaded.is_committed_prefix("c"), "{uploaded:?}");
        assert_eq!(testdb::rows_now(&s.db).count, ROWS + 1, "the commit landed");
    }

    /// Runs `change` once on the writer when the first attempt's unlocked copy has read
    /// its first batch; returns the backup's report, the uploaded rows, and the attempts
    /// that reached lock #2 (a rollback-journal read) or the number of pins.
    fn backup_changed_mid_copy(
        s: &Setup,
        change: impl FnOnce(&rusqlite::Connection) + Send + 'static,
    ) -> (BackupReport, Rows, u32) {
        let attempts = Arc::new(Mutex::new(0u32));
        let _hook = {
            let (w, attempts) = (s.writer.clone(), attempts.clone());
            let mut change = Some(change);
            seam::set(&s.db, move |at| {
                let mut n = attempts.lock().unwrap();
                match at {
                    Point::Reading if *n == 0 => {
                        if let Some(f) = change.take() {
                            f(&writer(&w));
                        }
                    }
                    Point::BeforeLock2 | Point::WalPinned => *n += 1,
                    _ => {}
                }
            })
        };
        let (report, uploaded) = backup(s);
        let n = *attempts.lock().unwrap();
        (report, uploaded, n)
    }

    fn page_size_of(path: &Path) -> u32 {
        let b = std::fs::read(path).unwrap();
        match u16::from_be_bytes([b[16], b[17]]) {
            1 => 65536,
            n => n as u32,
        }
    }

    /// A rollback-journal database changed during the backup's unlocked copy in every way
    /// that changes its size or its layout (a VACUUM to another page size, a shrink by a
    /// delete and VACUUM, a growth by a large insert, a switch to WAL mode): the torn copy
    /// is refused and the backup uploads the database as it is after the change, whole.
    #[test]
    fn a_rollback_backup_whose_copy_a_vacuum_a_resize_or_a_switch_to_wal_races_uploads_the_state_after_it()
     {
        type Change = Box<dyn FnOnce(&rusqlite::Connection) + Send>;
        let changes: Vec<(&str, Change, u32, &str)> = vec![
            (
                "VACUUM to 1024-byte pages",
                Box::new(|w| w.execute_batch("PRAGMA page_size=1024; VACUUM").unwrap()),
                1024,
                "delete",
            ),
            (
                "shrunk",
                Box::new(|w| {
                    w.execute_batch("DELETE FROM Events WHERE n > 100; VACUUM")
                        .unwrap()
                }),
                4096,
                "delete",
            ),
            (
                "grown",
                Box::new(|w| testdb::commit_rows(w, ROWS + 1, ROWS)),
                4096,
                "delete",
            ),
            (
                "switched to WAL",
                Box::new(|w| {
                    let m: String = w
                        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                        .unwrap();
                    assert_eq!(m, "wal");
                    testdb::commit_rows(w, ROWS + 1, 5);
                }),
                4096,
                "wal",
            ),
        ];
        for (what, change, page_size, mode) in changes {
            let s = setup();
            let (report, uploaded, attempts) = backup_changed_mid_copy(&s, change);
            assert_eq!(attempts, 2, "{what}: the torn copy was refused, once");
            assert_eq!(report.check, Some("integrity_check"), "{what}");
            assert_eq!(uploaded, testdb::rows_now(&s.db), "{what}");
            assert!(uploaded.is_committed_prefix("c"), "{what}: {uploaded:?}");
            let object = s.bucket_dir.join(&report.key);
            assert_eq!(page_size_of(&object), page_size, "{what}");
            let latest = latest_of(&s, &report);
            assert_eq!(latest.journal_mode, mode, "{what}");
            assert_eq!(latest.page_size, page_size as u64, "{what}");
            assert_eq!(
                latest.size,
                std::fs::metadata(&object).unwrap().len(),
                "{what}"
            );
        }
    }

    /// A WAL database whose writers, once the backup's snapshot is pinned, VACUUM it, run
    /// every kind of checkpoint (PASSIVE copies what it may; RESTART and TRUNCATE wait
    /// for the backup's reader and give up), change the page size (refused in WAL mode)
    /// and commit: with frames not yet in the file, and with every frame in the file (the
    /// reader reads the file alone, under which the WAL may restart): the upload is the
    /// pinned state, checked.
    #[test]
    fn a_wal_backup_uploads_the_pinned_state_whatever_vacuums_and_checkpoints_run_after_the_pin() {
        for backfilled in [false, true] {
            let s = setup_in(true);
            if backfilled {
                let busy: i64 = writer(&s.writer)
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(busy, 0);
            }
            let pinned = testdb::rows_now(&s.db);
            let done = Arc::new(Mutex::new(false));
            let _hook = {
                let (w, db, done) = (s.writer.clone(), s.db.clone(), done.clone());
                seam::set(&s.db, move |at| {
                    let mut done = done.lock().unwrap();
                    if at != Point::WalPinned || *done {
                        return;
                    }
                    *done = true;
                    let w = writer(&w);
                    testdb::commit_rows(&w, ROWS + 1, 50);
                    w.execute_batch("DELETE FROM Events WHERE n % 2 = 0; VACUUM")
                        .unwrap();
                    let other = rusqlite::Connection::open(&db).unwrap();
                    other
                        .busy_timeout(std::time::Duration::from_millis(20))
                        .unwrap();
                    for mode in ["PASSIVE", "RESTART", "TRUNCATE", "PASSIVE"] {
                        // Busy or not, it must not move what the pinned reader sees.
                        let _ =
                            other.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                                r.get::<_, i64>(0)
                            });
                        testdb::commit_rows(&w, ROWS + 1000, 1);
                        w.execute("DELETE FROM Events WHERE n = ?1", [ROWS as i64 + 1000])
                            .unwrap();
                    }
                    w.execute_batch("PRAGMA page_size=1024; VACUUM").unwrap();
                    testdb::commit_rows(&w, ROWS + 2000, 3);
                })
            };
            let (report, uploaded) = backup(&s);
            assert!(*done.lock().unwrap());
            assert_eq!(report.check, Some("integrity_check"));
            assert_eq!(
                uploaded, pinned,
                "backfilled={backfilled}: the upload is the pinned state"
            );
            let now = testdb::rows_now(&s.db);
            assert_eq!(now.count, ROWS / 2 + 25 + 3, "the writers' commits landed");
        }
    }

    /// A writer that, seeded, does everything a connector or an operator may do to the
    /// database while backups run one after another: commits that insert, delete and
    /// rewrite rows, a transaction that spills pages into the file and rolls back,
    /// VACUUM, every checkpoint kind, the journal mode switched WAL <-> DELETE, the page
    /// size changed by a VACUUM. It logs the rows of every state it committed. Every
    /// backup uploads exactly one of them, checked. Bounded: 6 backups, the writer stops
    /// after them (or 30 s).
    #[test]
    fn backups_under_a_writer_that_vacuums_checkpoints_and_switches_modes_upload_only_states_it_committed()
     {
        for seed in [1u64, 2, 3] {
            let s = setup_in(seed % 2 == 0);
            let committed = Arc::new(Mutex::new(vec![testdb::rows_now(&s.db)]));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer_thread = {
                let (w, db, committed, stop) = (
                    s.writer.clone(),
                    s.db.clone(),
                    committed.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut rnd = move |n: u64| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % n
                    };
                    let (mut next, mut ops) = (ROWS + 1, 0u32);
                    let started = std::time::Instant::now();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(30)
                    {
                        let w = writer(&w);
                        let log = |w: &rusqlite::Connection| {
                            committed.lock().unwrap().push(testdb::rows(w))
                        };
                        match rnd(10) {
                            0..=2 => {
                                let k = 1 + rnd(300);
                                testdb::commit_rows(&w, next, k);
                                next += k;
                                log(&w);
                            }
                            3 => {
                                let m = 2 + rnd(5);
                                w.execute(
                                    "DELETE FROM Events WHERE n % ?1 = ?2",
                                    [m as i64, rnd(m) as i64],
                                )
                                .unwrap();
                                log(&w);
                            }
                            4 => {
                                let mark = ['d', 'e', 'f'][rnd(3) as usize];
                                w.execute(
                                    "UPDATE Events SET payload = printf('%.*c', ?1, ?2) WHERE n % 3 = 0",
                                    rusqlite::params![testdb::PAYLOAD as i64, mark.to_string()],
                                )
                                .unwrap();
                                log(&w);
                            }
                            5 => w.execute_batch("VACUUM").unwrap(),
                            6 => {
                                let mode =
                                    ["PASSIVE", "FULL", "RESTART", "TRUNCATE"][rnd(4) as usize];
                                w.busy_timeout(Duration::from_millis(20)).unwrap();
                                let _ = w.query_row(
                                    &format!("PRAGMA wal_checkpoint({mode})"),
                                    [],
                                    |r| r.get::<_, i64>(0),
                                );
                                w.busy_timeout(Duration::from_secs(5)).unwrap();
                            }
                            7 => {
                                // Refused (busy) while a backup's WAL reader is pinned.
                                let mode = if rnd(2) == 0 { "WAL" } else { "DELETE" };
                                w.busy_timeout(Duration::from_millis(20)).unwrap();
                                let _ =
                                    w.query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| {
                                        r.get::<_, String>(0)
                                    });
                                w.busy_timeout(Duration::from_secs(5)).unwrap();
                            }
                            8 => {
                                // Takes effect in rollback-journal mode only.
                                let ps = [1024, 2048, 4096, 8192][rnd(4) as usize];
                                w.execute_batch(&format!("PRAGMA page_size={ps}; VACUUM"))
                                    .unwrap();
                            }
                            _ => {
                                let mode: String = w
                                    .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                                    .unwrap();
                                if mode == "delete" {
                                    let to = next.saturating_sub(1).max(1);
                                    testdb::spill_open_transaction(&w, &db, 1, to, 'U');
                                    w.execute_batch("ROLLBACK").unwrap();
                                    w.execute_batch("PRAGMA cache_size=-2000").unwrap();
                                }
                            }
                        }
                        drop(w);
                        ops += 1;
                        std::thread::sleep(Duration::from_millis(rnd(4)));
                    }
                    ops
                })
            };
            let mut uploaded = Vec::new();
            for _ in 0..6 {
                let (report, rows) = backup(&s);
                assert_eq!(report.decision, Decision::Uploaded);
                uploaded.push(rows);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let ops = writer_thread.join().unwrap();
            assert!(ops > 0, "seed {seed}: the writer ran");
            let committed = committed.lock().unwrap();
            for (i, u) in uploaded.iter().enumerate() {
                assert!(
                    committed.contains(u),
                    "seed {seed}: backup {i} uploaded {u:?}, a state the writer never committed"
                );
            }
        }
    }

    /// Moves `from` and its `-wal` and `-shm` to `to` (and its side names).
    /// The manifest `latest.json` of the backup `report` describes, read from the bucket.
    fn latest_of(s: &Setup, report: &BackupReport) -> Manifest {
        Manifest::from_json(
            &std::fs::read(
                s.bucket_dir
                    .join(report.key.trim_end_matches("sqlite.db"))
                    .join("hubvault/latest.json"),
            )
            .unwrap(),
            "latest.json",
        )
        .unwrap()
    }

    /// Once, when the backup of `db` reaches `point`: `db` (with its side files) moved to
    /// `aside`, `new_db` moved in at its path. Gives whether it happened, and the hook
    /// (the swap is armed while it lives).
    fn swap_at(
        db: &Path,
        point: Point,
        new_db: &Path,
        aside: &Path,
    ) -> (Arc<Mutex<bool>>, seam::Hook) {
        let replaced = Arc::new(Mutex::new(false));
        let (at_path, new_db, aside, done) = (
            db.to_path_buf(),
            new_db.to_path_buf(),
            aside.to_path_buf(),
            replaced.clone(),
        );
        let hook = seam::set(db, move |at| {
            let mut done = done.lock().unwrap();
            if at == point && !*done {
                *done = true;
                move_with_side_files(&at_path, &aside);
                move_with_side_files(&new_db, &at_path);
            }
        });
        (replaced, hook)
    }

    fn move_with_side_files(from: &Path, to: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let (a, b) = (
                crate::sqlite::fsio::side_path(from, suffix),
                crate::sqlite::fsio::side_path(to, suffix),
            );
            if a.exists() {
                std::fs::rename(a, b).unwrap();
            }
        }
    }

    /// The database at the path is replaced, with its side files, by another WAL
    /// database (a restore by hand, a connector that rebuilds its database) after the
    /// backup's page reader opened the old file and before its connection opened the
    /// path: the reader's file and the connection's are two databases. The backup must
    /// not upload the old file's pages under the new one's WAL frames (which the checks,
    /// run on the new database, pass): it uploads the new database whole.
    #[test]
    fn a_wal_database_replaced_by_another_after_the_reader_opened_it_is_never_uploaded_mixed() {
        let s = setup_in(true);
        // The new database: the same connector (its ids) as a restore by hand would put
        // back, an older state of it: its pages in its file, and its newest commits (a
        // few rows deleted, new pages, page 1) in its WAL only.
        let other = tempfile::tempdir().unwrap();
        let new_db = other.path().join("sqlite.db");
        writer(&s.writer)
            .execute("VACUUM INTO ?1", [new_db.to_str().unwrap()])
            .unwrap();
        {
            // The old database moves on (every row rewritten in place, 'd'), its pages in
            // its file: a mixed image would show them.
            let w = writer(&s.writer);
            w.execute(
                "UPDATE Events SET payload = printf('%.*c', ?1, 'd')",
                [testdb::PAYLOAD as i64],
            )
            .unwrap();
            let busy: i64 = w
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .unwrap();
            assert_eq!(busy, 0);
        }
        let new_writer = rusqlite::Connection::open(&new_db).unwrap();
        new_writer
            .pragma_update(None, "journal_mode", "wal")
            .unwrap();
        new_writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap();
        new_writer
            .execute("DELETE FROM Events WHERE n % 100 = 0", [])
            .unwrap();
        testdb::commit_rows(&new_writer, ROWS + 1, 500);
        let new_rows = testdb::rows_now(&new_db);
        let aside = other.path().join("old.db");
        let (replaced, _hook) = swap_at(&s.db, Point::Opened, &new_db, &aside);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bucket = Bucket::open(&format!("file://{}", s.bucket_dir.display())).unwrap();
        let mut opts = s.opts.clone();
        // The new database names other ids than the one the backup read first.
        opts.datahub = None;
        let got = rt.block_on(run(&bucket, &opts, &crate::progress::NoProgress));
        assert!(*replaced.lock().unwrap());
        drop(new_writer);
        match got {
            Ok(report) => {
                let uploaded = s.bucket_dir.join(&report.key);
                let c = rusqlite::Connection::open_with_flags(
                    &uploaded,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let ok: String = c
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(ok, "ok", "the upload is a mix of two databases");
                assert_eq!(testdb::rows_of_file(&uploaded), new_rows);
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Closes every connection of ours to `db` (the last one checkpoints and removes the
    /// WAL) and opens `w` anew with a read: a fresh, empty WAL and a fresh wal-index, whose
    /// header holds no salt and no size, the same for any database.
    fn fresh_empty_wal(w: &mut rusqlite::Connection, db: &Path) {
        *w = rusqlite::Connection::open_in_memory().unwrap();
        assert!(!crate::sqlite::fsio::side_path(db, "-wal").exists());
        *w = rusqlite::Connection::open(db).unwrap();
        w.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        testdb::rows(w);
        assert_eq!(
            std::fs::metadata(crate::sqlite::fsio::side_path(db, "-wal"))
                .unwrap()
                .len(),
            0
        );
    }

    /// The database at the path replaced (with its side files) by another state of the
    /// same connector, of as many pages, right after the backup pinned a snapshot of an
    /// empty WAL: the second checking connection, opened by name, is proven "the same
    /// state" by the wal-index header alone, which for a fresh empty WAL is the same for
    /// any database. Its checks (foreign keys, ids, row counts) must not be the other
    /// database's: what the manifest records is what the uploaded object holds.
    #[test]
    fn a_database_replaced_after_an_empty_wal_was_pinned_is_never_checked_on_the_new_one() {
        let s = setup_in(true);
        let other = tempfile::tempdir().unwrap();
        let new_db = other.path().join("sqlite.db");
        let mut new_writer = {
            let w = writer(&s.writer);
            w.execute("VACUUM INTO ?1", [new_db.to_str().unwrap()])
                .unwrap();
            let n = rusqlite::Connection::open(&new_db).unwrap();
            n.pragma_update(None, "journal_mode", "wal").unwrap();
            // Fewer rows, as many pages (no VACUUM).
            n.execute("DELETE FROM Events WHERE n % 10 = 0", [])
                .unwrap();
            n
        };
        fresh_empty_wal(&mut writer(&s.writer), &s.db);
        fresh_empty_wal(&mut new_writer, &new_db);
        let pages = |db: &Path| std::fs::metadata(db).unwrap().len();
        assert_eq!(pages(&s.db), pages(&new_db), "as many pages");
        let aside = other.path().join("old.db");
        let (replaced, _hook) = swap_at(&s.db, Point::WalPinned, &new_db, &aside);
        let (report, uploaded) = backup(&s);
        assert!(*replaced.lock().unwrap());
        drop(new_writer);
        let latest = latest_of(&s, &report);
        assert_eq!(
            latest.rows["Events"], uploaded.count,
            "the manifest counts the rows of the object it describes"
        );
    }

    /// As the WAL case above, in rollback-journal mode: a database renamed in at the path
    /// after the page reader opened the old file. The reader's locks are taken by name
    /// (on the new file), its stamps and pages read from the old one, which nothing
    /// writes any more: the upload is one database whole, and the manifest counts its rows.
    #[test]
    fn a_rollback_database_replaced_after_the_reader_opened_it_uploads_one_database_whole() {
        let s = setup();
        let other = tempfile::tempdir().unwrap();
        let new_db = other.path().join("sqlite.db");
        {
            let w = writer(&s.writer);
            w.execute("VACUUM INTO ?1", [new_db.to_str().unwrap()])
                .unwrap();
            let n = rusqlite::Connection::open(&new_db).unwrap();
            n.execute("DELETE FROM Events WHERE n % 10 = 0", [])
                .unwrap();
            w.execute(
                "UPDATE Events SET payload = printf('%.*c', ?1, 'd')",
                [testdb::PAYLOAD as i64],
            )
            .unwrap();
        }
        let (old_rows, new_rows) = (testdb::rows_now(&s.db), testdb::rows_now(&new_db));
        let aside = other.path().join("old.db");
        let (replaced, _hook) = swap_at(&s.db, Point::Opened, &new_db, &aside);
        let (report, uploaded) = backup(&s);
        assert!(*replaced.lock().unwrap());
        assert!(
            uploaded == old_rows || uploaded == new_rows,
            "{uploaded:?} is neither database"
        );
        let latest = latest_of(&s, &report);
        assert_eq!(latest.rows["Events"], uploaded.count);
    }
}
