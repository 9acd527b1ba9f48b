//! A WAL snapshot's checks on two connections (`twin`) against a real writer: the second
//! connection opens on the first one's state, or the first runs every check, and either
//! way the checks count what the image holds. The writer commits at a named point of the
//! pin (`pages::seam`: between the first connection's read transaction and the second
//! connection) and then all through the pass.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::sqlite::pages::seam::{self, Point};
use crate::sqlite::snapshot::{self, Checks};
use crate::sqlite::testdb::{self, Rows};
use crate::sqlite::twin::NoTwin;

const ROWS: u64 = 2000;

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
    tmp: PathBuf,
    writer: Arc<Mutex<Connection>>,
}

/// A WAL database of [`ROWS`] rows whose WAL is as `wal` says, and an idle writer.
fn wal_db(wal: Wal) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut w = testdb::create(&path, ROWS, true);
    match wal {
        Wal::Frames => {}
        Wal::Fresh => {
            // The last connection to close checkpoints and deletes the WAL; the next one
            // starts a new, empty one, whose wal-index SQLite gives no snapshot handle.
            drop(w);
            assert!(!wal_path(&path).exists());
            w = Connection::open(&path).unwrap();
            w.busy_timeout(Duration::from_secs(5)).unwrap();
            w.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
            // A first read opens the new -wal (0 bytes) and -shm.
            assert_eq!(testdb::rows(&w).count, ROWS);
            assert_eq!(std::fs::metadata(wal_path(&path)).unwrap().len(), 0);
        }
        Wal::Truncated => {
            checkpoint(&w, "TRUNCATE");
            assert_eq!(std::fs::metadata(wal_path(&path)).unwrap().len(), 0);
        }
        Wal::Backfilled => {
            // Every frame copied into the file, the WAL kept: a new reader then reads the
            // file alone (read mark 0), under which a writer may restart the WAL.
            checkpoint(&w, "PASSIVE");
            assert!(std::fs::metadata(wal_path(&path)).unwrap().len() > 0);
        }
    }
    Db {
        _dir: dir,
        path,
        tmp,
        writer: Arc::new(Mutex::new(w)),
    }
}

#[derive(Clone, Copy)]
enum Wal {
    /// Frames not yet in the file.
    Frames,
    /// No WAL when the connections opened: an empty one, never written.
    Fresh,
    /// Checkpointed and truncated to 0 bytes (restarted).
    Truncated,
    /// Every frame checkpointed into the file, the WAL file kept.
    Backfilled,
}

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Runs `PRAGMA wal_checkpoint(mode)`; asserts no reader or writer held it back.
fn checkpoint(c: &Connection, mode: &str) {
    let busy: i64 = c
        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(busy, 0, "wal_checkpoint({mode}) was held back");
}

fn lock(w: &Arc<Mutex<Connection>>) -> std::sync::MutexGuard<'_, Connection> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one pinned pass saw.
struct Pass {
    checks: Checks,
    /// The rows before the pin (no commit came between them and the pin).
    pinned: Rows,
    image: Rows,
    /// Rows of `Events` as the checks counted them.
    checked: u64,
    check: &'static str,
    /// Commits the concurrent writer made while the pass ran.
    commits_during: u64,
}

/// Pins `db` (the hook, if any, runs at `Point::WalPinned`), then reads the image and
/// runs the checks on two threads while a writer commits one row after another (and
/// once, for sure, before the first byte is read), as a backup's pass does.
/// A hook for [`pass`]: the writer commits one row past the fixture's.
fn one_commit(db: &Db) -> Box<dyn FnMut() + Send> {
    let w = db.writer.clone();
    Box::new(move || testdb::commit_rows(&lock(&w), ROWS + 100_000, 1))
}

fn pass(db: &Db, at_pinned: Option<Box<dyn FnMut() + Send>>) -> Pass {
    let pinned = testdb::rows_now(&db.path);
    let _hook = at_pinned.map(|mut f| {
        let mut fired = false;
        seam::set(&db.path, move |at| {
            if at == Point::WalPinned && !fired {
                fired = true;
                f();
            }
        })
    });
    let p = snapshot::pin(&db.path, &db.tmp).unwrap();
    let checks = p.checks;
    let next = testdb::rows_now(&db.path).max + 1;
    testdb::commit_rows(&lock(&db.writer), next, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (w, stop) = (db.writer.clone(), stop.clone());
        std::thread::spawn(move || {
            let (started, mut n) = (Instant::now(), 0u64);
            // Bounded in count and time; the pass stops it sooner.
            while !stop.load(Ordering::Relaxed)
                && n < 5_000
                && started.elapsed() < Duration::from_secs(20)
            {
                testdb::commit_rows(&lock(&w), next + 1 + n, 1);
                n += 1;
            }
            n
        })
    };
    let (image, checker) = p.split(true);
    let check = std::thread::spawn(move || checker.check());
    let mut bytes = Vec::new();
    image.reader().read_to_end(&mut bytes).unwrap();
    let checked = check.join().unwrap().unwrap();
    drop(image);
    stop.store(true, Ordering::Relaxed);
    let commits_during = writer.join().unwrap() + 1;
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &bytes).unwrap();
    Pass {
        checks,
        pinned,
        image: testdb::rows_of_file(f.path()),
        checked: checked.rows["Events"],
        check: checked.check,
        commits_during,
    }
}

/// What every pass must show: the image is the state at the pin (a committed prefix),
/// the checks counted that state, and the writer did go on meanwhile.
fn assert_same_state(p: &Pass, db: &Db) {
    assert_eq!(p.image, p.pinned, "the image is the pinned state");
    assert!(p.image.is_committed_prefix("c"), "{:?}", p.image);
    assert_eq!(
        p.checked, p.image.count,
        "the checks counted the image's rows"
    );
    assert_eq!(p.check, "integrity_check");
    let now = testdb::rows_now(&db.path);
    assert!(
        now.count >= p.pinned.count + p.commits_during && p.commits_during > 0,
        "the writer went on"
    );
}

#[test]
fn a_second_connection_opens_on_the_snapshot_and_counts_the_images_rows_while_a_writer_commits() {
    let db = wal_db(Wal::Frames);
    // A commit between the pin and the second connection: the snapshot API still opens
    // the first one's state, not the newer one.
    let p = pass(&db, Some(one_commit(&db)));
    assert_eq!(p.checks, Checks::TwinBySnapshot);
    assert_same_state(&p, &db);
}

#[test]
fn on_a_fresh_empty_wal_the_second_connection_is_proven_by_the_wal_index_header_and_counts_the_images_rows()
 {
    let db = wal_db(Wal::Fresh);
    let p = pass(&db, None);
    assert_eq!(p.checks, Checks::TwinByHeader);
    assert_same_state(&p, &db);
}

#[test]
fn on_a_just_truncated_wal_the_second_connection_opens_on_the_snapshot_despite_a_commit_before_it()
{
    let db = wal_db(Wal::Truncated);
    let p = pass(&db, Some(one_commit(&db)));
    // A restarted WAL keeps its frame checksum in the wal-index: SQLite has a handle.
    assert_eq!(p.checks, Checks::TwinBySnapshot);
    assert_same_state(&p, &db);
}

#[test]
fn on_a_fresh_empty_wal_a_commit_before_the_second_connection_leaves_every_check_to_the_first() {
    let db = wal_db(Wal::Fresh);
    let p = pass(&db, Some(one_commit(&db)));
    assert_eq!(p.checks, Checks::One(NoTwin::NoHandle));
    assert_same_state(&p, &db);
}

#[test]
fn a_wal_restarted_under_the_pin_makes_sqlite_refuse_the_snapshot_and_the_first_connection_checks_everything()
 {
    let db = wal_db(Wal::Backfilled);
    let salts = |p: &Path| std::fs::read(wal_path(p)).map(|b| b.get(16..24).map(<[u8]>::to_vec));
    let before = salts(&db.path).unwrap().expect("a WAL header");
    let (w, path) = (db.writer.clone(), db.path.clone());
    let restarted = Arc::new(Mutex::new(None));
    let seen = restarted.clone();
    let p = pass(
        &db,
        Some(Box::new(move || {
            // Another connection truncates the WAL (the first reads the file alone, which
            // does not hold a restart back), and the writer commits into the new WAL.
            checkpoint(&Connection::open(&path).unwrap(), "TRUNCATE");
            testdb::commit_rows(&lock(&w), ROWS + 100_000, 1);
            *seen.lock().unwrap() = salts(&path).ok().flatten();
        })),
    );
    let after = restarted.lock().unwrap().clone().expect("a new WAL header");
    assert_ne!(after, before, "the WAL restarted under the pin");
    assert_eq!(p.checks, Checks::One(NoTwin::Refused));
    assert_same_state(&p, &db);
}

/// A database shape the page reader must read as SQLite does: page size, bytes reserved
/// at the end of every page, auto_vacuum, text encoding.
#[derive(Clone, Copy, Debug)]
struct Shape {
    page_size: u32,
    reserve: i32,
    auto_vacuum: &'static str,
    encoding: &'static str,
}

const SHAPES: &[Shape] = &[
    Shape {
        page_size: 512,
        reserve: 0,
        auto_vacuum: "NONE",
        encoding: "UTF-8",
    },
    Shape {
        page_size: 65536,
        reserve: 0,
        auto_vacuum: "NONE",
        encoding: "UTF-8",
    },
    Shape {
        page_size: 4096,
        reserve: 32,
        auto_vacuum: "NONE",
        encoding: "UTF-8",
    },
    Shape {
        page_size: 1024,
        reserve: 0,
        auto_vacuum: "FULL",
        encoding: "UTF-16le",
    },
    Shape {
        page_size: 4096,
        reserve: 8,
        auto_vacuum: "INCREMENTAL",
        encoding: "UTF-16be",
    },
];

/// A connector database (the tables of `testdb`) of `shape`, in WAL or rollback mode,
/// and its writer. The rows go in before the mode is set, so a WAL then holds only what
/// the caller commits after.
fn shaped_db(path: &Path, shape: Shape, wal: bool) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    if shape.reserve > 0 {
        let mut n: std::ffi::c_int = shape.reserve;
        // SAFETY: a live connection's handle, the documented file control and its int.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_file_control(
                c.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_RESERVE_BYTES,
                (&mut n as *mut std::ffi::c_int).cast(),
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
    }
    c.execute_batch(&format!(
        "PRAGMA page_size={}; PRAGMA auto_vacuum={}; PRAGMA encoding='{}';",
        shape.page_size, shape.auto_vacuum, shape.encoding
    ))
    .unwrap();
    let (hub, conn) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    c.execute_batch(&format!(
        "CREATE TABLE Integrations(id TEXT PRIMARY KEY, type TEXT, sources TEXT);
         INSERT INTO Integrations VALUES ('{hub}', 'solace', '[{{\"id\":\"{conn}\",\"type\":\"solace\"}}]');
         CREATE TABLE Events(n INTEGER PRIMARY KEY, payload TEXT NOT NULL);"
    ))
    .unwrap();
    testdb::commit_rows(&c, 1, ROWS);
    let mode = if wal { "wal" } else { "delete" };
    let got: String = c
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got, mode);
    c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    let q = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(q("PRAGMA page_size"), shape.page_size as i64, "{shape:?}");
    let reserved = std::fs::read(path).unwrap()[20];
    assert_eq!(reserved as i32, shape.reserve, "{shape:?}");
    c
}

/// Pins `path`, reads the image and runs the checks on two threads, as a backup does;
/// returns the image and what the checks said.
fn image_and_checks(path: &Path, tmp: &Path) -> (Vec<u8>, snapshot::Checked) {
    let p = snapshot::pin(path, tmp).unwrap();
    let (image, checker) = p.split(true);
    let check = std::thread::spawn(move || checker.check());
    let mut bytes = Vec::new();
    image.reader().read_to_end(&mut bytes).unwrap();
    let checked = check.join().unwrap().unwrap();
    (bytes, checked)
}

/// Every shape, in both journal modes, after commits that shrink the database (a large
/// delete: with auto_vacuum FULL the file shrinks at the commit, else the freelist
/// grows; INCREMENTAL then gives some pages back) and grow it again, kept in the WAL in
/// WAL mode: the image is byte for byte the database SQLite has (the file once every
/// frame is checkpointed, page 1 saying rollback mode), the checks pass on it and count
/// its rows and pages.
#[test]
fn every_page_size_reserve_auto_vacuum_and_encoding_images_as_the_database_sqlite_has() {
    for &shape in SHAPES {
        for wal in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sqlite.db");
            let tmp = dir.path().join("tmp");
            std::fs::create_dir(&tmp).unwrap();
            let w = shaped_db(&path, shape, wal);
            w.execute_batch("DELETE FROM Events WHERE n % 3 != 0 OR n > 1500")
                .unwrap();
            if shape.auto_vacuum == "INCREMENTAL" {
                w.query_row("PRAGMA incremental_vacuum(7)", [], |_| Ok(()))
                    .ok();
            }
            testdb::commit_rows(&w, ROWS + 1, 40);
            let frames = wal_path(&path)
                .metadata()
                .map(|m| m.len())
                .unwrap_or_default();
            assert_eq!(frames > 0, wal, "{shape:?}: the WAL holds the commits");

            let (image, checked) = image_and_checks(&path, &tmp);
            let what = format!("{shape:?} wal={wal}");
            assert_eq!(checked.check, "integrity_check", "{what}");
            assert_eq!(checked.page_size, shape.page_size as u64, "{what}");
            assert_eq!(
                checked.page_count * checked.page_size,
                image.len() as u64,
                "{what}"
            );
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), &image).unwrap();
            assert_eq!(testdb::rows_of_file(f.path()), testdb::rows(&w), "{what}");
            assert_eq!(checked.rows["Events"], testdb::rows(&w).count, "{what}");

            if wal {
                checkpoint(&w, "TRUNCATE");
            }
            let mut file = std::fs::read(&path).unwrap();
            file[18] = 1;
            file[19] = 1;
            assert!(file.len() >= image.len(), "{what}");
            assert!(
                file[..image.len()] == image[..],
                "{what}: the image differs from the database SQLite wrote"
            );
        }
    }
}
