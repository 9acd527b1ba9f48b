//! Automatic restore of one connector: plan, then fetch, verify, rewrite, check,
//! install, hook.
//!
//! The plan ([`plan`]) reads the bucket and changes nothing (`--dry-run` prints it). The
//! fetch and its checksum rule are [`crate::catalog::fetch`]'s; everything done in the
//! target directory (the lock, the private work directory, the checks and the id
//! rewrite of the download, the install that keeps the old database) is
//! [`crate::sqlite::install`]'s, whose contract this restore gives: the target only ever
//! holds the database that was there before or the new one, verified, and what was there
//! before is kept beside it, whole, with its side files. `restore-hub` runs the same
//! steps for every connector of a hub.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::blocking::blocking;
use crate::catalog::fetch::{self, Chosen};
pub use crate::catalog::fetch::{ContinuousState, Expected, Source};
use crate::error::{Error, Result};
use crate::model::ids::{Ids, OrgSlug};
use crate::model::layout::{self, ConnectorKey, DbFileName, VersionId};
use crate::progress::Progress;
use crate::sqlite::install::{self, Download, Staging};
pub use crate::sqlite::install::{Holder, Kept, Target, holders};
use crate::sqlite::rewrite::{self, RewritePlan};
use crate::store::Bucket;

#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub org: OrgSlug,
    /// The ids of the backup.
    pub from: Ids,
    /// The ids the restored database gets (equal to `from` for the same hub).
    pub to: Ids,
    pub source: Source,
    pub target: Target,
    /// True if and only if a target held open by a process is replaced anyway.
    pub force: bool,
    pub db_file: DbFileName,
    /// True if and only if old ids the rewrite cannot rewrite (listed in the report) may
    /// stay in the installed database; otherwise the restore refuses before installing.
    pub accept_unrewritten: bool,
}

/// What [`execute`] will do; computing it changes nothing (`--dry-run` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct RestorePlan {
    pub bucket: String,
    /// The object fetched and how it is checked.
    #[serde(flatten)]
    pub source: Chosen,
    pub from: Ids,
    pub to: Ids,
    /// True if and only if ids are rewritten.
    pub rewrite: bool,
    pub target: PathBuf,
    /// The hub root, when the target is `<hub-root>/<connectorId>/<db file>` (the
    /// connector's directory is then created if missing, and never followed if a link).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_root: Option<PathBuf>,
    /// True if and only if a file is at the target now (it is kept, see `keep`).
    pub replaces: bool,
    pub keep: Vec<Kept>,
    pub held_open_by: Vec<Holder>,
    pub force: bool,
    /// See [`RestoreRequest::accept_unrewritten`].
    pub accept_unrewritten: bool,
}

/// What [`execute`] did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub target: PathBuf,
    /// The object whose bytes were fetched.
    pub key: String,
    /// The canonical object `key` stands in for: set when the latest backup was fetched
    /// as its zstd version, proven the same upload by its ETag (see
    /// [`crate::catalog::fetch::InsteadOf`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instead_of: Option<String>,
    pub version: Option<VersionId>,
    pub sha256_fetched: String,
    /// What the download was checked against: `latest.json`, a version manifest, or
    /// `none (legacy backup)`.
    pub verified_by: String,
    /// True if and only if the backup had no manifest (uploaded by the old system).
    pub legacy: bool,
    pub warnings: Vec<String>,
    pub from: Ids,
    pub to: Ids,
    pub rewrite: Option<RewritePlan>,
    pub journal_mode: String,
    pub check: &'static str,
    pub kept: Vec<Kept>,
    pub sha256_installed: String,
    pub bytes: u64,
    pub events: Option<u64>,
    pub seconds: f64,
    /// Set when the state was built from continuous capture: its time.
    pub continuous: Option<ContinuousState>,
}

/// Decides what to fetch and where it goes; reads the bucket, changes nothing.
pub async fn plan(bucket: &Bucket, req: &RestoreRequest) -> Result<RestorePlan> {
    rewrite::check_ids(req.from, req.to)?;
    let target = install::target_path(&req.target, req.to.connector, &req.db_file)?;
    let ck = ConnectorKey::new(req.org.clone(), req.from.datahub, req.from.connector);
    let source = fetch::choose(bucket, &ck, &req.source, &req.db_file).await?;
    let stamp = layout::stamp(chrono::Utc::now());
    let held_open_by = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || holders(&target))
            .await
            .unwrap_or_default()
    };
    Ok(RestorePlan {
        bucket: bucket.url().to_string(),
        source,
        from: req.from,
        to: req.to,
        rewrite: req.from != req.to,
        replaces: std::fs::symlink_metadata(&target).is_ok(),
        keep: install::keep_names(&target, &stamp),
        hub_root: match &req.target {
            Target::HubRoot(r) => Some(r.clone()),
            Target::Output(_) => None,
        },
        target,
        held_open_by,
        force: req.force,
        accept_unrewritten: req.accept_unrewritten,
    })
}

/// Carries out `plan` (see the module's contract). Runs blocking file and SQLite work on
/// tokio's blocking pool.
pub async fn execute(
    bucket: &Bucket,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = std::time::Instant::now();
    // Who holds the target open is checked again under the connector's lock (the plan's
    // list may be old: another restore, since finished, may have had it open).
    let staging = Staging::open(&plan.target, plan.hub_root.as_deref(), plan.force).await?;
    let fetched = match fetch::fetch(
        bucket,
        &plan.source,
        &staging.work_path(),
        "download-",
        progress,
    )
    .await
    {
        Ok(f) => f,
        Err(e) => {
            blocking(move || {
                drop(staging);
                Ok(())
            })
            .await?;
            return Err(e);
        }
    };
    let mut warnings = fetched.warnings.clone();
    if fetched.legacy {
        warnings.push(format!(
            "{}: no manifest (a backup uploaded by the old system): its checksum could not be checked; integrity and ids were",
            plan.source.key
        ));
    }
    let download = Download {
        file: fetched.file,
        key: fetched.key.clone(),
        bytes: fetched.bytes,
        journal_mode: fetched
            .journal_mode
            .clone()
            .or(plan.source.journal_mode.clone()),
        from: plan.from,
        to: plan.to,
        accept_unrewritten: plan.accept_unrewritten,
        // A manifest vouched for the bytes: a checked snapshot (not a legacy object,
        // not a state built from the stream).
        checked_at_backup: !fetched.legacy && fetched.continuous.is_none(),
    };
    let (prepared, kept) = blocking(move || {
        let prepared = staging.prepare(download)?;
        let report = (
            prepared.rewrite.clone(),
            prepared.journal_mode.clone(),
            prepared.check,
            prepared.sha256_installed.clone(),
            prepared.bytes,
            prepared.events,
            prepared.warnings.clone(),
        );
        Ok((report, prepared.install()?))
    })
    .await?;
    let (rewrite, journal_mode, check, sha256_installed, bytes, events, accepted) = prepared;
    warnings.extend(accepted);
    Ok(RestoreReport {
        target: plan.target.clone(),
        key: fetched.key,
        instead_of: fetched.instead_of,
        version: plan.source.version.clone(),
        sha256_fetched: fetched.sha256,
        verified_by: fetched.verified_by,
        legacy: fetched.legacy,
        warnings,
        from: plan.from,
        to: plan.to,
        rewrite,
        journal_mode,
        check,
        kept,
        sha256_installed,
        bytes,
        events,
        seconds: started.elapsed().as_secs_f64(),
        continuous: fetched.continuous.clone(),
    })
}

/// Environment of the `--then` hook.
pub fn hook_env(plan: &RestorePlan) -> Vec<(&'static str, String)> {
    vec![
        ("HUBVAULT_OLD_DATAHUB", plan.from.datahub.to_string()),
        ("HUBVAULT_OLD_CONNECTOR", plan.from.connector.to_string()),
        ("HUBVAULT_NEW_DATAHUB", plan.to.datahub.to_string()),
        ("HUBVAULT_NEW_CONNECTOR", plan.to.connector.to_string()),
        ("HUBVAULT_DB_PATH", plan.target.display().to_string()),
    ]
}

/// Default of `--then-timeout`: the platform's "Update config" and "Sync" take seconds;
/// a hook still running after this is stuck.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(600);

pub use crate::command::HookReport;

/// Runs the `--then` hook once the database is installed ([`crate::command::hook`]:
/// `sh -c`, bounded by `timeout`, without the bucket's secrets, its output passed on and
/// its tail kept). Its stdout goes to our stdout, or to stderr when `stdout_to_stderr` (a
/// JSON stdout stays one document). `Err` only when it could not be started; a hook that
/// failed is a report with `ok: false` (see [`hook_error`]).
pub async fn run_hook(
    cmd: &str,
    plan: &RestorePlan,
    timeout: Duration,
    stdout_to_stderr: bool,
) -> Result<HookReport> {
    let (cmd, env) = (cmd.to_string(), hook_env(plan));
    blocking(move || crate::command::hook(&cmd, &env, timeout, stdout_to_stderr)).await
}

/// The error for a hook that did not succeed: how it ended, and its last output.
pub fn hook_error(r: &HookReport, plan: &RestorePlan) -> Error {
    Error::Check {
        message: format!(
            "the --then command {:?} failed: {}; the restored database IS installed at {}{}",
            r.command,
            r.how_it_ended(),
            plan.target.display(),
            r.output_shown()
        ),
        hint: "run the platform's \"Update config\" and \"Sync\" by hand, or fix the command and run it alone (the database needs no second restore); --then-timeout sets its time limit".into(),
    }
}

/// What the operator still has to do when no `--then` hook is given (steps 13 to 15 of
/// the platform's manual restore).
pub fn remaining_steps(plan: &RestorePlan) -> Vec<String> {
    vec![
        format!(
            "In the platform, set the correct connection settings of connector {}.",
            plan.to.connector
        ),
        "From the hub menu (upper right), run \"Update config\".".into(),
        "From the hub menu, run \"Sync\".".into(),
    ]
}
