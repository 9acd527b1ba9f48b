//! The rollback-journal reader ([`rollback`]) against a real writer connection that
//! commits, or spills pages into the file and rolls back, between SHARED lock #1 and
//! lock #2: every time, at a named point of the read ([`seam::Point`]), not by luck.
//!
//! Claims: an observation that a commit raced is refused ([`rollback::Skip::Raced`]),
//! never returned as a state; the next one is exactly a committed state; and a spilled
//! transaction that rolls back never reaches an observation.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::tests::apply;
use super::*;
use crate::model::stream::PageTable;
use crate::sqlite::pages::seam::{self, Point};
use crate::sqlite::testdb::{self, Rows};

/// Rows of the test database: about 360 pages, more than [`rollback::RELOCK_PAGES`] and
/// more than one batch of the unlocked scan.
const ROWS: u64 = 6000;

/// A rollback-journal database of [`ROWS`] rows (payload `c`), its writer, and the reader.
fn setup(dir: &Path) -> (PathBuf, Arc<Mutex<Connection>>, Source, rollback::Locker) {
    let path = dir.join("sqlite.db");
    let w = testdb::create(&path, ROWS, false);
    let src = Source::open(&path).unwrap();
    assert_eq!(src.header().unwrap().mode, Mode::Rollback);
    let pages = std::fs::metadata(&path).unwrap().len() / 4096;
    assert!(pages as usize > rollback::RELOCK_PAGES, "{pages} pages");
    let locker = rollback::Locker::open(&path).unwrap();
    (path, Arc::new(Mutex::new(w)), src, locker)
}

fn writer(w: &Arc<Mutex<Connection>>) -> std::sync::MutexGuard<'_, Connection> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

fn rows_of_image(image: &[u8]) -> Rows {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), image).unwrap();
    testdb::rows_of_file(f.path())
}

/// A committed, quiet state's full image, observed (no hook set): the image and its table.
fn observed_state(src: &Source, locker: &rollback::Locker) -> (PageTable, Vec<u8>) {
    let (mut table, mut image) = (PageTable::new(4096), Vec::new());
    let o = rollback::observe(src, locker, &table).unwrap().unwrap();
    apply(&mut table, &mut image, &o.diff);
    (table, image)
}

/// A commit that rewrites every row in place (`c` to `d`): the size stays, so only the
/// change counter can tell the states apart, and an image read across it is torn.
fn commit_rewrite(w: &Connection) {
    w.execute(
        "UPDATE Events SET payload = printf('%.*c', ?1, 'd')",
        [testdb::PAYLOAD as i64],
    )
    .unwrap();
}

#[test]
fn a_commit_at_any_point_between_the_two_locks_is_refused_and_the_next_observation_is_the_committed_state()
 {
    for point in [Point::Unlocked, Point::Reading, Point::BeforeLock2] {
        let dir = tempfile::tempdir().unwrap();
        let (path, w, src, locker) = setup(dir.path());
        let fired = Arc::new(Mutex::new(0u32));
        let _hook = {
            let (w, fired) = (w.clone(), fired.clone());
            seam::set(&path, move |at| {
                let mut n = fired.lock().unwrap();
                if at == point && *n == 0 {
                    commit_rewrite(&writer(&w));
                    *n += 1;
                }
            })
        };
        // A full image (empty table) into a file: what the first attempt read, kept.
        let out = dir.path().join("attempt1");
        let mut sink = FileSink::new(std::fs::File::create(&out).unwrap(), &out);
        let first = rollback::observe_into(&src, &locker, &PageTable::new(4096), &mut sink)
            .unwrap()
            .map(|o| o.change_counter);
        assert_eq!(*fired.lock().unwrap(), 1, "{point:?}: the hook committed");
        assert_eq!(first, Err(rollback::Skip::Raced), "{point:?}");
        if point == Point::Reading {
            // What the refusal kept out: rows read before the commit and after it.
            let torn = std::fs::read(&out).unwrap();
            assert_eq!(
                rows_of_image(&torn).letters(),
                "cd",
                "the first attempt read a torn file"
            );
        }
        // The next observation (the hook fires no more): exactly the committed state.
        let (_, image) = observed_state(&src, &locker);
        let got = rows_of_image(&image);
        assert_eq!(got, testdb::rows_now(&path), "{point:?}");
        assert!(
            got.is_committed_prefix("d") && got.count == ROWS,
            "{point:?}: {got:?}"
        );
    }
}

#[test]
fn a_spill_that_rolls_back_between_the_locks_never_reaches_an_observation_of_changed_pages() {
    // What the module claims: a spilled page that differs from the last captured state
    // is a candidate, and lock #2 (re-reading candidates, at most RELOCK_PAGES) corrects
    // it. Here 1000 rows (about 60 pages) are spilled.
    let dir = tempfile::tempdir().unwrap();
    let (path, w, src, locker) = setup(dir.path());
    let (table, image) = observed_state(&src, &locker);
    let _hook = spill_then_roll_back(&path, &w, 1, 1000, 'U');
    let (got, _) = observe_until_committed(&src, &locker, &table, &image);
    assert_eq!(got, testdb::rows_now(&path));
    assert!(got.is_committed_prefix("c") && got.count == ROWS, "{got:?}");
}

#[test]
fn a_spill_that_rolls_back_during_a_first_image_of_more_than_relock_pages_is_refused() {
    // A first image has every page as a candidate, more than RELOCK_PAGES: lock #2
    // re-reads page 1 only, so the spilled pages must be caught another way.
    let dir = tempfile::tempdir().unwrap();
    let (path, w, src, locker) = setup(dir.path());
    let _hook = spill_then_roll_back(&path, &w, 1, ROWS, 'U');
    let empty = PageTable::new(4096);
    let first = rollback::observe(&src, &locker, &empty).unwrap();
    let first = first.map(|o| {
        let (mut t, mut image) = (PageTable::new(4096), Vec::new());
        apply(&mut t, &mut image, &o.diff);
        rows_of_image(&image)
    });
    assert_eq!(first, Err(rollback::Skip::Raced));
    let (got, refused) = observe_until_committed(&src, &locker, &empty, &[]);
    assert_eq!(refused, 0, "the spill came once");
    assert!(got.is_committed_prefix("c") && got.count == ROWS, "{got:?}");
}

#[test]
fn a_spill_whose_pages_equal_the_last_captured_state_and_rolls_back_is_refused() {
    // The window rollback.rs once named as not covered: pages committed since the last
    // observation, rewritten back to their old images by a transaction that spills them
    // and rolls back. The unlocked scan sees those pages unchanged (not candidates), and
    // the counter and size at lock #2 are C0's; only the file's write time tells.
    let dir = tempfile::tempdir().unwrap();
    let (path, w, src, locker) = setup(dir.path());
    let (table, image) = observed_state(&src, &locker);
    writer(&w)
        .execute(
            "UPDATE Events SET payload = printf('%.*c', ?1, 'd') WHERE n <= 3000",
            [testdb::PAYLOAD as i64],
        )
        .unwrap();
    let committed = testdb::rows_now(&path);
    assert_eq!(committed.marks, "c:3000 d:3000");
    let _hook = spill_then_roll_back(&path, &w, 1, 3000, 'c');
    let first = rollback::observe(&src, &locker, &table).unwrap();
    let first = first.map(|o| {
        let (mut t, mut img) = (table.clone(), image.clone());
        apply(&mut t, &mut img, &o.diff);
        rows_of_image(&img)
    });
    assert_eq!(first, Err(rollback::Skip::Raced));
    let (got, _) = observe_until_committed(&src, &locker, &table, &image);
    assert_eq!(got, committed);
}

/// Sets a hook that, on the first read only, opens a transaction rewriting rows
/// `from..=to` to `mark` and spilling them into the file once lock #1 is released, and
/// rolls it back just before lock #2.
fn spill_then_roll_back(
    path: &Path,
    w: &Arc<Mutex<Connection>>,
    from: u64,
    to: u64,
    mark: char,
) -> seam::Hook {
    let (w, db) = (w.clone(), path.to_path_buf());
    let mut done = false;
    seam::set(path, move |at| {
        if done {
            return;
        }
        let w = writer(&w);
        match at {
            Point::Unlocked => testdb::spill_open_transaction(&w, &db, from, to, mark),
            Point::BeforeLock2 => {
                w.execute_batch("ROLLBACK").unwrap();
                done = true;
            }
            _ => {}
        }
    })
}

/// Observes until an observation completes (at most 5 attempts, each a few ms): the
/// rows of `image` with its diff applied, and the attempts refused before it. Every
/// observation that completes must be a committed state.
fn observe_until_committed(
    src: &Source,
    locker: &rollback::Locker,
    table: &PageTable,
    image: &[u8],
) -> (Rows, u32) {
    for refused in 0..5 {
        match rollback::observe(src, locker, table).unwrap() {
            Ok(o) => {
                let (mut t, mut img) = (table.clone(), image.to_vec());
                apply(&mut t, &mut img, &o.diff);
                return (rows_of_image(&img), refused);
            }
            Err(rollback::Skip::Raced) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    panic!("no observation completed in 5 attempts");
}
