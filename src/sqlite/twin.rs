//! A second connection reading the same WAL snapshot as a first one: what lets a
//! backup's checks run on two cores (`integrity_check` on one connection,
//! `foreign_key_check`, ids and counts on the other) while both see one state.
//!
//! SQLite's snapshot API (`sqlite3_snapshot_get` on the first connection's open read
//! transaction, `sqlite3_snapshot_open` on the second's, both need the bundled SQLite
//! built with `SQLITE_ENABLE_SNAPSHOT`: `.cargo/config.toml`) either opens the second
//! read transaction on exactly that snapshot or fails; it never opens a newer one. The
//! first connection's read transaction keeps the snapshot's frames from being
//! checkpointed away, so the open can only fail in corner cases (a WAL restarted under a
//! reader that used no frame): then the caller runs every check on the first
//! connection, as before. Either way the second snapshot is compared with the first
//! (`sqlite3_snapshot_cmp`) before it is used. `snapshot_races.rs` forces each route with
//! a real writer, the restart included (`wal_checkpoint(TRUNCATE)` under the pin).

use std::ffi::CStr;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::ffi;

use crate::error::{Error, Result};
use crate::sqlite::db;

const MAIN: &CStr = c"main";

/// A snapshot handle taken from a connection, freed when dropped.
struct Snap(*mut ffi::sqlite3_snapshot);

impl Snap {
    /// The snapshot `conn`'s open read transaction sees; `None` when it has none (no read
    /// transaction, not a WAL database).
    fn of(conn: &Connection) -> Option<Snap> {
        let mut p: *mut ffi::sqlite3_snapshot = std::ptr::null_mut();
        // SAFETY: the handle is live for the call (borrowed from `conn`, which this thread
        // uses alone: rusqlite connections are not Sync); SQLite writes a new snapshot
        // object into `p` on success, which `Snap` frees.
        let rc = unsafe { ffi::sqlite3_snapshot_get(conn.handle(), MAIN.as_ptr(), &mut p) };
        (rc == ffi::SQLITE_OK && !p.is_null()).then_some(Snap(p))
    }
}

impl Drop for Snap {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from sqlite3_snapshot_get and is freed once, here.
        unsafe { ffi::sqlite3_snapshot_free(self.0) }
    }
}

/// Why [`open_on_snapshot`] gave no second connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoTwin {
    /// SQLite has no snapshot handle for `first`'s read transaction: not WAL, no read
    /// transaction, or a WAL never written since it was created (a WAL truncated by a
    /// checkpoint keeps its frame checksum in the wal-index, and has one).
    NoHandle,
    /// SQLite refused to open that snapshot on the second connection (the WAL restarted,
    /// or a checkpoint went past it), or opened another one.
    Refused,
}

/// Opens a second read-only connection on `path` whose read transaction sees exactly
/// the snapshot of `first`'s open read transaction. `Ok(Err(_))`: that cannot be had
/// here (see [`NoTwin`]); the caller may prove the state another way ([`open_parked`],
/// [`begin_read`]) or read everything through `first`. Errors: the database cannot be
/// opened or read at all.
pub fn open_on_snapshot(
    first: &Connection,
    path: &Path,
) -> Result<std::result::Result<Connection, NoTwin>> {
    let Some(snap) = Snap::of(first) else {
        return Ok(Err(NoTwin::NoHandle));
    };
    let second = open_parked(path)?;
    // A transaction that has read nothing yet, for the snapshot to open into.
    second
        .execute_batch("BEGIN")
        .map_err(|e| Error::sqlite(path, "cannot read the database", e))?;
    // SAFETY: both handles are live and used by this thread alone; `snap` outlives the call.
    let rc = unsafe { ffi::sqlite3_snapshot_open(second.handle(), MAIN.as_ptr(), snap.0) };
    if rc != ffi::SQLITE_OK {
        tracing::debug!(rc, "second connection: snapshot not opened");
        return Ok(Err(NoTwin::Refused));
    }
    let Some(got) = Snap::of(&second) else {
        return Ok(Err(NoTwin::Refused));
    };
    // SAFETY: two live snapshot objects of the same database.
    let same = unsafe { ffi::sqlite3_snapshot_cmp(snap.0, got.0) } == 0;
    Ok(if same {
        Ok(second)
    } else {
        Err(NoTwin::Refused)
    })
}

/// A read-only connection that has read once (in WAL mode that opens its WAL and
/// wal-index) and holds no transaction: [`begin_read`] then takes its snapshot with
/// nothing else in between.
pub fn open_parked(path: &Path) -> Result<Connection> {
    let conn = db::open_live(path)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(|e| Error::sqlite(path, "cannot read the database", e))?;
    Ok(conn)
}

/// Begins a read transaction and reads, so that it has taken its snapshot on return.
pub fn begin_read(conn: &Connection, path: &Path) -> Result<()> {
    let q = |e| Error::sqlite(path, "cannot read the database", e);
    conn.execute_batch("BEGIN").map_err(q)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(q)
}

/// A second read-only connection on a file nothing writes (a temp copy): any read
/// transaction of it sees the same state as the first's.
pub fn open_on_still_file(path: &Path) -> Result<Connection> {
    let second = db::open_read_only(path)?;
    second
        .execute_batch("BEGIN")
        .map_err(|e| Error::sqlite(path, "cannot read the database", e))?;
    Ok(second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(dir: &Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("sqlite.db");
        let w = Connection::open(&path).unwrap();
        w.pragma_update(None, "journal_mode", "wal").unwrap();
        w.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        w.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)")
            .unwrap();
        (path, w)
    }

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_second_connection_reads_the_first_ones_snapshot_not_a_later_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (path, w) = wal_db(dir.path());
        w.execute_batch("INSERT INTO t VALUES (1), (2), (3)")
            .unwrap();
        let first = open_parked(&path).unwrap();
        begin_read(&first, &path).unwrap();
        w.execute_batch("INSERT INTO t VALUES (4)").unwrap();
        let second = open_on_snapshot(&first, &path)
            .unwrap()
            .expect("a WAL with frames has a snapshot handle");
        assert_eq!(count(&second), 3);
        assert_eq!(count(&first), 3);
        assert_eq!(count(&open_parked(&path).unwrap()), 4);
    }

    #[test]
    fn an_empty_wal_has_no_snapshot_handle_and_a_connection_outside_a_transaction_none() {
        let dir = tempfile::tempdir().unwrap();
        let (path, w) = wal_db(dir.path());
        w.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        // The last connection to close checkpoints and removes the WAL: the next one
        // starts with an empty WAL, as a connector's database at rest often is.
        drop(w);
        let first = open_parked(&path).unwrap();
        assert_eq!(
            open_on_snapshot(&first, &path).unwrap().err(),
            Some(NoTwin::NoHandle)
        );
        begin_read(&first, &path).unwrap();
        // SQLite gives no handle for an empty WAL: snapshot.rs proves the state by the
        // wal-index header instead.
        assert_eq!(
            open_on_snapshot(&first, &path).unwrap().err(),
            Some(NoTwin::NoHandle)
        );
    }
}
