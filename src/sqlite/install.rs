//! Putting a restored database in place: the target directory held open and locked, a
//! private work directory beside the target, the downloaded file checked, rewritten and
//! prepared there, then installed with the old database kept. Shared by `restore` (one
//! connector) and `restore-hub` (every connector of a hub: all prepared, then all
//! installed); the fetch itself is the caller's ([`crate::catalog::fetch`]).
//!
//! Contract: the target path (`<hub-root>/<newConnectorId>/sqlite.db` or `--output`)
//! only ever holds the database that was there before or the new one, verified, and what
//! was there before is kept beside it, whole, with its side files:
//!
//! 1. Under the connector's lock ([`Staging::open`]), a private work directory is made
//!    IN THE TARGET DIRECTORY (so the final rename stays on one file system):
//!    `.sqlite.db.hubvault-restore-*/`, mode 0700, owned by whoever runs hubvault, so a
//!    connector's user cannot plant anything in it. The caller streams the backup into
//!    it and checks its sha256 against what `backup` recorded.
//! 2. [`Staging::prepare`]: SQLite header, `integrity_check`, `foreign_key_check`, the
//!    `Integrations` and `Events` tables, and the ids it holds must be the ones asked for.
//!    Ids are rewritten ([`crate::sqlite::rewrite`], its own checks included), the
//!    journal mode recorded at backup time is put back, the file is fsynced and given the
//!    owner and mode of the file it replaces (0600 and the directory's owner for a new
//!    one), with `fchown`/`fchmod` on its descriptor.
//! 3. [`Prepared::install`], in the target directory held open (never through a link):
//!    the old database gets a second name `sqlite.db.before-restore-<UTC>[-N]` (a hard
//!    link made with `linkat`, which never replaces anything; a copy into a file created
//!    with `O_EXCL` where links are not possible), its `-journal`, `-wal` and `-shm` are
//!    renamed to that name plus the same suffix (`RENAME_NOREPLACE`), then the new file is
//!    renamed over `sqlite.db` and the directory fsynced. The old database is never
//!    opened: a damaged or non-SQLite file is replaced like any other, and a hot journal or
//!    WAL left by a crashed connector travels with the file it belongs to and is never
//!    replayed into the new one. The kept set (`before-restore-…` with its side files)
//!    opens in `sqlite3` as the old database was.
//!
//! A restore refuses while a process holds the target (or its side files) open (Linux:
//! `/proc/*/fd`), unless forced; it refuses a target (or connector directory) that is a
//! symbolic link, and an `--output` that is not a regular file. Dropping a [`Staging`] or
//! a [`Prepared`] that was not installed leaves the target directory as it was (the work
//! directory is removed, and a connector directory made for the restore with it). The
//! install has one window of microseconds, between moving the old side files aside and
//! the final rename, in which a crash leaves the old file at the target without its side
//! files; they are kept, whole, under the `before-restore-…` name.
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
use crate::error::{Error, Result};
use crate::model::ids::Ids;
use crate::model::layout::{self, DbFileName};
use crate::sqlite::db;
use crate::sqlite::fsio::{self, SIDE_SUFFIXES, side_path};
use crate::sqlite::lock::ConnectorLock;
use crate::sqlite::rewrite::{self, RewritePlan};
use crate::sqlite::safedir::{self, Kind, SafeDir};

/// Where the restored database goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `<hub-root>/<newConnectorId>/<db file>`; the hub root must exist.
    HubRoot(PathBuf),
    /// This file; its directory must exist.
    Output(PathBuf),
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

/// A target that cannot be used; nothing was touched.
fn refuse(path: &Path, what: &str, hint: &str) -> Error {
    Error::usage(format!("{}: {what}", path.display()), hint)
}

pub const LINK_HINT: &str = "hubvault never writes through a symbolic link in a connector's directory (a connector's user could point it anywhere): replace the link by the real directory or file, or restore with --output to the real path";

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

/// The hub root, checked to be a directory (exit 2 otherwise).
pub fn check_hub_root(root: &Path) -> Result<()> {
    if !root.is_dir() {
        return Err(Error::usage(
            format!("--hub-root {}: no such directory", root.display()),
            "pass the hub's root directory (/var/datahub in production), or set HUBVAULT_HUB_ROOT",
        ));
    }
    Ok(())
}

/// The path of the restored database for `target`, checked (changes nothing): a
/// connector directory or database that is a link, a device or a directory is refused.
pub fn target_path(
    target: &Target,
    connector: impl std::fmt::Display,
    db_file: &DbFileName,
) -> Result<PathBuf> {
    match target {
        Target::HubRoot(root) => {
            check_hub_root(root)?;
            let dir = root.join(connector.to_string());
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
            let target = dir.join(db_file.as_str());
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
pub fn keep_names(target: &Path, stamp: &str) -> Vec<Kept> {
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

/// A target directory held open and locked, with a private work directory in it: where
/// a backup is downloaded, checked and rewritten. Dropped without [`Prepared::install`],
/// it removes what it made (the work directory; the connector directory and its lock
/// file when it created them).
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    dir: SafeDir,
    /// The hub root and the name of the connector directory made for this restore.
    created: Option<(SafeDir, OsString)>,
    lock: Option<ConnectorLock>,
    work: Option<(SafeDir, OsString)>,
}

/// The backup, downloaded into the work directory and checked against its manifest by
/// the caller.
pub struct Download {
    pub file: tempfile::TempPath,
    /// The object it came from (for messages).
    pub key: String,
    pub bytes: u64,
    /// The journal mode the live database had, when known (manifest or stream base).
    pub journal_mode: Option<String>,
    /// The ids the backup must hold.
    pub from: Ids,
    /// The ids the restored database gets (equal to `from`: no rewrite).
    pub to: Ids,
    /// True if and only if old ids the rewrite cannot rewrite may stay (listed in the
    /// rewrite's report and in [`Prepared::warnings`]); otherwise [`Staging::prepare`]
    /// refuses, before anything is installed.
    pub accept_unrewritten: bool,
    /// True if and only if the bytes are a snapshot hubvault's backup checked before it
    /// uploaded it: their sha256 equals a manifest's (`latest.json` or a version's), and
    /// a manifest is only ever written for a snapshot that passed `integrity_check` /
    /// `quick_check`, `foreign_key_check` and the ids (docs/DESIGN.md, "Restore onto new
    /// ids: which checks run"). Then a rewrite skips the check of the download and keeps
    /// the one of its result. False for a legacy object (no manifest: another uploader
    /// wrote it) and for a state built from the stream.
    pub checked_at_backup: bool,
}

/// A restored database, checked and ready in the work directory: [`Prepared::install`]
/// puts it in place.
#[derive(Debug)]
pub struct Prepared {
    staging: Staging,
    /// `None` once installed (the rename consumed it).
    file: Option<tempfile::TempPath>,
    pub rewrite: Option<RewritePlan>,
    pub journal_mode: String,
    pub check: &'static str,
    pub sha256_installed: String,
    pub bytes: u64,
    pub events: Option<u64>,
    /// What the operator must know: old ids accepted unrewritten.
    pub warnings: Vec<String>,
}

/// How long a restore waits for a backup or another restore of the same connector.
const LOCK_WAIT: Duration = Duration::from_secs(10);

impl Staging {
    /// Opens the target's directory (for a hub root, `<hub-root>/<connectorId>` relative to
    /// the hub root and never through a link, created owned like the hub root if
    /// missing), takes the connector's lock, checks again who holds the target open
    /// (refused unless `force`) and what is at the target, and makes the work directory.
    pub async fn open(target: &Path, hub_root: Option<&Path>, force: bool) -> Result<Staging> {
        let (dir, created) = {
            let (target, hub_root) = (target.to_path_buf(), hub_root.map(Path::to_path_buf));
            blocking(move || open_target_dir(&target, hub_root.as_deref())).await?
        };
        Self::lock_and_make_work(target.to_path_buf(), dir, created, force).await
    }

    /// As [`Staging::open`], for a connector directory the caller made and holds (a
    /// directory nobody else can reach: no one can hold the target open).
    pub async fn open_in(dir: SafeDir, target: PathBuf) -> Result<Staging> {
        Self::lock_and_make_work(target, dir, None, true).await
    }

    async fn lock_and_make_work(
        target: PathBuf,
        dir: SafeDir,
        created: Option<(SafeDir, OsString)>,
        force: bool,
    ) -> Result<Staging> {
        let mut s = Staging {
            target,
            dir,
            created,
            lock: None,
            work: None,
        };
        let name = s.target.file_name().unwrap_or_default().to_os_string();
        // One restore (or backup) of this target at a time; a second waits a little, then
        // fails cleanly.
        s.lock = Some(ConnectorLock::acquire_in(&s.dir, &name, LOCK_WAIT).await?);
        let prefix = temp_prefix(&s.target);
        // Checked again under the lock: the plan may be old.
        let (dir, target) = (s.dir.try_clone()?, s.target.clone());
        let work = blocking(move || {
            remove_stale_work(&dir, &prefix);
            let holders = if force { Vec::new() } else { holders(&target) };
            if !holders.is_empty() {
                return Err(held_open_error(&target, &holders));
            }
            match dir.entry(&name)? {
                Some(e) if e.kind == Kind::Symlink => {
                    return Err(refuse(
                        &target,
                        "is a symbolic link; nothing was changed",
                        LINK_HINT,
                    ));
                }
                Some(e) if e.kind != Kind::File => {
                    return Err(refuse(
                        &target,
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
        .await;
        // On an error `s` is dropped on this thread: a few unlinks at most.
        s.work = Some(work?);
        Ok(s)
    }

    /// The work directory, where the caller downloads the backup.
    pub fn work_path(&self) -> PathBuf {
        let name = self
            .work
            .as_ref()
            .map(|(_, n)| n.as_os_str())
            .unwrap_or_default();
        self.dir.path().join(name)
    }

    /// The target this staging is for.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Checks the download, rewrites its ids, puts back its journal mode, reads it again,
    /// gives it its owner and mode and fsyncs it (steps 2 of the module's contract).
    /// Blocking: run it on the blocking pool. On an error, everything is undone.
    pub fn prepare(self, d: Download) -> Result<Prepared> {
        let (work, work_name) = self.work.as_ref().expect("made by open");
        let (work, work_path) = (work, self.dir.path().join(work_name));
        let dir = &self.dir;
        let tmp: &Path = &d.file;
        let tmp_name = tmp.file_name().unwrap_or_default().to_os_string();
        let target_name = self.target.file_name().unwrap_or_default().to_os_string();
        // Check the backup as fetched, before anything else touches it.
        let size = d.bytes;
        let key = &d.key;
        let damaged = |e: Error| {
            Error::check(
                format!("{key}: the backup fails its check: {e}"),
                "the backup is damaged; restore an older version (`hubvault versions`, then --version ID)",
            )
        };
        // The temp file is ours alone until the rename: no journal, no syncs until the end.
        // A crash leaves only a work directory that the next restore removes. Locked down
        // like every connection: the download is untrusted input.
        let mut conn = db::open_scratch(tmp).map_err(damaged)?;
        let rewriting = d.from != d.to;
        // The check of the download is redundant only when both hold: the bytes are the
        // ones a backup checked (their sha256 is a manifest's), and the rewrite checks its
        // result before anything is installed. A download restored as it is, or bytes no
        // manifest vouches for (another uploader's canonical object), are checked here,
        // before the rewrite reads them.
        let check = if rewriting && d.checked_at_backup {
            tracing::debug!(
                "restore: the download's sha256 is a checked backup's: its result is checked after the rewrite"
            );
            db::check_for(size)
        } else {
            let t0 = std::time::Instant::now();
            let check = db::check_integrity_on_two(&conn, tmp, size).map_err(damaged)?;
            tracing::debug!("restore: {check} of the download took {:?}", t0.elapsed());
            check
        };
        let not_connector = |e: Error| {
            Error::check(
                format!("{key}: the backup is not a connector database: {e}"),
                "restore an older version (`hubvault versions`, then --version ID)",
            )
        };
        let info = db::read_info(&conn, tmp).map_err(not_connector)?;
        db::require_connector_tables(&conn, tmp).map_err(not_connector)?;
        if info.datahub != d.from.datahub || info.connector != d.from.connector {
            return Err(Error::check(
                format!(
                    "{key}: the backup holds datahub {} and connector {}, not --datahub {} --connector {}",
                    info.datahub, info.connector, d.from.datahub, d.from.connector
                ),
                "the object was copied to the wrong key; pass the ids it holds, or restore another version",
            ));
        }
        // Put back the live database's journal mode; else the old target's; else leave it.
        let journal_mode = match d.journal_mode.as_ref() {
            Some(m) => Some(m.clone()),
            None => journal_mode_of(dir, &target_name),
        };
        let set_journal_mode = |conn: &rusqlite::Connection| -> Result<()> {
            if let Some(m) = journal_mode.as_deref().filter(|m| *m == "wal") {
                conn.pragma_update(None, "journal_mode", m)
                    .map_err(|e| Error::sqlite(tmp, "cannot set the journal mode", e))?;
            }
            Ok(())
        };
        let mut hashed = None;
        let rewrite = if rewriting {
            // The copy is ours alone and thrown away on any error: the rewrite commits at
            // once and is checked after, on two read-only connections, while a third
            // thread hashes the file (and starts its writeback) for the install. Only
            // read-only connections are open then: nothing writes the file.
            let unchecked = rewrite::apply_unchecked_switched(
                &mut conn,
                tmp,
                d.from,
                d.to,
                d.accept_unrewritten,
            )?;
            set_journal_mode(&conn)?;
            conn.close()
                .map_err(|(_, e)| Error::sqlite(tmp, "cannot close the restored database", e))?;
            let (plan, hash) = std::thread::scope(|s| {
                let hash = s.spawn(|| hash_of_file(work, &tmp_name, tmp));
                (unchecked.check(tmp), hash.join())
            });
            hashed = hash.ok().and_then(|h| h.ok());
            Some(plan?)
        } else {
            set_journal_mode(&conn)?;
            conn.close()
                .map_err(|(_, e)| Error::sqlite(tmp, "cannot close the restored database", e))?;
            None
        };
        let warnings: Vec<String> = rewrite.iter().filter_map(unrewritten_warning).collect();

        // The file alone (closing checkpointed and removed any -wal) must name the new ids.
        let (final_mode, events) = {
            let c = db::open_read_only(tmp)?;
            let info = db::read_info(&c, tmp)?;
            if info.datahub != d.to.datahub || info.connector != d.to.connector {
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
        let at_path = std::fs::symlink_metadata(&work_path)
            .map_err(|e| Error::io(&work_path, "cannot stat the work directory", e))?;
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
        let t0 = std::time::Instant::now();
        let file = work.open_file_rw(&tmp_name)?;
        // Taken beside the checks (no connection could write the file then), or now.
        let (sha256_installed, bytes) = match hashed {
            Some(h) => h,
            None => hash_of_file(work, &tmp_name, tmp)?,
        };
        set_owner_and_mode(&file, tmp, dir, &target_name)?;
        file.sync_all()
            .map_err(|e| Error::io(tmp, "cannot fsync", e))?;
        tracing::debug!(
            "restore: sha256 and fsync of the result took {:?}",
            t0.elapsed()
        );
        drop(file);
        Ok(Prepared {
            staging: self,
            file: Some(d.file),
            rewrite,
            journal_mode: final_mode,
            check,
            sha256_installed,
            bytes,
            events,
            warnings,
        })
    }
}

/// The work file's sha256 and size. Starts its writeback first, so that the fsync
/// before the install waits for little.
fn hash_of_file(work: &SafeDir, name: &OsStr, path: &Path) -> Result<(String, u64)> {
    let mut file = work.open_file_rw(name)?;
    fsio::start_writeback(&file);
    fsio::sha256_of(&mut file, path)
}

/// The warning for old ids a rewrite left in place because they were accepted
/// (`--accept-unrewritten`); `None` when there are none.
pub fn unrewritten_warning(r: &RewritePlan) -> Option<String> {
    if !r.accepted_unrewritten {
        return None;
    }
    Some(format!(
        "{} place(s) still hold an old id that cannot be rewritten (accepted with --accept-unrewritten): {}",
        r.unrewritten.len(),
        r.unrewritten
            .iter()
            .map(|u| format!("{}.{}", u.table, u.column))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some((work, name)) = self.work.take() {
            drop(work);
            self.dir.remove_own_dir(&name);
        }
        if let Some((parent, name)) = self.created.take() {
            // Leave no trace of a restore that did not happen: the directory we made,
            // with the lock file in it.
            let lock = ConnectorLock::name_for(self.target.file_name().unwrap_or_default());
            let _ = self.dir.remove(&lock);
            drop(self.lock.take());
            let _ = rustix::fs::unlinkat(&parent, &name, rustix::fs::AtFlags::REMOVEDIR);
        }
    }
}

impl Prepared {
    /// The target it will be installed at.
    pub fn target(&self) -> &Path {
        &self.staging.target
    }

    /// Checks again that no process holds the target or its side files open: the check
    /// under the lock ([`Staging::open`]) may be long past when a caller prepares several
    /// databases before it installs any (`restore-hub`). Blocking.
    pub fn check_not_held_open(&self) -> Result<()> {
        let found = holders(&self.staging.target);
        if found.is_empty() {
            return Ok(());
        }
        Err(held_open_error(&self.staging.target, &found))
    }

    /// Installs the prepared database (step 3 of the module's contract) and removes the
    /// work directory. Blocking: run it on the blocking pool. Returns what was kept.
    pub fn install(mut self) -> Result<Vec<Kept>> {
        let file = self.file.take().expect("installed once");
        let tmp_name = file.file_name().unwrap_or_default().to_os_string();
        let s = &mut self.staging;
        let (work, _) = s.work.as_ref().expect("made by open");
        let kept = install(&s.target, &s.dir, work, &tmp_name)?;
        // The connector directory now holds the restored database: it stays.
        s.created = None;
        // The rename consumed the temp file: make sure its drop does not remove anything.
        let _ = file.keep();
        Ok(kept)
    }
}

/// Opens the target's directory: for a hub root, `<hub-root>/<connectorId>` relative to
/// the hub root and never through a link, created (owned like the hub root) if missing.
/// Returns the directory and, if it was created, the hub root and its name (to remove it
/// again if the restore fails).
#[allow(clippy::type_complexity)]
fn open_target_dir(
    target: &Path,
    hub_root: Option<&Path>,
) -> Result<(SafeDir, Option<(SafeDir, OsString)>)> {
    let dir_path = fsio::parent_dir(target);
    let Some(root) = hub_root else {
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
            let dir = make_connector_dir(&root_dir, &name)?;
            Ok((dir, Some((root_dir, name))))
        }
    }
}

/// Makes the connector directory `name` in `root` (mode 0755), owned like `root` when we
/// run as root: the connector runs as that user.
pub fn make_connector_dir(root: &SafeDir, name: &OsStr) -> Result<SafeDir> {
    let dir = root.mkdir(name, 0o755)?;
    let owner = root.stat()?;
    if safedir::is_root() {
        let _ = rustix::fs::fchown(
            &dir,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
        );
    }
    Ok(dir)
}

/// True if and only if `e` is the refusal of a target a process holds open (a caller
/// without `--force` gives its own hint).
pub fn is_held_open(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::ResourceBusy)
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

/// A fresh work directory `<prefix><random>` (mode 0700) in `dir`, and its name.
pub fn make_work_dir(dir: &SafeDir, prefix: &str) -> Result<(SafeDir, OsString)> {
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

/// Step 3 of the contract. Every step leaves the target either the old file or the new
/// one, and every name it had is kept.
fn install(target: &Path, dir: &SafeDir, work: &SafeDir, tmp_name: &OsStr) -> Result<Vec<Kept>> {
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
                from: target.to_path_buf(),
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
