//! The page reader against real SQLite files written by rusqlite.

use super::*;
use crate::model::stream::PageTable;
use rusqlite::Connection;

fn writer(path: &Path, wal: bool) -> Connection {
    let c = Connection::open(path).unwrap();
    if wal {
        c.pragma_update(None, "journal_mode", "wal").unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    } else {
        c.pragma_update(None, "journal_mode", "delete").unwrap();
    }
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    c
}

fn insert(c: &Connection, from: i64, n: i64) {
    let tx = c.unchecked_transaction().unwrap();
    for i in from..from + n {
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2)",
            rusqlite::params![i, "x".repeat((i % 300) as usize)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Applies a diff to a table and to an image kept beside it.
pub(super) fn apply(table: &mut PageTable, image: &mut Vec<u8>, d: &Diff) {
    let ps = d.page_size as usize;
    image.resize(d.db_pages as usize * ps, 0);
    for (p, img) in &d.pages {
        image[(*p as usize - 1) * ps..*p as usize * ps].copy_from_slice(img);
        table.set(*p, page_hash(*p, img));
    }
    table.resize(d.db_pages);
}

/// Applies tailed commits (4 KiB pages), in order, as [`apply`] does a diff.
fn apply_commits(table: &mut PageTable, image: &mut Vec<u8>, cs: Vec<wal::WalCommit>) {
    for c in cs {
        let d = Diff {
            page_size: 4096,
            db_pages: c.db_pages,
            pages: c.pages.into_iter().collect(),
        };
        apply(table, image, &d);
    }
}

/// The rows of table t in an image written to a file.
fn rows_of_image(image: &[u8]) -> Vec<(i64, String)> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img.db");
    std::fs::write(&p, image).unwrap();
    let c = Connection::open(&p).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    rows(&c)
}

fn rows(c: &Connection) -> Vec<(i64, String)> {
    let mut s = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// A WAL database of 200 rows (no checkpoint yet) and its first image by the page
/// reader: applied to `table` and to `image` beside it, and its position.
struct Imaged {
    dir: tempfile::TempDir,
    w: Connection,
    src: Source,
    table: PageTable,
    image: Vec<u8>,
    pos: WalPos,
}

fn imaged_wal() -> Imaged {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    insert(&w, 0, 200);
    let mut src = Source::open(&path).unwrap();
    let mut table = PageTable::new(4096);
    let mut image = Vec::new();
    let WalImage { diff: d, pos, .. } = src.wal_image(&table).unwrap().unwrap();
    apply(&mut table, &mut image, &d);
    let pos = pos.expect("a WAL with frames gives a position");
    Imaged {
        dir,
        w,
        src,
        table,
        image,
        pos,
    }
}

#[test]
fn wal_image_without_a_connection_is_the_committed_state_and_tailing_follows_it() {
    let Imaged {
        w,
        mut src,
        mut table,
        mut image,
        mut pos,
        dir: _dir,
    } = imaged_wal();
    assert_eq!(src.header().unwrap().mode, Mode::Wal);
    assert_eq!(rows_of_image(&image), rows(&w));

    // Three more commits, tailed: every commit seen, and the state equals the writer's.
    for k in 0..3 {
        insert(&w, 1000 + k * 10, 10);
    }
    match src.wal_tail(&pos).unwrap() {
        wal::Tail::Commits(cs, p) => {
            assert_eq!(cs.len(), 3);
            apply_commits(&mut table, &mut image, cs);
            pos = p;
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rows_of_image(&image), rows(&w));
    // A fresh image agrees page for page: nothing to add.
    let d = src.wal_image(&table).unwrap().unwrap().diff;
    assert!(d.is_empty_for(&table), "{} pages differ", d.pages.len());

    // A checkpoint that copies frames but keeps the WAL: still continuous.
    w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    insert(&w, 2000, 5);
    let wal::Tail::Commits(cs, _) = src.wal_tail(&pos).unwrap() else {
        panic!("a passive checkpoint breaks nothing")
    };
    assert_eq!(cs.len(), 1);

    // The connector truncating its WAL: detected, and a resync finds the state.
    w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    assert!(matches!(
        src.wal_tail(&pos).unwrap(),
        wal::Tail::Discontinuous(_)
    ));
    let WalImage {
        diff: d,
        pos: pos2,
        shm,
    } = src.wal_image(&table).unwrap().unwrap();
    assert!(pos2.is_none());
    apply(&mut table, &mut image, &d);
    assert_eq!(rows_of_image(&image), rows(&w));
    // The next WAL starts right after that image: tailing resumes without a resync.
    insert(&w, 3000, 5);
    let pos3 = src
        .wal_follows(shm)
        .unwrap()
        .expect("the new WAL follows the image");
    let wal::Tail::Commits(cs, _) = src.wal_tail(&pos3).unwrap() else {
        panic!()
    };
    assert_eq!(cs.len(), 1);
}

#[test]
fn wal_checksums_match_sqlite_in_both_byte_orders() {
    // SQLite writes the byte order of the machine; check the other order by hand on a
    // header we compute.
    let mut raw = [0u8; 32];
    raw[..4].copy_from_slice(&0x377f0683u32.to_be_bytes());
    raw[4..8].copy_from_slice(&3007000u32.to_be_bytes());
    raw[8..12].copy_from_slice(&4096u32.to_be_bytes());
    let c = wal::cksum(true, &raw[..24], (0, 0));
    raw[24..28].copy_from_slice(&c.0.to_be_bytes());
    raw[28..32].copy_from_slice(&c.1.to_be_bytes());
    assert!(wal::WalHeader::parse(&raw).unwrap().big_endian);
    raw[31] ^= 1;
    assert!(wal::WalHeader::parse(&raw).is_none());
}

#[test]
fn rollback_observation_is_the_committed_state_and_sees_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, false);
    insert(&w, 0, 300);
    let src = Source::open(&path).unwrap();
    assert_eq!(src.header().unwrap().mode, Mode::Rollback);
    let locker = rollback::Locker::open(&path).unwrap();
    let mut table = PageTable::new(4096);
    let mut image = Vec::new();
    let o = rollback::observe(&src, &locker, &table).unwrap().unwrap();
    apply(&mut table, &mut image, &o.diff);
    assert_eq!(rows_of_image(&image), rows(&w));
    let before = o.change_counter;
    insert(&w, 5000, 3);
    let o = rollback::observe(&src, &locker, &table).unwrap().unwrap();
    assert_ne!(o.change_counter, before);
    assert!(o.diff.pages.len() < 10, "{} pages", o.diff.pages.len());
    apply(&mut table, &mut image, &o.diff);
    assert_eq!(rows_of_image(&image), rows(&w));
    // Nothing committed: nothing differs.
    let o = rollback::observe(&src, &locker, &table).unwrap().unwrap();
    assert!(o.diff.is_empty_for(&table));
    // No file of ours beside the database.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["sqlite.db"]);
}

#[test]
fn a_switch_to_wal_is_seen_by_the_rollback_observer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, false);
    insert(&w, 0, 10);
    let src = Source::open(&path).unwrap();
    let locker = rollback::Locker::open(&path).unwrap();
    w.pragma_update(None, "journal_mode", "wal").unwrap();
    let r = rollback::observe(&src, &locker, &PageTable::new(4096)).unwrap();
    assert!(matches!(r, Err(rollback::Skip::NowWal)), "{r:?}");
}

/// Pins a snapshot with a read transaction of `reader`, as a backup does.
fn pin(src: &mut Source, reader: &Connection) -> image::ImagePlan {
    image::pin_wal(
        src,
        || {
            reader.execute_batch("BEGIN").unwrap();
            reader
                .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                .unwrap();
            Ok(())
        },
        || reader.execute_batch("COMMIT").unwrap(),
    )
    .unwrap()
    .expect("a WAL database")
}

fn stream(plan: &image::ImagePlan, src: &Source) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut plan.reader(src, true), &mut out).unwrap();
    out
}

#[test]
fn the_shm_header_sqlite_writes_is_read_and_names_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    insert(&w, 0, 50);
    let mut src = Source::open(&path).unwrap();
    let h = src
        .shm_header()
        .unwrap()
        .expect("SQLite wrote a valid wal-index header");
    let (f, wh) = src.wal_with_header().unwrap().unwrap();
    assert_eq!(h.salts, wh.raw[16..24]);
    let idx = wal::index(&f, &wh, f.metadata().unwrap().len(), None).unwrap();
    assert_eq!(idx.committed, h.max_frame as u64);
    assert_eq!(idx.checksum, h.frame_checksum);
    assert_eq!(idx.db_pages, Some(h.pages));
}

#[test]
fn a_pinned_image_is_the_read_transactions_snapshot_while_a_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    insert(&w, 0, 300);
    let reader =
        Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut src = Source::open(&path).unwrap();
    let plan = pin(&mut src, &reader);
    assert!(plan.wal_pages() > 0);
    let expected = rows(&reader); // inside the pinned read transaction
    // The writer goes on and checkpoints what it can (not past our read mark).
    insert(&w, 1000, 200);
    w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    insert(&w, 2000, 10);
    let image = stream(&plan, &src);
    assert_eq!(image[18..20], [1, 1], "page 1 says rollback mode");
    assert_eq!(rows_of_image(&image), expected);
    assert_eq!(rows(&reader), expected);
    reader.execute_batch("COMMIT").unwrap();
    assert_ne!(rows(&reader), expected, "the writer did go on");
}

#[test]
fn a_pinned_image_of_a_checkpointed_wal_survives_a_restart_during_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    insert(&w, 0, 300);
    // Every frame in the file: a reader then reads the file alone (read mark 0), and a
    // writer may restart the WAL under it, overwriting the frames from the start.
    w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    let reader =
        Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut src = Source::open(&path).unwrap();
    let plan = pin(&mut src, &reader);
    let expected = rows(&reader);
    let salts_before = src.wal_with_header().unwrap().unwrap().1.salts;
    insert(&w, 5000, 100);
    let salts_after = src.wal_with_header().unwrap().unwrap().1.salts;
    assert_ne!(salts_before, salts_after, "the writer restarted the WAL");
    let image = stream(&plan, &src);
    assert_eq!(rows_of_image(&image), expected);
}

#[test]
fn a_lock_free_full_image_goes_to_a_file_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    insert(&w, 0, 400);
    w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    insert(&w, 400, 50);
    let mut src = Source::open(&path).unwrap();
    let out = dir.path().join("image");
    let f = std::fs::File::create(&out).unwrap();
    let mut sink = FileSink::new(f, &out);
    let taken = src
        .wal_image_into(&PageTable::new(4096), &mut sink)
        .unwrap()
        .unwrap();
    let image = std::fs::read(&out).unwrap();
    assert_eq!(image.len(), taken.db_pages as usize * 4096);
    let mut plain = image.clone();
    plain[18] = 1;
    plain[19] = 1;
    assert_eq!(rows_of_image(&plain), rows(&w));
    // The same image as the in-memory route gives.
    let mut table = PageTable::new(4096);
    let mut mem = Vec::new();
    apply(
        &mut table,
        &mut mem,
        &src.wal_image(&PageTable::new(4096)).unwrap().unwrap().diff,
    );
    assert_eq!(mem, image);
}

#[test]
fn a_closed_wal_database_is_pinned_from_its_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    insert(&w, 0, 300);
    drop(w); // the last connection checkpoints and removes the -wal and -shm
    assert!(!dir.path().join("sqlite.db-wal").exists());
    let mut src = Source::open(&path).unwrap();
    let reader =
        Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    reader
        .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .unwrap();
    let plan = pin(&mut src, &reader);
    let expected = rows(&reader);
    assert_eq!(rows_of_image(&stream(&plan, &src)), expected);
}

#[test]
fn the_wal_tails_index_names_the_newest_frame_of_each_page_the_full_reader_keeps() {
    // A tiny page cache spills pages into the WAL before the commit, so one commit holds
    // several frames of the same page: the index must keep the newest, in page order.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    w.pragma_update(None, "cache_size", 2).unwrap();
    let tx = w.unchecked_transaction().unwrap();
    for round in 0..3 {
        for i in 0..400i64 {
            tx.execute(
                "INSERT OR REPLACE INTO t VALUES (?1, ?2)",
                rusqlite::params![i, format!("{round}").repeat(200)],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    insert(&w, 1000, 50);
    use std::os::unix::fs::FileExt;
    let wal_path = dir.path().join("sqlite.db-wal");
    let f = std::fs::File::open(&wal_path).unwrap();
    let mut raw = [0u8; wal::HEADER];
    f.read_exact_at(&mut raw, 0).unwrap();
    let h = wal::WalHeader::parse(&raw).unwrap();
    let start = wal::WalPos::start(h);
    let wal::Tail::Commits(full, p1) = wal::read_after(&f, &start).unwrap() else {
        panic!("continuous")
    };
    let wal::Tail::Commits(indexed, p2) = wal::read_after_indexed(&f, &start).unwrap() else {
        panic!("continuous")
    };
    assert_eq!((p1.frames, p1.checksum), (p2.frames, p2.checksum));
    assert_eq!(full.len(), indexed.len());
    let frames: u64 = p1.frames;
    let pages: usize = full.iter().map(|c| c.pages.len()).sum();
    assert!(
        frames as usize > pages,
        "a commit repeats pages ({frames} frames, {pages} pages)"
    );
    let mut page = vec![0u8; h.page_size as usize];
    for (c, i) in full.iter().zip(&indexed) {
        assert_eq!(c.db_pages, i.db_pages);
        let nums: Vec<u32> = i.frames.iter().map(|(p, _)| *p).collect();
        assert_eq!(nums, c.pages.keys().copied().collect::<Vec<_>>());
        for (p, n) in &i.frames {
            assert!(wal::read_frame(&f, &h, *n, *p, &mut page).unwrap());
            assert_eq!(
                &page, &c.pages[p],
                "page {p}: frame {n} is not the newest image"
            );
        }
    }
}

#[test]
fn a_spill_sinks_index_of_a_pass_in_page_order_is_four_bytes_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SpillSink::new(dir.path(), 1 << 20);
    sink.restart(512).unwrap();
    let page = |p: u32, v: u8| {
        let mut b = vec![v; 512];
        b[..4].copy_from_slice(&p.to_le_bytes());
        b
    };
    // A pass over the file: every third page differs, in ascending order.
    let pages: Vec<u32> = (1..=30_000).filter(|p| p % 3 != 0).collect();
    for p in &pages {
        sink.page(*p, &page(*p, 1)).unwrap();
    }
    let ascending = sink.index_bytes();
    assert!(
        ascending <= pages.len() * 4 * 2,
        "{ascending} bytes for {} pages",
        pages.len()
    );
    // Then the WAL's pages, out of order: some given before (patched), some new.
    for p in [29_999u32, 6, 7, 30_003, 3, 12] {
        sink.page(p, &page(p, 2)).unwrap();
    }
    sink.finish(30_003, 30_000).unwrap();
    let table = PageTable::new(512);
    let mut seen = Vec::new();
    sink.changed(&table, |p, img, _| {
        seen.push((p, img[4]));
        if img.iter().any(|b| *b != 0) {
            assert_eq!(
                &img[..4],
                &p.to_le_bytes(),
                "page {p} read from another's slot"
            );
        }
        Ok(())
    })
    .unwrap();
    let want: std::collections::BTreeMap<u32, u8> = pages
        .iter()
        .map(|p| (*p, 1))
        .chain([29_999u32, 6, 7, 30_003, 3, 12].map(|p| (p, 2)))
        .collect();
    // Pages past the file that were never given read as zeros (30,001 and 30,002).
    let got: std::collections::BTreeMap<u32, u8> = seen
        .into_iter()
        .filter(|(p, _)| *p <= 30_000 || *p == 30_003)
        .collect();
    assert_eq!(got, want);
}

/// Commits after our position, then the connector's own `wal_checkpoint(TRUNCATE)`, then
/// one small commit in the same connection, all between two looks: the new WAL's header
/// is the old one's salt-1 + 1 (one restart) and it is shorter than our position, so the
/// slot after the position holds nothing. The commits made between the position and the
/// truncation are in the database file only: a tail that took the new WAL's commit as
/// the next one would lose them. The tail must say it cannot prove continuity (resync),
/// and the resync's image must be the writer's state.
#[test]
fn commits_truncated_away_before_a_restarted_wal_are_never_skipped_by_the_tail() {
    let Imaged {
        dir,
        w,
        mut src,
        mut table,
        mut image,
        pos,
    } = imaged_wal();
    assert!(
        pos.frames > 2,
        "the position must be past the new WAL's frames"
    );

    // Between two looks: a commit of new rows (new pages), the truncation, and a small
    // commit (one or two frames) touching another page.
    insert(&w, 5000, 100);
    w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    w.execute("UPDATE t SET v = 'changed' WHERE id = 1", [])
        .unwrap();
    let wal_len = std::fs::metadata(dir.path().join("sqlite.db-wal"))
        .unwrap()
        .len();
    assert!(
        wal_len < wal::HEADER as u64 + pos.frames * (wal::FRAME_HEADER as u64 + 4096),
        "the new WAL ({wal_len} bytes) must be shorter than the position"
    );
    match src.wal_tail(&pos).unwrap() {
        wal::Tail::Discontinuous(_) => {}
        wal::Tail::Commits(cs, _) => {
            apply_commits(&mut table, &mut image, cs);
            // (Compared as a boolean: the rows would fill the screen.)
            let (got, want) = (rows_of_image(&image), rows(&w));
            assert!(
                got == want,
                "the tail went on across the truncation and lost the commit before it: \
                 {} rows captured, {} committed",
                got.len(),
                want.len()
            );
        }
    }
    let d = src.wal_image(&table).unwrap().unwrap().diff;
    apply(&mut table, &mut image, &d);
    assert_eq!(rows_of_image(&image), rows(&w));
}

/// A restart caught mid-write at the slot after our position: SQLite writes a frame's
/// header and its page in two writes, so the new WAL (salt-1 + 1) can show frames
/// 1..P whole and only the header of frame P+1, over the old WAL's frame P+1 (a commit
/// made after our position, checkpointed before the restart). The slot then is neither
/// a valid old frame nor a valid new one, and the new WAL's valid frames stop at our
/// position: that proves nothing, and the old frame P+1 held a commit. Built by hand
/// from a real WAL (the new frames' checksums computed as SQLite does).
#[test]
fn a_restarted_wal_caught_mid_frame_at_our_slot_is_not_taken_as_following() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let w = writer(&path, true);
    insert(&w, 0, 50);
    let mut src = Source::open(&path).unwrap();
    let table = PageTable::new(4096);
    let pos = src.wal_image(&table).unwrap().unwrap().pos.unwrap();
    // A commit after our position, then every frame copied into the file.
    insert(&w, 5000, 20);
    w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    let old = std::fs::read(dir.path().join("sqlite.db-wal")).unwrap();
    let h = pos.header;
    let fs = h.frame_size() as usize;
    let p = pos.frames as usize;
    assert!(
        old.len() >= wal::HEADER + (p + 1) * fs,
        "a frame after our position"
    );

    // The restart: a new header (salt-1 + 1), frames 1..P (one commit), and only the
    // header of frame P+1.
    let be = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let mut new = old.clone();
    let salts = (h.salts.0.wrapping_add(1), h.salts.1 ^ 0x5a5a_5a5a);
    be(&mut new, 12, h.checkpoint_seq + 1);
    be(&mut new, 16, salts.0);
    be(&mut new, 20, salts.1);
    let c = wal::cksum(h.big_endian, &new[..24], (0, 0));
    be(&mut new, 24, c.0);
    be(&mut new, 28, c.1);
    let mut running = c;
    let page = vec![7u8; 4096];
    for i in 0..=p {
        let at = wal::HEADER + i * fs;
        let n = i as u32 + 1;
        be(&mut new, at, n.min(3)); // some page numbers
        be(&mut new, at + 4, if i + 1 == p { 3 } else { 0 });
        be(&mut new, at + 8, salts.0);
        be(&mut new, at + 12, salts.1);
        // Every header sums the new page; frame P+1's page is not written yet (the
        // old bytes stay under its new header).
        let c = wal::cksum(h.big_endian, &new[at..at + 8], running);
        let c = wal::cksum(h.big_endian, &page, c);
        be(&mut new, at + 16, c.0);
        be(&mut new, at + 20, c.1);
        if i < p {
            new[at + 24..at + fs].copy_from_slice(&page);
            running = c;
        }
    }
    let crafted = dir.path().join("crafted-wal");
    std::fs::write(&crafted, &new).unwrap();
    let f = std::fs::File::open(&crafted).unwrap();
    match wal::read_after(&f, &pos).unwrap() {
        wal::Tail::Discontinuous(_) => {}
        wal::Tail::Commits(cs, _) => panic!(
            "the new WAL was taken as following our position ({} commits), losing the \
             commit after it",
            cs.len()
        ),
    }
}

/// What the restart rule still lets through without a resync: every frame checkpointed
/// (PASSIVE, nothing after our position), then a commit that restarts the WAL (salt-1
/// plus one) with fewer frames than our position, over the old frames: the frame at our
/// position is still the old WAL's and nothing valid follows it, so the tail goes on in
/// the new WAL, and the state is the writer's.
#[test]
fn a_restart_after_a_checkpoint_of_everything_we_read_is_tailed_without_a_resync() {
    let Imaged {
        w,
        mut src,
        mut table,
        mut image,
        pos,
        dir: _dir,
    } = imaged_wal();
    w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    w.execute("UPDATE t SET v = 'restarted' WHERE id = 7", [])
        .unwrap();
    match src.wal_tail(&pos).unwrap() {
        wal::Tail::Commits(cs, next) => {
            assert_eq!(cs.len(), 1);
            assert_ne!(next.header.salts, pos.header.salts, "the WAL restarted");
            apply_commits(&mut table, &mut image, cs);
            assert!(
                rows_of_image(&image) == rows(&w),
                "the tailed state is the writer's"
            );
        }
        wal::Tail::Discontinuous(why) => panic!("a plain restart resynced: {why}"),
    }
}

/// Capture's lock-taking connection opens the path it is given lazily, after the file
/// was opened `O_NOFOLLOW`: a link put at the name meanwhile (the connector's user owns
/// the directory) must be refused, and nothing created beside the file it points at.
#[test]
fn the_lockers_connection_never_opens_a_database_through_a_link() {
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("x.db");
    drop(writer(&target, true));
    assert!(!side_path(&target, "-shm").exists());
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("sqlite.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let refused = rollback::Locker::open(&link)
        .err()
        .expect("a link is refused");
    assert!(refused.to_string().contains("symbolic link"), "{refused}");
    let mut names: Vec<_> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["x.db"]);
}

#[test]
fn the_database_size_is_page_ones_when_valid_else_the_pagers() {
    let mut p1 = vec![0u8; 100];
    p1[28..32].copy_from_slice(&28u32.to_be_bytes());
    p1[24..28].copy_from_slice(&5u32.to_be_bytes());
    p1[92..96].copy_from_slice(&5u32.to_be_bytes());
    // Valid: the header's size, shorter or longer than the pager's count.
    assert_eq!(super::db_size(&p1, 256), 28);
    assert_eq!(super::db_size(&p1, 10), 28);
    // Written by a SQLite that does not keep it (counter and version-valid-for differ).
    p1[92..96].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(super::db_size(&p1, 256), 256);
    // Zero, or no page 1 at all (an empty file).
    p1[92..96].copy_from_slice(&5u32.to_be_bytes());
    p1[28..32].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(super::db_size(&p1, 256), 256);
    assert_eq!(super::db_size(&[], 0), 0);
}
