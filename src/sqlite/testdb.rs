//! Small connector databases for the library's race tests (the seams in
//! `pages::seam`): the two tables every check reads (`Integrations` with one row,
//! `Events`), whose rows are numbered 1, 2, 3, … so that a committed state is a prefix,
//! and whose payloads all have one length, so that rewriting them changes pages in place
//! (no page split, no new page: the file keeps its size, as the race needs).

use std::path::Path;

use rusqlite::Connection;

/// Payload bytes of every row: a page of 4096 bytes holds about 17 rows.
pub const PAYLOAD: usize = 200;

/// Creates a connector database at `path` holding rows 1..=rows, in WAL or rollback-journal
/// (`delete`) mode, and returns a writer connection on it (WAL: no automatic checkpoint).
pub fn create(path: &Path, rows: u64, wal: bool) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let mode = if wal { "wal" } else { "delete" };
    let got: String = c
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got, mode);
    if wal {
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    }
    let (hub, conn) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    c.execute_batch(&format!(
        "CREATE TABLE Integrations(id TEXT PRIMARY KEY, type TEXT, sources TEXT);
         INSERT INTO Integrations VALUES ('{hub}', 'solace', '[{{\"id\":\"{conn}\",\"type\":\"solace\"}}]');
         CREATE TABLE Events(n INTEGER PRIMARY KEY, payload TEXT NOT NULL);"
    ))
    .unwrap();
    commit_rows(&c, 1, rows);
    c
}

/// Commits rows from..from+n (payload `c`) in one transaction.
pub fn commit_rows(c: &Connection, from: u64, n: u64) {
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut s = c
        .prepare_cached("INSERT INTO Events VALUES (?1, printf('%.*c', ?2, 'c'))")
        .unwrap();
    for i in from..from + n {
        s.execute(rusqlite::params![i as i64, PAYLOAD as i64])
            .unwrap();
    }
    drop(s);
    c.execute_batch("COMMIT").unwrap();
}

/// Rewrites, in place, the payload of rows `from..=to` to `mark` repeated (one letter),
/// inside a transaction left OPEN, with a page cache so small that SQLite spills the
/// dirty pages into the database file before any commit (rollback-journal mode): the
/// state a reader without a lock sees mid-transaction. Asserts the spill reached the file.
pub fn spill_open_transaction(c: &Connection, path: &Path, from: u64, to: u64, mark: char) {
    let before = read_live(path);
    c.execute_batch("PRAGMA cache_size=10; PRAGMA cache_spill=10; BEGIN IMMEDIATE")
        .unwrap();
    c.execute(
        "UPDATE Events SET payload = printf('%.*c', ?1, ?2) WHERE n BETWEEN ?3 AND ?4",
        rusqlite::params![PAYLOAD as i64, mark.to_string(), from as i64, to as i64],
    )
    .unwrap();
    let during = read_live(path);
    assert_eq!(
        during.len(),
        before.len(),
        "an in-place rewrite keeps the size"
    );
    assert_ne!(
        during, before,
        "the open transaction spilled pages into the file"
    );
}

/// The live database file's bytes, read through the descriptor the page reader keeps:
/// closing a descriptor of our own would drop every POSIX lock this process holds on the
/// file, the writer's included (`pages::open_kept`).
fn read_live(path: &Path) -> Vec<u8> {
    let src = crate::sqlite::pages::Source::open(path).unwrap();
    let len = src.db_file().metadata().unwrap().len() as usize;
    let mut buf = vec![0u8; len];
    let got = crate::sqlite::pages::wal::read_full(src.db_file(), &mut buf, 0).unwrap();
    assert_eq!(got, len);
    buf
}

/// What a database (or an image of one) holds: rows, the smallest and largest n, and
/// how many rows carry each payload letter (`"c:3000 d:3000"`).
#[derive(Debug, PartialEq, Eq)]
pub struct Rows {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub marks: String,
}

impl Rows {
    /// True if and only if this is a state the writer committed: rows 1..=k, every
    /// payload one of the committed letters.
    pub fn is_committed_prefix(&self, committed_marks: &str) -> bool {
        self.count == self.max
            && (self.count == 0 || self.min == 1)
            && self.letters().chars().all(|m| committed_marks.contains(m))
    }

    /// The payload letters found, in order (`"cd"`).
    pub fn letters(&self) -> String {
        self.marks
            .split(' ')
            .filter_map(|t| t.chars().next())
            .collect()
    }
}

/// [`Rows`] of a connection's current view (inside its read transaction, if open).
pub fn rows(c: &Connection) -> Rows {
    let (count, min, max): (i64, i64, i64) = c
        .query_row(
            "SELECT count(*), coalesce(min(n), 0), coalesce(max(n), 0) FROM Events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let marks: String = c
        .query_row(
            "SELECT coalesce(group_concat(m || ':' || k, ' '), '') FROM
               (SELECT substr(payload, 1, 1) AS m, count(*) AS k FROM Events GROUP BY m ORDER BY m)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    Rows {
        count: count as u64,
        min: min as u64,
        max: max as u64,
        marks,
    }
}

/// [`Rows`] of a database file nothing writes, after `integrity_check` said ok; the
/// file's page 1 may say WAL (an image read in WAL mode): it is read as rollback mode.
pub fn rows_of_file(path: &Path) -> Rows {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[18] = 1;
    bytes[19] = 1;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("image.db");
    std::fs::write(&p, &bytes).unwrap();
    let c = Connection::open_with_flags(&p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", path.display());
    rows(&c)
}

/// [`Rows`] of the live database as a new reader sees it now (its committed state).
pub fn rows_now(path: &Path) -> Rows {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    rows(&c)
}
