//! Automatic restore: plan, then fetch, verify, rewrite, check, install.
//!
//! Contract of [`execute`]: the target path (`<hub-root>/<newConnectorId>/sqlite.db` or
//! `--output`) only ever holds the database that was there before or the new one,
//! verified, and what was there before is kept beside it, whole, with its side files:
//!
//! 1. Under the connector's lock, a private work directory is made IN THE TARGET
//!    DIRECTORY (so the final rename stays on one file system):
//!    `.sqlite.db.hubvault-restore-*/`, mode 0700, owned by whoever runs hubvault, so a
//!    connector's user cannot plant anything in it. The backup is streamed into it.
//! 2. Its sha256 is checked against what `backup` recorded: the version manifest for a
//!    version; for the canonical object `latest.json` OR any version manifest (a backup
//!    cut off between the canonical object and `latest.json` leaves `latest.json` one
//!    backup behind, and must not make a good backup look corrupt). No manifest at all
//!    means a backup the old system uploaded: accepted, with a warning in the report.
//! 3. SQLite header, `integrity_check`, `foreign_key_check`, the `Integrations` and
//!    `Events` tables, and the ids it holds must be the ones asked for.
//! 4. Ids are rewritten ([`crate::sqlite::rewrite`], its own checks included), the
//!    journal mode recorded at backup time is put back, the file is fsynced and given the
//!    owner and mode of the file it replaces (0600 and the directory's owner for a new
//!    one), with `fchown`/`fchmod` on its descriptor.
//! 5. Install, in the target directory held open (never through a link): the old
//!    database gets a second name `sqlite.db.before-restore-<UTC>[-N]` (a hard link made
//!    with `linkat`, which never replaces anything; a copy into a file created with
//!    `O_EXCL` where links are not possible), its `-journal`, `-wal` and `-shm` are renamed
//!    to that name plus the same suffix (`RENAME_NOREPLACE`), then the new file is renamed
//!    over `sqlite.db` and the directory fsynced. The old database is never opened: a
//!    damaged or non-SQLite file is replaced like any other, and a hot journal or WAL left
//!    by a crashed connector travels with the file it belongs to and is never replayed
//!    into the new one. The kept set (`before-restore-…` with its side files) opens in
//!    `sqlite3` as the old database was.
//!
//! A restore refuses while a process holds the target (or its side files) open (Linux:
//! `/proc/*/fd`), unless forced; it refuses a target (or connector directory) that is a
//! symbolic link, and an `--output` that is not a regular file. Any error before step 5
//! leaves the target directory as it was (the work directory is removed). Step 5 has one
//! window of microseconds, between moving the old side files aside and the final rename,
//! in which a crash leaves the old file at the target without its side files; they are
//! kept, whole, under the `before-restore-…` name.
//!
//! A connector's user controls its directory: should it replace the work directory while
//! the restore runs, SQLite (which opens every file with `O_NOFOLLOW`) works in a
//! directory of that user's choosing, never through a link; the replacement is detected
//! before anything is installed, and the restore fails.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::blocking::blocking;
use crate::catalog::fetch::{self, Chosen, Fetched};
pub use crate::catalog::fetch::{ContinuousState, Expected, Source};
use crate::error::{Error, Result};
use crate::model::ids::{Ids, OrgSlug};
use crate::model::layout::{self, ConnectorKey, DbFileName, VersionId};
use crate::progress::Progress;
use crate::sqlite::db;
use crate::sqlite::fsio::{self, SIDE_SUFFIXES, side_path};
use crate::sqlite::lock::ConnectorLock;
use crate::sqlite::rewrite::{self, RewritePlan};
use crate::sqlite::safedir::{self, Kind, SafeDir};
use crate::store::Bucket;

/// Where the restored database goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `<hub-root>/<newConnectorId>/<db file>`; the hub root must exist.
    HubRoot(PathBuf),
    /// This file; its directory must exist.
    Output(PathBuf),
}

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

/// A process that holds a file open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub path: String,
}

/// A file kept beside the target: `from` is renamed (or linked) to `to`. In a plan, `to`
/// is the name as of planning; the install takes the next free one (`…-2`) if it is taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub from: PathBuf,
    pub to: PathBuf,
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
    pub key: String,
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

/// A target that cannot be used; nothing was touched.
fn refuse(path: &Path, what: &str, hint: &str) -> Error {
    Error::usage(format!("{}: {what}", path.display()), hint)
}

const LINK_HINT: &str = "hubvault never writes through a symbolic link in a connector's directory (a connector's user could point it anywhere): replace the link by the real directory or file, or restore with --output to the real path";

/// Fails unless what is at `path` (not following a link) is absent or a regular file.
fn check_target_file(path: &Path, flag: &str) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, "cannot stat the target", e)),
        Ok(m) if m.file_type().is_symlink() => Err(refuse(
            path,
            &format!("{flag} is a symbolic link; nothing was changed"),
            LINK_HINT,
        )),
        Ok(m) if m.is_dir() => Err(refuse(
            path,
            &format!("{flag} is a directory; nothing was changed"),
            "pass a file path, e.g. --output ./restored.db",
        )),
        Ok(m) if !m.is_file() => Err(refuse(
            path,
            &format!("{flag} is a device, FIFO or socket, not a regular file; nothing was changed"),
            "pass the path of a regular file (or of a new one), e.g. --output ./restored.db",
        )),
        Ok(_) => Ok(()),
    }
}

fn target_path(req: &RestoreRequest) -> Result<PathBuf> {
    match &req.target {
        Target::HubRoot(root) => {
            if !root.is_dir() {
                return Err(Error::usage(
                    format!("--hub-root {}: no such directory", root.display()),
                    "pass the hub's root directory (/var/datahub in production), or set HUBVAULT_HUB_ROOT",
                ));
            }
            let dir = root.join(req.to.connector.to_string());
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse(
                        &dir,
                        "the connector's directory is a symbolic link; nothing was changed",
                        LINK_HINT,
                    ));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(refuse(
                        &dir,
                        "is not a directory, so the connector's database cannot go there; nothing was changed",
                        "remove or rename that file, or restore with --output",
                    ));
                }
                _ => {}
            }
            let target = dir.join(req.db_file.as_str());
            check_target_file(&target, "the connector's database")?;
            Ok(target)
        }
        Target::Output(file) => {
            let parent = fsio::parent_dir(file);
            if !parent.is_dir() {
                return Err(Error::usage(
                    format!(
                        "--output {}: directory {} does not exist",
                        file.display(),
                        parent.display()
                    ),
                    "create the directory first or choose another --output",
                ));
            }
            if file.file_name().is_none() || file.as_os_str().to_string_lossy().ends_with('/') {
                return Err(Error::usage(
                    format!("--output {} is a directory", file.display()),
                    "pass a file path, e.g. --output ./restored.db",
                ));
            }
            check_target_file(file, "--output")?;
            Ok(file.clone())
        }
    }
}

/// `<target>.before-restore-<stamp>` (`-N` added from the second on).
fn keep_name(target_name: &OsStr, stamp: &str, n: u32) -> OsString {
    let mut s = target_name.to_os_string();
    s.push(format!(".before-restore-{stamp}"));
    if n > 0 {
        s.push(format!("-{}", n + 1));
    }
    s
}

fn with_suffix(name: &OsStr, suffix: &str) -> OsString {
    let mut s = name.to_os_string();
    s.push(suffix);
    s
}

/// The target and its side files that are there now, as they would be kept.
fn keep_names(target: &Path, stamp: &str) -> Vec<Kept> {
    let name = target.file_name().unwrap_or_default();
    let keep = fsio::parent_dir(target).join(keep_name(name, stamp, 0));
    let mut out = Vec::new();
    if std::fs::symlink_metadata(target).is_ok() {
        out.push(Kept {
            from: target.to_path_buf(),
            to: keep.clone(),
        });
    }
    for suffix in SIDE_SUFFIXES {
        let side = side_path(target, suffix);
        if std::fs::symlink_metadata(&side).is_ok() {
            out.push(Kept {
                from: side,
                to: side_path(&keep, suffix),
            });
        }
    }
    out
}

/// Decides what to fetch and where it goes; reads the bucket, changes nothing.
pub async fn plan(bucket: &Bucket, req: &RestoreRequest) -> Result<RestorePlan> {
    rewrite::check_ids(req.from, req.to)?;
    let target = target_path(req)?;
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
        keep: keep_names(&target, &stamp),
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

/// Processes (other than this one) that hold `target` or its side files open, from
/// `/proc/*/fd`. Processes we may not look into are skipped.
pub fn holders(target: &Path) -> Vec<Holder> {
    let Some(dir) = target.parent() else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::canonicalize(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let name = target.file_name().unwrap_or_default();
    let wanted: Vec<PathBuf> = ["", "-journal", "-wal", "-shm"]
        .iter()
        .map(|s| side_path(&dir.join(name), s))
        .collect();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && wanted.contains(&link)
            {
                let command = std::fs::read_to_string(p.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                out.push(Holder {
                    pid,
                    command,
                    path: link.display().to_string(),
                });
                break;
            }
        }
    }
    out
}

/// Carries out `plan` (see the module's contract). Runs blocking file and SQLite work on
/// tokio's blocking pool.
pub async fn execute(
    bucket: &Bucket,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = std::time::Instant::now();
    // Who holds the target open is checked under the connector's lock (the plan's list
    // may be old: another restore, since finished, may have had it open for a moment).
    let (dir, created) = {
        let plan = plan.clone();
        blocking(move || open_target_dir(&plan)).await?
    };
    let result = execute_in(bucket, plan, &dir, progress, started).await;
    if let (Err(_), Some((parent, name))) = (&result, created) {
        // Leave no trace of a restore that did not happen: the directory we made, with
        // the lock file in it.
        let lock = ConnectorLock::name_for(plan.target.file_name().unwrap_or_default());
        let _ = blocking(move || {
            let _ = dir.remove(&lock);
            drop(dir);
            let _ = rustix::fs::unlinkat(&parent, &name, rustix::fs::AtFlags::REMOVEDIR);
            Ok(())
        })
        .await;
    }
    result
}

/// Opens the target's directory: for a hub root, `<hub-root>/<connectorId>` relative to
/// the hub root and never through a link, created (owned like the hub root) if missing.
/// Returns the directory and, if it was created, the hub root and its name (to remove it
/// again if the restore fails).
#[allow(clippy::type_complexity)]
fn open_target_dir(plan: &RestorePlan) -> Result<(SafeDir, Option<(SafeDir, OsString)>)> {
    let dir_path = fsio::parent_dir(&plan.target);
    let Some(root) = &plan.hub_root else {
        return Ok((SafeDir::open(dir_path)?, None));
    };
    let root_dir = SafeDir::open(root)?;
    let name = dir_path.file_name().unwrap_or_default().to_os_string();
    match root_dir.entry(&name)? {
        Some(e) if e.kind == Kind::Symlink => {
            Err(safedir::link_refused(dir_path).with_hint(LINK_HINT))
        }
        Some(_) => Ok((root_dir.subdir(&name)?, None)),
        None => {
            let dir = root_dir.mkdir(&name, 0o755)?;
            let owner = root_dir.stat()?;
            if safedir::is_root() {
                let _ = rustix::fs::fchown(
                    &dir,
                    Some(rustix::fs::Uid::from_raw(owner.uid)),
                    Some(rustix::fs::Gid::from_raw(owner.gid)),
                );
            }
            Ok((dir, Some((root_dir, name))))
        }
    }
}

fn held_open_error(target: &Path, holders: &[Holder]) -> Error {
    let who: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.command))
        .collect();
    Error::Io {
        path: target.to_path_buf(),
        message: format!("is held open by {}; nothing was changed", who.join(", ")),
        hint: "stop the connector first (or pass --force to replace it anyway: what the process writes afterwards is lost)".into(),
        source: std::io::Error::new(std::io::ErrorKind::ResourceBusy, "held open"),
    }
}

/// The prefix of the work directories (and, from older versions, temp files) a restore
/// leaves in the target directory while it runs.
fn temp_prefix(target: &Path) -> String {
    format!(
        ".{}.hubvault-restore-",
        target.file_name().unwrap_or_default().to_string_lossy()
    )
}

async fn execute_in(
    bucket: &Bucket,
    plan: &RestorePlan,
    dir: &SafeDir,
    progress: &dyn Progress,
    started: std::time::Instant,
) -> Result<RestoreReport> {
    let name = plan.target.file_name().unwrap_or_default().to_os_string();
    // One restore (or backup) of this target at a time; a second waits a little, then
    // fails cleanly.
    let _lock = ConnectorLock::acquire_in(dir, &name, Duration::from_secs(10)).await?;
    let prefix = temp_prefix(&plan.target);
    // Checked again under the lock: the plan may be old.
    let (work, work_name) = {
        let (dir, prefix, plan) = (dir.try_clone()?, prefix.clone(), plan.clone());
        blocking(move || {
            remove_stale_work(&dir, &prefix);
            let holders = holders(&plan.target);
            if !holders.is_empty() && !plan.force {
                return Err(held_open_error(&plan.target, &holders));
            }
            match dir.entry(OsStr::new(&name))? {
                Some(e) if e.kind == Kind::Symlink => {
                    return Err(refuse(
                        &plan.target,
                        "is a symbolic link; nothing was changed",
                        LINK_HINT,
                    ));
                }
                Some(e) if e.kind != Kind::File => {
                    return Err(refuse(
                        &plan.target,
                        &format!(
                            "is {}, not a database file; nothing was changed",
                            e.kind.described()
                        ),
                        "remove it or choose another target",
                    ));
                }
                _ => {}
            }
            make_work_dir(&dir, &prefix)
        })
        .await?
    };
    let work_path = dir.path().join(&work_name);
    let result = async {
        let fetched = fetch::fetch(bucket, &plan.source, &work_path, "download-", progress).await?;
        let (plan2, dir2, work2) = (plan.clone(), dir.try_clone()?, work.try_clone()?);
        let work_path = work_path.clone();
        blocking(move || prepare_and_install(&plan2, &dir2, &work2, &work_path, fetched, started))
            .await
    }
    .await;
    let dir2 = dir.try_clone()?;
    let _ = blocking(move || {
        drop(work);
        dir2.remove_own_dir(&work_name);
        Ok(())
    })
    .await;
    result
}

/// A fresh work directory `<prefix><random>` (mode 0700) in `dir`, and its name.
fn make_work_dir(dir: &SafeDir, prefix: &str) -> Result<(SafeDir, OsString)> {
    let mut last = None;
    for _ in 0..16 {
        let name = OsString::from(format!("{prefix}{:016x}", rand::random::<u64>()));
        match dir.mkdir(&name, 0o700) {
            Ok(work) => {
                // Ours, as made: not a directory someone else put at the name between
                // mkdir and open.
                let e = work.stat()?;
                if e.uid != rustix::process::geteuid().as_raw() || e.mode & 0o077 != 0 {
                    return Err(Error::check(
                        format!(
                            "{}: the work directory was replaced as it was made",
                            work.path().display()
                        ),
                        "another user is changing files in this directory; check it and try again",
                    ));
                }
                return Ok((work, name));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// Work directories (and temp files of older versions) of restores that were killed.
/// Only called under the target's lock, so no live restore owns them.
fn remove_stale_work(dir: &SafeDir, prefix: &str) {
    for name in dir.names() {
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        match dir.entry(&name) {
            Ok(Some(e)) if e.kind == Kind::Dir => dir.remove_own_dir(&name),
            Ok(Some(e)) if e.kind == Kind::File => {
                let _ = dir.remove(&name);
            }
            _ => {}
        }
    }
}

/// Journal mode of the database file at `name` in `dir` from its header (byte 18 is 2
/// for WAL), without opening it with SQLite: it may be damaged, or not a database.
fn journal_mode_of(dir: &SafeDir, name: &OsStr) -> Option<String> {
    let mut f = dir.open_file(name).ok()?;
    let mut head = [0u8; 100];
    f.read_exact(&mut head).ok()?;
    if &head[..16] != b"SQLite format 3\0" {
        return None;
    }
    Some(if head[18] == 2 { "wal" } else { "delete" }.to_string())
}

fn prepare_and_install(
    plan: &RestorePlan,
    dir: &SafeDir,
    work: &SafeDir,
    work_path: &Path,
    fetched: Fetched,
    started: std::time::Instant,
) -> Result<RestoreReport> {
    let tmp: &Path = &fetched.file;
    let tmp_name = tmp.file_name().unwrap_or_default().to_os_string();
    let target_name = plan.target.file_name().unwrap_or_default().to_os_string();
    let mut warnings = fetched.warnings.clone();
    if fetched.legacy {
        warnings.push(format!(
            "{}: no manifest (a backup uploaded by the old system): its checksum could not be checked; integrity and ids were",
            plan.source.key
        ));
    }
    // Check the backup as fetched, before anything else touches it.
    let size = fetched.bytes;
    let damaged = |e: Error| {
        Error::check(
            format!("{}: the backup fails its check: {e}", plan.source.key),
            "the backup is damaged; restore an older version (`hubvault versions`, then --version ID)",
        )
    };
    // The temp file is ours alone until the rename: no journal, no syncs until the end.
    // A crash leaves only a work directory that the next restore removes. Locked down
    // like every connection: the download is untrusted input.
    let mut conn = db::open_scratch(tmp).map_err(damaged)?;
    let check = db::check_integrity(&conn, tmp, size).map_err(damaged)?;
    let not_connector = |e: Error| {
        Error::check(
            format!(
                "{}: the backup is not a connector database: {e}",
                plan.source.key
            ),
            "restore an older version (`hubvault versions`, then --version ID)",
        )
    };
    let info = db::read_info(&conn, tmp).map_err(not_connector)?;
    db::require_connector_tables(&conn, tmp).map_err(not_connector)?;
    if info.datahub != plan.from.datahub || info.connector != plan.from.connector {
        return Err(Error::check(
            format!(
                "{}: the backup holds datahub {} and connector {}, not --datahub {} --connector {}",
                plan.source.key,
                info.datahub,
                info.connector,
                plan.from.datahub,
                plan.from.connector
            ),
            "the object was copied to the wrong key; pass the ids it holds, or restore another version",
        ));
    }
    let rewrite = if plan.rewrite {
        Some(rewrite::apply(
            &mut conn,
            tmp,
            plan.from,
            plan.to,
            plan.accept_unrewritten,
        )?)
    } else {
        None
    };
    if let Some(r) = rewrite.as_ref().filter(|r| r.accepted_unrewritten) {
        warnings.push(format!(
            "{} place(s) still hold an old id that cannot be rewritten (accepted with --accept-unrewritten): {}",
            r.unrewritten.len(),
            r.unrewritten
                .iter()
                .map(|u| format!("{}.{}", u.table, u.column))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Put back the live database's journal mode; else the old target's; else leave it.
    let journal_mode = match fetched
        .journal_mode
        .as_ref()
        .or(plan.source.journal_mode.as_ref())
    {
        Some(m) => Some(m.clone()),
        None => journal_mode_of(dir, &target_name),
    };
    if let Some(m) = journal_mode.as_deref().filter(|m| *m == "wal") {
        conn.pragma_update(None, "journal_mode", m)
            .map_err(|e| Error::sqlite(tmp, "cannot set the journal mode", e))?;
    }
    conn.close()
        .map_err(|(_, e)| Error::sqlite(tmp, "cannot close the restored database", e))?;

    // The file alone (closing checkpointed and removed any -wal) must name the new ids.
    let (final_mode, events) = {
        let c = db::open_read_only(tmp)?;
        let info = db::read_info(&c, tmp)?;
        if info.datahub != plan.to.datahub || info.connector != plan.to.connector {
            return Err(Error::check(
                format!("{}: the restored file names the wrong ids", tmp.display()),
                "nothing was installed; report this as a bug",
            ));
        }
        let events = db::table_counts(&c, tmp)?.get("Events").copied();
        (db::page_info(&c, tmp)?.2, events)
    };
    // A read-only connection to a WAL file leaves empty -wal/-shm behind; they belong to
    // the temp name and must not travel.
    for s in SIDE_SUFFIXES {
        let _ = work.remove(&with_suffix(&tmp_name, s));
    }
    // What SQLite worked on by path must be what we hold open: the work directory at its
    // path is still ours.
    let at_path = std::fs::symlink_metadata(work_path)
        .map_err(|e| Error::io(work_path, "cannot stat the work directory", e))?;
    let ours = work.stat()?;
    if (at_path.dev(), at_path.ino()) != (ours.dev, ours.ino) {
        return Err(Error::check(
            format!(
                "{}: the work directory was replaced while the restore ran; nothing was installed",
                work_path.display()
            ),
            "another user is changing files in the connector's directory; stop it and run the restore again",
        ));
    }
    let mut file = work.open_file_rw(&tmp_name)?;
    let (sha256_installed, bytes) = fsio::sha256_of(&mut file, tmp)?;
    set_owner_and_mode(&file, tmp, dir, &target_name)?;
    file.sync_all()
        .map_err(|e| Error::io(tmp, "cannot fsync", e))?;
    drop(file);

    let kept = install(plan, dir, work, &tmp_name)?;
    // The rename consumed the temp file: make sure its drop does not remove anything.
    let _ = fetched.file.keep();
    Ok(RestoreReport {
        target: plan.target.clone(),
        key: plan.source.key.clone(),
        version: plan.source.version.clone(),
        sha256_fetched: fetched.sha256,
        verified_by: fetched.verified_by,
        legacy: fetched.legacy,
        warnings,
        from: plan.from,
        to: plan.to,
        rewrite,
        journal_mode: final_mode,
        check,
        kept,
        sha256_installed,
        bytes,
        events,
        seconds: started.elapsed().as_secs_f64(),
        continuous: fetched.continuous.clone(),
    })
}

/// The owner and mode of the file being replaced; for a new file 0600 and the owner of
/// its directory (the connector runs as that user; we may be root). Set on the open
/// descriptor, never by path. Only root gives a file away: anyone else keeps the file
/// they restored (a user restoring to `--output /tmp/x.db` cannot give it to root).
fn set_owner_and_mode(
    file: &std::fs::File,
    shown: &Path,
    dir: &SafeDir,
    target_name: &OsStr,
) -> Result<()> {
    let (uid, gid, mode) = match dir.entry(target_name)? {
        Some(e) if e.kind == Kind::File => (e.uid, e.gid, e.mode),
        _ => {
            let d = dir.stat()?;
            (d.uid, d.gid, 0o600)
        }
    };
    safedir::set_mode(file, mode)
        .map_err(|e| Error::io(shown, "cannot set the mode of the restored database", e))?;
    let now = safedir::entry_of_file(file).map_err(|e| Error::io(shown, "cannot stat", e))?;
    if (now.uid, now.gid) != (uid, gid) && safedir::is_root() {
        safedir::give_to(file, uid, gid)
            .map_err(|e| Error::io(shown, "cannot give the restored database its owner", e))?;
    }
    Ok(())
}

/// Step 5 of the contract. Every step leaves the target either the old file or the new
/// one, and every name it had is kept.
fn install(
    plan: &RestorePlan,
    dir: &SafeDir,
    work: &SafeDir,
    tmp_name: &OsStr,
) -> Result<Vec<Kept>> {
    let target = &plan.target;
    let name = target.file_name().unwrap_or_default();
    let shown = |n: &OsStr| dir.shown(n);
    let old = dir.entry(name)?;
    let sides: Vec<&str> = SIDE_SUFFIXES
        .into_iter()
        .filter(|s| matches!(dir.entry(&with_suffix(name, s)), Ok(Some(_))))
        .collect();
    let mut kept = Vec::new();
    if old.is_some() || !sides.is_empty() {
        let stamp = layout::stamp(chrono::Utc::now());
        let base = keep_old(dir, name, &stamp, old.is_some())?;
        if old.is_some() {
            kept.push(Kept {
                from: target.clone(),
                to: shown(&base),
            });
        }
        let mut moved: Vec<(OsString, OsString)> = Vec::new();
        for s in &sides {
            let (from, to) = (with_suffix(name, s), with_suffix(&base, s));
            if let Err(e) = dir.rename_new(&from, &to) {
                // Put back what was moved: the old set stays whole under its own name.
                for (f, t) in moved.iter().rev() {
                    let _ = dir.rename_new(t, f);
                }
                if old.is_some() {
                    let _ = dir.remove(&base);
                }
                return Err(Error::io(
                    shown(&from),
                    "cannot move aside; nothing was changed",
                    e,
                ));
            }
            kept.push(Kept {
                from: shown(&from),
                to: shown(&to),
            });
            moved.push((from, to));
        }
        if let Err(e) = dir.rename_from(work, tmp_name, name) {
            for (f, t) in moved.iter().rev() {
                let _ = dir.rename_new(t, f);
            }
            if old.is_some() {
                let _ = dir.remove(&base);
            }
            return Err(Error::io(
                target,
                "cannot move the restored database into place",
                e,
            ));
        }
    } else {
        dir.rename_from(work, tmp_name, name)
            .map_err(|e| Error::io(target, "cannot move the restored database into place", e))?;
    }
    dir.fsync()?;
    Ok(kept)
}

/// Picks the first free `<name>.before-restore-<stamp>[-N]` (free with every side
/// suffix too) and, when `has_file`, gives the old file that second name: a hard link
/// (`linkat` never replaces), else a copy into a file created with `O_EXCL`. Returns the
/// name.
fn keep_old(dir: &SafeDir, name: &OsStr, stamp: &str, has_file: bool) -> Result<OsString> {
    for n in 0..10_000 {
        let base = keep_name(name, stamp, n);
        let taken = std::iter::once(base.clone())
            .chain(SIDE_SUFFIXES.iter().map(|s| with_suffix(&base, s)))
            .any(|c| !matches!(dir.entry(&c), Ok(None)));
        if taken {
            continue;
        }
        if !has_file {
            return Ok(base);
        }
        match dir.link_new(name, &base) {
            Ok(()) => return Ok(base),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => match copy_new(dir, name, &base) {
                Ok(()) => return Ok(base),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::io(
                        dir.shown(&base),
                        "cannot keep the previous database; nothing was changed",
                        e,
                    ));
                }
            },
        }
    }
    Err(Error::check(
        format!(
            "{}: no free name to keep the previous database under",
            dir.shown(name).display()
        ),
        "remove old sqlite.db.before-restore-* files you no longer need, and try again",
    ))
}

/// Copies the regular file `from` to a new file `to` (`O_EXCL`, never through a link),
/// with its owner and mode, fsynced.
fn copy_new(dir: &SafeDir, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
    let mut src = dir
        .open_file(from)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let meta = safedir::entry_of_file(&src)?;
    let mut dst = dir.create_new(to, 0o600)?;
    let done = (|| {
        std::io::copy(&mut src, &mut dst)?;
        safedir::set_mode(&dst, meta.mode)?;
        if safedir::is_root() {
            safedir::give_to(&dst, meta.uid, meta.gid)?;
        }
        dst.sync_all()
    })();
    if done.is_err() {
        let _ = dir.remove(to);
    }
    done
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

/// What the `--then` hook did.
#[derive(Clone, Debug, Serialize)]
pub struct HookReport {
    pub command: String,
    /// True if and only if it exited with code 0 within the timeout.
    pub ok: bool,
    pub timeout_seconds: f64,
    #[serde(flatten)]
    pub finished: crate::command::Finished,
}

/// Runs the `--then` hook once the database is installed ([`crate::command`]: `sh -c`,
/// bounded by `timeout`, without the bucket's secrets, its output passed on and its tail
/// kept). Its stdout goes to our stdout, or to stderr when `stdout_to_stderr` (a JSON
/// stdout stays one document). `Err` only when it could not be started; a hook that
/// failed is a report with `ok: false` (see [`hook_error`]).
pub async fn run_hook(
    cmd: &str,
    plan: &RestorePlan,
    timeout: Duration,
    stdout_to_stderr: bool,
) -> Result<HookReport> {
    let (cmd, env) = (cmd.to_string(), hook_env(plan));
    blocking(move || {
        let to = if stdout_to_stderr {
            crate::command::Stdout::Stderr
        } else {
            crate::command::Stdout::Stdout
        };
        let finished = crate::command::run(&cmd, &env, timeout, to)?;
        Ok(HookReport {
            ok: finished.success(),
            command: cmd,
            timeout_seconds: timeout.as_secs_f64(),
            finished,
        })
    })
    .await
}

/// The error for a hook that did not succeed: how it ended, and its last output.
pub fn hook_error(r: &HookReport, plan: &RestorePlan) -> Error {
    let how = r
        .finished
        .describe(Duration::from_secs_f64(r.timeout_seconds));
    let tail = if r.finished.output_tail.is_empty() {
        " (it printed nothing)".to_string()
    } else {
        format!(
            "; its last output:\n  {}",
            r.finished.output_tail.join("\n  ")
        )
    };
    Error::Check {
        message: format!(
            "the --then command {:?} failed: {how} after {:.1}s; the restored database IS installed at {}{tail}",
            r.command,
            r.finished.seconds,
            plan.target.display()
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
