//! Restore drills: prove that each backup restores, and record the proof beside it.
//!
//! For each connector in scope (one LIST finds them, see [`crate::catalog::inventory::scan`]):
//! 1. download the canonical object into a temp dir and hash it on the way;
//! 2. the sha256 must equal `latest.json`'s **or any version manifest's**: a backup cut
//!    off between the canonical object and `latest.json` leaves `latest.json` one backup
//!    behind (docs/DESIGN.md). An object with no manifest at all was uploaded by
//!    something else (the platform's own upload): a warning, since there is nothing to check
//!    the sum against, not a failure;
//! 3. `PRAGMA integrity_check` (and `foreign_key_check`) on the download;
//! 4. the ids inside (`Integrations.id`, `sources[0].id`) are those in the key, and the
//!    tables `Integrations` and `Events` exist;
//! 5. when the connector has a continuous stream, its newest state is built from the
//!    bucket as `restore` builds it (the chain checked) and checked as in steps 3 and 4
//!    (`stream` in the record): a damaged or missing stream object fails the drill;
//! 6. the result goes to `hubvault/drills/{stamp}-{ok|failed}.json` (so `status` sees
//!    it from the key alone), and only the newest few drill records are kept.
//!
//! A drill that could not be carried out proves nothing about the backup and is NOT
//! recorded: a download that failed (the bucket unreachable or erring after the
//! retries, a body cut short), a `latest.json` the bucket did not answer for, a manifest
//! that could not be read when nothing else vouched for the bytes, and local failures (no temp directory, a full disk). Those are
//! reported as "not drilled", local ones named as local, and make the command fail
//! (exit 1) unless a drill found a broken backup (exit 3).

use std::path::PathBuf;

use rand::seq::IndexedRandom;
use serde::Serialize;

use crate::catalog::inventory::{self, Listed, Scope};
use crate::catalog::{history, stream};
use crate::error::{Error, Result};
use crate::model::drill::FORMAT as DRILL_FORMAT;
pub use crate::model::drill::{DrillRecord, StreamDrill};
use crate::model::layout::{self, ConnectorKey};
use crate::model::manifest::{self, Manifest};
use crate::progress::NoProgress;
use crate::sqlite::db;
use crate::store::{Bucket, Encoding, WriteMode};

/// Drill records kept per connector (the newest).
pub const KEEP_DRILLS: usize = 5;

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub scope: Scope,
    /// Drill this many connectors, picked at random; all when `None`.
    pub sample: Option<usize>,
    /// Where downloads go (the system temp dir when `None`).
    pub tmp_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Drill {
    pub org: crate::model::ids::OrgSlug,
    pub datahub: crate::model::ids::DatahubId,
    pub connector: crate::model::ids::ConnectorId,
    /// Where the record was written (empty when the bucket refused it: a failed drill
    /// is still reported, its warnings say so).
    pub record_key: String,
    #[serde(flatten)]
    pub record: DrillRecord,
}

/// A drill that could not be carried out; nothing was recorded in the bucket.
#[derive(Clone, Debug, Serialize)]
pub struct NotDrilled {
    pub org: crate::model::ids::OrgSlug,
    pub datahub: crate::model::ids::DatahubId,
    pub connector: crate::model::ids::ConnectorId,
    pub key: String,
    /// True if and only if the cause is on this machine (temp directory, disk), not in
    /// the bucket.
    pub local: bool,
    pub reason: String,
    pub hint: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifySummary {
    pub in_scope: usize,
    pub drilled: usize,
    pub ok: usize,
    pub failed: usize,
    pub with_warnings: usize,
    /// Drills that could not be carried out (see [`NotDrilled`]).
    pub not_drilled: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub scope: String,
    /// Failed first.
    pub drills: Vec<Drill>,
    pub not_drilled: Vec<NotDrilled>,
    pub summary: VerifySummary,
}

impl VerifyReport {
    /// True if and only if some drill failed (exit 3).
    pub fn any_failed(&self) -> bool {
        self.summary.failed > 0
    }

    /// True if and only if some drill could not be carried out (exit 1, unless one
    /// failed).
    pub fn any_not_drilled(&self) -> bool {
        self.summary.not_drilled > 0
    }
}

/// Why a drill could not be carried out.
struct Inconclusive {
    local: bool,
    reason: String,
    hint: Option<String>,
}

impl Inconclusive {
    /// From the error of a step that reads the bucket or writes a local file: an
    /// `Error::Io` is local (temp directory, disk), anything else the bucket's.
    fn from_error(what: &str, e: &Error) -> Inconclusive {
        let local = matches!(e, Error::Io { .. });
        Inconclusive {
            local,
            reason: format!(
                "{what} ({}): {e}",
                if local {
                    "a local failure on this machine, not a problem of the backup"
                } else {
                    "the bucket did not answer as it should; this says nothing about the backup"
                }
            ),
            hint: e.hint().map(str::to_string),
        }
    }
}

/// Drills every backup in scope (or a random sample), records each result.
pub async fn run(bucket: &Bucket, opts: &VerifyOptions) -> Result<VerifyReport> {
    let listed = inventory::scan(bucket, &opts.scope).await?;
    if listed.is_empty() && opts.scope.connector.is_some() {
        return Err(Error::usage(
            format!("no backup in {}", opts.scope.describe()),
            "check --connector (and --org, --datahub); list what exists with `hubvault status`",
        ));
    }
    let in_scope = listed.len();
    let chosen: Vec<&Listed> = match opts.sample {
        Some(n) if n < listed.len() => listed.sample(&mut rand::rng(), n).collect(),
        _ => listed.iter().collect(),
    };
    let mut drills = Vec::with_capacity(chosen.len());
    let mut not_drilled = Vec::new();
    for l in chosen {
        let record = match drill(bucket, l, opts).await {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!(connector = %l.ck.connector, "not drilled: {}", why.reason);
                not_drilled.push(NotDrilled {
                    org: l.ck.org.clone(),
                    datahub: l.ck.datahub,
                    connector: l.ck.connector,
                    key: l
                        .canonical
                        .as_ref()
                        .map(|(f, _)| l.ck.canonical(f).to_string())
                        .unwrap_or_default(),
                    local: why.local,
                    reason: why.reason,
                    hint: why.hint,
                });
                continue;
            }
        };
        let mut record = record;
        let record_key = l.ck.drill(&layout::stamp(record.time), record.ok);
        // A record the bucket refuses does not end the run (a broken backup another drill
        // found would go unreported). An ok drill unrecorded proves nothing to `status`:
        // not drilled. A failed one is still a broken backup: reported (exit 3).
        let record_key = match bucket
            .put_bytes(&record_key, record.to_json(), WriteMode::Overwrite)
            .await
        {
            Ok(_) => {
                if let Err(e) = prune_drills(bucket, l).await {
                    tracing::warn!(connector = %l.ck.connector, "cannot remove old drill records: {e}");
                }
                tracing::info!(connector = %l.ck.connector, ok = record.ok, "drill recorded at {record_key}");
                record_key.to_string()
            }
            Err(e) if record.ok => {
                let why = Inconclusive::from_error(
                    "the drill passed, but its record could not be written",
                    &e,
                );
                tracing::warn!(connector = %l.ck.connector, "not drilled: {}", why.reason);
                not_drilled.push(NotDrilled {
                    org: l.ck.org.clone(),
                    datahub: l.ck.datahub,
                    connector: l.ck.connector,
                    key: record.key.clone(),
                    local: why.local,
                    reason: why.reason,
                    hint: why.hint,
                });
                continue;
            }
            Err(e) => {
                record.warnings.push(format!(
                    "this drill's record could not be written to {record_key}: {e}"
                ));
                String::new()
            }
        };
        drills.push(Drill {
            org: l.ck.org.clone(),
            datahub: l.ck.datahub,
            connector: l.ck.connector,
            record_key,
            record,
        });
    }
    drills.sort_by_key(|d| d.record.ok);
    let summary = VerifySummary {
        in_scope,
        drilled: drills.len(),
        ok: drills.iter().filter(|d| d.record.ok).count(),
        failed: drills.iter().filter(|d| !d.record.ok).count(),
        with_warnings: drills
            .iter()
            .filter(|d| !d.record.warnings.is_empty())
            .count(),
        not_drilled: not_drilled.len(),
    };
    Ok(VerifyReport {
        scope: opts.scope.describe(),
        drills,
        not_drilled,
        summary,
    })
}

/// Keeps the newest [`KEEP_DRILLS`] records: the one just written and the newest
/// `KEEP_DRILLS - 1` of those the listing saw.
async fn prune_drills(bucket: &Bucket, l: &Listed) -> Result<()> {
    let old = l.drills.len().saturating_sub(KEEP_DRILLS - 1);
    for d in &l.drills[..old] {
        bucket.delete(&d.key).await?;
    }
    Ok(())
}

/// One drill. Every problem of the backup lands in the record; a drill that could not be
/// carried out is `Err` and is not recorded.
async fn drill(
    bucket: &Bucket,
    l: &Listed,
    opts: &VerifyOptions,
) -> std::result::Result<DrillRecord, Inconclusive> {
    let ck = &l.ck;
    let mut r = DrillRecord {
        format: DRILL_FORMAT,
        time: chrono::Utc::now(),
        ok: false,
        key: String::new(),
        sha256: None,
        size: None,
        version: None,
        matched: None,
        check: None,
        problems: Vec::new(),
        warnings: Vec::new(),
        tool: manifest::tool(),
        host: manifest::host_name(),
        stream: None,
    };
    let Some((file, _)) = &l.canonical else {
        r.key = ck.canonical(&Default::default()).to_string();
        r.problems.push(format!(
            "no object at {}: nothing to restore from (kept versions: {})",
            r.key,
            l.versions.len()
        ));
        return Ok(r);
    };
    let key = ck.canonical(file);
    r.key = key.to_string();

    let tmp_parent = opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let made = {
        let parent = tmp_parent.clone();
        crate::blocking::blocking(move || {
            tempfile::Builder::new()
                .prefix("hubvault-verify-")
                .tempdir_in(&parent)
                .map_err(|e| Error::io(&parent, "cannot create a temp dir", e))
        })
        .await
    };
    let tmp = made.map_err(|e| {
        Inconclusive::from_error("cannot make a temp directory for the download", &e)
    })?;
    let local = tmp.path().join(file.as_str());
    let got = bucket
        .get_to_file(&key, &local, Encoding::Plain, &NoProgress)
        .await
        .map_err(|e| Inconclusive::from_error("the download failed", &e))?;
    r.sha256 = Some(got.sha256.clone());
    r.size = Some(got.plain_bytes);

    match_manifest(bucket, l, &got.sha256, &mut r).await?;
    let checked = {
        let (local, ck) = (local.clone(), ck.clone());
        tokio::task::spawn_blocking(move || check_database(&local, &ck)).await
    };
    match checked {
        Ok(Ok((check, problems))) => {
            r.check = check;
            r.problems.extend(problems);
        }
        Ok(Err(e)) => {
            return Err(Inconclusive::from_error(
                "cannot check the downloaded copy",
                &e,
            ));
        }
        Err(e) => r.problems.push(format!("the check task failed: {e}")),
    }
    // The download is checked: its space goes to the stream's state.
    let _ = std::fs::remove_file(&local);
    drill_stream(bucket, ck, tmp.path(), &mut r).await?;
    r.ok = r.problems.is_empty();
    Ok(r)
}

/// Step 5: the continuous stream's newest state, when the connector has a stream. One
/// that cannot be built (an object damaged, missing or at another's key, two agents
/// capturing at once) or that fails the checks is a problem of the backup; a bucket that
/// does not answer, or a full local disk, proves nothing (`Err`).
async fn drill_stream(
    bucket: &Bucket,
    ck: &ConnectorKey,
    dir: &std::path::Path,
    r: &mut DrillRecord,
) -> std::result::Result<(), Inconclusive> {
    let inconclusive = |e: &Error| e.store_failure().is_some() || matches!(e, Error::Io { .. });
    let plan = match stream::plan(bucket, &ck.org, ck.datahub, ck.connector, None).await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(()),
        Err(e) if inconclusive(&e) => {
            return Err(Inconclusive::from_error(
                "cannot list the continuous stream",
                &e,
            ));
        }
        Err(e) => {
            r.problems
                .push(format!("the continuous stream cannot be planned: {e}"));
            return Ok(());
        }
    };
    let dest = dir.join("stream-newest.db");
    let mut drilled = StreamDrill {
        state_time: plan.newest_data(),
        base: plan.base.clone(),
        commits: 0,
        check: None,
    };
    match stream::build(bucket, &plan, &dest).await {
        Ok(built) => {
            drilled.state_time = built.state_time;
            drilled.commits = built.commits;
            // A plain file, as `restore` makes it (WAL header bytes would have SQLite
            // look for a -wal beside it).
            let (file, ck) = (dest.clone(), ck.clone());
            let checked = crate::blocking::blocking(move || {
                use std::os::unix::fs::FileExt;
                if built.pages > 0 {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&file)
                        .and_then(|f| f.write_all_at(&[1, 1], 18))
                        .map_err(|e| Error::io(&file, "cannot write the built state", e))?;
                }
                check_database(&file, &ck)
            })
            .await
            .map_err(|e| Inconclusive::from_error("cannot check the stream's newest state", &e))?;
            let (check, problems) = checked;
            drilled.check = check;
            r.problems.extend(problems.into_iter().map(|p| {
                format!(
                    "the continuous stream's newest state ({}): {p}",
                    drilled.state_time.to_rfc3339()
                )
            }));
        }
        Err(e) if inconclusive(&e) => {
            return Err(Inconclusive::from_error(
                "cannot build the continuous stream's newest state",
                &e,
            ));
        }
        Err(e) => r.problems.push(format!(
            "the continuous stream's newest state cannot be restored: {e}"
        )),
    }
    r.stream = Some(drilled);
    Ok(())
}

/// Step 2: which manifest, if any, vouches for the downloaded bytes. `Err` when none
/// did and one could not be read from the bucket: that proves nothing.
async fn match_manifest(
    bucket: &Bucket,
    l: &Listed,
    sha: &str,
    r: &mut DrillRecord,
) -> std::result::Result<(), Inconclusive> {
    let ck = &l.ck;
    let mut latest_says = None;
    let mut unreadable: Option<Error> = None;
    if l.latest_manifest {
        let key = ck.latest_manifest();
        match bucket
            .get_bytes_max(&key, history::MANIFEST_MAX_BYTES)
            .await
        {
            Ok(bytes) => match Manifest::from_json(&bytes, key.as_ref()) {
                Ok(m) if m.connector_key() != *ck => r.problems.push(format!(
                    "{key} describes {}, not this connector",
                    m.connector_key().prefix()
                )),
                Ok(m) if m.sha256 == sha => {
                    r.version = Some(m.version);
                    r.matched = Some("latest.json".into());
                    return Ok(());
                }
                Ok(m) => latest_says = Some(m.sha256),
                Err(e) => r.warnings.push(e.to_string()),
            },
            // Unanswered proves nothing (`restore` fails on it too): what it says is
            // unchecked (another connector's `latest.json` fails the drill).
            Err(e) if e.store_failure().is_some() && !e.is_not_found() => {
                return Err(Inconclusive::from_error(&format!("cannot read {key}"), &e));
            }
            Err(e) => r.warnings.push(format!("cannot read {key}: {e}")),
        }
    }
    // Complete versions only (data and manifest), as `restore` checks the object
    // (`fetch::version_with_sha`): a manifest whose data is gone vouches for nothing there.
    let complete = l
        .versions
        .iter()
        .filter(|(_, (d, m))| *d && *m)
        .map(|(v, _)| v);
    let (found, errors) = history::find_by_sha(bucket, ck, complete, sha).await;
    for e in errors {
        r.warnings.push(e.to_string());
        if e.store_failure().is_some() {
            unreadable = Some(e);
        }
    }
    if let Some(v) = found.map(|m| m.version) {
        r.matched = Some(format!("versions/{v}.json"));
        r.version = Some(v);
        return Ok(());
    }
    if let Some(e) = unreadable {
        return Err(Inconclusive::from_error(
            "no manifest could vouch for the download, and one could not be read",
            &e,
        ));
    }
    let any_manifest = l.latest_manifest || l.versions.values().any(|(_, m)| *m);
    if any_manifest {
        r.problems.push(format!(
            "sha256 {sha} of {} matches no manifest ({}): the object was damaged or replaced after upload",
            r.key,
            match latest_says {
                Some(s) => format!("latest.json says {s}"),
                None => "latest.json is absent or unreadable".into(),
            }
        ));
    } else {
        r.warnings.push(
            "no manifest beside this backup (not written by hubvault): the checksum cannot be checked".into(),
        );
    }
    Ok(())
}

/// Steps 3 and 4 on the downloaded file: which check passed, and the problems found.
/// `Err` only for a local failure (the copy cannot be read back, the disk is full).
fn check_database(
    local: &std::path::Path,
    ck: &ConnectorKey,
) -> Result<(Option<String>, Vec<String>)> {
    let mut problems = Vec::new();
    if let Err(e) = db::check_is_sqlite(local) {
        if let Error::Io { .. } = e {
            return Err(e);
        }
        problems.push(format!("not a SQLite database: {e}"));
        return Ok((None, problems));
    }
    // Our own temp copy: read-write, so a WAL-mode upload (the platform's own) opens too.
    let conn = match db::open_read_write(local) {
        Ok(c) => c,
        Err(e) => {
            problems.push(e.to_string());
            return Ok((None, problems));
        }
    };
    let size = std::fs::metadata(local).map(|m| m.len()).unwrap_or(0);
    let check = match db::check_integrity(&conn, local, size) {
        Ok(c) => Some(c.to_string()),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    for table in ["Integrations", "Events"] {
        match db::table_exists(&conn, table) {
            Ok(true) => {}
            Ok(false) => problems.push(format!("the database has no {table} table")),
            Err(e) => problems.push(format!("cannot read the schema: {e}")),
        }
    }
    match db::read_info(&conn, local) {
        Ok(info) => {
            if info.datahub != ck.datahub {
                problems.push(format!(
                    "Integrations.id inside is {}, but the key says datahub {}",
                    info.datahub, ck.datahub
                ));
            }
            if info.connector != ck.connector {
                problems.push(format!(
                    "Integrations.sources[0].id inside is {}, but the key says connector {}",
                    info.connector, ck.connector
                ));
            }
        }
        Err(e) => problems.push(format!("cannot read the ids inside: {e}")),
    }
    Ok((check, problems))
}
