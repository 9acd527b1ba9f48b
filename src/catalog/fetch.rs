//! Fetching one of a connector's backups into a local file, checked against what the
//! backup recorded: shared by `restore` and `inspect`.
//!
//! The checksum rule (docs/DESIGN.md): a version must match its own manifest; the
//! canonical object must match `latest.json` OR any version manifest (a backup cut off
//! between the canonical object and `latest.json` leaves `latest.json` one backup behind,
//! and must not make a good backup look corrupt). No manifest at all means a backup the
//! platform's own upload wrote: accepted, and reported as unchecked.

use std::path::Path;

use serde::Serialize;

use crate::catalog::history;
use crate::catalog::stream::{self, StreamPlan};
use crate::error::{Error, Result};
use crate::model::ids::Ids;
use crate::model::layout::{ConnectorKey, DbFileName, VersionId};
use crate::model::manifest::Manifest;
use crate::progress::Progress;
use crate::sqlite::db;
use crate::store::{Bucket, Encoding};

/// Which backup of the connector to fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The canonical object (the platform's key).
    Latest,
    /// One kept version.
    Version(VersionId),
    /// The newest complete version taken at or before this time.
    At(chrono::DateTime<chrono::Utc>),
}

/// How the fetched bytes are checked.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expected {
    /// A version: exactly this sha256, from its manifest.
    Version { sha256: String, manifest: String },
    /// The canonical object, fetched as the version that holds the same bytes (see
    /// [`Chosen::instead_of`]): exactly `latest.json`'s sha256.
    SameAsCanonical { sha256: String, manifest: String },
    /// The canonical object: `latest.json`'s sha256, else any version manifest's.
    Canonical {
        latest_sha256: Option<String>,
        versions: usize,
    },
    /// No manifest at all (a backup uploaded by the platform's own upload): not checkable.
    Legacy,
    /// Continuous capture: a base and the segments after it, chain checked.
    Chain { base: String, segments: usize },
}

/// The object chosen for a [`Source`], and how it will be checked.
#[derive(Clone, Debug, Serialize)]
pub struct Chosen {
    /// The object fetched.
    pub key: String,
    pub compressed: bool,
    pub version: Option<VersionId>,
    pub expected: Expected,
    /// The journal mode to put back (the uploaded snapshot is in `delete` mode).
    pub journal_mode: Option<String>,
    /// Set when the state is built from the continuous stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuous: Option<StreamPlan>,
    /// Set when the latest backup is fetched as its zstd version (`key`) instead of the
    /// canonical object: what proves them the same, and how the canonical object is
    /// fetched if the version cannot be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instead_of: Option<InsteadOf>,
    #[serde(skip)]
    pub key_path: object_store::path::Path,
    #[serde(skip)]
    pub ck: ConnectorKey,
}

/// The canonical object a version stands in for. Our backup recorded the ETag and size
/// the store gave ITS upload of the canonical object in `latest.json`; a HEAD of the
/// canonical key found the same ETag and size, so the object there is that upload, whose
/// bytes have `latest.json`'s sha256, which the version holds too (zstd, about a twelfth
/// of the bytes: restore from S3 moves that much less). Any other tag (another uploader,
/// the platform's own upload, a `latest.json` re-put from an older backup) fetches the
/// canonical object itself.
#[derive(Clone, Debug, Serialize)]
pub struct InsteadOf {
    /// The canonical key.
    pub key: String,
    /// The ETag and size found at it, equal to `latest.json`'s record.
    pub e_tag: String,
    pub size: u64,
    /// How the canonical object is checked if it is fetched after all.
    pub expected: Expected,
    #[serde(skip)]
    pub key_path: object_store::path::Path,
}

/// When the state the canonical object holds was read from the database: the
/// snapshot time of our latest manifest if our backup wrote the object (its
/// `latest.json` is written after the object, so it is no older), else the object's
/// upload time (the seed's uploader, or anything else, wrote it last). Upload time
/// alone would be wrong: a snapshot read before a newer stream base but uploaded after
/// it would win over the newer state.
async fn canonical_state_time(
    bucket: &Bucket,
    ck: &ConnectorKey,
    canonical: &crate::store::ObjectInfo,
) -> Result<chrono::DateTime<chrono::Utc>> {
    Ok(canonical_state(bucket, ck, canonical).await?.0)
}

/// [`canonical_state_time`]'s answer, with the `latest.json` it came from when our backup
/// wrote the object (`None`: its upload time). `restore-hub`'s window
/// ([`crate::catalog::window`]) weighs a connector's newest state by the same rule.
///
/// A `latest.json` the bucket did not answer for is an error, not "absent": taken for
/// absent, the canonical object's upload time would stand for its state, which can be
/// later than a newer state in the stream, and a restore would pick the older one.
pub async fn canonical_state(
    bucket: &Bucket,
    ck: &ConnectorKey,
    canonical: &crate::store::ObjectInfo,
) -> Result<(chrono::DateTime<chrono::Utc>, Option<Manifest>)> {
    let ours = match bucket.head(&ck.latest_manifest()).await? {
        Some(l) => l.last_modified >= canonical.last_modified,
        None => false,
    };
    if ours && let Some(m) = history::try_read_latest(bucket, ck).await? {
        return Ok((m.snapshot_at.min(canonical.last_modified), Some(m)));
    }
    Ok((canonical.last_modified, None))
}

/// For `--at T`: the stream's plan, unless the stream holds nothing after T (capture was
/// not running, or the connector was idle) while a complete kept version was
/// snapshotted after the stream's newest data and at or before T: that version is the
/// newer state at T (capture stopped, the database changed, a backup kept it), as for the
/// newest state ([`choose`]'s canonical rule). However recently capture stopped: a
/// version taken seconds after the stream's end holds commits the stream never saw
/// (restore-hub's newest common instant is often exactly such a version's time). Costs
/// one GET (`latest.json`) when nothing after T is in the stream, and one LIST when
/// `latest.json` is newer than the stream.
async fn stream_or_newer_version(
    bucket: &Bucket,
    ck: &ConnectorKey,
    p: StreamPlan,
    t: chrono::DateTime<chrono::Utc>,
) -> Result<Option<StreamPlan>> {
    let known = p.newest_data();
    if p.straddler.is_some() {
        return Ok(Some(p));
    }
    if history::try_read_latest(bucket, ck)
        .await?
        .is_none_or(|m| m.snapshot_at <= known)
    {
        return Ok(Some(p));
    }
    let versions = history::list_versions(bucket, ck).await?;
    Ok(match history::newest_at_or_before(&versions, t) {
        Some(v) if v.id.time() > known => None,
        _ => Some(p),
    })
}

fn from_stream(p: StreamPlan, ck: &ConnectorKey) -> Chosen {
    Chosen {
        key: p.base.clone(),
        compressed: true,
        version: None,
        expected: Expected::Chain {
            base: p.base.clone(),
            segments: p.segments,
        },
        journal_mode: None,
        key_path: p.base_key.clone(),
        continuous: Some(p),
        instead_of: None,
        ck: ck.clone(),
    }
}

/// Picks the object for `source` among `ck`'s backups; reads the bucket, changes
/// nothing. `ids` name the connector in hints.
pub async fn choose(
    bucket: &Bucket,
    ck: &ConnectorKey,
    source: &Source,
    db_file: &DbFileName,
) -> Result<Chosen> {
    let ids = Ids {
        datahub: ck.datahub,
        connector: ck.connector,
    };
    let not_found = |key: &object_store::path::Path, what: String, hint: String| {
        Error::bucket_failure(
            "GET",
            bucket.shown(key),
            bucket.url(),
            crate::error::StoreFailure::NotFound,
            what,
        )
        .with_hint(hint)
    };
    let at = match source {
        Source::Latest => None,
        Source::At(t) => Some(*t),
        Source::Version(_) => Some(chrono::DateTime::<chrono::Utc>::MIN_UTC),
    };
    let streamed = match source {
        Source::Version(_) => None,
        _ => stream::plan(bucket, &ck.org, ck.datahub, ck.connector, at).await?,
    };
    let streamed = match (source, streamed) {
        (Source::At(t), Some(p)) => stream_or_newer_version(bucket, ck, p, *t).await?,
        (_, p) => p,
    };
    match source {
        Source::Latest => {
            let key = ck.canonical(db_file);
            let canonical = bucket.head(&key).await?;
            if let Some(p) = streamed {
                // The newest state captured: the stream, unless the canonical object
                // is newer than anything it holds (capture was off since).
                let newest = p.newest_segment.unwrap_or(p.base_time).max(p.base_time);
                let canonical_state = match &canonical {
                    Some(c) => Some(canonical_state_time(bucket, ck, c).await?),
                    None => None,
                };
                if canonical_state.is_none_or(|t| t <= newest) {
                    return Ok(from_stream(p, ck));
                }
            }
            let Some(canonical) = canonical else {
                return Err(not_found(
                    &key,
                    "no backup at this key".into(),
                    "check --org, --datahub and --connector (the OLD ids of the backup); `aws s3 ls` or `hubvault status` list the backups".into(),
                ));
            };
            // Unanswered is an error here: taken for absent, it would make our own backup
            // read as another uploader's (legacy) and skip its sha256.
            let latest = history::try_read_latest(bucket, ck).await?;
            let complete: Vec<VersionId> = history::list_versions(bucket, ck)
                .await?
                .into_iter()
                .filter(|v| v.is_complete())
                .map(|v| v.id)
                .collect();
            let versions = complete.len();
            let expected = if latest.is_none() && versions == 0 {
                Expected::Legacy
            } else {
                Expected::Canonical {
                    latest_sha256: latest.as_ref().map(|m| m.sha256.clone()),
                    versions,
                }
            };
            let journal_mode = latest.as_ref().map(|m| m.journal_mode.clone());
            // Our own upload still at the key, and its version kept: fetch the version.
            if let Some(m) = &latest
                && let Some(record) = &m.canonical
                && record.is(canonical.e_tag.as_deref(), canonical.size)
                && m.size == canonical.size
                && complete.contains(&m.version)
            {
                let vkey = ck.version_data(&m.version);
                return Ok(Chosen {
                    key: vkey.to_string(),
                    compressed: true,
                    version: None,
                    expected: Expected::SameAsCanonical {
                        sha256: m.sha256.clone(),
                        manifest: ck.latest_manifest().to_string(),
                    },
                    journal_mode,
                    continuous: None,
                    instead_of: Some(InsteadOf {
                        key: key.to_string(),
                        e_tag: record.e_tag.clone(),
                        size: record.size,
                        expected,
                        key_path: key,
                    }),
                    key_path: vkey,
                    ck: ck.clone(),
                });
            }
            Ok(Chosen {
                key: key.to_string(),
                compressed: false,
                version: None,
                expected,
                journal_mode,
                continuous: None,
                instead_of: None,
                key_path: key,
                ck: ck.clone(),
            })
        }
        Source::At(_) if streamed.is_some() => Ok(from_stream(streamed.expect("checked"), ck)),
        Source::Version(_) | Source::At(_) => {
            let versions = history::list_versions(bucket, ck).await?;
            let id = match source {
                Source::Version(id) => {
                    if !versions.iter().any(|v| &v.id == id && v.is_complete()) {
                        return Err(not_found(
                            &ck.version_data(id),
                            format!("no complete version {id} of this connector"),
                            format!(
                                "list the versions with `hubvault versions --datahub {} --connector {}`",
                                ids.datahub, ids.connector
                            ),
                        ));
                    }
                    id.clone()
                }
                Source::At(at) => match history::newest_at_or_before(&versions, *at) {
                    Some(v) => v.id.clone(),
                    None => {
                        return Err(not_found(
                            &ck.versions_dir(),
                            format!("no complete version taken at or before {}", at.to_rfc3339()),
                            format!(
                                "pick a later --at, or list the versions with `hubvault versions --datahub {} --connector {}`",
                                ids.datahub, ids.connector
                            ),
                        ));
                    }
                },
                Source::Latest => unreachable!("handled above"),
            };
            let m = history::read_manifest(bucket, ck, &id).await?;
            let key = ck.version_data(&id);
            Ok(Chosen {
                key: key.to_string(),
                compressed: true,
                version: Some(id.clone()),
                expected: Expected::Version {
                    sha256: m.sha256.clone(),
                    manifest: ck.version_manifest(&id).to_string(),
                },
                journal_mode: Some(m.journal_mode.clone()),
                continuous: None,
                instead_of: None,
                key_path: key,
                ck: ck.clone(),
            })
        }
    }
}

/// A backup fetched into a temp file and checked against its manifest.
pub struct Fetched {
    pub file: tempfile::TempPath,
    /// The object whose bytes these are.
    pub key: String,
    /// The canonical object those bytes are (its key), when `key` is the version that
    /// stands in for it ([`InsteadOf`]).
    pub instead_of: Option<String>,
    pub sha256: String,
    pub bytes: u64,
    /// The manifest that vouched for the bytes, or `none (legacy backup, no manifest)`.
    pub verified_by: String,
    /// True if and only if no manifest could vouch (a backup of the platform's own upload).
    pub legacy: bool,
    /// The journal mode to put back, when the fetch learnt it (the stream's base says, or
    /// the version manifest that vouched for a canonical object ahead of `latest.json`).
    pub journal_mode: Option<String>,
    /// For a state built from the stream: when it was captured, and what was read.
    pub continuous: Option<ContinuousState>,
    pub warnings: Vec<String>,
}

/// What a restore from the continuous stream built.
#[derive(Clone, Debug, Serialize)]
pub struct ContinuousState {
    /// Observed time of the newest commit in the state (the base's, if none).
    pub state_time: chrono::DateTime<chrono::Utc>,
    pub checksum: String,
    pub base: String,
    pub commits: u64,
    pub segments_read: u64,
}

/// Streams the chosen object into a temp file in `dir` (named `{prefix}*`) and checks
/// its sha256 (see the module's rule) and its SQLite header. The file is not fsynced:
/// a caller that keeps it fsyncs it (a restore does, once, just before the install).
pub async fn fetch(
    bucket: &Bucket,
    chosen: &Chosen,
    dir: &Path,
    prefix: &str,
    progress: &dyn Progress,
) -> Result<Fetched> {
    if let Some(p) = &chosen.continuous {
        return fetch_stream(bucket, p, dir, prefix).await;
    }
    let Some(canonical) = &chosen.instead_of else {
        return fetch_object(bucket, chosen, dir, prefix, progress).await;
    };
    match fetch_object(bucket, chosen, dir, prefix, progress).await {
        Ok(mut f) => {
            f.instead_of = Some(canonical.key.clone());
            Ok(f)
        }
        // The version is gone (pruned since the plan), damaged, or refused: the canonical
        // object is there and proven to be the same backup, so it is fetched and checked
        // as it always was. A transfer that failed after its retries is not retried here.
        Err(e) if stand_in_failed(&e) => {
            tracing::warn!("{e}; fetching {} instead", canonical.key);
            let fallback = Chosen {
                key: canonical.key.clone(),
                compressed: false,
                expected: canonical.expected.clone(),
                key_path: canonical.key_path.clone(),
                instead_of: None,
                ..chosen.clone()
            };
            let mut f = fetch_object(bucket, &fallback, dir, prefix, progress).await?;
            f.warnings.push(format!(
                "{}: {e}; the canonical object was fetched instead",
                chosen.key
            ));
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// True if and only if fetching the version that stands in for the canonical object
/// failed for a reason the canonical object does not share: its content (checksum,
/// zstd, header) or its key (gone, refused).
fn stand_in_failed(e: &Error) -> bool {
    use crate::error::StoreFailure as F;
    matches!(e, Error::Check { .. })
        || matches!(
            e.store_failure(),
            Some(F::NotFound | F::PermissionDenied | F::Conflict)
        )
}

/// Streams one object into a temp file and checks it as `chosen.expected` says.
async fn fetch_object(
    bucket: &Bucket,
    chosen: &Chosen,
    dir: &Path,
    prefix: &str,
    progress: &dyn Progress,
) -> Result<Fetched> {
    let key_path = &chosen.key_path;
    let file = staging_file(dir, prefix, "cannot create the download file").await?;
    let encoding = if chosen.compressed {
        Encoding::Zstd(0)
    } else {
        Encoding::Plain
    };
    let t0 = std::time::Instant::now();
    let got = bucket
        .get_to_temp_file(key_path, &file, encoding, progress)
        .await?;
    tracing::debug!(
        "fetch: {key_path}: {} bytes stored, {} plain, fetched (and decoded) in {:?}",
        got.stored_bytes,
        got.plain_bytes,
        t0.elapsed()
    );
    let shown = bucket.shown(key_path);
    let mismatch = |against: &str| {
        Error::check(
            format!(
                "{shown}: checksum mismatch: the download's sha256 is {}, {against}",
                got.sha256
            ),
            "the object was damaged or replaced after the backup; restore an older version (`hubvault versions`, then --version ID) and run `hubvault verify`",
        )
    };
    // The journal mode to put back is the one of the manifest that vouched for the bytes
    // when that is not `latest.json` (the chosen one's, from `latest.json`, otherwise).
    let (verified_by, legacy, journal_mode) = match &chosen.expected {
        Expected::Version { sha256, manifest } => {
            if *sha256 != got.sha256 {
                return Err(mismatch(&format!(
                    "its manifest {manifest} records {sha256}"
                )));
            }
            (manifest.clone(), false, None)
        }
        Expected::SameAsCanonical { sha256, manifest } => {
            if *sha256 != got.sha256 {
                return Err(mismatch(&format!(
                    "{manifest} records {sha256} for the canonical object this version stands in for"
                )));
            }
            (manifest.clone(), false, None)
        }
        Expected::Legacy => ("none (legacy backup, no manifest)".to_string(), true, None),
        Expected::Chain { .. } => unreachable!("a stream is fetched by fetch_stream"),
        Expected::Canonical { latest_sha256, .. } => {
            if latest_sha256.as_deref() == Some(got.sha256.as_str()) {
                (chosen.ck.latest_manifest().to_string(), false, None)
            } else {
                match version_with_sha(bucket, &chosen.ck, &got.sha256).await? {
                    Some((key, m)) => (key, false, Some(m.journal_mode)),
                    None => {
                        return Err(mismatch(&format!(
                            "which neither latest.json ({}) nor any version manifest records",
                            latest_sha256.as_deref().unwrap_or("unreadable")
                        )));
                    }
                }
            }
        }
    };
    let header = {
        let path = file.to_path_buf();
        crate::blocking::blocking(move || Ok(db::check_is_sqlite(&path))).await?
    };
    header.map_err(|_| {
        Error::check(
            format!(
                "{shown}: the download is not a SQLite database (no SQLite header; {} bytes)",
                got.plain_bytes
            ),
            "the object is not a connector database; restore an older version (`hubvault versions`, then --version ID)",
        )
    })?;
    Ok(Fetched {
        file,
        key: key_path.to_string(),
        instead_of: None,
        sha256: got.sha256,
        bytes: got.plain_bytes,
        verified_by,
        legacy,
        journal_mode,
        continuous: None,
        warnings: Vec::new(),
    })
}

/// A new file named `{prefix}…` in `dir` for a restore to write into, removed when
/// dropped unless it is kept (installed).
async fn staging_file(dir: &Path, prefix: &str, what: &'static str) -> Result<tempfile::TempPath> {
    let (dir, prefix) = (dir.to_path_buf(), prefix.to_string());
    crate::blocking::blocking(move || {
        tempfile::Builder::new()
            .prefix(&prefix)
            .tempfile_in(&dir)
            .map(|f| f.into_temp_path())
            .map_err(|e| Error::io(&dir, what, e))
    })
    .await
}

/// Builds the state from the stream (chain checked) into a temp file in `dir`, page by
/// page (`stream::build`: memory stays flat in the database's size).
async fn fetch_stream(
    bucket: &Bucket,
    p: &StreamPlan,
    dir: &Path,
    prefix: &str,
) -> Result<Fetched> {
    let file = staging_file(dir, prefix, "cannot create the restore file").await?;
    let built = stream::build(bucket, p, &file).await?;
    let base = p.base.clone();
    crate::blocking::blocking(move || {
        use std::os::unix::fs::FileExt;
        // A plain file: the journal mode is put back by the restore (WAL header bytes
        // would make SQLite look for a -wal beside the temp file). `plain_sha256` is the
        // hash of the file with these bytes.
        if built.pages > 0 {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .map_err(|e| Error::io(&file, "cannot open the restore file", e))?;
            f.write_all_at(&[1, 1], 18)
                .map_err(|e| Error::io(&file, "cannot write the restore file", e))?;
        }
        Ok(Fetched {
            file,
            key: base.clone(),
            instead_of: None,
            sha256: built.plain_sha256,
            bytes: built.pages as u64 * built.page_size as u64,
            verified_by: format!(
                "chain checksum {} (base {} + {} commits from {} segments)",
                built.checksum, base, built.commits, built.segments_read
            ),
            legacy: false,
            journal_mode: Some(built.journal_mode),
            continuous: Some(ContinuousState {
                state_time: built.state_time,
                checksum: built.checksum.hex(),
                base,
                commits: built.commits,
                segments_read: built.segments_read,
            }),
            warnings: built.warnings,
        })
    })
    .await
}

/// The manifest key and manifest of a complete version whose sha256 is `sha`, if any. The
/// version id carries the first 12 hex digits, so at most a few manifests are read. None
/// found while a manifest the bucket did not answer for may be the one is an error, not
/// "none": taken for none, the object read as damaged (a checksum mismatch, "restore an
/// older version").
async fn version_with_sha(
    bucket: &Bucket,
    ck: &ConnectorKey,
    sha: &str,
) -> Result<Option<(String, Manifest)>> {
    let versions = history::list_versions(bucket, ck).await?;
    let complete = versions.iter().filter(|v| v.is_complete()).map(|v| &v.id);
    let (found, unread) = history::find_by_sha(bucket, ck, complete, sha).await;
    if found.is_none()
        && let Some(e) = unread.into_iter().find(Error::is_unanswered)
    {
        return Err(e);
    }
    Ok(found.map(|m| (ck.version_manifest(&m.version).to_string(), m)))
}
