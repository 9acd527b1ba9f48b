//! Wake-ups on file changes: inotify on the hub root and on every connector directory,
//! read by one dedicated thread that only says "something changed" (a `Notify`); the
//! capture loop then looks at every connector. `--tick` stays the fallback poll, so a
//! file system without inotify (NFS) loses latency, never data.
//!
//! Plain `libc` inotify rather than a crate: the four calls we need are a few lines, and
//! nothing here needs the portability layer of `notify`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// An inotify instance; watches are added as directories are found. It lives as long as
/// the agent: its fd is never closed, because the reader thread blocked in `read` on it
/// would then read whatever file reused the number.
pub struct Watcher {
    fd: i32,
    watched: Mutex<BTreeMap<PathBuf, i32>>,
    pub changed: Arc<Notify>,
}

const DIR_EVENTS: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB;

impl Watcher {
    /// `None` when inotify is not available (then the tick alone drives capture).
    pub fn new() -> Option<Arc<Watcher>> {
        // SAFETY: plain syscall, no pointers.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            tracing::warn!(
                "inotify unavailable ({}): capture polls every tick",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let w = Arc::new(Watcher {
            fd,
            watched: Mutex::new(BTreeMap::new()),
            changed: Arc::new(Notify::new()),
        });
        let (changed, rfd) = (w.changed.clone(), fd);
        std::thread::Builder::new()
            .name("hubvault-inotify".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    // SAFETY: buf is valid for buf.len() bytes.
                    let n = unsafe { libc::read(rfd, buf.as_mut_ptr().cast(), buf.len()) };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        return; // fd closed: the watcher was dropped
                    }
                    if n == 0 {
                        return;
                    }
                    changed.notify_one();
                }
            })
            .ok()?;
        Some(w)
    }

    /// Watches `dir` (not recursive) if it is not watched yet.
    pub fn watch(&self, dir: &Path) {
        let mut watched = self.watched.lock().expect("never poisoned");
        if watched.contains_key(dir) {
            return;
        }
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: c is a valid NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), DIR_EVENTS) };
        if wd >= 0 {
            watched.insert(dir.to_path_buf(), wd);
        } else {
            tracing::debug!(
                dir = %dir.display(),
                "cannot watch: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Stops watching directories that are not in `keep`.
    pub fn retain(&self, keep: &[PathBuf]) {
        let mut watched = self.watched.lock().expect("never poisoned");
        watched.retain(|p, wd| {
            let k = keep.iter().any(|d| d == p);
            if !k {
                // SAFETY: plain syscall.
                unsafe { libc::inotify_rm_watch(self.fd, *wd) };
            }
            k
        });
    }
}
