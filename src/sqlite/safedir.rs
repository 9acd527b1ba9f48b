//! A directory that another user may control, held open, and the files in it reached only
//! through it.
//!
//! The agent and `restore` run as root inside connectors' directories, each owned by the
//! connector's own user. That user can put a symbolic link (or a FIFO, or a hard link)
//! at any name there, at any moment. So, in such a directory:
//! - the directory is opened once (`O_DIRECTORY`, and `O_NOFOLLOW` where a link there
//!   would be planted), and every file is reached with `openat` relative to it: renaming
//!   or replacing the directory's path afterwards changes nothing for us;
//! - every file is opened with `O_NOFOLLOW` and `O_NONBLOCK` (a FIFO must not hang us),
//!   created with `O_EXCL`, and checked to be a regular file before it is used;
//! - ownership and mode are set with `fchown`/`fchmod` on the open descriptor, never by
//!   path, and only on a regular file with one link (a hard link to a root-owned file
//!   must not be given away);
//! - names are moved with `linkat`/`renameat2(RENAME_NOREPLACE)`, which act on the link
//!   itself and never replace what is already there.
//!
//! SQLite itself opens every file with `O_NOFOLLOW` and, when run as root, gives the
//! `-journal`/`-wal`/`-shm` it opens (not only those it creates) to the database's owner
//! with `fchown` (its `os_unix.c`, checked in the bundled 3.54 source): hubvault's
//! replacement of SQLite's `open` (`db::harden_vfs`) refuses such a file with a second
//! name, and FIFOs. The files hubvault creates follow the same rules here.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use crate::error::{Error, Result};

/// What `lstat` says about a name in the directory (a link is not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub size: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device node.
    Special,
}

impl Kind {
    fn of(ft: FileType) -> Kind {
        match ft {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        }
    }

    /// "a symbolic link", "a directory", …: for messages.
    pub fn described(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Special => "a device, FIFO or socket",
        }
    }
}

fn entry_of(st: &rustix::fs::Stat) -> Entry {
    Entry {
        kind: Kind::of(FileType::from_raw_mode(st.st_mode)),
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
        size: st.st_size as u64,
        nlink: st.st_nlink,
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

/// The owner and status of an open file (`fstat`).
pub fn entry_of_file(f: &File) -> std::io::Result<Entry> {
    Ok(entry_of(&rustix::fs::fstat(f)?))
}

/// A directory held open; names inside it are resolved against the descriptor.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

const FILE_FLAGS: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

impl SafeDir {
    /// Opens `path` as a directory; a symbolic link at its last component is refused
    /// (the directory of a connector is never reached through a link its user planted).
    pub fn open_nofollow(path: &Path) -> Result<SafeDir> {
        Self::open_with(path, OFlags::NOFOLLOW)
    }

    /// Opens `path` as a directory, following links (a directory the operator named:
    /// the hub root, the directory of `--output` or `--db`).
    pub fn open(path: &Path) -> Result<SafeDir> {
        Self::open_with(path, OFlags::empty())
    }

    fn open_with(path: &Path, extra: OFlags) -> Result<SafeDir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra;
        let fd = rustix::fs::open(path, flags, Mode::empty())
            .map_err(|e| dir_error(path, std::io::Error::from(e)))?;
        Ok(SafeDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory `name` inside this one, not through a link.
    pub fn subdir(&self, name: &OsStr) -> Result<SafeDir> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| dir_error(&path, std::io::Error::from(e)))?;
        Ok(SafeDir { fd, path })
    }

    /// A second handle on the same directory (for another thread).
    pub fn try_clone(&self) -> Result<SafeDir> {
        Ok(SafeDir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Error::io(&self.path, "cannot duplicate the descriptor", e))?,
            path: self.path.clone(),
        })
    }

    /// The path the directory was opened by (for messages; never used to reach it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`, for messages.
    pub fn shown(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's own owner and status.
    pub fn stat(&self) -> Result<Entry> {
        rustix::fs::fstat(&self.fd)
            .map(|st| entry_of(&st))
            .map_err(|e| Error::io(&self.path, "cannot stat the directory", e.into()))
    }

    /// What is at `name`, without following a link; `None` when nothing is.
    pub fn entry(&self, name: &OsStr) -> Result<Option<Entry>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(entry_of(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(self.shown(name), "cannot stat", e.into())),
        }
    }

    /// Opens the regular file `name` for reading, refusing a link, a FIFO or a device.
    pub fn open_file(&self, name: &OsStr) -> Result<File> {
        self.open_regular(name, OFlags::RDONLY)
    }

    /// Opens the regular file `name` for reading and writing (no create, no truncate).
    pub fn open_file_rw(&self, name: &OsStr) -> Result<File> {
        self.open_regular(name, OFlags::RDWR)
    }

    fn open_regular(&self, name: &OsStr, mode: OFlags) -> Result<File> {
        let fd = rustix::fs::openat(&self.fd, name, mode | FILE_FLAGS, Mode::empty())
            .map_err(|e| self.open_error(name, e))?;
        let f = regular(File::from(fd), &self.shown(name))?;
        Ok(f)
    }

    /// Creates `name` (`O_EXCL`: fails with `AlreadyExists` when anything, a link
    /// included, is there) with permission bits `mode`, open for reading and writing.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | FILE_FLAGS,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Opens `name` read-only, creating it (mode `mode`) when missing; true if and only
    /// if it was created. Refuses anything but a regular file.
    pub fn open_or_create(&self, name: &OsStr, mode: u32) -> Result<(File, bool)> {
        // Create first, exclusively, so that "created" is known for sure; then open an
        // existing one. A link at the name fails both (EEXIST, then ELOOP).
        match self.create_new(name, mode) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(self.shown(name), "cannot create", e)),
        }
        Ok((self.open_file(name)?, false))
    }

    /// A second name `to` for the file `from` (`linkat`, the link itself if `from` is
    /// one). Fails with `AlreadyExists` when `to` exists: nothing is ever replaced.
    pub fn link_new(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        rustix::fs::linkat(&self.fd, from, &self.fd, to, AtFlags::empty()).map_err(Into::into)
    }

    /// Renames `from` to `to` inside this directory, never replacing what is at `to`
    /// (`RENAME_NOREPLACE`); a link is moved as a link.
    pub fn rename_new(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        rustix::fs::renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE)
            .map_err(Into::into)
    }

    /// Renames `from` in `src` to `to` here, never replacing what is at `to`
    /// (`RENAME_NOREPLACE`): a directory moves whole, in one step.
    pub fn rename_new_from(&self, src: &SafeDir, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        rustix::fs::renameat_with(&src.fd, from, &self.fd, to, RenameFlags::NOREPLACE)
            .map_err(Into::into)
    }

    /// Renames `from` in `src` over `to` here (replacing what is there: the install).
    pub fn rename_from(&self, src: &SafeDir, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        rustix::fs::renameat(&src.fd, from, &self.fd, to).map_err(Into::into)
    }

    /// Removes the name `name` (a link itself, never what it points at); missing is fine.
    pub fn remove(&self, name: &OsStr) -> std::io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the directory `name` with mode `mode` and opens it; fails with
    /// `AlreadyExists` when anything is at the name.
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> Result<SafeDir> {
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io(self.shown(name), "cannot create the directory", e.into()))?;
        self.subdir(name)
    }

    /// Removes the directory `name` and the files directly in it, only if it is a
    /// directory (not a link) owned by this process's user. Best effort.
    pub fn remove_own_dir(&self, name: &OsStr) {
        let Ok(sub) = self.subdir(name) else {
            return;
        };
        if sub.stat().ok().map(|e| e.uid) != Some(rustix::process::geteuid().as_raw()) {
            return;
        }
        for n in sub.names() {
            let _ = sub.remove(&n);
        }
        let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR);
    }

    /// Names in the directory (without `.` and `..`).
    pub fn names(&self) -> Vec<OsString> {
        let Ok(mut dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(Ok(e)) = dir.read() {
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        out
    }

    /// fsyncs the directory, so that names created, renamed or removed in it are on disk.
    pub fn fsync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| Error::io(&self.path, "cannot fsync the directory", e.into()))
    }

    fn open_error(&self, name: &OsStr, e: rustix::io::Errno) -> Error {
        let path = self.shown(name);
        if e == rustix::io::Errno::LOOP {
            return link_refused(&path);
        }
        Error::io(path, "cannot open", e.into())
    }
}

impl AsFd for SafeDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `f` if it is a regular file; else an error naming `path`.
fn regular(f: File, path: &Path) -> Result<File> {
    let e = entry_of_file(&f).map_err(|e| Error::io(path, "cannot stat", e))?;
    if e.kind != Kind::File {
        return Err(Error::Io {
            path: path.to_path_buf(),
            message: format!("is {}, not a regular file", e.kind.described()),
            hint: "remove it (hubvault only works with regular files there) and try again".into(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    // The descriptor was opened non-blocking only so that a FIFO could not hang us.
    let fd = OwnedFd::from(f);
    let flags = rustix::fs::fcntl_getfl(&fd).unwrap_or(OFlags::empty());
    let _ = rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK);
    Ok(File::from(fd))
}

/// The error for a symbolic link where hubvault will not follow one.
pub fn link_refused(path: &Path) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        message: "is a symbolic link; hubvault never follows a link inside a connector's directory (run as root, it would write wherever the link points)".into(),
        hint: "replace the link by the real file or directory (or remove it), then try again".into(),
        source: std::io::Error::other("symbolic link refused"),
    }
}

fn dir_error(path: &Path, e: std::io::Error) -> Error {
    // O_NOFOLLOW on a link gives ELOOP; O_DIRECTORY on a link to a file ENOTDIR.
    if e.raw_os_error() == Some(libc::ELOOP)
        || (e.raw_os_error() == Some(libc::ENOTDIR) && path.is_symlink())
    {
        return link_refused(path);
    }
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        return Error::Io {
            path: path.to_path_buf(),
            message: "is not a directory".into(),
            hint: "check the path".into(),
            source: e,
        };
    }
    Error::io(path, "cannot open the directory", e)
}

/// Gives the open file `f` the owner `uid:gid` (`fchown`), if it has another one, only
/// when it is a regular file with exactly one name: a hard link to someone else's file
/// planted at our name must never be given away. Returns true if and only if the owner
/// was changed.
pub fn give_to(f: &File, uid: u32, gid: u32) -> std::io::Result<bool> {
    let e = entry_of_file(f)?;
    if (e.uid, e.gid) == (uid, gid) {
        return Ok(false);
    }
    if e.kind != Kind::File || e.nlink != 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "not a regular file with one link; its owner is left alone",
        ));
    }
    rustix::fs::fchown(
        f,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    Ok(true)
}

/// Sets the permission bits of the open file `f` (`fchmod`).
pub fn set_mode(f: &File, mode: u32) -> std::io::Result<()> {
    rustix::fs::fchmod(f, Mode::from_raw_mode(mode & 0o7777)).map_err(Into::into)
}

/// True if and only if this process runs as root (and may have to give files away).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
