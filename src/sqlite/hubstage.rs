//! Where a whole-hub restore builds the connectors that are not on the hub yet: a private
//! directory in the hub root (`<hub-root>/.hubvault-restore-hub-<random>/`, mode 0700,
//! owned by whoever runs hubvault), holding one complete connector directory per new
//! connector (its database restored, checked and installed, owner and mode set). Putting
//! one in place is then a single `renameat2(RENAME_NOREPLACE)` of the directory:
//! `<hub-root>/<connectorId>` is absent or whole at every instant, whatever kills the
//! restore, and a restore that fails or is killed leaves no connector directory behind
//! (the next one removes the stage it left).
//!
//! One whole-hub restore of a hub root at a time: an advisory lock (`flock`) on
//! `<hub-root>/.hubvault-restore-hub.lock`, taken without waiting, and removed (still
//! held) when the restore ends; a lock taken on a file removed meanwhile is detected by
//! its inode. Stages of killed runs are removed only under that lock, so never one a live
//! restore is using.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sqlite::fsio;
use crate::sqlite::install;
use crate::sqlite::safedir::{self, Kind, SafeDir};

/// Name prefix of the stage directories in the hub root.
pub const STAGE_PREFIX: &str = ".hubvault-restore-hub-";
/// The lock file of whole-hub restores, in the hub root.
pub const LOCK_NAME: &str = ".hubvault-restore-hub.lock";

/// How deep a stage goes: stage / connector / work directory / file.
const MAX_DEPTH: u32 = 4;

/// A hub root held open and locked, with a stage directory in it.
#[derive(Debug)]
pub struct HubStage {
    root: SafeDir,
    stage: Option<(SafeDir, OsString)>,
    _lock: File,
}

impl HubStage {
    /// Opens and locks the hub root, removes the stages killed restores left, and makes
    /// a new stage. Blocking.
    pub fn open(hub_root: &Path) -> Result<HubStage> {
        install::check_hub_root(hub_root)?;
        let root = SafeDir::open(hub_root)?;
        let (lock, _) = root.open_or_create(OsStr::new(LOCK_NAME), 0o600)?;
        let busy = |e: std::io::Error| Error::Io {
            path: root.shown(OsStr::new(LOCK_NAME)),
            message: "another restore-hub is running on this hub root; nothing was changed".into(),
            hint: "wait for it to finish, then run this one again if it is still needed".into(),
            source: e,
        };
        match fsio::try_lock(&lock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(busy(e)),
            Err(e) => {
                return Err(Error::io(
                    root.shown(OsStr::new(LOCK_NAME)),
                    "cannot lock",
                    e,
                ));
            }
        }
        // The lock file is removed when a restore-hub ends: a lock taken on a file that
        // was removed meanwhile (its name now another file, or none) locks nothing.
        let ours = safedir::entry_of_file(&lock)
            .map_err(|e| Error::io(root.shown(OsStr::new(LOCK_NAME)), "cannot stat", e))?;
        match root.entry(OsStr::new(LOCK_NAME))? {
            Some(e) if (e.dev, e.ino) == (ours.dev, ours.ino) => {}
            _ => {
                return Err(busy(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "the lock file was replaced",
                )));
            }
        }
        for name in root.names() {
            if name.to_string_lossy().starts_with(STAGE_PREFIX) {
                remove_own_tree(&root, &name, MAX_DEPTH);
            }
        }
        let stage = install::make_work_dir(&root, STAGE_PREFIX)?;
        Ok(HubStage {
            root,
            stage: Some(stage),
            _lock: lock,
        })
    }

    fn stage(&self) -> &(SafeDir, OsString) {
        self.stage.as_ref().expect("open until dropped")
    }

    /// The hub root's path.
    pub fn root_path(&self) -> &Path {
        self.root.path()
    }

    /// Where the connector directory `name` is built (for messages and the restore's
    /// target path inside the stage).
    pub fn staged_path(&self, name: &OsStr) -> PathBuf {
        self.stage().0.path().join(name)
    }

    /// Makes the connector directory `name` in the stage (mode 0755, owned like the hub
    /// root when we run as root: the connector runs as that user). Blocking.
    pub fn make_connector_dir(&self, name: &OsStr) -> Result<SafeDir> {
        let (stage, _) = self.stage();
        let dir = stage.mkdir(name, 0o755)?;
        let owner = self.root.stat()?;
        if safedir::is_root() {
            rustix::fs::fchown(
                &dir,
                Some(rustix::fs::Uid::from_raw(owner.uid)),
                Some(rustix::fs::Gid::from_raw(owner.gid)),
            )
            .map_err(|e| Error::io(dir.path(), "cannot give the directory its owner", e.into()))?;
        }
        Ok(dir)
    }

    /// Moves the built connector directory `name` into the hub root, in one rename that
    /// never replaces anything; the hub root is fsynced by [`HubStage::sync`]. Blocking.
    pub fn install(&self, name: &OsStr) -> Result<()> {
        let (stage, _) = self.stage();
        self.root
            .rename_new_from(stage, name, name)
            .map_err(|e| {
                let target = self.root.shown(name);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Io {
                        message: "appeared while the restore ran (another restore, or the platform deployed the connector); it was left as it is".into(),
                        path: target,
                        hint: "look at what is there; remove it if it is not needed and run restore-hub again".into(),
                        source: e,
                    }
                } else {
                    Error::io(target, "cannot move the restored connector into place", e)
                }
            })
    }

    /// fsyncs the hub root, so that every connector moved into it is on disk.
    pub fn sync(&self) -> Result<()> {
        self.root.fsync()
    }
}

impl Drop for HubStage {
    fn drop(&mut self) {
        if let Some((stage, name)) = self.stage.take() {
            drop(stage);
            remove_own_tree(&self.root, &name, MAX_DEPTH);
        }
        // Removed while still held, so the hub root is left as it was; see `open`.
        let _ = self.root.remove(OsStr::new(LOCK_NAME));
    }
}

/// Removes the directory `name` in `dir` and everything in it, never following a link,
/// only if it is a directory of this process's user that nobody else may enter (mode
/// 0700): then everything in it was made by us. Best effort; `depth` bounds the descent.
fn remove_own_tree(dir: &SafeDir, name: &OsStr, depth: u32) {
    let Ok(sub) = dir.subdir(name) else {
        return;
    };
    let Ok(me) = sub.stat() else { return };
    if me.uid != rustix::process::geteuid().as_raw() || me.mode & 0o077 != 0 {
        return;
    }
    remove_contents(&sub, depth);
    drop(sub);
    let _ = rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::REMOVEDIR);
}

/// Removes what is in `dir` (inside a stage only: see [`remove_own_tree`]).
fn remove_contents(dir: &SafeDir, depth: u32) {
    for n in dir.names() {
        match dir.entry(&n) {
            Ok(Some(e)) if e.kind == Kind::Dir && depth > 0 => {
                if let Ok(sub) = dir.subdir(&n) {
                    remove_contents(&sub, depth - 1);
                }
                let _ = rustix::fs::unlinkat(dir, &n, rustix::fs::AtFlags::REMOVEDIR);
            }
            Ok(Some(_)) => {
                let _ = dir.remove(&n);
            }
            _ => {}
        }
    }
}
