//! Test seams of the page reader and the snapshot: named points of a read where a test
//! runs a REAL writer (commit, spill, roll back, restart the WAL), so that races a live
//! connector wins only now and then are won every time, with no sleep that hopes.
//!
//! Why a seam and not a timing test: the windows are microseconds to milliseconds wide
//! (between two SHARED locks, between pinning a WAL snapshot and opening the second
//! checking connection), and a writer that hits them by luck proves nothing when it
//! misses. In a build without `cfg(test)`, [`at`] is an empty inline function: the
//! binary carries no hook.
//!
//! Hooks are keyed by the database's path (as the reader was given it), so unit tests
//! running in parallel in one process never fire each other's hooks.

/// Where a read is when [`at`] is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// A backup's snapshot: the page reader opened the database file; no connection of
    /// ours is open on it yet.
    Opened,
    /// Rollback-journal mode: SHARED lock #1 was released; nothing read yet.
    Unlocked,
    /// Rollback-journal mode: the unlocked read has read its first batch, not all.
    Reading,
    /// Rollback-journal mode: the unlocked read is done; lock #2 not taken yet.
    BeforeLock2,
    /// WAL mode: the first connection's read transaction is pinned; the second checking
    /// connection is not opened yet.
    WalPinned,
}

#[cfg(not(test))]
#[inline(always)]
pub fn at(_db: &std::path::Path, _point: Point) {}

#[cfg(test)]
pub use hooks::{Hook, at, set};

#[cfg(test)]
mod hooks {
    use super::Point;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    type Boxed = Box<dyn FnMut(Point) + Send>;

    /// Hooks by database path. A hook is taken out while it runs (it may take long:
    /// a writer's commit), so other tests' reads never wait on it.
    static HOOKS: Mutex<Vec<(PathBuf, Option<Boxed>)>> = Mutex::new(Vec::new());

    fn hooks() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Option<Boxed>)>> {
        HOOKS.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the hook set for `db`, if any, at `point`.
    pub fn at(db: &Path, point: Point) {
        let taken = hooks()
            .iter_mut()
            .find(|(p, _)| p == db)
            .and_then(|(_, h)| h.take());
        if let Some(mut h) = taken {
            h(point);
            if let Some((_, slot)) = hooks().iter_mut().find(|(p, _)| p == db) {
                *slot = Some(h);
            }
        }
    }

    /// A hook set for one database; removed when dropped.
    pub struct Hook(PathBuf);

    impl Drop for Hook {
        fn drop(&mut self) {
            hooks().retain(|(p, _)| p != &self.0);
        }
    }

    /// Calls `f` at every [`Point`] a read of `db` passes, until the [`Hook`] is dropped.
    pub fn set(db: &Path, f: impl FnMut(Point) + Send + 'static) -> Hook {
        let mut h = hooks();
        assert!(
            h.iter().all(|(p, _)| p != db),
            "one hook per database: {}",
            db.display()
        );
        h.push((db.to_path_buf(), Some(Box::new(f))));
        Hook(db.to_path_buf())
    }
}
