//! The id rewrite and the fixture it runs on, through the library (the binary's `remap`
//! and `restore` tests are in remap.rs and restore.rs).

use std::path::Path;

use hubvault::sqlite::{db, fsio, rewrite};

use crate::fixture::{self, Spec};

use crate::common::{random_ids as new_ids, spec_ids as ids};

fn fixture_db(dir: &Path) -> (std::path::PathBuf, Spec) {
    let path = dir.join("sqlite.db");
    let spec = Spec::new("hrb-cellario", "Cell 2", 30);
    fixture::create(&path, &spec).unwrap();
    (path, spec)
}

#[test]
fn fixture_is_a_readable_connector_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlite.db");
    let spec = Spec::new("sdc", "AGU SDC Upstream", 50);
    fixture::create(&path, &spec).unwrap();
    let conn = db::open_read_only(&path).unwrap();
    let info = db::read_info(&conn, &path).unwrap();
    assert_eq!(
        (info.datahub, info.connector),
        (spec.datahub, spec.connector)
    );
    assert_eq!(info.source_type, "sdc");
    let counts = db::table_counts(&conn, &path).unwrap();
    assert_eq!(counts["Events"], 50);
    assert!(counts["Uploads"] > 0);
    db::check_integrity(&conn, &path, 0).unwrap();
}

#[test]
fn plan_counts_values_per_column_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spec) = fixture_db(dir.path());
    let conn = db::open_read_write(&path).unwrap();
    let before = fsio::sha256_file(&path).unwrap();
    let p = rewrite::plan(&conn, &path, ids(&spec), new_ids()).unwrap();
    let get = |t: &str, c: &str| {
        p.changes
            .iter()
            .find(|x| x.table == t && x.column == c)
            .map(|x| x.values)
    };
    assert_eq!(get("Integrations", "id"), Some(1));
    assert_eq!(get("Integrations", "sources"), Some(1));
    assert_eq!(get("Integrations", "state"), Some(1));
    assert_eq!(get("Events", "integration"), Some(30));
    assert_eq!(get("Events", "source"), Some(30));
    assert_eq!(get("Events", "payload"), None);
    assert!(get("Uploads", "filePath").unwrap() > 0);
    assert!(p.blockers.is_empty());
    drop(conn);
    assert_eq!(fsio::sha256_file(&path).unwrap(), before);
}

#[test]
fn the_same_rewrite_applied_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let (path, spec) = fixture_db(dir.path());
    let mut conn = db::open_read_write(&path).unwrap();
    let to = new_ids();
    let done = rewrite::apply(&mut conn, &path, ids(&spec), to, false).unwrap();
    assert!(done.total_values() > 60, "{done:?}");
    drop(conn);
    let after_first = fsio::sha256_file(&path).unwrap();
    // The same mapping again: the old ids are gone, so nothing is found and nothing is
    // written (the file is byte for byte the same).
    let mut conn = db::open_read_write(&path).unwrap();
    let again = rewrite::apply(&mut conn, &path, ids(&spec), to, false).unwrap();
    assert_eq!(again.total_values(), 0, "{again:?}");
    assert!(again.is_noop());
    let left = rewrite::scan_ids(
        &conn,
        &path,
        &[spec.datahub.to_string(), spec.connector.to_string()],
    )
    .unwrap();
    assert!(left.is_empty(), "{left:?}");
    drop(conn);
    assert_eq!(fsio::sha256_file(&path).unwrap(), after_first);
}

#[test]
fn a_column_whose_ids_start_past_the_sampled_rows_is_still_rewritten_and_counted() {
    // The UPDATE sets the columns seen holding ids in the first rows; one that holds an id
    // only later gets an UPDATE of its own. Numbers, the rowid and other columns stay.
    let dir = tempfile::tempdir().unwrap();
    let (path, spec) = fixture_db(dir.path());
    let c = spec.connector.to_string();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE Late (k INTEGER PRIMARY KEY, a TEXT, b TEXT, n INTEGER, z TEXT)",
    )
    .unwrap();
    for k in 1..=1500 {
        let b = if k == 1400 {
            format!("late {c}")
        } else {
            "x".into()
        };
        conn.execute(
            "INSERT INTO Late VALUES (?1, ?2, ?3, ?1 * 7, 'same')",
            rusqlite::params![k, format!("/var/datahub/{c}/{k}"), b],
        )
        .unwrap();
    }
    drop(conn);
    let mut conn = db::open_read_write(&path).unwrap();
    let to = new_ids();
    let done = rewrite::apply(&mut conn, &path, ids(&spec), to, false).unwrap();
    let got = |col: &str| {
        done.changes
            .iter()
            .find(|x| x.table == "Late" && x.column == col)
            .map(|x| x.values)
    };
    assert_eq!(
        (got("a"), got("b"), got("n"), got("z")),
        (Some(1500), Some(1), None, None)
    );
    let nc = to.connector.to_string();
    let b: String = conn
        .query_row("SELECT b FROM Late WHERE k = 1400", [], |r| r.get(0))
        .unwrap();
    assert_eq!(b, format!("late {nc}"));
    let (n, rowids): (i64, i64) = conn
        .query_row("SELECT sum(n = k * 7), sum(k = rowid) FROM Late", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, rowids), (1500, 1500));
    assert!(rewrite::scan_ids(&conn, &path, &[c]).unwrap().is_empty());
}
